//! Webhook body formats end to end: herald (a child process) watches the simulator and POSTs each format.
//!
//! - `alertmanager` goes to a real Alertmanager (Debian `prometheus-alertmanager`), whose own API
//!   (`GET /api/v2/alerts`) must then list the Warning Event as an alert with the right labels and times.
//! - `slack` and `teams` go to a local receiver; each body is compared field by field with the request shape
//!   the public documentation gives (Slack: incoming webhooks with Block Kit `text` + `blocks`; Teams:
//!   "Send Adaptive Cards using an Incoming Webhook", a `message` with one
//!   `application/vnd.microsoft.card.adaptive` attachment), written out below, and signed like any body.
//! - `template` renders the user's body per batch and per record; a template that fails is counted.
//! - A reload switches the format of a running webhook; an invalid one is refused.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::webhook::Receiver;
use common::*;
use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use sha2::Sha256;

/// A kubelet-style Warning (herald classes `BackOff` as `medium`, see the README's severity table) that
/// occurred 3 times between `first` and `last`.
fn backoff(first: jiff::Timestamp, last: jiff::Timestamp) -> Event {
    serde_json::from_value(json!({
        "metadata": {"name": "web-1.17a", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default", "apiVersion": "v1", "uid": "uid-web-1"},
        "reason": "BackOff", "message": "Back-off restarting failed container web in pod web-1", "type": "Warning",
        "count": 3, "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": first.to_string(), "lastTimestamp": last.to_string(),
    }))
    .unwrap()
}

fn normal(name: &str) -> Event {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{name}.17b"), "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": name, "namespace": "default", "apiVersion": "v1", "uid": format!("uid-{name}")},
        "reason": "Started", "message": format!("Started container {name}"), "type": "Normal", "count": 1,
        "source": {"component": "kubelet", "host": "node-1"},
        "lastTimestamp": jiff::Timestamp::now().to_string(),
    }))
    .unwrap()
}

/// Whole seconds: the API server keeps Event timestamps to the second.
fn now_s() -> jiff::Timestamp {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap()
}

fn config(webhooks: &str) -> String {
    format!(
        "source:\n  events:\n    startup: replay\nsinks:\n  json:\n    enabled: false\n  webhooks:\n{webhooks}"
    )
}

