//! Redaction end to end: one real herald per credential shape, against the simulator, reading what its JSON
//! sink writes (the same record reaches OTLP and webhooks). Each test names the secret that must be gone and
//! the exact text that must be left, written out here rather than taken from herald's rules; and the
//! credentials of a sink URL: sent as Basic authorization, never in herald's logs.

use crate::common;

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// An Event about a Pod, with this message and reason.
fn event(name: &str, reason: &str, message: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default", "apiVersion": "v1"},
        "reason": reason, "type": "Warning", "message": message, "count": 1,
        "source": {"component": "kubelet", "host": "node-1"},
    })
}

/// Run herald with the default redaction, write `object`, and return herald's JSON line for it and a
/// scrape of its /metrics taken after the line was written.
async fn through_herald(object: Value) -> (Value, String) {
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    let sim = quiet_sim().await;
    let mut herald = start_herald(
        &sim.url(),
        "dedup:\n  enabled: false\n",
        Stdio::piped(),
        &[],
    );
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stdout = herald.child.stdout.take().unwrap();
    let out = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            out.lock().unwrap().push(line);
        }
    });
    herald.wait_ready();
    sim.store().create("default", object).unwrap();
    let mut found = None;
    wait_until(Duration::from_secs(15), "the JSON line", || {
        found = lines.lock().unwrap().iter().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["k8s.event.name"] == name.as_str()).then_some(v)
        });
        found.is_some()
    });
    herald.wait_metric("herald_pipeline_redacted_total", &[], 1.0);
    herald.wait_metric("herald_event_occurrences_total", &[], 1.0);
    let metrics = herald.metrics();
    (found.unwrap(), metrics)
}

