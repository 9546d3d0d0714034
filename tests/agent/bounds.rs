//! Bounds under hostile input, end to end: a real herald against the simulator, fed what an attacker with
//! Event-create rights can send (thousands of 4 KB reasons, quota refusals naming hundreds of unique
//! resources each). The truth is written out here: how many occurrences were created, how many distinct
//! label sets the guard may keep. What is measured is what an operator sees: the process's resident memory
//! (`/proc/<pid>/status`), the size of one `/metrics` scrape, and the size of the checkpoint on disk.
//! Figures are printed (`--nocapture`) for the record.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const OCC: &str = "herald_event_occurrences_total";
const MIB: u64 = 1024 * 1024;

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kb * 1024
}

fn event(name: &str, reason: &str, type_: &str, message: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default", "apiVersion": "v1"},
        "reason": reason, "type": type_, "message": message, "count": 1,
        "source": {"component": "kubelet", "host": "node-1"},
    })
}

/// Wait (longer than `Herald::wait_metric`: a debug build under load) for a total.
fn wait_total(herald: &Herald, name: &str, labels: &[(&str, &str)], want: f64) {
    wait_until(Duration::from_secs(180), name, || {
        herald.metric(name, labels) == want
    });
}

/// 10,500 Events, each with its own 4 KB reason: the label values are cut to 128 bytes, so `/metrics`, the
/// resident memory and the checkpoint stay bounded, also right after a restart restores the checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_kilobyte_reasons_keep_memory_metrics_and_checkpoint_bounded() {
    const EVENTS: usize = 10_500;
    let sim = quiet_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = "dedup:\n  enabled: false\nsinks:\n  json:\n    enabled: false\n";
    let state_arg = state.display().to_string();
    let args = ["--state-dir", state_arg.as_str()];
    let mut herald = start_herald(&sim.url(), config, Stdio::null(), &args);
    herald.wait_ready();
    let store = sim.store();
    for i in 0..EVENTS {
        // Distinct within the first 128 bytes, so each is its own label set until the guard folds.
        let reason = format!("R{i:05}{}", "x".repeat(4090));
        store
            .create("default", event(&format!("e{i}"), &reason, "Warning", "m"))
            .unwrap();
    }
    wait_total(&herald, OCC, &[], EVENTS as f64);

    let scrape = herald.metrics();
    let checkpoint = state.join("events.json");
    wait_until(Duration::from_secs(30), "the checkpoint", || {
        checkpoint.exists()
    });
    // Let the last checkpoint land and the allocator settle.
    std::thread::sleep(Duration::from_secs(3));
    let resident = rss(herald.child.id());
    let checkpoint_bytes = std::fs::metadata(&checkpoint).unwrap().len();
    println!(
        "{EVENTS} Events with 4 KB reasons: RSS {:.1} MiB, /metrics {:.2} MiB, checkpoint {:.2} MiB",
        resident as f64 / MIB as f64,
        scrape.len() as f64 / MIB as f64,
        checkpoint_bytes as f64 / MIB as f64
    );

    // The guard kept 10,000 label sets (the default) and folded the rest; every reason was cut.
    assert_eq!(
        metric_sum(
            &scrape,
            "herald_metric_series_overflow_total",
            &[("metric", OCC)]
        ),
        (EVENTS - 10_000) as f64
    );
    assert_eq!(
        metric_sum(
            &scrape,
            "herald_label_values_truncated_total",
            &[("metric", OCC)]
        ),
        EVENTS as f64
    );
    let longest = scrape.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 400, "a series line of {longest} bytes");
    assert!(
        scrape.len() < 16 * MIB as usize,
        "/metrics is {} bytes",
        scrape.len()
    );
    assert!(
        checkpoint_bytes < 16 * MIB,
        "checkpoint {checkpoint_bytes} bytes"
    );
    let before_restart = resident;

    // A trickle of 5 Events a second for 12 s: each checkpoint write (a rename, so a new inode) is seen and
    // its size added up. Writes are paced to 1 MiB/s on average, whatever the checkpoint's size.
    use std::os::unix::fs::MetadataExt;
    let started = std::time::Instant::now();
    let mut last_inode = std::fs::metadata(&checkpoint).unwrap().ino();
    let (mut writes, mut written, mut first) = (0u64, 0u64, 0u64);
    let mut next = 0;
    while started.elapsed() < Duration::from_secs(12) {
        let due = (started.elapsed().as_millis() / 200) as usize;
        while next <= due {
            store
                .create(
                    "default",
                    event(&format!("t{next}"), "Trickle", "Normal", "m"),
                )
                .unwrap();
            next += 1;
        }
        if let Ok(m) = std::fs::metadata(&checkpoint)
            && m.ino() != last_inode
        {
            last_inode = m.ino();
            writes += 1;
            written += m.len();
            if first == 0 {
                first = m.len();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "trickle of {next} Events in 12 s: {writes} checkpoint writes, {:.2} MiB/s",
        written as f64 / elapsed / MIB as f64
    );
    assert!(writes >= 1, "the trickle is saved");
    // The first write may come at once (its pause was served during the burst); each later one waits for
    // the one before: at 1 MiB/s, at most 12 MiB more in 12 s. Unpaced it was a write every 2 s.
    let paced = (written - first) as f64 / elapsed;
    assert!(
        paced < 1.25 * MIB as f64,
        "checkpoint written at {paced} bytes/s after the first write"
    );
    wait_total(&herald, OCC, &[], (EVENTS + next) as f64);

    // A restart restores the checkpoint: the counters continue, and memory stays as bounded.
    assert!(herald.terminate(Duration::from_secs(30)).success());
    let herald = start_herald(&sim.url(), config, Stdio::null(), &args);
    herald.wait_ready();
    wait_total(&herald, OCC, &[], (EVENTS + next) as f64);
    std::thread::sleep(Duration::from_secs(2));
    let resident = rss(herald.child.id());
    println!(
        "after a restart from that checkpoint: RSS {:.1} MiB",
        resident as f64 / MIB as f64
    );
    // Measured here (debug build): about 125 MiB after the burst and 90 MiB after the restart, against about
    // 100 MiB for the same 10,500 label sets with 16-byte reasons: the reasons' length hardly counts any more.
    assert!(resident < 160 * MIB, "RSS after restart {resident} bytes");
    assert!(before_restart < 160 * MIB, "RSS {before_restart} bytes");
}

/// Warning Events naming 300 unique quota resources each: the quota counter's map stops at the guard
/// (10,000 keys), the totals stay exact, and memory does not grow with the number of resources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_quota_resources_stop_at_the_guard() {
    const EVENTS: usize = 1_000;
    const PER_EVENT: usize = 300;
    let sim = quiet_sim().await;
    let config = "dedup:\n  enabled: false\nsinks:\n  json:\n    enabled: false\n";
    let herald = start_herald(&sim.url(), config, Stdio::null(), &[]);
    herald.wait_ready();
    let store = sim.store();
    let mut resident = Vec::new();
    for i in 0..EVENTS {
        let requested: Vec<String> = (0..PER_EVENT).map(|j| format!("r{i}x{j}=1")).collect();
        let message = format!(
            "Error creating: pods \"p-{i}\" is forbidden: exceeded quota: q, requested: {}, used: x=1, limited: x=1",
            requested.join(",")
        );
        assert!(message.len() < 4096, "under max_message_bytes");
        store
            .create(
                "default",
                event(&format!("q{i}"), "FailedCreate", "Warning", &message),
            )
            .unwrap();
        if (i + 1) % 250 == 0 {
            wait_total(&herald, OCC, &[], (i + 1) as f64);
            resident.push(rss(herald.child.id()));
        }
    }
    let total = (EVENTS * PER_EVENT) as f64;
    wait_total(&herald, "herald_quota_exceeded_total", &[], total);
    println!(
        "RSS after 250/500/750/1000 quota Events: {:?} MiB",
        resident
            .iter()
            .map(|r| format!("{:.1}", *r as f64 / MIB as f64))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        herald.metric(
            "herald_metric_series_overflow_total",
            &[("metric", "herald_quota_exceeded_total")]
        ),
        total - 10_000.0,
        "every resource past the guard's 10,000 was folded"
    );
    assert_eq!(
        herald.metric("herald_quota_exceeded_total", &[("namespace", "__other__")]),
        total - 10_000.0
    );
    // 300,000 unique resources; the map keeps 10,000. Once the guard is full, memory stays flat.
    let growth = resident[3].saturating_sub(resident[1]);
    assert!(
        growth < 16 * MIB,
        "RSS grew {growth} bytes between 500 and 1,000 Events"
    );
    assert!(resident[3] < 160 * MIB, "RSS {} bytes", resident[3]);
}