fn hex_hmac(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

async fn wait_requests(rx: &Receiver, n: usize) -> Vec<common::webhook::Received> {
    rx.wait_requests(n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warning_event_becomes_an_alertmanager_alert() {
    let Some(_) = fixtures::tool(
        &["prometheus-alertmanager", "alertmanager"],
        "prometheus-alertmanager",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A receiver with no integrations: the test reads the alerts back from Alertmanager's API.
    let (_am, am) = prometheus::start_alertmanager(
        dir.path(),
        "route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n",
    );
    wait_until(Duration::from_secs(30), "alertmanager ready", || {
        matches!(http_get(am, "/-/ready"), Some((200, _)))
    });

    let sim = quiet_sim().await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    let pp = PostParams::default();
    let last = now_s();
    let first = last
        .checked_sub(jiff::SignedDuration::from_secs(90))
        .unwrap();
    api.create(&pp, &backoff(first, last)).await.unwrap();
    api.create(&pp, &normal("quiet")).await.unwrap();

    let dir2 = tempfile::tempdir().unwrap();
    let token = dir2.path().join("token");
    std::fs::write(&token, "tok").unwrap();
    let hooks = format!(
        "    - url: http://{am}/api/v2/alerts\n      format: alertmanager\n      alert_resolve_after: 10m\n      \
         filter: {{types: [Warning]}}\n      flush_interval: 200ms\n      bearer_token_file: {}\n",
        token.display()
    );
    let herald = start_herald(&sim.url(), &config(&hooks), Stdio::null(), &[]);
    herald.wait_metric("herald_sink_sent_total", &[("sink", "webhook:0")], 1.0);

    let mut alerts = Value::Null;
    wait_until(Duration::from_secs(20), "the alert listed", || {
        alerts = http_get(am, "/api/v2/alerts")
            .and_then(|(s, b)| (s == 200).then(|| serde_json::from_str(&b).ok())?)
            .unwrap_or(Value::Null);
        alerts.as_array().is_some_and(|a| !a.is_empty())
    });
    let alerts = alerts.as_array().unwrap();
    assert_eq!(alerts.len(), 1, "only the Warning: {alerts:?}");
    let a = &alerts[0];
    // The reference mapping: Event fields → alert labels.
    assert_eq!(
        a["labels"],
        json!({
            "alertname": "BackOff", "namespace": "default", "kind": "Pod", "name": "web-1",
            "severity": "medium", "type": "Warning",
        })
    );
    let ts = |v: &Value| v.as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
    assert_eq!(
        ts(&a["startsAt"]),
        first,
        "startsAt is the first occurrence"
    );
    assert_eq!(
        ts(&a["endsAt"]),
        last.checked_add(jiff::SignedDuration::from_mins(10))
            .unwrap(),
        "endsAt is alert_resolve_after past the last occurrence"
    );
    assert_eq!(a["status"]["state"], "active");
    assert_eq!(
        a["annotations"]["description"],
        "Back-off restarting failed container web in pod web-1"
    );
    assert_eq!(a["annotations"]["count"], "3");
    assert_eq!(
        herald.metric("herald_sink_failures_total", &[("sink", "webhook:0")]),
        0.0
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_and_teams_bodies_have_the_documented_shape_and_are_signed() {
    let sim = quiet_sim().await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    let pp = PostParams::default();
    let last = now_s();
    api.create(&pp, &backoff(last, last)).await.unwrap();

    let slack = Receiver::start(free_addr()).await;
    let teams = Receiver::start(free_addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hmac");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-1").unwrap();
    let auth = format!(
        "      hmac_secret_file: {}\n      bearer_token_file: {}\n      flush_interval: 200ms\n",
        secret.display(),
        token.display()
    );
    let hooks = format!(
        "    - url: {}\n      format: slack\n{auth}    - url: {}\n      format: teams\n{auth}",
        slack.url(),
        teams.url()
    );
    let herald = start_herald(&sim.url(), &config(&hooks), Stdio::null(), &[]);
    let s = wait_requests(&slack, 1).await;
    let t = wait_requests(&teams, 1).await;

    for r in [&s[0], &t[0]] {
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["authorization"], "Bearer tok-1");
        assert_eq!(
            r.headers["x-herald-signature"],
            hex_hmac(b"s3cret", &r.body)
        );
    }

    // Slack incoming webhook: `text` is the notification fallback; `blocks` are Block Kit layout blocks,
    // a `header` (plain_text only) and `section`s with `mrkdwn` text.
    let body: Value = serde_json::from_slice(&s[0].body).unwrap();
    let line = "Warning BackOff on Pod default/web-1 (×3)";
    let msg = "Back-off restarting failed container web in pod web-1";
    assert_eq!(body["text"], format!("{line}: {msg}"));
    assert_eq!(body.as_object().unwrap().len(), 2, "text and blocks only");
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(
        blocks[0],
        json!({"type": "header", "text": {"type": "plain_text", "text": "1 Kubernetes Event"}})
    );
    assert_eq!(blocks[1]["type"], "section");
    assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
    assert_eq!(
        blocks[1]["text"]["text"],
        format!("*Warning* `BackOff` on Pod default/web-1 (×3)\n{msg}")
    );
    assert_eq!(blocks[1].as_object().unwrap().len(), 2);

    // Teams: {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
    // "contentUrl": null, "content": {"$schema": ".../adaptive-card.json", "type": "AdaptiveCard",
    // "version": "1.2", "body": [...]}}]}.
    let body: Value = serde_json::from_slice(&t[0].body).unwrap();
    assert_eq!(body["type"], "message");
    let attachments = body["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 1);
    let a = &attachments[0];
    assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
    assert!(a["contentUrl"].is_null());
    let card = &a["content"];
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.2");
    let items = card["body"].as_array().unwrap();
    assert_eq!(items[0]["type"], "TextBlock");
    assert_eq!(items[0]["text"], "1 Kubernetes Event");
    assert_eq!(items[1]["type"], "Container");
    let inner = items[1]["items"].as_array().unwrap();
    assert_eq!(inner[0]["type"], "TextBlock");
    assert_eq!(inner[0]["text"], line);
    assert_eq!(inner[0]["color"], "Warning");
    assert_eq!(inner[1]["text"], msg);
    assert_eq!(inner[2]["type"], "FactSet");
    assert_eq!(
        inner[2]["facts"],
        json!([
            {"title": "Namespace", "value": "default"},
            {"title": "Object", "value": "Pod web-1"},
            {"title": "Reason", "value": "BackOff"},
            {"title": "Severity", "value": "medium"},
            {"title": "Count", "value": "3"},
        ])
    );
    herald.wait_metric("herald_sink_sent_total", &[("sink", "webhook:1")], 1.0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_render_per_batch_and_per_record_and_failures_are_counted() {
    let sim = quiet_sim().await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    let pp = PostParams::default();
    for name in ["a", "b", "c"] {
        api.create(&pp, &normal(name)).await.unwrap();
    }
    let batch = Receiver::start(free_addr()).await;
    let each = Receiver::start(free_addr()).await;
    let broken = Receiver::start(free_addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hmac");
    std::fs::write(&secret, "k").unwrap();
    // Per batch: a JSON object of the batch; per record: one Slack-like `text` each; and one that fails.
    let hooks = r#"    - url: URL_BATCH
      format: template
      batch_size: 10
      flush_interval: 1s
      template: '{"count": {{ records | length }}, "names": [{% for r in records %}{{ r["k8s.object.name"] | tojson }}{% if not loop.last %},{% endif %}{% endfor %}]}'
    - url: URL_EACH
      format: template
      template_per: record
      hmac_secret_file: SECRET
      template: '{"text": {{ (record["k8s.event.reason"] ~ " " ~ record["k8s.object.name"]) | tojson }}}'
    - url: URL_BROKEN
      format: template
      flush_interval: 200ms
      template: '{{ records | no_such_filter }}'
"#
    .replace("URL_BATCH", &batch.url())
    .replace("URL_EACH", &each.url())
    .replace("URL_BROKEN", &broken.url())
    .replace("SECRET", &secret.display().to_string());
    let herald = start_herald(&sim.url(), &config(&hooks), Stdio::null(), &[]);
    let got = wait_requests(&batch, 1).await;
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["count"], 3);
    let mut names: Vec<&str> = body["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);

    let got = wait_requests(&each, 3).await;
    let mut texts: Vec<String> = got
        .iter()
        .map(|r| {
            assert_eq!(r.headers["x-herald-signature"], hex_hmac(b"k", &r.body));
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            v["text"].as_str().unwrap().to_string()
        })
        .collect();
    texts.sort();
    assert_eq!(texts, ["Started a", "Started b", "Started c"]);

    herald.wait_metric("herald_sink_failures_total", &[("sink", "webhook:2")], 3.0);
    assert!(broken.requests().is_empty(), "a failed render is not sent");
    herald.wait_metric("herald_sink_sent_total", &[("sink", "webhook:1")], 3.0);
    sim.shutdown().await;
}

/// The way a ConfigMap volume changes: a new file renamed over the old one.
fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_switches_the_format_and_refuses_a_template_format_without_template() {
    let sim = quiet_sim().await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    let pp = PostParams::default();
    let rx = Receiver::start(free_addr()).await;
    let with = |extra: &str| {
        format!(
            "reload:\n  poll_interval: 200ms\n{}    - url: {}\n      flush_interval: 50ms\n{extra}",
            config(""),
            rx.url()
        )
    };
    let herald = start_herald(&sim.url(), &with(""), Stdio::null(), &[]);
    herald.wait_ready();
    api.create(&pp, &normal("before")).await.unwrap();
    let got = wait_requests(&rx, 1).await;
    let v: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(v["records"][0]["k8s.object.name"], "before");

    // Refused: the running format stays.
    replace_file(&herald.config_path(), &with("      format: template\n"));
    herald.wait_metric(
        "herald_config_reloads_total",
        &[("result", "rejected")],
        1.0,
    );
    api.create(&pp, &normal("still")).await.unwrap();
    let got = wait_requests(&rx, 2).await;
    let v: Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(v["records"][0]["k8s.object.name"], "still");

    // Applied: the next batch is a Slack message.
    replace_file(&herald.config_path(), &with("      format: slack\n"));
    herald.wait_metric("herald_config_reloads_total", &[("result", "applied")], 1.0);
    api.create(&pp, &normal("after")).await.unwrap();
    let got = wait_requests(&rx, 3).await;
    let v: Value = serde_json::from_slice(&got[2].body).unwrap();
    assert_eq!(
        v["text"],
        "Normal Started on Pod default/after: Started container after"
    );
    assert_eq!(v["blocks"][0]["type"], "header");
    sim.shutdown().await;
}

#[test]
fn an_unknown_format_or_a_missing_template_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, want) in [
        (
            "sinks:\n  webhooks:\n    - url: http://a/\n      format: discord\n",
            "sinks.webhooks[0].format: unknown value",
        ),
        (
            "sinks:\n  webhooks:\n    - url: http://a/\n      format: template\n",
            "sinks.webhooks[0].template: required with format: template",
        ),
    ] {
        let path = dir.path().join("herald.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["config", "check"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
    }
}
