//! The dashboards and alerts against the real thing: the simulator with generated traffic, two herald agents,
//! a real Prometheus (Debian `prometheus`) scraping them every second with a test copy of alerts/ (short `for:`
//! and range windows), and a real Alertmanager routing to a webhook receiver in this test.
//!
//! 1. Every dashboard query (panels and variables) returns data through Prometheus' HTTP API.
//! 2. Killing one agent: HeraldDown for that instance reaches the webhook; restarting it resolves the alert.
//! 3. The API server failing every list and watch (simulator faults): HeraldWatchErrors fires for both agents
//!    and resolves once the faults are removed.
//!
//! A stand-in exporter in this test adds what a few seconds of simulated traffic cannot fill (VM lifecycles at a
//! steady rate, quota exceedances, finished migrations) and what no herald exports (the kubelet's cAdvisor CPU
//! and memory series), with the names and labels alerts/README.md documents.

use crate::common;

use std::collections::BTreeSet;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ops;
use common::prometheus::{self, Proc};
use herald_sim::{FaultSpec, RunningSim, SimOptions};
use serde_json::Value;

/// Faults during the whole run: frequent watch disconnects, so the watch-restart panels have data.
const BASE_FAULTS: &str = "disconnect-every=80";

/// The faults make kube's client log every cut stream and 500; only herald's own errors are worth reading.
const QUIET: &[&str] = &["--log-level", "herald=error"];

/// The test copy of the shipped rules: every `for:` 2s and every range window 15s, so alerts fire and resolve
/// within seconds. The shipped file is not touched.
fn fast_rules() -> String {
    let text = std::fs::read_to_string(ops::root().join("alerts/herald.rules.yaml")).unwrap();
    let for_ = regex::Regex::new(r"(?m)^(\s+)for: \S+$").unwrap();
    let range = regex::Regex::new(r"\[\d+[smh]\]").unwrap();
    let text = for_.replace_all(&text, "${1}for: 2s");
    let text = range.replace_all(&text, "[15s]").into_owned();
    assert!(text.contains("for: 2s") && text.contains("[15s]"));
    text
}

// ---------------------------------------------------------------------------------------------------------
// A tiny HTTP server: the stand-in exporter (GET /metrics) and Alertmanager's webhook receiver (POST).

#[derive(Default)]
struct Received {
    /// Every alert of every webhook notification, in arrival order.
    alerts: Vec<Value>,
}

/// GET /metrics: the stand-in series at `started`'s age; any other request: a webhook notification.
async fn handle_stub(
    req: hyper::Request<hyper::body::Incoming>,
    received: Arc<Mutex<Received>>,
    started: Instant,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    use http_body_util::BodyExt;
    let metrics = req.method() == hyper::Method::GET && req.uri().path() == "/metrics";
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let (content_type, reply) = if metrics {
        (
            "text/plain; version=0.0.4",
            standin_metrics(started.elapsed().as_secs_f64()),
        )
    } else {
        if let Ok(note) = serde_json::from_slice::<Value>(&body) {
            let mut r = received.lock().unwrap();
            r.alerts
                .extend(note["alerts"].as_array().cloned().unwrap_or_default());
        }
        ("text/plain", String::new())
    };
    hyper::Response::builder()
        .header("content-type", content_type)
        .body(reply.into())
        .unwrap()
}

