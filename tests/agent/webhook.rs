//! Webhook sink end to end: herald (a child process) watches the simulator and POSTs JSON batches to a local
//! HTTP receiver. Delivery, batching, the per-webhook filter, the signature and bearer token, retries on
//! 5xx/429, no retry on 400, a receiver that is down or slow; every outcome read back from the counters.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::webhook::Receiver;
use common::*;
use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};
use sha2::Sha256;

fn event(name: &str, type_: &str) -> Event {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": name, "namespace": "default", "apiVersion": "v1", "uid": format!("uid-{name}")},
        "reason": format!("Tested{type_}"), "message": format!("{type_} about {name}"), "type": type_, "count": 1,
        "source": {"component": "kubelet", "host": "node-1"},
        "lastTimestamp": jiff::Timestamp::now().to_string(),
    }))
    .unwrap()
}

/// herald with the JSON sink off and `webhooks` as the YAML list under `sinks.webhooks`.
fn config(webhooks: &str) -> String {
    format!(
        "source:\n  events:\n    startup: replay\nsinks:\n  json:\n    enabled: false\n  webhooks:\n{webhooks}"
    )
}

fn hex_hmac(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_delivered_signed_filtered_and_with_a_token() {
    let sim = quiet_sim().await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    let pp = PostParams::default();
    // Created before herald starts and replayed, so they are all waiting when the first batch opens.
    for (name, type_) in [
        ("a", "Normal"),
        ("b", "Warning"),
        ("c", "Normal"),
        ("d", "Warning"),
        ("e", "Warning"),
    ] {
        api.create(&pp, &event(name, type_)).await.unwrap();
    }
    let all = Receiver::start(free_addr()).await;
    let warnings = Receiver::start(free_addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hmac");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-123").unwrap();
    let hooks = format!(
        "    - url: {}\n      batch_size: 3\n      flush_interval: 1s\n      hmac_secret_file: {}\n      bearer_token_file: {}\n    - url: {}\n      filter: {{types: [Warning]}}\n      flush_interval: 200ms\n",
        all.url(),
        secret.display(),
        token.display(),
        warnings.url()
    );
    let herald = start_herald(&sim.url(), &config(&hooks), Stdio::null(), &[]);
    all.wait_records(5).await;
    warnings.wait_records(3).await;

    // Batching: 5 records, batch_size 3.
    let requests = all.requests();
    let sizes: Vec<usize> = requests.iter().map(|r| r.records().len()).collect();
    assert_eq!(sizes, [3, 2]);
    for r in &requests {
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["authorization"], "Bearer tok-123");
        assert_eq!(
            r.headers["x-herald-signature"],
            format!("sha256={}", hex_hmac(b"s3cret", &r.body)),
            "signature over the exact body, secret without its newline"
        );
    }
    // The records carry the JSON line keys.
    let mut names: Vec<String> = all
        .records()
        .iter()
        .map(|r| r["k8s.event.name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
    let b = all
        .records()
        .into_iter()
        .find(|r| r["k8s.event.name"] == "b")
        .unwrap();
    assert_eq!(b["severity_text"], "Warning");
    assert_eq!(b["body"], "Warning about b");
    assert_eq!(b["k8s.object.kind"], "Pod");
    assert_eq!(b["herald.occurrences"], 1);

    // The second webhook's own filter: only Warnings, and no signature or token.
    let mut got: Vec<String> = warnings
        .records()
        .iter()
        .map(|r| r["k8s.event.name"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    assert_eq!(got, ["b", "d", "e"]);
    assert!(
        !warnings.requests()[0]
            .headers
            .contains_key("x-herald-signature")
    );
    assert!(!warnings.requests()[0].headers.contains_key("authorization"));
    herald.wait_metric("herald_sink_sent_total", &[("sink", "webhook:0")], 5.0);
    herald.wait_metric("herald_sink_sent_total", &[("sink", "webhook:1")], 3.0);
    herald.wait_metric("herald_sink_filtered_total", &[("sink", "webhook:1")], 2.0);
    assert_eq!(
        herald.metric("herald_sink_failures_total", &[("sink", "webhook:0")]),
        0.0
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_429_are_retried_a_400_is_not() {
    let sim = quiet_sim().await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    let pp = PostParams::default();
    let rx = Receiver::start(free_addr()).await;
    let hooks = format!(
        "    - url: {}\n      flush_interval: 50ms\n      max_retries: 3\n",
        rx.url()
    );
    let herald = start_herald(&sim.url(), &config(&hooks), Stdio::null(), &[]);
    herald.wait_ready();
    let sink = [("sink", "webhook:0")];

    // 503, then 429 with Retry-After: retried within the budget, delivered once.
    rx.answer_next(&[(503, None), (429, Some(1))]);
    api.create(&pp, &event("retried", "Warning")).await.unwrap();
    rx.wait_records(1).await;
    herald.wait_metric("herald_sink_sent_total", &sink, 1.0);
    assert_eq!(rx.refused(), 2);
    assert_eq!(herald.metric("herald_sink_retries_total", &sink), 2.0);

    // 400: the receiver refuses this batch; not retried, counted as failed, readiness says so.
    rx.answer_next(&[(400, None)]);
    api.create(&pp, &event("refused", "Warning")).await.unwrap();
    herald.wait_metric("herald_sink_failures_total", &sink, 1.0);
    assert_eq!(rx.refused(), 3, "exactly one attempt");
    assert_eq!(herald.metric("herald_sink_retries_total", &sink), 2.0);
    let (status, body) = herald.get("/readyz").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("sink webhook:0: failing"), "{body}");

    // The next batch goes through and the sink is ready again.
    api.create(&pp, &event("after", "Normal")).await.unwrap();
    rx.wait_records(2).await;
    herald.wait_ready();
    let names: Vec<String> = rx
        .records()
        .iter()
        .map(|r| r["k8s.event.name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["retried", "after"]);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_or_slow_costs_only_its_own_records() {
    let sim = quiet_sim().await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    let pp = PostParams::default();
    let addr = free_addr();
    let hooks = format!(
        "    - url: http://{addr}/hook\n      flush_interval: 50ms\n      max_retries: 1\n      timeout: 500ms\n"
    );
    let herald = start_herald(&sim.url(), &config(&hooks), Stdio::null(), &[]);
    herald.wait_ready();
    let sink = [("sink", "webhook:0")];

    // Down: one retry after a connection error, then the batch is counted as failed; herald stays up.
    api.create(&pp, &event("lost-1", "Warning")).await.unwrap();
    herald.wait_metric("herald_sink_failures_total", &sink, 1.0);
    assert_eq!(herald.metric("herald_sink_retries_total", &sink), 1.0);
    assert!(matches!(herald.get("/healthz"), Some((200, _))));

    // Back: the next record is delivered without a restart.
    let rx = Receiver::start(addr).await;
    api.create(&pp, &event("ok-1", "Normal")).await.unwrap();
    rx.wait_records(1).await;
    herald.wait_metric("herald_sink_sent_total", &sink, 1.0);

    // Slow but under the timeout: delivered.
    rx.set_delay(Duration::from_millis(200));
    api.create(&pp, &event("ok-2", "Normal")).await.unwrap();
    rx.wait_records(2).await;
    herald.wait_metric("herald_sink_sent_total", &sink, 2.0);

    // Slower than the timeout: two attempts time out, the batch is counted as failed.
    rx.set_delay(Duration::from_secs(2));
    api.create(&pp, &event("lost-2", "Warning")).await.unwrap();
    herald.wait_metric("herald_sink_failures_total", &sink, 2.0);
    assert_eq!(herald.metric("herald_sink_retries_total", &sink), 2.0);
    rx.set_delay(Duration::ZERO);

    // Every Event was still counted by the metrics sink; nothing else dropped.
    herald.wait_metric("herald_event_occurrences_total", &[], 4.0);
    assert_eq!(
        herald.metric("herald_queue_dropped_total", &[("queue", "metrics")]),
        0.0
    );
    sim.shutdown().await;
}