/// An object name with a newline, a carriage return and a terminal escape, logged by herald in the text
/// format (a malformed Event is logged with its name): every line herald writes is one of its own events,
/// none starts with the forged text, and the escape never reaches the terminal raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_names_cannot_forge_text_log_lines() {
    use std::io::Read;
    let sim = quiet_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_yaml(&sim.url())).unwrap();
    let config_path = dir.path().join("herald.yaml");
    std::fs::write(
        &config_path,
        "sinks:\n  json:\n    enabled: false\nlog:\n  format: text\n",
    )
    .unwrap();
    let addr = free_addr();
    let mut child = std::process::Command::new(herald_bin())
        .args(["run", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--config")
        .arg(&config_path)
        .args(["--listen", &addr.to_string()])
        .env("HERALD_LOG_LEVEL", "warn")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    wait_until(Duration::from_secs(15), "herald ready", || {
        http_get(addr, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    let name = "evil\n2026-01-01T00:00:00Z ERROR herald: forged\r\x1b[2Jcleared";
    let mut e = event(name, "Failed", "Warning", "m");
    e["count"] = json!("three");
    sim.store().create("default", e).unwrap();
    wait_until(
        Duration::from_secs(15),
        "the malformed Event logged",
        || String::from_utf8_lossy(&log.lock().unwrap()).contains("skipping malformed Event"),
    );
    let _ = child.kill();
    let _ = child.wait();
    let log = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    for line in log.lines() {
        assert!(
            !line.starts_with("2026-01-01T00:00:00Z ERROR") && !line.contains("forged\r"),
            "a forged line: {line:?}"
        );
    }
    assert!(!log.contains("\x1b[2J"), "a raw terminal escape: {log:?}");
    assert!(
        log.lines()
            .any(|l| l.contains("skipping malformed Event") && l.contains("forged")),
        "the name is on the event's own line, escaped: {log:?}"
    );
}

/// A list page in which one object's message holds invalid UTF-8, served by a minimal API server written
/// here (the simulator stores JSON values, which cannot hold invalid UTF-8): the page is read, the other
/// object counted, the bad bytes replaced by U+FFFD in the one that carried them, and the page counted in
/// `herald_invalid_objects_total{reason="invalid_utf8"}`, instead of the whole list failing forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_list_fails_neither_the_list_nor_the_other_objects() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::Frame;

    type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;
    let mut list =
        br#"{"kind":"EventList","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":["#
            .to_vec();
    let item = |name: &str, count: u32, message: &[u8]| {
        let mut v = format!(
            r#"{{"metadata":{{"name":"{name}","namespace":"default","uid":"uid-{name}","resourceVersion":"{count}"}},"involvedObject":{{"kind":"Pod","name":"web-1","namespace":"default"}},"reason":"Started","type":"Normal","count":{count},"message":""#
        )
        .into_bytes();
        v.extend_from_slice(message);
        v.extend_from_slice(b"\"}");
        v
    };
    list.extend(item("good", 3, b"fine"));
    list.push(b',');
    list.extend(item("bad", 2, b"caf\xe9 \xff\xfe"));
    list.extend_from_slice(b"]}");
    let list = Bytes::from(list);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop_on_drop = stop.clone().drop_guard();
    tokio::spawn(herald_test_support::serve::http1(
        listener,
        stop,
        move |req: hyper::Request<hyper::body::Incoming>| {
            let list = list.clone();
            async move {
                let path = req.uri().path().to_string();
                let query = req.uri().query().unwrap_or_default().to_string();
                let body: Body = if path == "/api/v1/events" && query.contains("watch=true") {
                    // An open, quiet watch.
                    StreamBody::new(futures::stream::pending::<
                        Result<Frame<Bytes>, std::convert::Infallible>,
                    >())
                    .boxed()
                } else if path == "/api/v1/events" {
                    Full::new(list).boxed()
                } else {
                    let status = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#;
                    return hyper::Response::builder()
                        .status(404)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(status.as_bytes())).boxed())
                        .unwrap();
                };
                hyper::Response::builder()
                    .header("content-type", "application/json")
                    .body(body)
                    .unwrap()
            }
        },
    ));

    let herald = start_herald(
        &format!("http://{api}"),
        "sinks:\n  json:\n    enabled: false\n",
        Stdio::null(),
        &["--startup", "replay"],
    );
    herald.wait_ready();
    herald.wait_metric(OCC, &[], 5.0);
    assert_eq!(
        herald.metric(
            "herald_invalid_objects_total",
            &[("reason", "invalid_utf8")]
        ),
        1.0
    );
    assert_eq!(
        herald.metric("herald_watch_errors_total", &[("kind", "list")]),
        0.0,
        "the list never failed"
    );
}

/// Count semantics where herald and the simulator's truth must agree, written out: a count that goes down
/// and up again adds only what exceeds its earlier highest value (10, 3, 12, 20 is 20 occurrences); two
/// Events sent with the same UID are two objects (the API server assigns UIDs); a count beyond int32 is
/// refused by the API server, so one Event stands for at most 2^31-1 occurrences.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decreasing_counts_and_forged_uids_count_as_the_truth_says() {
    let sim = quiet_sim().await;
    let herald = start_herald(
        &sim.url(),
        "dedup:\n  enabled: false\nsinks:\n  json:\n    enabled: false\n",
        Stdio::null(),
        &[],
    );
    herald.wait_ready();
    let store = sim.store();
    let mut e = event("down-up", "BackOff", "Warning", "m");
    e["count"] = json!(10);
    store.create("default", e).unwrap();
    herald.wait_metric(OCC, &[], 10.0);
    for count in [3, 12, 20] {
        store
            .patch("default", "down-up", &json!({"count": count}))
            .unwrap();
    }
    herald.wait_metric(OCC, &[], 20.0);
    assert_eq!(sim.truth().occurrences_total, 20, "the truth written out");

    for name in ["same-uid-1", "same-uid-2"] {
        let mut e = event(name, "Pulled", "Normal", "m");
        e["metadata"]["uid"] = json!("forged-uid");
        e["count"] = json!(6);
        store.create("default", e).unwrap();
    }
    herald.wait_metric(OCC, &[], 32.0);
    let mut huge = event("huge", "BackOff", "Warning", "m");
    huge["count"] = json!(4_294_967_295_u64);
    assert!(
        store.create("default", huge).is_err(),
        "refused as an API server does"
    );
    assert_eq!(sim.truth().occurrences_total, 32);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(herald.metric(OCC, &[]), 32.0);
}