/// Series of herald's KubeVirt source at a steady rate, and the kubelet's (names and labels from
/// alerts/README.md), with counters that grow, so rates, increases and quantiles have data.
fn standin_metrics(t: f64) -> String {
    let mut out = String::new();
    let ns = "namespace=\"vms\"";
    for (transition, per_s) in [
        ("created", 2.0),
        ("started", 2.0),
        ("stopped", 1.0),
        ("failed", 0.2),
        ("migration_started", 1.0),
        ("migration_succeeded", 0.9),
        ("migration_failed", 0.1),
        ("deleted", 1.0),
    ] {
        out += &format!(
            "herald_vm_transitions_total{{{ns},transition=\"{transition}\"}} {}\n",
            per_s * t
        );
    }
    out += &format!(
        "herald_vm_migrations_total{{{ns},outcome=\"succeeded\"}} {}\n",
        0.9 * t
    );
    out += &format!(
        "herald_vm_migrations_total{{{ns},outcome=\"failed\"}} {}\n",
        0.1 * t
    );
    for (name, extra) in [
        ("herald_vm_start_duration_seconds", String::new()),
        (
            "herald_vm_migration_duration_seconds",
            ",outcome=\"succeeded\"".to_string(),
        ),
    ] {
        for (le, share) in [
            ("1", 0.0),
            ("10", 0.5),
            ("60", 0.9),
            ("600", 1.0),
            ("+Inf", 1.0),
        ] {
            out += &format!(
                "{name}_bucket{{{ns}{extra},le=\"{le}\"}} {}\n",
                share * 2.0 * t
            );
        }
        out += &format!("{name}_sum{{{ns}{extra}}} {}\n", 30.0 * t);
        out += &format!("{name}_count{{{ns}{extra}}} {}\n", 2.0 * t);
    }
    for (phase, n) in [("Running", 12), ("Pending", 1), ("Scheduling", 1)] {
        out += &format!("herald_vmis{{{ns},phase=\"{phase}\"}} {n}\n");
    }
    out += &format!(
        "herald_quota_exceeded_total{{{ns},resource=\"requests.memory\"}} {}\n",
        0.5 * t
    );
    out += "herald_source_up{source=\"kubevirt\"} 1\n";
    for pod in ["herald-a", "herald-b"] {
        out += &format!(
            "container_cpu_usage_seconds_total{{namespace=\"herald\",pod=\"{pod}\",container=\"herald\"}} {}\n",
            0.01 * t
        );
        out += &format!(
            "container_memory_working_set_bytes{{namespace=\"herald\",pod=\"{pod}\",container=\"herald\"}} 20971520\n"
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------------------
// Prometheus and Alertmanager.

fn http_get_json(addr: SocketAddr, path_and_query: &str) -> Option<Value> {
    let (status, body) = common::http_get(addr, path_and_query)?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

fn query(prometheus: SocketAddr, expr: &str) -> Option<Value> {
    let q: String = form_urlencoded::byte_serialize(expr.as_bytes()).collect();
    let v = http_get_json(prometheus, &format!("/api/v1/query?query={q}"))?;
    (v["status"] == "success").then(|| v["data"]["result"].clone())
}

/// A result with at least one sample that is a number (not NaN: a quantile over no observations is NaN).
fn has_data(result: &Value) -> bool {
    result.as_array().into_iter().flatten().any(|s| {
        s["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| !v.is_nan())
    })
}

fn start_prometheus(
    dir: &Path,
    targets: &[SocketAddr],
    standin: SocketAddr,
    am: SocketAddr,
) -> (Proc, SocketAddr) {
    let list = |addrs: &[SocketAddr]| {
        addrs
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    std::fs::write(dir.join("rules.yaml"), fast_rules()).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files: [rules.yaml]\n\
         alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"{am}\"]\n\
         scrape_configs:\n\
         \x20 - job_name: herald\n    static_configs:\n      - targets: [{}]\n\
         \x20 - job_name: standin\n    static_configs:\n      - targets: [\"{standin}\"]\n",
        list(targets)
    );
    prometheus::start(dir, &config, &["--rules.alert.resend-delay=1s"])
}

fn start_alertmanager(dir: &Path, webhook: SocketAddr) -> (Proc, SocketAddr) {
    let config = format!(
        "route:\n  receiver: test\n  group_by: [alertname, instance]\n  group_wait: 1s\n  group_interval: 1s\n  \
         repeat_interval: 1h\n\
         receivers:\n  - name: test\n    webhook_configs:\n      - url: http://{webhook}/webhook\n        \
         send_resolved: true\n"
    );
    prometheus::start_alertmanager(dir, &config)
}

/// Wait for `/-/ready`; on failure show the end of the process' log.
fn wait_ready(name: &str, addr: SocketAddr, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if matches!(common::http_get(addr, "/-/ready"), Some((200, _))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(20).collect();
    panic!(
        "{name} at {addr} not ready within 30 s; end of its log:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}

/// How many alerts the webhook has received so far (to wait only for later ones).
fn mark(received: &Mutex<Received>) -> usize {
    received.lock().unwrap().alerts.len()
}

/// Wait until the webhook has received, after the first `since` alerts, an alert named `alertname` with
/// `status` whose labels include `labels`.
fn wait_webhook(
    received: &Mutex<Received>,
    since: usize,
    alertname: &str,
    status: &str,
    labels: &[(&str, &str)],
    limit: Duration,
) {
    let matches = |a: &Value| {
        a["status"] == status
            && a["labels"]["alertname"] == alertname
            && labels.iter().all(|(k, v)| a["labels"][*k] == *v)
    };
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if received
            .lock()
            .unwrap()
            .alerts
            .iter()
            .skip(since)
            .any(matches)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let seen: Vec<String> = received
        .lock()
        .unwrap()
        .alerts
        .iter()
        .map(|a| {
            format!(
                "{} {} {}",
                a["status"], a["labels"]["alertname"], a["labels"]
            )
        })
        .collect();
    panic!(
        "no {status} {alertname} {labels:?} at the webhook within {limit:?}; received:\n{}",
        seen.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_have_data_and_alerts_reach_alertmanager_and_resolve() {
    let started = Instant::now();
    // Fail early, and clearly, when the tools are missing.
    let (Some(_), Some(_)) = (
        common::fixtures::tool(&["prometheus"], "prometheus"),
        common::fixtures::tool(
            &["prometheus-alertmanager", "alertmanager"],
            "prometheus-alertmanager",
        ),
    ) else {
        return;
    };

    let mut opts = SimOptions::demo(7, 40.0);
    opts.faults = BASE_FAULTS.parse().unwrap();
    opts.bookmark_interval = Duration::from_secs(1);
    let sim = RunningSim::start(opts, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let url = sim.url();
    let agents = [
        common::start_herald(&url, "", Stdio::null(), QUIET),
        common::start_herald(&url, "", Stdio::null(), QUIET),
    ];
    let [a, mut b] = agents;

    let received = Arc::new(Mutex::new(Received::default()));
    let stub = {
        let received = received.clone();
        let started = Instant::now();
        herald_test_support::server::Server::start(common::free_addr(), move |listener, stop| {
            herald_test_support::serve::http1(listener, stop, move |req| {
                handle_stub(req, received.clone(), started)
            })
        })
        .await
        .unwrap()
    };
    let stub_addr = stub.addr;

    let dir = tempfile::tempdir().unwrap();
    let (_am, am_addr) = start_alertmanager(dir.path(), stub_addr);
    let (_prom, prom_addr) = start_prometheus(dir.path(), &[a.addr, b.addr], stub_addr, am_addr);
    a.wait_ready();
    b.wait_ready();
    wait_ready(
        "alertmanager",
        am_addr,
        &dir.path().join("alertmanager.log"),
    );
    wait_ready("prometheus", prom_addr, &dir.path().join("prometheus.log"));
    common::wait_until(Duration::from_secs(30), "all three targets up", || {
        query(prom_addr, "sum(up)")
            .and_then(|r| r[0]["value"][1].as_str().map(|v| v == "3"))
            .unwrap_or(false)
    });

    // 1. Every dashboard query returns data.
    let mut pending: Vec<ops::PanelQuery> = ops::prometheus_queries();
    let total = pending.len();
    assert!(total > 40, "only {total} dashboard queries found");
    let deadline = Instant::now() + Duration::from_secs(40);
    while !pending.is_empty() && Instant::now() < deadline {
        pending
            .retain(|q| !query(prom_addr, &ops::substitute(&q.expr)).is_some_and(|r| has_data(&r)));
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let missing: Vec<String> = pending
        .iter()
        .map(|q| {
            let e = ops::substitute(&q.expr);
            format!(
                "{} / {}: {e} -> {:?}",
                q.dashboard,
                q.panel,
                query(prom_addr, &e)
            )
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {total} dashboard queries return no data:\n{}",
        missing.len(),
        missing.join("\n")
    );
    eprintln!(
        "{total} dashboard queries return data ({:?} in)",
        started.elapsed()
    );

    // 2. An agent dies: HeraldDown for it, at the webhook through Alertmanager; back up: resolved.
    let b_addr = b.addr;
    let b_instance = b_addr.to_string();
    let before_kill = mark(&received);
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    wait_webhook(
        &received,
        before_kill,
        "HeraldDown",
        "firing",
        &[
            ("instance", &b_instance),
            ("severity", "warning"),
            ("job", "herald"),
        ],
        Duration::from_secs(30),
    );
    {
        let r = received.lock().unwrap();
        let down: BTreeSet<String> = r
            .alerts
            .iter()
            .filter(|x| x["labels"]["alertname"] == "HeraldDown" && x["status"] == "firing")
            .map(|x| {
                x["labels"]["instance"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert_eq!(
            down,
            BTreeSet::from([b_instance.clone()]),
            "only the killed agent is down"
        );
        let alert = r
            .alerts
            .iter()
            .find(|x| x["labels"]["alertname"] == "HeraldDown")
            .unwrap();
        assert_eq!(
            alert["annotations"]["runbook_url"],
            "alerts/runbooks/HeraldDown.md"
        );
        assert!(
            alert["annotations"]["summary"]
                .as_str()
                .is_some_and(|s| s.contains(&b_instance)),
            "{alert}"
        );
    }
    let before_restart = mark(&received);
    let restarted = common::start_herald_at(b_addr, &url, "", Stdio::null(), QUIET);
    restarted.wait_ready();
    wait_webhook(
        &received,
        before_restart,
        "HeraldDown",
        "resolved",
        &[("instance", &b_instance)],
        Duration::from_secs(30),
    );
    eprintln!("HeraldDown fired and resolved ({:?} in)", started.elapsed());

    // 3. The API server refuses every list and watch (and closes open watches): HeraldWatchErrors for both
    //    agents. The faults are lifted as soon as both fired (herald's backoff stays short), then it resolves.
    let before_faults = mark(&received);
    sim.set_faults(
        "error-rate=1,disconnect-every=1"
            .parse::<FaultSpec>()
            .unwrap(),
    );
    for agent in [&a, &restarted] {
        wait_webhook(
            &received,
            before_faults,
            "HeraldWatchErrors",
            "firing",
            &[("instance", &agent.addr.to_string())],
            Duration::from_secs(40),
        );
    }
    let before_repair = mark(&received);
    sim.set_faults(BASE_FAULTS.parse().unwrap());
    for agent in [&a, &restarted] {
        wait_webhook(
            &received,
            before_repair,
            "HeraldWatchErrors",
            "resolved",
            &[("instance", &agent.addr.to_string())],
            Duration::from_secs(60),
        );
    }
    eprintln!(
        "HeraldWatchErrors fired and resolved ({:?} in)",
        started.elapsed()
    );
    drop((a, restarted));
    sim.shutdown().await;
}
