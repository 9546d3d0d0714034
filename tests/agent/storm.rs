//! An Event storm: a burst of Events written as fast as the simulator's store takes them, against herald
//! configured with small queues. The ingest ring makes the watch wait (nothing lost there), the JSON sink
//! (stdout nobody reads) drops for itself only, counted in `herald_queue_dropped_total{queue="json"}`,
//! herald stays ready throughout, its memory stays bounded, and the occurrence counter equals the truth.

use crate::common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use herald_sim::{RunningSim, SimOptions};
use serde_json::json;

const OCC: &str = "herald_event_occurrences_total";
const DROPPED: &str = "herald_queue_dropped_total";

/// The burst: 10k Events by default, so the test takes seconds in a debug build. `HERALD_STORM_EVENTS=100000`
/// runs the full storm (about 55 s in a debug build on two shared cores, most of it the simulator writing and
/// serialising; exact, one relist after the simulator's watch fell 16k changes behind, peak RSS ~40 MiB).
fn burst() -> u64 {
    std::env::var("HERALD_STORM_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_events_is_counted_exactly_with_small_queues() {
    let t0 = Instant::now();
    let burst = burst();
    let opts = SimOptions {
        // A watch that falls further behind than this gets 410 and herald relists (still exact).
        history: 2 * burst as usize,
        ..SimOptions::quiet()
    };
    let sim = RunningSim::start(opts, free_addr()).await.unwrap();
    // The metrics ring is tiny too: it must make the pipeline wait, never drop (a drop is a lost count).
    let config = "pipeline:\n  ingest_capacity: 64\nsinks:\n  metrics:\n    queue_capacity: 4\n  json:\n    queue_capacity: 16\ndedup:\n  max_entries: 1000\n";
    // stdout is a pipe this test never reads: the JSON sink blocks once the pipe is full, its queue drops.
    let herald = start_herald(&sim.url(), config, Stdio::piped(), &[]);
    let h = &herald;
    tokio::task::block_in_place(|| h.wait_ready());

    let store = sim.store().clone();
    let writer = tokio::task::spawn_blocking(move || {
        for i in 0..burst {
            let ns = ["default", "payments", "batch"][(i % 3) as usize];
            let reason = ["BackOff", "Unhealthy", "Pulled", "FailedMount"][(i % 4) as usize];
            let ev = json!({
                "metadata": {"name": format!("storm-{i}")},
                "involvedObject": {"kind": "Pod", "name": format!("pod-{}", i % 500), "namespace": ns},
                "reason": reason, "type": "Warning", "count": 1 + i % 3,
                "message": "Back-off restarting failed container app",
            });
            store.create(ns, ev).unwrap();
        }
    });

    // Ready the whole time: sampled while the burst is written and while it is processed.
    let mut not_ready = 0;
    let mut samples = 0;
    let mut want = f64::NAN;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        samples += 1;
        if !matches!(herald.get("/readyz"), Some((200, _))) {
            not_ready += 1;
        }
        if writer.is_finished() {
            if want.is_nan() {
                want = sim.truth().occurrences_total as f64;
                eprintln!("storm: {burst} Events written in {:.1?}", t0.elapsed());
            }
            if herald.metric(OCC, &[]) == want {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writer.await.unwrap();
    assert_eq!(
        herald.metric(OCC, &[]),
        want,
        "occurrences against the truth"
    );
    assert_eq!(herald.metric("herald_events_total", &[]), burst as f64);
    assert_eq!(
        not_ready, 0,
        "not ready in {not_ready} of {samples} samples"
    );

    let dropped_json = herald.metric(DROPPED, &[("queue", "json")]);
    assert!(
        dropped_json >= burst as f64 / 2.0,
        "the JSON queue (16, stdout unread) drops: {dropped_json}"
    );
    assert_eq!(
        herald.metric(DROPPED, &[("queue", "metrics")]),
        0.0,
        "the metrics ring (4) makes the pipeline wait, never drops"
    );
    assert_eq!(
        herald.metric(DROPPED, &[("queue", "ingest")]),
        0.0,
        "the ingest ring waits, never drops"
    );
    assert_eq!(
        herald.metric("herald_queue_capacity", &[("queue", "ingest")]),
        64.0
    );
    let rss = peak_rss_kib(herald.child.id());
    eprintln!(
        "storm: {burst} Events ({want} occurrences) counted exactly in {:.1?}; json dropped {dropped_json}; \
         relists {}; herald peak RSS {} MiB",
        t0.elapsed(),
        herald.metric("herald_watch_restarts_total", &[("reason", "expired")]) + 0.0,
        rss / 1024
    );
    assert!(rss < 512 * 1024, "peak RSS {rss} KiB");
    sim.shutdown().await;
}
