//! `/metrics` with 10 000 Event label sets (the cost of a scrape at the series cap).
//!
//! The metrics sink ([`MetricsSink`], the agent's own) records Events for 10 000 distinct
//! `namespace, kind, reason, type` label sets, the default `metrics.max_series_per_metric` and so the most
//! the guard lets through, each in `herald_events_total` and `herald_event_occurrences_total` (20 000
//! series). The bench then times [`Telemetry::render`], which is all `/metrics` does per scrape.
//! `render/empty` (the registry before any Event) and `render/1k_label_sets` are there for comparison.
//!
//! Label values are realistic, not random: 250 namespaces × 40 `kind, reason, type` combinations that
//! Kubernetes' own components emit; counts are seeded pseudo-random (1-40 objects per label set, up to 20
//! occurrences per object).
//!
//! Run with `cargo bench --bench render`; see `BENCHMARKS.md`.

// A test binary: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use herald::config::Config;
use herald::record::EventRecord;
use herald::sink::metrics_sink::MetricsSink;
use herald::telemetry::{self, Telemetry};

/// `kind, reason, type` as Kubernetes' kubelet, scheduler and controllers (and KubeVirt) emit them.
const KIND_REASON_TYPE: [(&str, &str, &str); 40] = [
    ("Pod", "Scheduled", "Normal"),
    ("Pod", "FailedScheduling", "Warning"),
    ("Pod", "Pulling", "Normal"),
    ("Pod", "Pulled", "Normal"),
    ("Pod", "Created", "Normal"),
    ("Pod", "Started", "Normal"),
    ("Pod", "Killing", "Normal"),
    ("Pod", "BackOff", "Warning"),
    ("Pod", "Failed", "Warning"),
    ("Pod", "Unhealthy", "Warning"),
    ("Pod", "FailedMount", "Warning"),
    ("Pod", "FailedAttachVolume", "Warning"),
    ("Pod", "FailedCreatePodSandBox", "Warning"),
    ("Pod", "SandboxChanged", "Normal"),
    ("Pod", "Evicted", "Warning"),
    ("Pod", "Preempted", "Normal"),
    ("Pod", "FailedToRetrieveImagePullSecret", "Warning"),
    ("Pod", "NetworkNotReady", "Warning"),
    ("ReplicaSet", "SuccessfulCreate", "Normal"),
    ("ReplicaSet", "SuccessfulDelete", "Normal"),
    ("ReplicaSet", "FailedCreate", "Warning"),
    ("Deployment", "ScalingReplicaSet", "Normal"),
    ("StatefulSet", "SuccessfulCreate", "Normal"),
    ("StatefulSet", "FailedCreate", "Warning"),
    ("DaemonSet", "SuccessfulCreate", "Normal"),
    ("Job", "SuccessfulCreate", "Normal"),
    ("Job", "Completed", "Normal"),
    ("Job", "BackoffLimitExceeded", "Warning"),
    ("CronJob", "SuccessfulCreate", "Normal"),
    ("CronJob", "SawCompletedJob", "Normal"),
    ("PersistentVolumeClaim", "ProvisioningSucceeded", "Normal"),
    ("PersistentVolumeClaim", "ExternalProvisioning", "Normal"),
    ("PersistentVolumeClaim", "WaitForFirstConsumer", "Normal"),
    ("PersistentVolumeClaim", "ProvisioningFailed", "Warning"),
    ("HorizontalPodAutoscaler", "SuccessfulRescale", "Normal"),
    (
        "HorizontalPodAutoscaler",
        "FailedGetResourceMetric",
        "Warning",
    ),
    ("Service", "EnsuringLoadBalancer", "Normal"),
    ("Endpoints", "FailedToUpdateEndpoint", "Warning"),
    ("VirtualMachineInstance", "SuccessfulCreate", "Normal"),
    ("VirtualMachineInstance", "Migrated", "Normal"),
];

/// Label sets: namespaces × [`KIND_REASON_TYPE`].
const NAMESPACES: usize = 250;

/// Namespace names as clusters have them: system namespaces, then `<team>-<app>-<env>`.
fn namespaces() -> Vec<String> {
    const SYSTEM: [&str; 10] = [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "ingress-nginx",
        "cert-manager",
        "monitoring",
        "argocd",
        "kubevirt",
        "cdi",
        "longhorn-system",
    ];
    const TEAMS: [&str; 8] = [
        "payments", "checkout", "search", "catalog", "identity", "data", "ml", "platform",
    ];
    const APPS: [&str; 10] = [
        "api", "web", "worker", "ingest", "batch", "cache", "gateway", "reports", "sync", "events",
    ];
    const ENVS: [&str; 3] = ["prod", "staging", "dev"];
    let mut names: Vec<String> = SYSTEM.iter().map(|s| (*s).to_owned()).collect();
    'outer: for env in ENVS {
        for team in TEAMS {
            for app in APPS {
                if names.len() == NAMESPACES {
                    break 'outer;
                }
                names.push(format!("{team}-{app}-{env}"));
            }
        }
    }
    assert_eq!(names.len(), NAMESPACES);
    names
}

/// A telemetry registry with `label_sets` Event label sets recorded through the metrics sink.
fn populated(label_sets: usize) -> Arc<Telemetry> {
    let config = Config::default();
    let telemetry = Arc::new(Telemetry::new(&config.metrics));
    let mut sink = MetricsSink::new(telemetry.clone(), config.metrics.max_series_per_metric);
    let mut rng = fastrand::Rng::with_seed(7);
    let namespaces = namespaces();
    let mut n = 0;
    'outer: for ns in &namespaces {
        for (kind, reason, type_) in KIND_REASON_TYPE {
            if n == label_sets {
                break 'outer;
            }
            n += 1;
            let mut r = EventRecord::for_test(ns, kind, "obj", reason, type_);
            for _ in 0..rng.u32(1..=40) {
                r.delta = rng.u32(1..=20);
                sink.record(&r);
            }
        }
    }
    assert_eq!(n, label_sets, "not enough label combinations");
    telemetry
}

/// `VmRSS` and `VmHWM` of this process in KiB (0 where `/proc` is not there), to see what one render
/// allocates on top of the registry.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn render(c: &mut Criterion) {
    let mut g = c.benchmark_group("render");
    for (name, label_sets) in [
        ("empty", 0),
        ("1k_label_sets", 1_000),
        ("10k_label_sets", 10_000),
    ] {
        let telemetry = populated(label_sets);
        let before = memory();
        let text = telemetry.render();
        let after = memory();
        let series = |metric: &str| {
            text.lines()
                .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with('{'))
                .count()
        };
        let (events, occurrences) = (series(telemetry::EVENTS), series(telemetry::OCCURRENCES));
        eprintln!(
            "render/{name}: {} bytes, {} lines; {events} {} and {occurrences} {} series",
            text.len(),
            text.lines().count(),
            telemetry::EVENTS,
            telemetry::OCCURRENCES,
        );
        eprintln!(
            "render/{name}: VmRSS {} -> {} KiB, VmHWM {} -> {} KiB around the first render",
            before.0, after.0, before.1, after.1
        );
        // The sink also registers its `__other__` set up front, so each metric has one series more.
        assert_eq!(events, label_sets + 1, "label sets lost: {text:.2000}");
        assert_eq!(occurrences, label_sets + 1);
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(name, |b| b.iter(|| black_box(telemetry.render())));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .sample_size(20);
    targets = render
}
criterion_main!(benches);
