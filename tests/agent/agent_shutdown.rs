//! Shutdown and task supervision, end to end: herald as a real process whose stdout is a pipe nobody reads
//! (the JSON sink blocks on its first line), stopped by signals, and with a task made to die (debug builds
//! only: `HERALD_DEBUG_PANIC_TASK`).

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};

/// A herald process with its stdout on a full pipe nobody reads and its stderr collected.
struct Stuck {
    child: herald_test_support::process::ChildGuard,
    addr: std::net::SocketAddr,
    stderr: Arc<Mutex<String>>,
    _stdout: std::io::PipeReader,
    _dir: tempfile::TempDir,
}

/// Start herald with `config`, stdout a pipe that a thread of this test fills and nobody reads, so every
/// write herald makes to stdout blocks.
fn start_stuck(sim_url: &str, config: &str, env: &[(&str, &str)]) -> Stuck {
    let (reader, writer) = std::io::pipe().unwrap();
    let mut filler = writer.try_clone().unwrap();
    std::thread::spawn(move || {
        // Blocks for good once the pipe is full (whatever its capacity); the thread is left behind.
        let chunk = [b'#'; 4096];
        while filler.write_all(&chunk).is_ok() {}
    });
    std::thread::sleep(Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut child = herald_run(
        Command::new(herald_bin()),
        dir.path(),
        sim_url,
        config,
        addr,
    )
    .env_remove("HERALD_DEBUG_PANIC_TASK")
    .envs(env.iter().copied())
    .stdout(Stdio::from(writer))
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let lines = BufReader::new(child.stderr.take().unwrap());
    let collected = stderr.clone();
    std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            eprintln!("herald: {line}");
            collected.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    Stuck {
        child: herald_test_support::process::ChildGuard(child),
        addr,
        stderr,
        _stdout: reader,
        _dir: dir,
    }
}

impl Stuck {
    fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.addr, path)
    }

    fn wait_ready(&self) {
        wait_until(Duration::from_secs(30), "herald /readyz", || {
            matches!(self.get("/readyz"), Some((200, _)))
        });
    }

    fn signal(&self, name: &str) {
        self.child.signal(name);
    }

    /// The exit status, if herald exits within `limit`.
    fn exited_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.child.exited_within(limit)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

fn event(name: &str) -> Event {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": name, "namespace": "default"},
        "reason": "BackOff", "message": "m", "type": "Warning", "count": 1,
        "lastTimestamp": jiff::Timestamp::now().to_string(),
    }))
    .unwrap()
}

/// Create `n` Events and wait until herald has counted them: the JSON sink then holds lines it cannot write.
async fn feed(sim: &herald_sim::RunningSim, herald: &Stuck, n: usize) {
    let api: Api<Event> = Api::namespaced(client(sim), "default");
    for i in 0..n {
        api.create(&PostParams::default(), &event(&format!("e{i}")))
            .await
            .unwrap();
    }
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(10), "the Events counted", || {
            herald
                .get("/metrics")
                .map(|(_, m)| metric_sum(&m, "herald_event_occurrences_total", &[]))
                == Some(n as f64)
        })
    });
}

/// The JSON sink blocks on stdout for good: SIGTERM still ends herald within `shutdown_timeout` (plus the
/// short grace for the server), and the warning names the queue that was still draining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_holds_the_deadline_while_stdout_blocks_and_names_the_queue() {
    let sim = quiet_sim().await;
    let mut herald = start_stuck(&sim.url(), "shutdown_timeout: 2s\n", &[]);
    tokio::task::block_in_place(|| herald.wait_ready());
    feed(&sim, &herald, 20).await;

    let asked = Instant::now();
    herald.signal("TERM");
    let status = tokio::task::block_in_place(|| herald.exited_within(Duration::from_secs(2 + 3)));
    let took = asked.elapsed();
    let stderr = herald.stderr();
    let status = status.unwrap_or_else(|| panic!("still running {took:?} after SIGTERM\n{stderr}"));
    eprintln!("exited {status} {took:?} after SIGTERM (deadline 2s)");
    assert!(
        took >= Duration::from_secs(2),
        "the JSON sink cannot have drained: {took:?}"
    );
    assert!(
        stderr.contains("shutdown deadline passed") && stderr.contains("queue json ("),
        "the warning must name the JSON queue:\n{stderr}"
    );
    assert!(!stderr.contains("queue metrics ("), "{stderr}");
    sim.shutdown().await;
}

