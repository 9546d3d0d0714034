//! herald's own Kubernetes Events, end to end: herald (a child process) records Events on its Pod through the
//! simulator's events.k8s.io/v1 API; the tests read them back and assert exactly which exist, with their
//! aggregated counts, what the rate limit dropped, and that herald's pipeline left them out.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::webhook::Receiver;
use common::*;
use herald_sim::RunningSim;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};

const POD: [(&str, &str); 2] = [("POD_NAME", "herald-0"), ("POD_NAMESPACE", "default")];

fn core_event(name: &str) -> CoreEvent {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "reason": "Tested", "message": format!("about {name}"), "type": "Warning", "count": 1,
        "source": {"component": "kubelet"},
        "lastTimestamp": jiff::Timestamp::now().to_string(),
    }))
    .unwrap()
}

/// herald's Events in the simulator: `(type, reason, series count, note)`, sorted by reason.
async fn recorded(sim: &RunningSim) -> Vec<(String, String, Option<i32>, String)> {
    let api: Api<Event> = Api::namespaced(client(sim), "default");
    let mut out: Vec<_> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("herald"))
        .map(|e| {
            let regarding = e.regarding.clone().unwrap_or_default();
            assert_eq!(regarding.kind.as_deref(), Some("Pod"));
            assert_eq!(regarding.name.as_deref(), Some("herald-0"));
            assert_eq!(regarding.namespace.as_deref(), Some("default"));
            assert_eq!(e.reporting_instance.as_deref(), Some("herald-0"));
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.series.map(|s| s.count),
                e.note.unwrap_or_default(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

async fn wait_recorded(sim: &RunningSim, reasons: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got: Vec<String> = recorded(sim).await.into_iter().map(|e| e.1).collect();
        if got == reasons {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "recorded {got:?}, wanted {reasons:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_failures_are_recorded_aggregated_and_rate_limited() {
    let sim = quiet_sim().await;
    let api: Api<CoreEvent> = Api::namespaced(client(&sim), "default");
    let pp = PostParams::default();
    let rx = Receiver::start(free_addr()).await;
    let config = format!(
        "sinks:\n  json:\n    enabled: false\n  webhooks:\n    - url: {}\n      flush_interval: 50ms\n      max_retries: 0\nself_events:\n  burst: 2\n  refill_interval: 1h\n",
        rx.url()
    );
    let herald = start_herald_with(&sim.url(), &config, Stdio::null(), &[], &POD);
    herald.wait_ready();
    wait_recorded(&sim, &["Started"]).await;

    // Three outages of the webhook: each one fails a batch, the next batch recovers it.
    let sink = [("sink", "webhook:0")];
    for i in 1..=3 {
        rx.answer_next(&[(500, None)]);
        api.create(&pp, &core_event(&format!("fail-{i}")))
            .await
            .unwrap();
        herald.wait_metric("herald_sink_failures_total", &sink, i as f64);
        api.create(&pp, &core_event(&format!("ok-{i}")))
            .await
            .unwrap();
        herald.wait_metric("herald_sink_sent_total", &sink, i as f64);
    }
    // Burst 2 per reason and message: the third of each is dropped by the rate limit.
    for reason in ["SinkFailing", "SinkRecovered"] {
        let r = |result| [("reason", reason), ("result", result)];
        herald.wait_metric("herald_self_events_total", &r("written"), 2.0);
        herald.wait_metric("herald_self_events_total", &r("rate_limited"), 1.0);
    }
    wait_recorded(&sim, &["SinkFailing", "SinkRecovered", "Started"]).await;
    // The second of each raised the count of the first (one object, series.count 2).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events = recorded(&sim).await;
        if events[0].2 == Some(2) && events[1].2 == Some(2)
            || tokio::time::Instant::now() > deadline
        {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        events,
        [
            (
                "Warning".to_string(),
                "SinkFailing".to_string(),
                Some(2),
                r#"sink webhook:0 cannot deliver records; they are counted in herald_sink_failures_total{sink="webhook:0"}"#.to_string()
            ),
            (
                "Normal".into(),
                "SinkRecovered".into(),
                Some(2),
                "sink webhook:0 delivers records again".into()
            ),
            (
                "Normal".into(),
                "Started".into(),
                None,
                format!(
                    "herald {} started in single mode: watches the cluster's Events",
                    env!("CARGO_PKG_VERSION")
                )
            ),
        ]
    );
    // herald saw its own Events on its watch and left them out; the webhook only got the test's Events.
    assert!(herald.metric("herald_pipeline_filtered_total", &[("filter", "own_event")]) >= 1.0);
    let names: Vec<String> = rx
        .records()
        .iter()
        .map(|r| r["k8s.event.name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["ok-1", "ok-2", "ok-3"]);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemonset_agent_records_that_it_leads_and_drops_start() {
    let sim = quiet_sim().await;
    let api: Api<CoreEvent> = Api::namespaced(client(&sim), "default");
    let pp = PostParams::default();
    let rx = Receiver::start(free_addr()).await;
    rx.set_delay(Duration::from_millis(500));
    let config = format!(
        "mode: daemonset\nleader_election:\n  lease_duration: 3s\n  renew_interval: 200ms\nsinks:\n  json:\n    enabled: false\n  webhooks:\n    - url: {}\n      batch_size: 1\n      queue_capacity: 1\n",
        rx.url()
    );
    let herald = start_herald_with(&sim.url(), &config, Stdio::null(), &[], &POD);
    herald.wait_metric("herald_leader", &[], 1.0);
    herald.wait_ready();
    wait_recorded(&sim, &["BecameLeader", "Started"]).await;

    // A burst into a one-record queue in front of a slow webhook: drops start, recorded once.
    for i in 0..20 {
        api.create(&pp, &core_event(&format!("burst-{i}")))
            .await
            .unwrap();
    }
    wait_until(Duration::from_secs(20), "drops", || {
        herald.metric("herald_queue_dropped_total", &[("queue", "webhook:0")]) > 0.0
    });
    wait_recorded(&sim, &["BecameLeader", "EventsDropped", "Started"]).await;
    let events = recorded(&sim).await;
    assert_eq!(events[0].0, "Normal");
    assert_eq!(
        events[0].3,
        "holds Lease default/herald-leader: watches and exports the cluster-wide Events"
    );
    assert_eq!(events[1].0, "Warning");
    assert!(
        events[1]
            .3
            .starts_with("the queue of sink webhook:0 is full"),
        "{}",
        events[1].3
    );
    assert!(
        events[2].3.ends_with(
            "started in daemonset mode, follower: campaigning for Lease default/herald-leader"
        ),
        "{}",
        events[2].3
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_pod_name_nothing_is_recorded() {
    let sim = quiet_sim().await;
    let herald = start_herald(
        &sim.url(),
        "sinks:\n  json:\n    enabled: false\n",
        Stdio::null(),
        &[],
    );
    herald.wait_ready();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(recorded(&sim).await, []);
    sim.shutdown().await;
}
