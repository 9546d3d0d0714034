//! Kafka sink end to end: herald (a child process) watches the simulator and produces to a real Kafka-compatible
//! broker (tansu, started by the test on a free port); an independent client (confluent-kafka, librdkafka, in
//! `kafka_consume.py`) reads every message back. The reference is what the test created: every record arrives
//! with its object's key, on the topic the template names, in creation order per key; the broker killed
//! (SIGKILL) and restarted mid-stream loses nothing herald counted as sent; SCRAM-SHA-512 logs in with the
//! password file.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use herald_sim::RunningSim;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};

/// The tansu broker: on the PATH, else where `tools/test` installs it (`$HERALD_TOOLS/bin`, by default
/// `~/.cache/herald/tools/bin`); `None` after a visible skip (a failure under CI).
fn tansu() -> Option<PathBuf> {
    let dir = std::env::var_os("HERALD_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/herald/tools")));
    if let Some(bin) = dir.map(|d| d.join("bin/tansu")).filter(|b| b.is_file()) {
        return Some(bin);
    }
    let on_path = Command::new("sh")
        .args(["-c", "command -v tansu"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if on_path.is_none() {
        fixtures::skip(
            "the tansu broker is not installed (crates.io tansu 0.6.0; tools/test installs it into $HERALD_TOOLS/bin)",
        );
    }
    on_path
}

/// The confluent-kafka reader is importable; `None` after a visible skip.
fn reader() -> Option<()> {
    fixtures::python_module("confluent_kafka", "confluent-kafka")
}

/// One tansu broker process, killed when dropped.
struct Broker {
    bin: PathBuf,
    addr: SocketAddr,
    storage: String,
    /// Clients must authenticate (SASL SCRAM).
    authentication: bool,
    /// The broker's working directory: a `sqlite://FILE` storage is a file in it, kept across restarts.
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Broker {
    /// Start tansu on a free port with `storage` (`memory://tansu/`, or `sqlite://FILE` with FILE relative
    /// to the broker's own directory) and wait until it accepts connections.
    fn start(bin: &Path, storage: String) -> Broker {
        let mut b = Broker {
            bin: bin.to_path_buf(),
            addr: free_addr(),
            storage,
            authentication: false,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        b.restart();
        b
    }

    fn url(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// (Re)start the process on the same port and storage.
    fn restart(&mut self) {
        let child = Command::new(&self.bin)
            .arg("broker")
            .args(["--listener-url", &self.url()])
            .args(["--advertised-listener-url", &self.url()])
            .args(["--storage-engine", &self.storage])
            .args(self.authentication.then_some("--authentication"))
            .env_remove("RUST_LOG")
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_until(
            Duration::from_secs(20),
            "tansu accepting connections",
            || std::net::TcpStream::connect(self.addr).is_ok(),
        );
    }

    /// SIGKILL: the broker dies with no chance to flush anything.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(&self.bin)
            .args(["topic", "create", name])
            .args(["--broker", &self.url()])
            .args(["--partitions", &partitions.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tansu topic create {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One message as the independent reader saw it.
#[derive(Debug, serde::Deserialize)]
struct Message {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<String>,
    value: serde_json::Value,
}

/// Every message of `topics`, read from the beginning until `count` arrived (and a little longer, to see
/// any extra one).
fn consume(bootstrap: &str, topics: &[&str], count: usize) -> Vec<Message> {
    consume_as(bootstrap, topics, count, &[])
}

/// [`consume`] with more reader arguments (SASL credentials).
fn consume_as(bootstrap: &str, topics: &[&str], count: usize, extra: &[&str]) -> Vec<Message> {
    let script = fixtures::repo_root().join("tests/agent/kafka_consume.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(bootstrap)
        .arg(topics.join(","))
        .args([
            "--count",
            &count.to_string(),
            "--timeout",
            "60",
            "--settle",
            "2",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kafka_consume.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A core/v1 Event about Pod `ns/object`, with a reason of its own (so the pipeline's dedup keeps it).
fn event(ns: &str, object: &str, reason: &str) -> CoreEvent {
    let name = format!("{object}.{}", reason.to_lowercase());
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {"kind": "Pod", "name": object, "namespace": ns, "apiVersion": "v1", "uid": format!("uid-{ns}-{object}")},
        "reason": reason, "message": format!("{reason} about {object}"), "type": "Warning", "count": 1,
        "source": {"component": "kubelet", "host": "node-1"},
        "lastTimestamp": jiff::Timestamp::now().to_string(),
    }))
    .unwrap()
}

fn config(bootstrap: &str, kafka: &str) -> String {
    format!(
        "sinks:\n  json:\n    enabled: false\n  kafka:\n    brokers: [\"{bootstrap}\"]\n{kafka}"
    )
}

/// The messages grouped by key, each key's in offset order.
fn by_key(messages: &[Message]) -> BTreeMap<String, Vec<&Message>> {
    let mut keys: BTreeMap<String, Vec<&Message>> = BTreeMap::new();
    for m in messages {
        keys.entry(m.key.clone().unwrap_or_default())
            .or_default()
            .push(m);
    }
    for list in keys.values_mut() {
        list.sort_by_key(|m| (m.partition, m.offset));
    }
    keys
}

const KAFKA: [(&str, &str); 1] = [("sink", "kafka")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_arrives_once_keyed_in_order_on_its_templated_topic() {
    let Some(bin) = tansu() else { return };
    let Some(()) = reader() else { return };
    let broker = Broker::start(&bin, "memory://tansu/".into());
    for topic in ["k8s-events-default", "k8s-events-prod"] {
        broker.create_topic(topic, 3);
    }
    let sim = quiet_sim().await;
    let herald = start_herald(
        &sim.url(),
        &config(
            &broker.bootstrap(),
            "    topic: k8s-events-{namespace}\n    compression: lz4\n    batch_size: 4\n    linger: 20ms\n",
        ),
        Stdio::null(),
        &[],
    );
    herald.wait_ready();

    // Three Events about each of six objects in two namespaces, created round by round.
    let objects = [
        ("default", "web-1"),
        ("default", "web-2"),
        ("default", "db-0"),
        ("prod", "api-1"),
        ("prod", "api-2"),
        ("prod", "cache-0"),
    ];
    let rounds = ["Pulling", "Pulled", "Started"];
    let pp = PostParams::default();
    for reason in rounds {
        for (ns, object) in objects {
            let api: Api<CoreEvent> = Api::namespaced(client(&sim), ns);
            api.create(&pp, &event(ns, object, reason)).await.unwrap();
        }
    }
    let n = objects.len() * rounds.len();
    herald.wait_metric("herald_sink_sent_total", &KAFKA, n as f64);
    assert_eq!(herald.metric("herald_sink_failures_total", &KAFKA), 0.0);
    assert_eq!(
        herald.metric("herald_queue_dropped_total", &[("queue", "kafka")]),
        0.0
    );

    let messages = consume(
        &broker.bootstrap(),
        &["k8s-events-default", "k8s-events-prod"],
        n,
    );
    assert_eq!(messages.len(), n, "each record exactly once: {messages:#?}");
    let keys = by_key(&messages);
    let want: BTreeSet<String> = objects
        .iter()
        .map(|(ns, o)| format!("{ns}/Pod/{o}"))
        .collect();
    assert_eq!(keys.keys().cloned().collect::<BTreeSet<_>>(), want);
    let mut partitions = BTreeSet::new();
    for (ns, object) in objects {
        let list = &keys[&format!("{ns}/Pod/{object}")];
        let partition = list[0].partition;
        partitions.insert((ns, partition));
        for m in list {
            assert_eq!(m.topic, format!("k8s-events-{ns}"), "the template's topic");
            assert_eq!(m.partition, partition, "one key, one partition");
            assert_eq!(m.value["k8s.namespace.name"], ns);
            assert_eq!(m.value["k8s.object.kind"], "Pod");
            assert_eq!(m.value["k8s.object.name"], object);
            assert_eq!(m.value["severity_text"], "Warning");
        }
        let reasons: Vec<&str> = list
            .iter()
            .map(|m| m.value["k8s.event.reason"].as_str().unwrap())
            .collect();
        assert_eq!(reasons, rounds, "{ns}/{object}: in creation order");
        assert_eq!(list[0].value["body"], format!("Pulling about {object}"));
    }
    assert!(
        partitions.len() > 2,
        "the keys spread over partitions: {partitions:?}"
    );
    sim.shutdown().await;
}

const POD: [(&str, &str); 2] = [("POD_NAME", "herald-0"), ("POD_NAMESPACE", "default")];

/// The reasons of herald's own Events in the simulator.
async fn recorded(sim: &RunningSim) -> BTreeSet<String> {
    let api: Api<Event> = Api::namespaced(client(sim), "default");
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("herald"))
        .filter_map(|e| e.reason)
        .collect()
}

async fn wait_recorded(sim: &RunningSim, reason: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !recorded(sim).await.contains(reason) {
        assert!(Instant::now() < deadline, "herald never recorded {reason}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_mid_stream_loses_nothing_counted_as_sent() {
    let Some(bin) = tansu() else { return };
    let Some(()) = reader() else { return };
    let mut broker = Broker::start(&bin, "sqlite://tansu.db".into());
    broker.create_topic("k8s-events", 2);
    let sim = quiet_sim().await;
    // Retries outlast the outage, so no batch is given up and every record must arrive.
    let herald = start_herald_with(
        &sim.url(),
        &config(
            &broker.bootstrap(),
            "    linger: 20ms\n    timeout: 2s\n    max_retries: 40\n",
        ),
        Stdio::null(),
        &[],
        &POD,
    );
    herald.wait_ready();
    let api: Api<CoreEvent> = Api::namespaced(client(&sim), "default");
    let pp = PostParams::default();
    let mut created = Vec::new();
    let mut create = async |i: usize, reason: &str| {
        let object = format!("pod-{i}");
        api.create(&pp, &event("default", &object, reason))
            .await
            .unwrap();
        created.push((object, reason.to_string()));
    };

    // Before the outage: delivered.
    for i in 0..20 {
        create(i, "Pulling").await;
    }
    herald.wait_metric("herald_sink_sent_total", &KAFKA, 20.0);

    broker.kill();
    // During it: the metrics sink still counts, the Kafka sink says it is failing.
    for i in 20..40 {
        create(i, "Pulling").await;
        create(i - 20, "Started").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    herald.wait_metric("herald_events_total", &[], 60.0);
    wait_until(
        Duration::from_secs(20),
        "/readyz naming the Kafka sink",
        || matches!(herald.get("/readyz"), Some((503, body)) if body.contains("sink kafka: failing")),
    );
    wait_recorded(&sim, "SinkFailing").await;
    let sent_during = herald.metric("herald_sink_sent_total", &KAFKA);
    assert!(sent_during < 60.0, "nothing delivered without a broker");

    broker.restart();
    for i in 40..50 {
        create(i, "Pulling").await;
    }
    let n = created.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while herald.metric("herald_sink_sent_total", &KAFKA) < n as f64 {
        assert!(Instant::now() < deadline, "{}", herald.metrics());
        std::thread::sleep(Duration::from_millis(100));
    }
    herald.wait_ready();
    wait_recorded(&sim, "SinkRecovered").await;
    assert_eq!(herald.metric("herald_sink_sent_total", &KAFKA), n as f64);
    assert_eq!(herald.metric("herald_sink_failures_total", &KAFKA), 0.0);
    assert_eq!(
        herald.metric("herald_queue_dropped_total", &[("queue", "kafka")]),
        0.0
    );
    assert!(herald.metric("herald_sink_retries_total", &KAFKA) >= 1.0);
    assert_eq!(herald.metric("herald_events_total", &[]), n as f64);

    // Everything counted as sent is on the broker. At least once: a request whose answer the kill cut off
    // may have been written and is sent again, so a record may appear twice, but only as a repeat of
    // the same record in its key's order.
    let messages = consume(&broker.bootstrap(), &["k8s-events"], n);
    let keys = by_key(&messages);
    let mut seen = BTreeSet::new();
    for (key, list) in &keys {
        let mut reasons: Vec<&str> = list
            .iter()
            .map(|m| m.value["k8s.event.reason"].as_str().unwrap())
            .collect();
        reasons.dedup();
        let object = key.strip_prefix("default/Pod/").unwrap();
        let want: Vec<&str> = created
            .iter()
            .filter(|(o, _)| o == object)
            .map(|(_, r)| r.as_str())
            .collect();
        assert_eq!(reasons, want, "{key}: every record, in creation order");
        assert!(list.iter().all(|m| m.partition == list[0].partition));
        seen.insert(object.to_string());
    }
    let objects: BTreeSet<String> = created.iter().map(|(o, _)| o.clone()).collect();
    assert_eq!(seen, objects);
    eprintln!(
        "kafka broker kill: {n} records sent, {} messages read ({} repeats)",
        messages.len(),
        messages.len() - n
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_512_logs_in_with_the_password_file() {
    let Some(bin) = tansu() else { return };
    let Some(()) = reader() else { return };
    let dir = tempfile::tempdir().unwrap();
    let storage = "sqlite://tansu.db".to_string();
    // The user and the topic are made while the broker is open, then it restarts requiring SASL.
    let mut broker = Broker::start(&bin, storage);
    broker.create_topic("k8s-events", 1);
    let out = Command::new(&bin)
        .args([
            "user",
            "create",
            "herald",
            "s3cret",
            "--broker",
            &broker.url(),
        ])
        .args(["--mechanism", "scram512"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    broker.kill();
    broker.authentication = true;
    broker.restart();

    let password = dir.path().join("password");
    std::fs::write(&password, "s3cret\n").unwrap();
    let sim = quiet_sim().await;
    let herald = start_herald(
        &sim.url(),
        &config(
            &broker.bootstrap(),
            &format!(
                "    linger: 20ms\n    sasl: {{mechanism: SCRAM-SHA-512, username: herald, password_file: {}}}\n",
                password.display()
            ),
        ),
        Stdio::null(),
        &[],
    );
    herald.wait_ready();
    let api: Api<CoreEvent> = Api::namespaced(client(&sim), "default");
    for i in 0..3 {
        api.create(
            &PostParams::default(),
            &event("default", &format!("pod-{i}"), "Pulled"),
        )
        .await
        .unwrap();
    }
    herald.wait_metric("herald_sink_sent_total", &KAFKA, 3.0);
    let messages = consume_as(
        &broker.bootstrap(),
        &["k8s-events"],
        3,
        &[
            "--sasl-mechanism",
            "SCRAM-SHA-512",
            "--sasl-username",
            "herald",
            "--sasl-password",
            "s3cret",
        ],
    );
    let keys: Vec<&str> = messages.iter().filter_map(|m| m.key.as_deref()).collect();
    assert_eq!(
        keys,
        [
            "default/Pod/pod-0",
            "default/Pod/pod-1",
            "default/Pod/pod-2"
        ]
    );
    sim.shutdown().await;
}

#[test]
fn bad_kafka_settings_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (kafka, want) in [
        (
            "    brokers: [\"kafka\"]\n",
            "sinks.kafka.brokers[0]: expected host:port",
        ),
        (
            "    brokers: [\"k:9092\"]\n    compression: brotli\n",
            "sinks.kafka.compression",
        ),
        (
            "    brokers: [\"k:9092\"]\n    sasl: {mechanism: SCRAM-SHA-512, username: herald, password_file: /nonexistent/pw}\n",
            "sinks.kafka.sasl.password_file: cannot read /nonexistent/pw",
        ),
    ] {
        let path = dir.path().join("herald.yaml");
        std::fs::write(&path, format!("sinks:\n  kafka:\n{kafka}")).unwrap();
        let out = Command::new(herald_bin())
            .args(["config", "check"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{kafka}: {stderr}");
        assert!(
            stderr.contains(want),
            "{kafka}: wanted {want:?} in {stderr}"
        );
    }
}
