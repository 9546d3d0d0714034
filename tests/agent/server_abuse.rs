//! herald's HTTP server under abuse, against a real herald process: hundreds of
//! concurrent `/metrics` scrapes at ~10k series, thousands of connections trickling or overflowing their
//! request header under a 1024 open-file limit, and a bearer-protected `/metrics`. Throughout, a
//! kubelet-like probe asks `/healthz` every 100 ms: every probe must be answered 200, and the kubelet (1 s
//! timeout, 3 failures in a row to restart) must never have reason to restart herald; herald's peak RSS must
//! stay under the manifests' memory limit (256Mi).

use crate::common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The memory limit of the manifests (deploy/examples/single/deployment.yaml).
const MEMORY_LIMIT_KIB: u64 = 256 * 1024;
/// The kubelet's default probe timeout (`timeoutSeconds: 1`): a slower answer counts as a failed probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The kubelet's default `failureThreshold`: this many failed probes in a row restart the container.
const KUBELET_FAILURES_TO_RESTART: usize = 3;
/// How long the prober waits for an answer at all. A probe past [`PROBE_TIMEOUT`] is late (the kubelet would
/// count it failed); one not answered within this, refused, closed or answered other than 200 is lost: herald
/// did not serve it.
const PROBE_GIVE_UP: Duration = Duration::from_secs(10);

fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// herald as a child process, started through `prlimit` when an open-file limit is given, with its stderr
/// collected (to count log lines).
struct Agent {
    child: herald_test_support::process::ChildGuard,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start(api_url: &str, config: &str, nofile: Option<u64>) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let config = config.replace("STATE_DIR", &dir.path().join("state").display().to_string());
        let addr = free_addr();
        let herald = herald_bin();
        let cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(&herald);
                c
            }
            None => Command::new(&herald),
        };
        let mut child = herald_run(cmd, dir.path(), api_url, &config, addr)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("herald: {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Agent {
            child: herald_test_support::process::ChildGuard(child),
            addr,
            log,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn metrics_with(&self, token: Option<&str>) -> String {
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        blocking_request(self.addr, "GET", "/metrics", &auth)
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics_with(None), name, labels)
    }

    /// Wait for `want` while the value still moves (see `common::wait_count`).
    fn wait_metric(&self, name: &str, labels: &[(&str, &str)], want: f64) {
        if let Err(e) = wait_count(want, COUNT_STALLED, COUNT_CEILING, || {
            self.metric(name, labels)
        }) {
            panic!("{name}{labels:?}: wanted {want}, {e}");
        }
    }

    fn wait_ready(&self) {
        wait_until(Duration::from_secs(30), "herald /readyz", || {
            matches!(
                blocking_request(self.addr, "GET", "/readyz", ""),
                Some((200, _))
            )
        });
    }

    fn log_lines(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

/// One HTTP/1.1 request with `Connection: close`; `(status, body)`.
fn blocking_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((
        head.split_whitespace().nth(1)?.parse().ok()?,
        body.to_string(),
    ))
}

/// A kubelet-like prober: `/healthz` every 100 ms, one connection each.
///
/// What the tests claim is the kubelet's view: herald answers every probe while the flood is on, and never
/// gives the kubelet reason to restart it ([`KUBELET_FAILURES_TO_RESTART`] probes in a row past
/// [`PROBE_TIMEOUT`]). A single late answer is not that claim failing: on a 2-core machine that also runs
/// the flood's clients, the prober thread itself and other test binaries, the scheduler alone can hold a
/// probe past 1 s, and the kubelet forgives one. A probe herald does not answer at all, or answers other than
/// 200, fails the test at once, and so do three late ones in a row.
struct Prober {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<ProbeStats>,
}

#[derive(Debug, Default)]
struct ProbeStats {
    probes: usize,
    /// Probes herald did not answer with 200 within [`PROBE_GIVE_UP`].
    lost: Vec<String>,
    /// Probes answered 200, but after [`PROBE_TIMEOUT`].
    late: Vec<Duration>,
    /// The longest run of probes in a row that the kubelet would have counted failed (lost or late).
    worst_run: usize,
    slowest: Duration,
}

