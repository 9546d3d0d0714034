//! OTLP export end to end: herald (a child process) watches the simulator and exports to a real OTLP receiver
//! that decodes the protobuf over gRPC or HTTP. Asserts the exact record shape from real Events, severity
//! mapping, grouping, gzip and headers, and the behaviour when the receiver is down, slow or refusing.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::otlp::{Answer, Attr, Receiver};
use common::*;
use herald::sim::{RunningSim, SimOptions};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};

/// herald's configuration for these tests; `extra` is more `sinks.otlp` keys (batch_interval defaults to 50ms).
fn otlp_config(endpoint: &str, protocol: &str, extra: &str) -> String {
    let interval = if extra.contains("batch_interval") {
        ""
    } else {
        "    batch_interval: 50ms\n"
    };
    format!(
        "source:\n  events:\n    startup: replay\nsinks:\n  json:\n    enabled: false\n  otlp:\n    endpoint: {endpoint}\n    protocol: {protocol}\n{interval}{extra}"
    )
}

fn event(name: &str, pod: &str, type_: &str) -> Event {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": "default", "apiVersion": "v1", "uid": format!("uid-{pod}"), "resourceVersion": "7"},
        "reason": format!("Tested{type_}"), "message": format!("{type_} about {pod}"), "type": type_, "count": 1,
        "source": {"component": "kubelet", "host": "node-1"},
        "lastTimestamp": jiff::Timestamp::now().to_string(),
    }))
    .unwrap()
}

