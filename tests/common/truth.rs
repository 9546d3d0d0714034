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

/// Wait until the generator is done: `max_events` operations applied and the store quiet.
pub async fn wait_generator_done(sim: &RunningSim, started: Instant, min: Duration) {
    let mut last = sim.truth().resource_version;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = sim.truth().resource_version;
        if now == last && started.elapsed() >= min {
            return;
        }
        assert!(
            started.elapsed() < min + Duration::from_secs(30),
            "the generator did not finish"
        );
        last = now;
    }
}

/// herald's occurrences equal truth minus the baseline: in total, and for every label set.
pub fn assert_exact(herald: &Herald, truth: &Truth, baseline: &Truth) {
    let want_total = truth.occurrences_total - baseline.occurrences_total;
    let mut last = f64::NAN;
    let deadline = Instant::now() + Duration::from_secs(40);
    while Instant::now() < deadline {
        last = herald.metric(OCC, &[]);
        if last == want_total as f64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        last, want_total as f64,
        "herald's occurrences against the ground truth (minus the baseline)"
    );
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