/// The message of `object` comes out as `want`, and `secret` is nowhere in the line or on /metrics.
async fn assert_message(object: Value, secret: &str, want: &str) {
    let (line, metrics) = through_herald(object).await;
    assert_eq!(line["body"], want);
    let text = line.to_string();
    assert!(!text.contains(secret), "{secret} leaked: {text}");
    assert!(!metrics.contains(secret), "{secret} on /metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_access_key_ids() {
    assert_message(
        event(
            "aws",
            "FailedMount",
            "sts: AKIAIOSFODNN7EXAMPLE is not authorized",
        ),
        "AKIAIOSFODNN7EXAMPLE",
        "sts: [REDACTED] is not authorized",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_password_values() {
    assert_message(
        event(
            "json",
            "Failed",
            r#"bad config {"user":"admin","password":"x9hunter2"}"#,
        ),
        "x9hunter2",
        r#"bad config {"user":"admin","password":"[REDACTED]"}"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_authorization_headers() {
    assert_message(
        event(
            "basic",
            "Unhealthy",
            "probe sent Authorization: Basic YWRtaW46UzNjcmV0UFc= and got 401",
        ),
        "YWRtaW46UzNjcmV0UFc",
        "probe sent Authorization: Basic [REDACTED] and got 401",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens() {
    assert_message(
        event(
            "bearer",
            "Unhealthy",
            "GET failed: Authorization: Bearer sk-live-0123456789abcdef",
        ),
        "sk-live-0123456789abcdef",
        "GET failed: Authorization: Bearer [REDACTED]",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_urls() {
    assert_message(
        event(
            "url",
            "Failed",
            "pull https://admin:S3cretPW@registry.example.com/v2/app failed",
        ),
        "S3cretPW",
        "pull https://[REDACTED]@registry.example.com/v2/app failed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_in_query_strings() {
    assert_message(
        event(
            "apikey",
            "Failed",
            "GET /v1/data?api_key=abcd1234efgh&page=2 returned 403",
        ),
        "abcd1234efgh",
        "GET /v1/data?api_key=[REDACTED]&page=2 returned 403",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pem_private_keys() {
    assert_message(
        event(
            "pem",
            "Failed",
            "tls: -----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkXyZ1\n-----END EC PRIVATE KEY----- rejected",
        ),
        "MHcCAQEEIBkXyZ1",
        "tls: [REDACTED PRIVATE KEY] rejected",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_tokens() {
    assert_message(
        event(
            "github",
            "Failed",
            "clone with ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 failed",
        ),
        "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        "clone with [REDACTED] failed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_jwts() {
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    assert_message(
        event(
            "jwt",
            "Failed",
            &format!("webhook rejected {jwt} as expired"),
        ),
        "eyJzdWIiOiIxMjM0NTY3ODkwIn0",
        "webhook rejected [REDACTED] as expired",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_in_the_reason_reach_neither_sinks_nor_labels() {
    let (line, metrics) = through_herald(event("reason", "password=hunter2", "login failed")).await;
    assert_eq!(line["k8s.event.reason"], "password=[REDACTED]");
    assert!(!line.to_string().contains("hunter2"));
    assert!(!metrics.contains("hunter2"), "{metrics}");
    assert_eq!(
        metric_sum(
            &metrics,
            "herald_event_occurrences_total",
            &[("reason", "password=[REDACTED]")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_named_only_as_the_related_object_drops_the_message() {
    let mut e = event(
        "related",
        "Failed",
        "could not decode data: c2VjcmV0LXZhbHVl",
    );
    e["related"] =
        json!({"kind": "Secret", "name": "db", "namespace": "default", "apiVersion": "v1"});
    assert_message(e, "c2VjcmV0LXZhbHVl", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_about_a_sealed_secret_drop_the_message() {
    let mut e = event(
        "sealed",
        "ErrUnsealFailed",
        "decrypted value c2VjcmV0LXZhbHVl",
    );
    e["involvedObject"]["kind"] = json!("SealedSecret");
    assert_message(e, "c2VjcmV0LXZhbHVl", "").await;
}

/// A webhook URL with a user:password and an api_key: the receiver gets Basic authorization, and herald's
/// failure log shows neither the password nor the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_url_credentials_are_sent_as_basic_auth_and_never_logged() {
    let sim = quiet_sim().await;
    let receiver = common::webhook::Receiver::start(free_addr()).await;
    // The first request refused: herald logs the delivery failure with the URL, then its recovery.
    receiver.answer_next(&[(400, None)]);
    let config = format!(
        "dedup:\n  enabled: false\nsinks:\n  json:\n    enabled: false\n  webhooks:\n    - url: http://admin:S3cretPW@{}/in?api_key=k3yV4lue\n      flush_interval: 100ms\n      max_retries: 0\nlog:\n  format: text\n",
        receiver.addr
    );
    let (mut child, log, _dir) = spawn_logging(&sim.url(), &config);
    sim.store()
        .create("default", event("hook", "Failed", "m"))
        .unwrap();
    wait_until(Duration::from_secs(15), "the failure logged", || {
        log.lock().unwrap().contains("webhook delivery failed")
    });
    sim.store()
        .create("default", event("hook-2", "Failed", "m"))
        .unwrap();
    receiver.wait_records(1).await;
    wait_until(Duration::from_secs(15), "the recovery logged", || {
        log.lock().unwrap().contains("webhook delivery recovered")
    });
    let _ = child.kill();
    let _ = child.wait();
    let log = log.lock().unwrap().clone();
    assert!(!log.contains("S3cretPW"), "the password leaked: {log}");
    assert!(!log.contains("k3yV4lue"), "the api_key leaked: {log}");
    assert!(
        log.contains("[REDACTED]@"),
        "the URL is still recognisable: {log}"
    );
    let received = receiver.requests();
    let first = received.first().expect("the receiver took the second POST");
    // base64("admin:S3cretPW")
    assert_eq!(
        first.headers.get("authorization").map(String::as_str),
        Some("Basic YWRtaW46UzNjcmV0UFc=")
    );
}

/// herald at `api_url` with `config`, its stderr (debug level) collected as text, ready.
fn spawn_logging(
    api_url: &str,
    config: &str,
) -> (std::process::Child, Arc<Mutex<String>>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_yaml(api_url)).unwrap();
    let config_path = dir.path().join("herald.yaml");
    std::fs::write(&config_path, config).unwrap();
    let addr = free_addr();
    let mut child = std::process::Command::new(herald_bin())
        .args(["run", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--config")
        .arg(&config_path)
        .args(["--listen", &addr.to_string()])
        .env("HERALD_LOG_LEVEL", "debug")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    wait_until(Duration::from_secs(15), "herald ready", || {
        http_get(addr, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    (child, log, dir)
}

/// The OTLP endpoint's user:password: sent as Basic authorization, absent from the failure log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_endpoint_credentials_are_sent_as_basic_auth_and_never_logged() {
    let sim = quiet_sim().await;
    let receiver = common::otlp::Receiver::start(false, free_addr()).await;
    receiver.answer_next(&[common::otlp::Answer::Unavailable]);
    let config = format!(
        "dedup:\n  enabled: false\nsinks:\n  json:\n    enabled: false\n  otlp:\n    endpoint: http://admin:S3cretPW@{}\n    protocol: http/protobuf\n    batch_interval: 100ms\n    max_retries: 0\nlog:\n  format: text\n",
        receiver.addr
    );
    let (mut child, log, _dir) = spawn_logging(&sim.url(), &config);
    sim.store()
        .create("default", event("otlp-1", "Failed", "m"))
        .unwrap();
    wait_until(Duration::from_secs(15), "the failure logged", || {
        log.lock().unwrap().contains("OTLP export failed")
    });
    sim.store()
        .create("default", event("otlp-2", "Failed", "m"))
        .unwrap();
    wait_until(Duration::from_secs(15), "a request accepted", || {
        !receiver.requests().is_empty()
    });
    let _ = child.kill();
    let _ = child.wait();
    let log = log.lock().unwrap().clone();
    assert!(!log.contains("S3cretPW"), "the password leaked: {log}");
    let first = receiver.requests()[0].clone();
    // base64("admin:S3cretPW")
    assert_eq!(
        first.headers.get("authorization").map(String::as_str),
        Some("Basic YWRtaW46UzNjcmV0UFc=")
    );
}
