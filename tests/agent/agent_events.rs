//! End to end: the simulator serves the Kubernetes API, herald watches it as a separate process through a
//! kubeconfig, and its metrics must match exactly what the test wrote.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Event, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

const OCC: &str = "herald_event_occurrences_total";
const OBJ: &str = "herald_events_total";
const QUIET: &str = "sinks:\n  json:\n    enabled: false\n";

fn event(name: &str, pod: &str, reason: &str, type_: &str, count: i32) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            kind: Some("Pod".into()),
            name: Some(pod.into()),
            namespace: Some("default".into()),
            api_version: Some("v1".into()),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(format!("{reason} for {pod}")),
        type_: Some(type_.into()),
        count: Some(count),
        last_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::now(),
        )),
        ..Event::default()
    }
}

async fn set_count(api: &Api<Event>, name: &str, count: i32) {
    let patch = serde_json::json!({ "count": count });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

fn labels(reason: &str) -> [(&'static str, &str); 3] {
    [
        ("namespace", "default"),
        ("kind", "Pod"),
        ("reason", reason),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn occurrences_follow_counts_exactly() {
    let sim = quiet_sim().await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    let pp = PostParams::default();
    // Baseline: these exist before herald starts.
    api.create(&pp, &event("old-backoff", "web", "BackOff", "Warning", 3))
        .await
        .unwrap();
    api.create(&pp, &event("old-started", "web", "Started", "Normal", 1))
        .await
        .unwrap();
    let truth_before = sim.truth().occurrences_total;

    let herald = start_herald(&sim.url(), QUIET, Stdio::null(), &[]);
    herald.wait_ready();
    assert_eq!(
        herald.metric(OCC, &[]),
        0.0,
        "existing Events are a baseline"
    );

    api.create(&pp, &event("new-pulled", "db", "Pulled", "Normal", 1))
        .await
        .unwrap();
    api.create(&pp, &event("new-failed", "db", "FailedMount", "Warning", 5))
        .await
        .unwrap();
    set_count(&api, "old-backoff", 7).await; // +4
    set_count(&api, "new-pulled", 2).await; // +1
    api.delete("new-failed", &DeleteParams::default())
        .await
        .unwrap(); // +0
    let patch = serde_json::json!({ "message": "same count, new text" });
    api.patch(
        "old-started",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .unwrap(); // +0

    herald.wait_metric("herald_watch_events_total", &[("type", "DELETED")], 1.0);
    herald.wait_metric(OCC, &[], 11.0);
    assert_eq!(herald.metric(OCC, &labels("BackOff")), 4.0);
    assert_eq!(herald.metric(OCC, &labels("Pulled")), 2.0);
    assert_eq!(herald.metric(OCC, &labels("FailedMount")), 5.0);
    assert_eq!(herald.metric(OCC, &labels("Started")), 0.0);
    assert_eq!(herald.metric(OBJ, &[]), 2.0, "two new Event objects");
    assert_eq!(herald.metric(OBJ, &labels("Pulled")), 1.0);
    assert_eq!(
        herald.metric(OCC, &[]),
        (sim.truth().occurrences_total - truth_before) as f64,
        "herald agrees with the simulator's ground truth"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_policy_counts_existing_events_once() {
    let sim = quiet_sim().await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    api.create(
        &PostParams::default(),
        &event("old", "web", "BackOff", "Warning", 3),
    )
    .await
    .unwrap();
    let herald = start_herald(&sim.url(), QUIET, Stdio::null(), &["--startup", "replay"]);
    herald.wait_ready();
    herald.wait_metric(OCC, &labels("BackOff"), 3.0);
    assert_eq!(herald.metric(OBJ, &labels("BackOff")), 1.0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_dedup_are_counted_and_metrics_stay_exact() {
    let sim = quiet_sim().await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    let config = "sinks:\n  json:\n    enabled: false\nfilters:\n  reasons:\n    deny: [Noisy]\n  kinds:\n    deny: [Node]\n";
    let herald = start_herald(&sim.url(), config, Stdio::null(), &[]);
    herald.wait_ready();
    let pp = PostParams::default();
    api.create(&pp, &event("noisy", "web", "Noisy", "Normal", 2))
        .await
        .unwrap();
    let mut node = event("node-event", "node-1", "NodeNotReady", "Normal", 1);
    node.involved_object.kind = Some("Node".into());
    api.create(&pp, &node).await.unwrap();
    // Same pod and reason twice within the dedup window: the second is a duplicate.
    api.create(&pp, &event("unhealthy-1", "web", "Unhealthy", "Warning", 1))
        .await
        .unwrap();
    api.create(&pp, &event("unhealthy-2", "web", "Unhealthy", "Warning", 2))
        .await
        .unwrap();

    herald.wait_metric("herald_pipeline_received_total", &[], 4.0);
    herald.wait_metric(OCC, &labels("Unhealthy"), 3.0);
    assert_eq!(
        herald.metric("herald_pipeline_filtered_total", &[("filter", "reason")]),
        1.0
    );
    assert_eq!(
        herald.metric("herald_pipeline_filtered_total", &[("filter", "kind")]),
        1.0
    );
    assert_eq!(
        herald.metric("herald_pipeline_deduplicated_total", &[]),
        1.0
    );
    assert_eq!(
        herald.metric(OCC, &labels("Noisy")),
        0.0,
        "filtered: not counted"
    );
    sim.shutdown().await;
}

/// A sink that cannot keep up (stdout nobody reads) drops its own records, counted; the metrics sink goes
/// on and stays exact, and herald stays ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sink_queue_drops_for_that_sink_only() {
    let sim = quiet_sim().await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    let config = "sinks:\n  json:\n    queue_capacity: 4\ndedup:\n  enabled: false\n";
    // stdout is a pipe this test never reads: the JSON sink blocks once the pipe buffer is full.
    let herald = start_herald(&sim.url(), config, Stdio::piped(), &[]);
    herald.wait_ready();
    let n = 400;
    let big = "x".repeat(2000);
    for i in 0..n {
        let mut e = event(
            &format!("e{i}"),
            &format!("pod-{i}"),
            "Started",
            "Normal",
            1,
        );
        e.message = Some(big.clone());
        api.create(&PostParams::default(), &e).await.unwrap();
    }
    herald.wait_metric(OCC, &labels("Started"), n as f64);
    let dropped = herald.metric("herald_queue_dropped_total", &[("queue", "json")]);
    assert!(
        dropped > 0.0,
        "the JSON sink must have dropped\n{}",
        herald.metrics()
    );
    assert_eq!(
        herald.metric("herald_queue_dropped_total", &[("queue", "metrics")]),
        0.0
    );
    assert_eq!(
        herald.metric("herald_sink_sent_total", &[("sink", "metrics")]),
        n as f64
    );
    assert!(matches!(herald.get("/healthz"), Some((200, _))));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_v1_api_sees_the_same_occurrences() {
    let sim = quiet_sim().await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    let herald = start_herald(
        &sim.url(),
        QUIET,
        Stdio::null(),
        &["--events-api", "events.k8s.io/v1"],
    );
    herald.wait_ready();
    api.create(
        &PostParams::default(),
        &event("a", "web", "BackOff", "Warning", 2),
    )
    .await
    .unwrap();
    set_count(&api, "a", 5).await;
    herald.wait_metric(OCC, &labels("BackOff"), 5.0);
    assert_eq!(
        herald.metric(
            "herald_watch_events_total",
            &[("resource", "events.events.k8s.io")]
        ),
        2.0
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_api_server_and_sigterm_exits_cleanly() {
    let api_addr = free_addr();
    let mut herald = start_herald(&format!("http://{api_addr}"), QUIET, Stdio::null(), &[]);
    wait_until(Duration::from_secs(10), "/healthz", || {
        matches!(herald.get("/healthz"), Some((200, _)))
    });
    let (status, body) = herald.get("/readyz").unwrap();
    assert_eq!(status, 503);
    assert!(
        body.contains("source events: initial list not done"),
        "{body}"
    );

    wait_until(Duration::from_secs(10), "a failed list", || {
        herald.metric("herald_watch_errors_total", &[("kind", "list")]) >= 1.0
    });

    // The API server comes up: herald lists, watches and becomes ready by itself.
    let sim = quiet_sim_at(api_addr).await;
    herald.wait_ready();

    let status = herald.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_object_is_counted_and_skipped() {
    let sim = quiet_sim().await;
    let herald = start_herald(&sim.url(), QUIET, Stdio::null(), &[]);
    herald.wait_ready();
    // The simulator stores what it is given, like an API server with a broken admission chain would serve.
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client(&sim),
        "default",
        &kube::api::ApiResource::erase::<Event>(&()),
    );
    let bad: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "bad", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web"},
        "reason": "BackOff", "type": "Warning", "count": "three"
    }))
    .unwrap();
    raw.create(&PostParams::default(), &bad).await.unwrap();
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    api.create(
        &PostParams::default(),
        &event("good", "web", "Started", "Normal", 1),
    )
    .await
    .unwrap();
    herald.wait_metric(OCC, &labels("Started"), 1.0);
    assert_eq!(
        herald.metric("herald_invalid_objects_total", &[("reason", "wrong_type")]),
        1.0
    );
    assert_eq!(herald.metric(OCC, &labels("BackOff")), 0.0);
    sim.shutdown().await;
}

/// Before anything happened, every metric family that is not per namespace is exported with HELP, TYPE and a
/// zero sample for the label sets known at start (sinks, watched resources, checkpoint, self-Event reasons), so
/// dashboards and `rate()` alerts show 0 instead of "no data". Families labelled by namespace need an object
/// to have a label set at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_family_is_exported_from_the_start() {
    let sim = quiet_sim().await;
    let herald = start_herald(&sim.url(), QUIET, Stdio::null(), &[]);
    herald.wait_ready();
    let text = herald.metrics();
    let mut missing = Vec::new();
    for def in herald::telemetry::CATALOGUE {
        if def.labels.contains("namespace") {
            continue;
        }
        let typed = text.contains(&format!("# TYPE {} ", def.name));
        let sampled = text.lines().any(|l| {
            l.strip_prefix(def.name).is_some_and(|rest| {
                ["{", " ", "_bucket{", "_count", "_sum"]
                    .iter()
                    .any(|p| rest.starts_with(p))
            })
        });
        if !(typed && sampled) {
            missing.push(def.name);
        }
    }
    assert!(missing.is_empty(), "not exported at start: {missing:?}");
    for (name, labels) in [
        (
            "herald_watch_restarts_total",
            [("resource", "events"), ("reason", "expired")],
        ),
        (
            "herald_sink_retries_total",
            [("sink", "metrics"), ("sink", "metrics")],
        ),
        (
            "herald_checkpoint_failures_total",
            [("checkpoint", "events"), ("checkpoint", "events")],
        ),
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
                && l.ends_with(" 0")),
            "{name} {labels:?} is not at 0:\n{text}"
        );
    }
}