/// A sink whose queue is full (the JSON sink, blocked on stdout, behind a queue of 4) is named on `/readyz` while
/// it drops, and readiness holds: a not-ready pod would leave its Service and take the drop counters with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropping_queue_is_named_on_readyz_without_failing_readiness() {
    let sim = quiet_sim().await;
    let herald = start_stuck(&sim.url(), "sinks:\n  json:\n    queue_capacity: 4\n", &[]);
    tokio::task::block_in_place(|| herald.wait_ready());
    feed(&sim, &herald, 20).await;
    tokio::task::block_in_place(|| {
        wait_until(
            Duration::from_secs(10),
            "/readyz naming the full queue",
            || {
                herald.get("/readyz").is_some_and(|(status, body)| {
                    status == 200 && body.contains("queues: full, dropping records: json")
                })
            },
        )
    });
    let dropped = herald
        .get("/metrics")
        .map(|(_, m)| metric_sum(&m, "herald_queue_dropped_total", &[("queue", "json")]))
        .unwrap_or_default();
    assert!(dropped > 0.0, "the JSON queue of 4 dropped nothing");
    sim.shutdown().await;
}

/// A second signal during a shutdown that cannot finish exits at once (SIGTERM, then SIGINT: 128 + 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let sim = quiet_sim().await;
    let mut herald = start_stuck(&sim.url(), "shutdown_timeout: 60s\n", &[]);
    tokio::task::block_in_place(|| herald.wait_ready());
    feed(&sim, &herald, 20).await;

    herald.signal("TERM");
    tokio::task::block_in_place(|| {
        assert!(
            herald.exited_within(Duration::from_millis(1500)).is_none(),
            "herald exited although its JSON sink cannot drain"
        );
        let asked = Instant::now();
        herald.signal("INT");
        let status = herald.exited_within(Duration::from_secs(1));
        let status = status.unwrap_or_else(|| {
            panic!(
                "still running 1s after the second signal\n{}",
                herald.stderr()
            )
        });
        eprintln!(
            "exited {status} {:?} after the second signal",
            asked.elapsed()
        );
        assert_eq!(status.code(), Some(130));
    });
    sim.shutdown().await;
}

/// A task herald cannot run without dies (here the pipeline, made to panic): `/readyz` fails and names it,
/// the error is logged, and herald stops by itself with a non-zero status within its shutdown deadline
/// (the JSON sink, blocked on stdout, holds the drain until then, which is when `/readyz` is read here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_pipeline_fails_readiness_and_herald_exits_non_zero() {
    let sim = quiet_sim().await;
    let mut herald = start_stuck(
        &sim.url(),
        "shutdown_timeout: 3s\n",
        &[("HERALD_DEBUG_PANIC_TASK", "pipeline@8s")],
    );
    tokio::task::block_in_place(|| herald.wait_ready());
    feed(&sim, &herald, 3).await;

    let mut seen = None;
    tokio::task::block_in_place(|| {
        wait_until(
            Duration::from_secs(15),
            "/readyz to fail",
            || match herald.get("/readyz") {
                Some((503, body)) => {
                    seen = Some(body);
                    true
                }
                _ => false,
            },
        )
    });
    let body = seen.unwrap();
    assert!(
        body.contains(
            "task pipeline: panicked: pipeline: panic asked for by HERALD_DEBUG_PANIC_TASK"
        ),
        "{body}"
    );
    let status = tokio::task::block_in_place(|| herald.exited_within(Duration::from_secs(3 + 3)));
    let stderr = herald.stderr();
    let status = status.unwrap_or_else(|| panic!("herald did not stop by itself\n{stderr}"));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("herald cannot run without it"), "{stderr}");
    assert!(
        stderr.contains("herald: stopped because task pipeline panicked"),
        "{stderr}"
    );
    sim.shutdown().await;
}

/// A task herald can go on without (the metric upkeep) dies: it is logged and shown in `/readyz`, which
/// stays ready, and herald keeps counting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_auxiliary_task_is_reported_and_herald_goes_on() {
    let sim = quiet_sim().await;
    let herald = start_herald_with(
        &sim.url(),
        "sinks:\n  json:\n    enabled: false\n",
        Stdio::null(),
        &[],
        &[("HERALD_DEBUG_PANIC_TASK", "upkeep@1s")],
    );
    tokio::task::block_in_place(|| {
        wait_until(
            Duration::from_secs(30),
            "the upkeep task reported dead",
            || matches!(herald.get("/readyz"), Some((200, body)) if body.contains("task upkeep: panicked")),
        )
    });
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    api.create(&PostParams::default(), &event("after"))
        .await
        .unwrap();
    tokio::task::block_in_place(|| {
        herald.wait_metric("herald_event_occurrences_total", &[], 1.0);
    });
    sim.shutdown().await;
}
