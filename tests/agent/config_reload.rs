//! Live reload end to end: herald (a child process) is given a new configuration file while it runs (the
//! way a ConfigMap volume changes: a new file renamed over the old one) or a SIGHUP; a valid one applies to
//! the next Event without restarting the watches, an invalid one is refused (ConfigRejected Event) and the
//! old one still applies.

use crate::common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::webhook::Receiver;
use common::*;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};

fn event(name: &str, reason: &str) -> CoreEvent {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "reason": reason, "message": format!("about {name}"), "type": "Warning", "count": 1,
        "source": {"component": "kubelet"},
        "lastTimestamp": jiff::Timestamp::now().to_string(),
    }))
    .unwrap()
}

/// The configuration: a webhook to observe what passes, and `deny` as the denied reasons.
fn config(url: &str, deny: &str) -> String {
    format!(
        "reload:\n  poll_interval: 200ms\nfilters:\n  reasons: {{deny: [{deny}]}}\nsinks:\n  json:\n    enabled: false\n  webhooks:\n    - url: {url}\n      flush_interval: 50ms\n"
    )
}

/// Replace the file the way the kubelet updates a ConfigMap volume: write elsewhere, rename over it.
fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn names_after(rx: &Receiver, n: usize) -> Vec<String> {
    rx.wait_records(n).await;
    rx.records()
        .iter()
        .map(|r| r["k8s.event.name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_reload_applies_to_the_next_event_an_invalid_one_is_refused() {
    let sim = quiet_sim().await;
    let api: Api<CoreEvent> = Api::namespaced(client(&sim), "default");
    let pp = PostParams::default();
    let rx = Receiver::start(free_addr()).await;
    let herald = start_herald_with(
        &sim.url(),
        &config(&rx.url(), "Alpha"),
        Stdio::null(),
        &[],
        &[("POD_NAME", "herald-0"), ("POD_NAMESPACE", "default")],
    );
    herald.wait_ready();
    let hash_before = herald.metric("herald_config_hash", &[]);
    assert!(hash_before > 0.0);

    // Alpha is denied, Beta passes.
    api.create(&pp, &event("a-1", "Alpha")).await.unwrap();
    api.create(&pp, &event("b-1", "Beta")).await.unwrap();
    assert_eq!(names_after(&rx, 1).await, ["b-1"]);
    herald.wait_metric(
        "herald_pipeline_filtered_total",
        &[("filter", "reason")],
        1.0,
    );

    // A valid new file: now Beta is denied and Alpha passes, from the next Event on.
    replace_file(&herald.config_path(), &config(&rx.url(), "Beta"));
    herald.wait_metric("herald_config_reloads_total", &[("result", "applied")], 1.0);
    assert_ne!(herald.metric("herald_config_hash", &[]), hash_before);
    api.create(&pp, &event("b-2", "Beta")).await.unwrap();
    api.create(&pp, &event("a-2", "Alpha")).await.unwrap();
    assert_eq!(names_after(&rx, 2).await, ["b-1", "a-2"]);
    herald.wait_metric(
        "herald_pipeline_filtered_total",
        &[("filter", "reason")],
        2.0,
    );

    // An invalid file: refused, recorded as a ConfigRejected Event, the running filter (deny Beta) stays.
    let hash_running = herald.metric("herald_config_hash", &[]);
    replace_file(
        &herald.config_path(),
        &config(&rx.url(), "Alpha").replace("reload:", "filters_typo: 1\nreload:"),
    );
    herald.wait_metric(
        "herald_config_reloads_total",
        &[("result", "rejected")],
        1.0,
    );
    assert_eq!(herald.metric("herald_config_hash", &[]), hash_running);
    api.create(&pp, &event("b-3", "Beta")).await.unwrap();
    api.create(&pp, &event("a-3", "Alpha")).await.unwrap();
    assert_eq!(names_after(&rx, 3).await, ["b-1", "a-2", "a-3"]);
    herald.wait_metric(
        "herald_pipeline_filtered_total",
        &[("filter", "reason")],
        3.0,
    );
    let events: Api<Event> = Api::namespaced(client(&sim), "default");
    let rejected: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ConfigRejected"))
        .map(|e| {
            assert_eq!(e.type_.as_deref(), Some("Warning"));
            e.note.unwrap_or_default()
        })
        .collect();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(
        rejected[0].starts_with("invalid configuration: filters_typo: unknown key"),
        "{}",
        rejected[0]
    );

    // SIGHUP with the file fixed and unchanged since: reloaded (no file change needed), and applied.
    let fixed = config(&rx.url(), "Gamma");
    replace_file(&herald.config_path(), &fixed);
    herald.wait_metric("herald_config_reloads_total", &[("result", "applied")], 2.0);
    herald.child.signal("HUP");
    herald.wait_metric(
        "herald_config_reloads_total",
        &[("result", "unchanged")],
        1.0,
    );
    api.create(&pp, &event("b-4", "Beta")).await.unwrap();
    assert_eq!(names_after(&rx, 4).await, ["b-1", "a-2", "a-3", "b-4"]);
    // The watch was never restarted by any of this.
    assert_eq!(
        herald.metric("herald_watch_restarts_total", &[]),
        0.0,
        "{}",
        herald.metrics()
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    sim.shutdown().await;
}

/// A reload that changes keys a reload cannot apply names each of them in one warning (including
/// `state_dir` and `checkpoint_interval`), applies the rest, and keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_a_reload_cannot_apply_are_named_in_a_warning() {
    use std::io::BufRead;
    let sim = quiet_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let base = "reload:\n  poll_interval: 200ms\nsinks:\n  json:\n    enabled: false\n";
    let mut child = herald_run(
        Command::new(herald_bin()),
        dir.path(),
        &sim.url(),
        base,
        addr,
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    wait_until(Duration::from_secs(20), "herald ready", || {
        http_get(addr, "/readyz").is_some_and(|(status, _)| status == 200)
    });
    let state = dir.path().join("state");
    replace_file(
        &dir.path().join("herald.yaml"),
        &format!(
            "{base}state_dir: {}\ncheckpoint_interval: 7s\nmode: sidecar\nfilters:\n  types: [Warning]\n",
            state.display()
        ),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let warning = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("only after a restart") => break line,
            Ok(_) => {}
            Err(e) => panic!("no restart warning: {e}"),
        }
    };
    for key in ["state_dir", "checkpoint_interval", "mode"] {
        assert!(warning.contains(key), "{key} not named: {warning}");
    }
    assert!(
        !warning.contains("filters"),
        "filters are applied: {warning}"
    );
    let metrics = http_get(addr, "/metrics").unwrap().1;
    assert_eq!(
        metric_sum(
            &metrics,
            "herald_config_reloads_total",
            &[("result", "applied")]
        ),
        1.0,
        "{metrics}"
    );
    let _ = child.kill();
    let _ = child.wait();
    sim.shutdown().await;
}