impl Prober {
    fn start(addr: SocketAddr) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut stats = ProbeStats::default();
            let mut run = 0;
            while !flag.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let outcome = probe_once(addr);
                let took = t0.elapsed();
                stats.probes += 1;
                stats.slowest = stats.slowest.max(took);
                let failed_for_kubelet = match outcome {
                    Ok(200) if took <= PROBE_TIMEOUT => false,
                    Ok(200) => {
                        stats.late.push(took);
                        true
                    }
                    Ok(status) => {
                        stats.lost.push(format!("status {status} after {took:?}"));
                        true
                    }
                    Err(e) => {
                        stats.lost.push(format!("{e} after {took:?}"));
                        true
                    }
                };
                run = if failed_for_kubelet { run + 1 } else { 0 };
                stats.worst_run = stats.worst_run.max(run);
                std::thread::sleep(Duration::from_millis(100));
            }
            stats
        });
        Prober { stop, thread }
    }

    fn finish(self) -> ProbeStats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn probe_once(addr: SocketAddr) -> std::io::Result<u16> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, PROBE_GIVE_UP)?;
    s.set_read_timeout(Some(PROBE_GIVE_UP))?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: kubelet\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    Ok(text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

fn assert_probes(stats: &ProbeStats, min_probes: usize) {
    eprintln!(
        "probes: {} sent, {} lost, {} late (over {PROBE_TIMEOUT:?}), at most {} in a row failed for the \
         kubelet, slowest {:?}",
        stats.probes,
        stats.lost.len(),
        stats.late.len(),
        stats.worst_run,
        stats.slowest
    );
    assert!(
        stats.probes >= min_probes,
        "too few probes ({}) to say anything",
        stats.probes
    );
    assert!(
        stats.lost.is_empty(),
        "/healthz not answered 200 within {PROBE_GIVE_UP:?}: {:?}",
        stats.lost
    );
    assert!(
        stats.worst_run < KUBELET_FAILURES_TO_RESTART,
        "{} probes in a row missed the kubelet's {PROBE_TIMEOUT:?} timeout (it restarts at \
         {KUBELET_FAILURES_TO_RESTART}); late answers: {:?}",
        stats.worst_run,
        stats.late
    );
}

/// An Event whose reason is unique, so each one is a series of its own in two counters.
fn event(i: usize) -> serde_json::Value {
    json!({
        "metadata": {"name": format!("abuse-{i}")},
        "involvedObject": {"kind": "Pod", "name": format!("pod-{i}"), "namespace": "default"},
        "reason": format!("Reason{i}"), "type": "Warning", "count": 1,
        "message": "many series",
    })
}

/// One raw request on its own connection: the status (0 when the server closed without answering) and
/// the body length.
/// The floods run one at a time: each measures herald's bounds (memory, descriptors, probe latency) and two at
/// once on a 2-core machine would measure each other.
async fn one_flood_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static FLOODS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    FLOODS.lock().await
}

