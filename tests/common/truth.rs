//! Comparing herald's Event counters with the simulator's ground truth.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use herald_sim::{RunningSim, Truth};

use super::{Herald, metric_sum};

pub const OCC: &str = "herald_event_occurrences_total";

/// The store's resourceVersion: one more for every change the scenario made.
pub fn version(sim: &RunningSim) -> u64 {
    sim.truth().resource_version.parse().unwrap()
}

/// A simulator running the generated scenario (`max_events` operations at `rate`, the first after
/// `start_after`) over a baseline of `baseline` Events written into `dir`, keeping every change for resumes.
pub async fn scenario_sim(
    seed: u64,
    rate: f64,
    max_events: u64,
    start_after: Duration,
    dir: &std::path::Path,
    baseline: usize,
) -> RunningSim {
    let opts = herald_sim::SimOptions {
        seed,
        scenario: Some(herald_sim::ScenarioOptions {
            rate,
            max_events: Some(max_events),
            start_after,
            ..herald_sim::ScenarioOptions::default()
        }),
        load: vec![baseline_file(dir, baseline)],
        history: 1_000_000,
        bookmark_interval: Duration::from_millis(300),
        ..herald_sim::SimOptions::quiet()
    };
    RunningSim::start(opts, super::free_addr()).await.unwrap()
}

/// `count` Events (counts 1..=5) the simulator holds before herald's first list: herald's baseline.
pub fn baseline_file(dir: &std::path::Path, count: usize) -> std::path::PathBuf {
    let items: Vec<serde_json::Value> = (0..count)
        .map(|i| {
            serde_json::json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": format!("old-{i}"), "namespace": "default"},
                "involvedObject": {"kind": "Pod", "name": format!("web-{i}"), "namespace": "default"},
                "reason": "BackOff", "type": "Warning", "message": "Back-off restarting failed container",
                "count": 1 + i % 5,
            })
        })
        .collect();
    let path = dir.join("baseline.json");
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    std::fs::write(&path, serde_json::to_vec(&list).unwrap()).unwrap();
    path
}

pub fn rows(truth: &Truth) -> BTreeMap<(String, String, String, String), u64> {
    truth
        .occurrences
        .iter()
        .map(|r| {
            (
                (
                    r.namespace.clone(),
                    r.kind.clone(),
                    r.reason.clone(),
                    r.type_.clone(),
                ),
                r.count,
            )
        })
        .collect()
}

/// Wait until the generator is done: `min` (the scenario's planned length) has passed and the store has been
/// quiet for a second (two looks 500 ms apart; one look could fall in a pause of a starved generator, which
/// catches up its missed ticks). A generator that falls behind its rate on a loaded machine still moves, so
/// the wait goes on while it does, up to [`super::COUNT_CEILING`] past `min`.
pub async fn wait_generator_done(sim: &RunningSim, started: Instant, min: Duration) {
    let mut last = sim.truth().resource_version;
    let mut quiet = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = sim.truth().resource_version;
        quiet = if now == last { quiet + 1 } else { 0 };
        if quiet >= 2 && started.elapsed() >= min {
            return;
        }
        assert!(
            started.elapsed() < min + super::COUNT_CEILING,
            "the generator did not finish"
        );
        last = now;
    }
}

/// How long herald's total may stand still short of the truth before [`assert_exact`] gives up. After watch
/// faults a watch can sit out its back-off (800 ms doubling to 30 s, or a Retry-After up to 30 s) before it
/// resumes and counts the rest, so anything under 30 s could fail a herald that is only waiting its turn;
/// a herald that lost occurrences stops moving for good and fails after this.
pub const TRUTH_STALLED: Duration = Duration::from_secs(45);

/// herald's occurrences equal truth minus the baseline: in total, and for every label set.
///
/// The total is waited for while it still moves (herald catching up on a loaded machine is slow, not wrong),
/// up to [`super::COUNT_CEILING`]; it fails once it has stood still for [`TRUTH_STALLED`] short of the truth.
pub fn assert_exact(herald: &Herald, truth: &Truth, baseline: &Truth) {
    let want_total = (truth.occurrences_total - baseline.occurrences_total) as f64;
    let waited = super::wait_count(want_total, TRUTH_STALLED, super::COUNT_CEILING, || {
        herald.metric(OCC, &[])
    });
    if let Err(e) = waited {
        panic!(
            "herald's occurrences against the ground truth (minus the baseline), {want_total}: {e}"
        );
    }
    let metrics = herald.metrics();
    let before = rows(baseline);
    for ((ns, kind, reason, type_), count) in rows(truth) {
        let want = count
            - before
                .get(&(ns.clone(), kind.clone(), reason.clone(), type_.clone()))
                .copied()
                .unwrap_or(0);
        let labels = [
            ("namespace", ns.as_str()),
            ("kind", kind.as_str()),
            ("reason", reason.as_str()),
            ("type", type_.as_str()),
        ];
        assert_eq!(
            metric_sum(&metrics, OCC, &labels),
            want as f64,
            "{labels:?}"
        );
    }
}