async fn wait_records(rx: &Receiver, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while rx.records().len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "receiver got {} records, wanted {n}",
            rx.records().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_events_arrive_in_the_k8seventsreceiver_shape() {
    let Some(dir) = fixtures() else { return };
    let file = dir.join("events/aks-2024-FailedToRetrieveImagePullSecret-count5.json");
    let sim = RunningSim::start(
        SimOptions {
            load: vec![file],
            ..SimOptions::quiet()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    let rx = Receiver::start(true, SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let config = otlp_config(&rx.url(), "grpc", "    cluster_name: test-cluster\n");
    let _herald = start_herald_with(
        &sim.url(),
        &config,
        Stdio::null(),
        &[],
        &[("NODE_NAME", "agent-node")],
    );
    wait_records(&rx, 1).await;

    let records = rx.records();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    let s = |v: &str| Attr::Str(v.to_string());
    let want_resource = [
        ("k8s.node.name", s("aks-workflows-32391530-vmss00001y")),
        ("k8s.object.kind", s("Pod")),
        (
            "k8s.object.name",
            s("int-test-n2ks5-load-data-task-1523472675"),
        ),
        ("k8s.object.uid", s("d5acbba9-0fde-4877-a316-38f4a5a6c6d4")),
        ("k8s.object.fieldpath", s("")),
        ("k8s.object.api_version", s("v1")),
        ("k8s.object.resource_version", s("46340686")),
        ("service.name", s("herald")),
        ("service.version", s(env!("CARGO_PKG_VERSION"))),
        ("k8s.cluster.name", s("test-cluster")),
        ("herald.agent.node", s("agent-node")),
    ];
    assert_eq!(
        r.resource,
        want_resource
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    );

    let fingerprint = r.str("herald.fingerprint").to_string();
    assert_eq!(fingerprint.len(), 16);
    let want_attributes = [
        ("k8s.event.reason", s("FailedToRetrieveImagePullSecret")),
        ("k8s.event.action", s("")),
        ("k8s.event.start_time", s("2024-12-02 10:12:36 +0000 UTC")),
        (
            "k8s.event.name",
            s("int-test-n2ks5-load-data-task-1523472675.180d5483c57d4415"),
        ),
        ("k8s.event.uid", s("34f7aede-fd67-4fa8-b539-88be87c8206a")),
        ("k8s.namespace.name", s("testing")),
        ("k8s.event.count", Attr::Int(5)),
        ("k8s.event.namespace", s("testing")),
        ("k8s.event.api_version", s("v1")),
        ("k8s.event.reporting_controller", s("kubelet")),
        (
            "k8s.event.reporting_instance",
            s("aks-workflows-32391530-vmss00001y"),
        ),
        ("herald.occurrences", Attr::Int(5)),
        ("herald.severity", s("low")),
        ("herald.repeated", Attr::Bool(false)),
        ("herald.fingerprint", s(&fingerprint)),
    ];
    assert_eq!(
        r.attributes,
        want_attributes
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    );
    let last: jiff::Timestamp = "2024-12-02T10:13:09Z".parse().unwrap();
    assert_eq!(r.record.time_unix_nano, last.as_nanosecond() as u64);
    assert!(r.record.observed_time_unix_nano > r.record.time_unix_nano);
    assert_eq!(r.record.severity_text, "Warning");
    assert_eq!(r.record.severity_number, 13);
    assert_eq!(
        r.body(),
        "Unable to retrieve some image pull secrets (fitfile-image-pull-secret); attempting to pull the image may not succeed."
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_with_gzip_headers_severities_and_grouping() {
    let sim = quiet_sim().await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    let pp = PostParams::default();
    // Created before herald starts and replayed, so they arrive in one batch.
    for (name, pod, type_) in [
        ("a-normal", "web", "Normal"),
        ("b-warning", "web", "Warning"),
        ("c-error", "db", "Error"),
        ("d-critical", "db", "Critical"),
        ("e-other", "db", "Unusual"),
    ] {
        api.create(&pp, &event(name, pod, type_)).await.unwrap();
    }
    let rx = Receiver::start(false, SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let dir = tempfile::tempdir().unwrap();
    let headers_file = dir.path().join("token");
    std::fs::write(&headers_file, "authorization=Bearer from-file\n").unwrap();
    let extra = format!(
        "    compression: gzip\n    batch_interval: 1s\n    headers_file: {}\n    headers: {{X-Scope-OrgID: team-a}}\n",
        headers_file.display()
    );
    let config = otlp_config(&rx.url(), "http/protobuf", &extra);
    let _herald = start_herald_with(
        &sim.url(),
        &config,
        Stdio::null(),
        &[],
        &[("OTEL_EXPORTER_OTLP_HEADERS", "x-extra=from%20env")],
    );
    wait_records(&rx, 5).await;

    let requests = rx.requests();
    assert_eq!(requests.len(), 1, "one batch");
    let req = &requests[0];
    assert!(req.gzip);
    assert_eq!(req.headers["authorization"], "Bearer from-file");
    assert_eq!(req.headers["x-scope-orgid"], "team-a");
    assert_eq!(req.headers["x-extra"], "from env");
    // Two involved objects: two resources.
    assert_eq!(req.request.resource_logs.len(), 2);
    let severities: Vec<(String, i32)> = rx
        .records()
        .iter()
        .map(|r| (r.record.severity_text.clone(), r.record.severity_number))
        .collect();
    for want in [
        ("Normal", 9),
        ("Warning", 13),
        ("Error", 17),
        ("Critical", 21),
        ("Unusual", 0),
    ] {
        assert!(
            severities.contains(&(want.0.to_string(), want.1)),
            "{severities:?}"
        );
    }
    sim.shutdown().await;
}

/// Down at start, refusing with UNAVAILABLE and 429, going down mid-stream, slow: herald never crashes,
/// counts what it could not deliver, and recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_and_refusals_are_retried_counted_and_recovered() {
    for grpc in [true, false] {
        let sim = quiet_sim().await;
        let api: Api<Event> = Api::namespaced(client(&sim), "default");
        let pp = PostParams::default();
        let addr = free_addr();
        let protocol = if grpc { "grpc" } else { "http/protobuf" };
        let config = otlp_config(
            &format!("http://{addr}"),
            protocol,
            "    max_retries: 2\n    timeout: 1s\n",
        );
        let herald = start_herald(&sim.url(), &config, Stdio::null(), &[]);
        let sink = [("sink", "otlp")];

        // Each record is about its own pod, so none is a duplicate of another.
        // Down at start: retries, then the batch is counted as failed; herald stays up.
        api.create(&pp, &event("lost-1", "lost-1", "Warning"))
            .await
            .unwrap();
        wait_until(Duration::from_secs(20), "failure counted", || {
            herald.metric("herald_sink_failures_total", &sink) == 1.0
        });
        assert!(herald.metric("herald_sink_retries_total", &sink) >= 2.0);
        assert!(matches!(herald.get("/healthz"), Some((200, _))));

        // The collector comes up: the next record is delivered without a restart.
        let mut rx = Receiver::start(grpc, addr).await;
        api.create(&pp, &event("ok-1", "ok-1", "Normal"))
            .await
            .unwrap();
        wait_records(&rx, 1).await;
        herald.wait_metric("herald_sink_sent_total", &sink, 1.0);
        herald.wait_ready();

        // UNAVAILABLE then 429 (Retry-After 1s): retried within the budget, delivered once.
        rx.answer_next(&[Answer::Unavailable, Answer::TooMany { retry_after: 1 }]);
        api.create(&pp, &event("ok-2", "ok-2", "Normal"))
            .await
            .unwrap();
        wait_records(&rx, 2).await;
        herald.wait_metric("herald_sink_sent_total", &sink, 2.0);
        assert_eq!(rx.refused(), 2);

        // Slow collector (under the timeout): delivered.
        *rx.state.delay.lock().unwrap() = Duration::from_millis(300);
        api.create(&pp, &event("ok-3", "ok-3", "Normal"))
            .await
            .unwrap();
        wait_records(&rx, 3).await;
        *rx.state.delay.lock().unwrap() = Duration::ZERO;

        // Down mid-stream: counted as failed, then recovers when it is back.
        rx.stop().await;
        api.create(&pp, &event("lost-2", "lost-2", "Warning"))
            .await
            .unwrap();
        wait_until(Duration::from_secs(20), "second failure counted", || {
            herald.metric("herald_sink_failures_total", &sink) == 2.0
        });
        let rx = Receiver::start_with(grpc, addr, rx.state.clone()).await;
        api.create(&pp, &event("ok-4", "ok-4", "Normal"))
            .await
            .unwrap();
        wait_records(&rx, 4).await;
        herald.wait_metric("herald_sink_sent_total", &sink, 4.0);
        let names: Vec<String> = rx
            .records()
            .iter()
            .map(|r| r.str("k8s.event.name").to_string())
            .collect();
        assert_eq!(names, ["ok-1", "ok-2", "ok-3", "ok-4"], "{protocol}");
        // The other sinks never noticed.
        assert_eq!(
            herald.metric("herald_queue_dropped_total", &[("queue", "metrics")]),
            0.0
        );
        assert_eq!(herald.metric("herald_event_occurrences_total", &[]), 6.0);
        sim.shutdown().await;
    }
}

/// events.k8s.io/v1 fills the same keys from `note`, `regarding`, `reportingController` and `eventTime`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_v1_fill_the_same_keys() {
    let Some(dir) = fixtures() else { return };
    let file = dir.join("events-v1/otel-k8seventsreceiver-e2e-testobject-event.yaml");
    let sim = RunningSim::start(
        SimOptions {
            load: vec![file],
            ..SimOptions::quiet()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    let rx = Receiver::start(true, SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let config = otlp_config(&rx.url(), "grpc", "");
    let _herald = start_herald(
        &sim.url(),
        &config,
        Stdio::null(),
        &["--events-api", "events.k8s.io/v1"],
    );
    wait_records(&rx, 1).await;
    let r = &rx.records()[0];
    assert_eq!(r.body(), "Test event for k8seventsreceiver e2e testing");
    assert_eq!(r.str("k8s.event.reason"), "TestEvent");
    assert_eq!(r.str("k8s.event.action"), "TestEvent");
    assert_eq!(r.str("k8s.event.name"), "test-k8sevents-receiver");
    assert_eq!(r.str("k8s.namespace.name"), "test-k8sevents-e2e");
    assert_eq!(r.str("k8s.event.api_version"), "events.k8s.io/v1");
    assert_eq!(r.str("k8s.event.reporting_controller"), "e2etest");
    assert_eq!(r.str("k8s.event.reporting_instance"), "test-node");
    assert_eq!(r.str("k8s.object.kind"), "Pod");
    assert_eq!(
        r.str("k8s.object.uid"),
        "fb799e35-7187-4a02-a07d-0f1fa4153b99"
    );
    assert_eq!(r.record.severity_number, 9);
    let t: jiff::Timestamp = "2099-01-01T00:00:00Z".parse().unwrap();
    assert_eq!(r.record.time_unix_nano, t.as_nanosecond() as u64);
    sim.shutdown().await;
}

/// `log.otlp: true` also sends herald's own diagnostics, under the scope `herald.diagnostics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_diagnostics_can_go_to_the_collector_too() {
    let sim = quiet_sim().await;
    let rx = Receiver::start(true, SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let config = format!("{}log:\n  otlp: true\n", otlp_config(&rx.url(), "grpc", ""));
    let _herald = start_herald_with(
        &sim.url(),
        &config,
        Stdio::null(),
        &[],
        &[("HERALD_LOG_LEVEL", "info")],
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let started = rx.requests().iter().any(|req| {
            req.request.resource_logs.iter().flat_map(|r| &r.scope_logs).any(|s| {
                s.scope.as_ref().is_some_and(|sc| sc.name == "herald.diagnostics")
                    && s.log_records.iter().any(|l| {
                        l.severity_text == "INFO"
                            && matches!(&l.body, Some(b) if format!("{b:?}").contains("herald started"))
                    })
            })
        });
        if started {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no diagnostics arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sim.shutdown().await;
}