async fn raw_request(addr: SocketAddr, method: &str, path: &str) -> (u16, usize, bool) {
    let go = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    match tokio::time::timeout(Duration::from_secs(40), go).await {
        Ok(Ok(raw)) => {
            let text = String::from_utf8_lossy(&raw);
            let status = text
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
            (status, body.len(), body.contains(r#"reason="Reason4999""#))
        }
        Ok(Err(_)) => (0, 0, false),
        Err(_) => panic!("a {method} {path} hung for 40 s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_concurrent_scrapes_share_renderings_and_stay_under_the_memory_limit() {
    let _one_at_a_time = one_flood_at_a_time().await;
    const SERIES_EVENTS: usize = 5000;
    const SCRAPES: usize = 500;
    const ROUNDS: usize = 3;
    let sim = quiet_sim().await;
    for i in 0..SERIES_EVENTS {
        sim.store().create("default", event(i)).unwrap();
    }
    // `replay`: the preloaded Events count, 5000 series in each of the two Event counters (10k in all).
    let herald = Agent::start(
        &sim.url(),
        "source:\n  events:\n    startup: replay\n",
        None,
    );
    let h = &herald;
    tokio::task::block_in_place(|| {
        h.wait_ready();
        h.wait_metric("herald_events_total", &[], SERIES_EVENTS as f64);
    });
    let rss_before = proc_status(herald.pid(), "VmRSS:");
    let renders_before = herald.metric("herald_metrics_renders_total", &[]);
    let prober = Prober::start(herald.addr);
    let t0 = Instant::now();

    // Three rounds of 500 scrapes at once.
    let (mut complete, mut busy, mut closed) = (0, 0, 0);
    for _ in 0..ROUNDS {
        let scrapes: Vec<_> = (0..SCRAPES)
            .map(|_| tokio::spawn(raw_request(herald.addr, "GET", "/metrics")))
            .collect();
        for s in scrapes {
            match s.await.unwrap() {
                (200, len, true) if len > 100_000 => complete += 1,
                (503, _, _) => busy += 1,
                (0, _, _) => closed += 1,
                other => panic!("unexpected answer to a scrape: {other:?}"),
            }
        }
    }
    let took = t0.elapsed();
    let renders = herald.metric("herald_metrics_renders_total", &[]) - renders_before;

    // HEAD: answered without rendering anything (a rendering per HEAD would be work thrown away).
    let renders_after_burst = herald.metric("herald_metrics_renders_total", &[]);
    let heads: Vec<_> = (0..50)
        .map(|_| tokio::spawn(raw_request(herald.addr, "HEAD", "/metrics")))
        .collect();
    for h in heads {
        assert_eq!(h.await.unwrap(), (200, 0, false), "HEAD /metrics");
    }
    let head_renders = herald.metric("herald_metrics_renders_total", &[]) - renders_after_burst;
    // Keep probing a moment after the burst: the answers may still be draining.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = prober.finish();
    let peak = proc_status(herald.pid(), "VmHWM:");
    let threads = proc_status(herald.pid(), "Threads:");
    eprintln!(
        "{ROUNDS}x{SCRAPES} scrapes in {took:.1?}: {complete} complete, {busy} busy (503), {closed} closed \
         by herald unanswered; {renders} renderings; RSS {rss_before} KiB before, peak {peak} KiB; \
         {threads} threads"
    );

    assert_eq!(complete + busy + closed, ROUNDS * SCRAPES);
    assert_eq!(
        head_renders, 1.0,
        "HEADs rendered (1 is the scrape that read the counter)"
    );
    assert!(
        complete >= 50 * ROUNDS,
        "at least a connection limit's worth of scrapes per round is served in full: {complete}"
    );
    // The renderings are shared: far fewer than the scrapes served (HEADs render nothing; the count
    // includes the scrape that read the counter).
    assert!(
        renders >= 1.0 && renders <= (complete as f64) / 4.0,
        "{renders} renderings for {complete} complete scrapes"
    );
    assert!(
        peak < MEMORY_LIMIT_KIB,
        "peak RSS {peak} KiB over the 256Mi limit"
    );
    assert!(threads < 64, "{threads} threads left after the burst");
    assert_probes(&stats, 5);
    // And herald is still a normal server.
    assert!(
        herald
            .metrics_with(None)
            .contains(r#"herald_events_total{namespace="default",kind="Pod",reason="Reason4999",type="Warning"} 1"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_and_oversized_headers_are_cut_off_and_probes_and_checkpoints_keep_working() {
    let _one_at_a_time = one_flood_at_a_time().await;
    const SLOW: usize = 2000;
    const OVERSIZED: usize = 500;
    let sim = quiet_sim().await;
    // A common default open-file limit (1024); checkpoints on, so their writes need descriptors too.
    let herald = Agent::start(
        &sim.url(),
        "state_dir: STATE_DIR\ncheckpoint_interval: 500ms\n",
        Some(1024),
    );
    let h = &herald;
    tokio::task::block_in_place(|| h.wait_ready());
    let prober = Prober::start(herald.addr);
    let t0 = Instant::now();

    // 500 connections each sending 400 KB of a header that never ends.
    let pad = Arc::new(vec![b'a'; 4096]);
    let oversized: Vec<_> = (0..OVERSIZED)
        .map(|_| {
            let pad = pad.clone();
            let addr = herald.addr;
            tokio::spawn(async move {
                let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                    return None;
                };
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nX-Big: ").await;
                for _ in 0..100 {
                    if s.write_all(&pad).await.is_err() {
                        break;
                    }
                }
                let mut buf = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
                Some(String::from_utf8_lossy(&buf).into_owned())
            })
        })
        .collect();
    let mut refused_431 = 0;
    for o in oversized {
        if let Some(answer) = o.await.unwrap()
            && answer.starts_with("HTTP/1.1 431")
        {
            refused_431 += 1;
        }
    }

    // 2000 connections that start a request header and trickle it a byte a second (slowloris).
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        match tokio::net::TcpStream::connect(herald.addr).await {
            Ok(mut s) => {
                let _ = s
                    .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nX-Slow: ")
                    .await;
                slow.push(s);
            }
            Err(e) => panic!("connect: {e}"),
        }
    }
    // A scrape still gets through while slow connections hold every place (the oldest idle one makes room).
    let scrape =
        tokio::task::block_in_place(|| blocking_request(herald.addr, "GET", "/metrics", ""));
    assert!(
        matches!(&scrape, Some((200, body)) if body.contains("herald_build_info")),
        "a scrape while slow connections hold every place: {scrape:?}"
    );

    // Events keep arriving during the attack; the agent must keep counting and saving them.
    for i in 0..200 {
        sim.store().create("default", event(i)).unwrap();
    }

    // Trickle until every slow connection has been closed by herald (header deadline 10 s, or evicted).
    let mut open: Vec<bool> = vec![true; slow.len()];
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut buf = [0u8; 512];
    while open.iter().any(|o| *o) && Instant::now() < deadline {
        for (i, s) in slow.iter_mut().enumerate() {
            if !open[i] {
                continue;
            }
            let closed = match s.try_read(&mut buf) {
                Ok(0) => true,
                Ok(_) => true, // an answer (408/431) means herald ended it
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => s
                    .try_write(b"a")
                    .is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
                Err(_) => true,
            };
            if closed {
                open[i] = false;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let still_open = open.iter().filter(|o| **o).count();
    let closed_after = t0.elapsed();
    let stats = prober.finish();
    drop(slow);

    let peak = proc_status(herald.pid(), "VmHWM:");
    let truth = sim.truth().occurrences_total as f64;
    tokio::task::block_in_place(|| h.wait_metric("herald_event_occurrences_total", &[], truth));
    let m = herald.metrics_with(None);
    let closed = |reason| {
        metric_sum(
            &m,
            "herald_http_connections_closed_total",
            &[("reason", reason)],
        )
    };
    eprintln!(
        "{SLOW} slow connections all closed after {closed_after:.1?} ({still_open} open); {refused_431} of \
         {OVERSIZED} oversized headers answered 431; closed: evicted {}, header_timeout {}, \
         header_too_large {}, refused {}; peak RSS {peak} KiB; {} accept warnings",
        closed("evicted"),
        closed("header_timeout"),
        closed("header_too_large"),
        closed("refused"),
        herald.log_lines("accept failed"),
    );

    assert_eq!(still_open, 0, "slow connections left open by herald");
    assert!(
        closed("header_too_large") >= 1.0 || refused_431 >= 1,
        "no oversized header was refused as too large"
    );
    assert!(
        closed("evicted") + closed("header_timeout") + closed("refused") >= SLOW as f64,
        "herald's own count of the connections it closed is short of the {SLOW} slow ones"
    );
    // The last ones to arrive held their places until the header deadline (10 s) cut them off.
    assert!(
        closed("header_timeout") >= 64.0,
        "slow connections cut off by the header deadline: {}",
        closed("header_timeout")
    );
    assert!(
        peak < MEMORY_LIMIT_KIB,
        "peak RSS {peak} KiB over the 256Mi limit"
    );
    assert_probes(&stats, 50);
    assert_eq!(
        metric_sum(&m, "herald_checkpoint_failures_total", &[]),
        0.0,
        "checkpoint writes failed during the attack"
    );
    assert!(
        herald.log_lines("accept failed") <= 3,
        "accept errors flooded the log"
    );
}

#[test]
fn metrics_need_the_bearer_token_a_rotated_token_applies_and_probes_stay_open() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(quiet_sim());
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "first-token\n").unwrap();
    let herald = Agent::start(
        &sim.url(),
        &format!(
            "server:\n  metrics_bearer_token_file: {}\n",
            token.display()
        ),
        None,
    );
    herald.wait_ready();
    let get = |headers: &str, path: &str| {
        blocking_request(herald.addr, "GET", path, headers)
            .map(|(status, _)| status)
            .unwrap_or(0)
    };
    assert_eq!(get("", "/metrics"), 401);
    assert_eq!(get("Authorization: Bearer wrong\r\n", "/metrics"), 401);
    assert_eq!(
        get("Authorization: Bearer first-token\r\n", "/metrics"),
        200
    );
    assert!(
        herald
            .metrics_with(Some("first-token"))
            .contains("herald_build_info")
    );
    assert_eq!(get("", "/healthz"), 200);
    assert_eq!(get("", "/readyz"), 200);

    // The Secret is rotated: the next scrape needs the new token, without a restart.
    std::fs::write(&token, "second-token\n").unwrap();
    assert_eq!(
        get("Authorization: Bearer first-token\r\n", "/metrics"),
        401
    );
    let m = herald.metrics_with(Some("second-token"));
    assert_eq!(
        metric_sum(
            &m,
            "herald_http_requests_refused_total",
            &[("reason", "unauthorized")]
        ),
        3.0,
        "the three refused scrapes are counted"
    );

    // A token file that cannot be read stops herald at start, naming the key.
    let dir2 = tempfile::tempdir().unwrap();
    let cfg = dir2.path().join("c.yaml");
    std::fs::write(
        &cfg,
        "server:\n  metrics_bearer_token_file: /nonexistent/token\n",
    )
    .unwrap();
    let kubeconfig = dir2.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_yaml(&sim.url())).unwrap();
    let out = Command::new(herald_bin())
        .arg("run")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--config")
        .arg(&cfg)
        .arg("--listen")
        .arg(free_addr().to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("server.metrics_bearer_token_file: cannot read /nonexistent/token"),
        "{stderr}"
    );
    drop(rt);
}

#[test]
fn a_connection_where_nothing_moves_is_closed_by_the_idle_timeout() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(quiet_sim());
    // A header deadline far away, so only the idle timeout can end the silent connection.
    let herald = Agent::start(
        &sim.url(),
        "server:\n  idle_timeout: 1s\n  header_read_timeout: 60s\n",
        None,
    );
    herald.wait_ready();
    let mut silent = std::net::TcpStream::connect(herald.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let n = silent.read(&mut buf).unwrap_or(0);
    let took = t0.elapsed();
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "closed after {took:?}, idle_timeout is 1s"
    );
    assert!(
        herald.metric(
            "herald_http_connections_closed_total",
            &[("reason", "idle_timeout")]
        ) >= 1.0
    );
    drop(rt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_never_take_more_than_half_the_open_file_limit() {
    let _one_at_a_time = one_flood_at_a_time().await;
    const NOFILE: u64 = 128;
    let sim = quiet_sim().await;
    // Asks for far more connections than the descriptors allow.
    let herald = Agent::start(
        &sim.url(),
        "server:\n  max_connections: 5000\nstate_dir: STATE_DIR\ncheckpoint_interval: 500ms\n",
        Some(NOFILE),
    );
    let h = &herald;
    tokio::task::block_in_place(|| h.wait_ready());
    let prober = Prober::start(herald.addr);
    let mut idle = Vec::new();
    for _ in 0..1000 {
        if let Ok(s) = tokio::net::TcpStream::connect(herald.addr).await {
            idle.push(s);
        }
    }
    for i in 0..50 {
        sim.store().create("default", event(i)).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fds = std::fs::read_dir(format!("/proc/{}/fd", herald.pid()))
        .map(|d| d.count())
        .unwrap_or(0);
    let stats = prober.finish();
    let truth = sim.truth().occurrences_total as f64;
    tokio::task::block_in_place(|| h.wait_metric("herald_event_occurrences_total", &[], truth));
    let m = herald.metrics_with(None);
    let held = metric_sum(&m, "herald_http_connections", &[]);
    eprintln!(
        "1000 idle connections under an open-file limit of {NOFILE}: herald holds {held} connections, \
         {fds} descriptors in all"
    );
    assert!(
        held <= (NOFILE / 2) as f64,
        "{held} connections held under an open-file limit of {NOFILE}"
    );
    assert!(
        (fds as u64) < NOFILE,
        "{fds} descriptors open: the limit was reached"
    );
    assert_eq!(herald.log_lines("accept failed"), 0);
    assert_eq!(metric_sum(&m, "herald_checkpoint_failures_total", &[]), 0.0);
    assert_probes(&stats, 10);
    drop(idle);
}
