//! The Kafka sink: one message per record, the JSON object the JSON line sink writes
//! ([`super::json::write_object`]), keyed by the involved object (`namespace/kind/name`) and put in the
//! partition Kafka's default partitioner picks for that key (murmur2, as the Java and librdkafka
//! `murmur2_random` partitioners do), so one object's records stay in order in one partition and other
//! producers of the same keys agree on it. The topic is fixed or a template (`k8s-events-{namespace}`).
//!
//! Client: `rskafka`, a pure-Rust client, rather than `rdkafka` (librdkafka). librdkafka is the reference
//! client and the only one of the two with an idempotent producer, but it is a C library: building it needs a
//! C toolchain with make (or cmake) on every developer and CI machine, adds minutes to a cold build, and
//! links its own TLS and compression stack into a binary that has to stay small. rskafka needs nothing
//! beyond cargo, speaks TLS through the rustls/ring stack herald already links, and does SASL PLAIN and
//! SCRAM-SHA-256/512. What it lacks
//! decides the guarantee: every produce request waits for all in-sync replicas (`acks=all`, fixed in the
//! client), but there is no idempotent producer, so a request whose answer was lost (a broker killed after
//! writing) is sent again: delivery is **at least once**, never exactly once. Order per key holds because
//! this sink sends one request per partition at a time and retries it before sending the next.
//!
//! Like the webhook sink it has its own bounded ring (a dead broker only drops this sink's records, counted),
//! batches by count, bytes and linger, retries a batch a bounded number of times with the project's one
//! backoff ([`crate::retry`]), then counts it as failed and goes on. A broker that is down at start is no
//! start-up error: the sink connects when it has something to send and reconnects after every failure, so it
//! recovers without a restart. The SASL password file is read at each (re)connection, so a rotated Secret
//! applies at the next reconnect.
//!
//! It must never block the pipeline and never retry forever.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record as KafkaRecord;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Shared;
use super::shape::Identity;
use crate::config::{ConfigError, Duration as ConfigDuration, positive, unset};
use crate::health::SinkHealth;
use crate::record::{EventRecord, Record};
use crate::retry::Backoff;
use crate::ring::{Fill, Gathered, Ring};
use crate::telemetry::{self, Telemetry};

/// The metric label, queue and health name of this sink.
pub const NAME: &str = "kafka";

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Topics whose partition count is remembered; past it the map starts afresh (a template over namespaces).
const MAX_TOPICS: usize = 1024;
/// Partition connections kept open; past it they are dropped and reopened on use.
const MAX_PARTITION_CLIENTS: usize = 4096;
/// What a namespace placeholder becomes for cluster-scoped objects (Nodes, PersistentVolumes): `_` cannot
/// appear in a namespace name, so it never collides with one.
pub const CLUSTER_SCOPED: &str = "_cluster";

/// `sinks.kafka`: records as messages to Kafka. No `brokers`: the sink is off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port` each (`kafka-0.kafka:9092`). Empty: the sink is off.
    pub brokers: Vec<String>,
    /// The topic of every record, or a template: `{namespace}` and `{kind}` are replaced by the involved
    /// object's namespace (`_cluster` for cluster-scoped objects) and kind. Topics are not created by herald.
    pub topic: String,
    /// Compression of each batch: `none`, `gzip`, `lz4`, `snappy` or `zstd`.
    pub compression: KafkaCompression,
    /// Most records in one produce request (one partition).
    pub batch_size: usize,
    /// Most bytes of messages (keys and values, before compression) in one produce request; keep it under
    /// the broker's `message.max.bytes`. A single larger record is still sent alone.
    pub batch_bytes: usize,
    /// Longest a record waits for its batch to fill.
    pub linger: ConfigDuration,
    /// Time limit of one attempt (connecting included).
    pub timeout: ConfigDuration,
    /// Retries of a batch after a failed attempt (broker down, timeout, refused), with exponential backoff
    /// from 0.5s up to 30s; after them the batch is counted as failed.
    pub max_retries: u32,
    /// This sink's own ring. When full, this sink drops (counted) and the others go on.
    pub queue_capacity: usize,
    /// TLS to the brokers.
    pub tls: KafkaTlsConfig,
    /// SASL authentication.
    pub sasl: KafkaSaslConfig,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: Vec::new(),
            topic: "k8s-events".into(),
            compression: KafkaCompression::None,
            batch_size: 500,
            batch_bytes: 1 << 20,
            linger: ConfigDuration::from_millis(100),
            timeout: ConfigDuration::from_secs(10),
            max_retries: 8,
            queue_capacity: 8192,
            tls: KafkaTlsConfig::default(),
            sasl: KafkaSaslConfig::default(),
        }
    }
}

/// `sinks.kafka.compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KafkaCompression {
    /// Uncompressed.
    None,
    /// gzip: widest support, most CPU.
    Gzip,
    /// LZ4: cheap on CPU, what most producers choose.
    Lz4,
    /// Snappy.
    Snappy,
    /// Zstandard: smallest batches (brokers 2.1 and newer).
    Zstd,
}

/// `sinks.kafka.tls`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaTlsConfig {
    /// Connect with TLS (the system roots, plus `ca_file`).
    pub enabled: bool,
    /// PEM CA bundle that signs the brokers' certificates, added to the system roots.
    #[serde(deserialize_with = "unset::option")]
    pub ca_file: Option<std::path::PathBuf>,
}

/// `sinks.kafka.sasl`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSaslConfig {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`; unset: no SASL. Use PLAIN only with TLS.
    #[serde(deserialize_with = "unset::option")]
    pub mechanism: Option<SaslMechanism>,
    /// The SASL user name.
    pub username: String,
    /// File holding the password (a mounted Secret); read at each connection, so a rotation applies at the
    /// next reconnect.
    #[serde(deserialize_with = "unset::option")]
    pub password_file: Option<std::path::PathBuf>,
}

/// `sinks.kafka.sasl.mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SaslMechanism {
    /// The password in clear text (inside TLS).
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge-response with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge-response with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl KafkaConfig {
    /// The sink runs: at least one broker is configured.
    pub fn enabled(&self) -> bool {
        !self.brokers.is_empty()
    }

    /// Checks serde cannot express; nothing is checked while the sink is off. The secret and CA files must
    /// be readable now, so a typo in a path is a start-up error and not a silent outage.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        for (i, b) in self.brokers.iter().enumerate() {
            check_broker(b)
                .map_err(|reason| ConfigError::new(format!("{key}.brokers[{i}]"), reason))?;
        }
        check_topic(&self.topic)
            .map_err(|reason| ConfigError::new(format!("{key}.topic"), reason))?;
        positive(format!("{key}.batch_size"), self.batch_size)?;
        positive(format!("{key}.batch_bytes"), self.batch_bytes)?;
        positive(format!("{key}.queue_capacity"), self.queue_capacity)?;
        positive(format!("{key}.timeout"), self.timeout)?;
        if let Some(path) = &self.tls.ca_file {
            if !self.tls.enabled {
                return Err(ConfigError::new(
                    format!("{key}.tls.ca_file"),
                    "set, but tls.enabled is false; enable TLS or remove the CA file",
                ));
            }
            tls_config(Some(path))
                .map_err(|e| ConfigError::new(format!("{key}.tls.ca_file"), e))?;
        }
        match (&self.sasl.mechanism, &self.sasl.password_file) {
            (Some(_), None) => {
                return Err(ConfigError::new(
                    format!("{key}.sasl.password_file"),
                    "required with sasl.mechanism (the file holding the password)",
                ));
            }
            (Some(_), Some(path)) => {
                read_secret(path)
                    .map_err(|e| ConfigError::new(format!("{key}.sasl.password_file"), e))?;
                if self.sasl.username.is_empty() {
                    return Err(ConfigError::new(
                        format!("{key}.sasl.username"),
                        "required with sasl.mechanism",
                    ));
                }
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    format!("{key}.sasl.mechanism"),
                    "required with sasl.password_file: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                ));
            }
            (None, None) => {}
        }
        Ok(())
    }
}

/// `host:port` with a non-empty host and a port number.
fn check_broker(b: &str) -> Result<(), String> {
    let bad = || format!("expected host:port (kafka-0.kafka:9092), got {b:?}");
    let (host, port) = b.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains('/') {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad()),
    }
}

/// A topic, or a template whose placeholders are `{namespace}` and `{kind}`; the rest must be characters
/// Kafka allows in topic names.
fn check_topic(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("must not be empty".into());
    }
    let literal = t.replace("{namespace}", "").replace("{kind}", "");
    if let Some(c) = literal
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        let hint = if c == '{' || c == '}' {
            " (placeholders are {namespace} and {kind})"
        } else {
            " (topics use letters, digits, '.', '_' and '-')"
        };
        return Err(format!("{c:?} is not allowed in {t:?}{hint}"));
    }
    if t.len() > 249 && literal.len() == t.len() {
        return Err("longer than Kafka's 249 characters".into());
    }
    Ok(())
}

/// The topic of `r` under the template `t`.
pub fn topic_for(t: &str, r: &EventRecord) -> String {
    if !t.contains('{') {
        return t.to_string();
    }
    let ns: &str = match &*r.regarding.namespace {
        "" => CLUSTER_SCOPED,
        ns => ns,
    };
    t.replace("{namespace}", ns)
        .replace("{kind}", &r.regarding.kind)
}

/// The message key: the involved object, `namespace/kind/name` (namespace empty when cluster-scoped).
pub fn key_for(r: &EventRecord) -> String {
    format!(
        "{}/{}/{}",
        r.regarding.namespace, r.regarding.kind, r.regarding.name
    )
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`, seed 0x9747b28c).
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = 0x9747_b28c ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` among `partitions`: the default partitioner's choice for a keyed record.
pub fn partition_for(key: &[u8], partitions: usize) -> i32 {
    let positive = (murmur2(key) & 0x7fff_ffff) as usize;
    (positive % partitions.max(1)) as i32
}

/// A TLS client configuration trusting the system roots and `ca_file`; the error is the reason, without key.
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("{}: no PEM certificate in it", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A secret file's text without surrounding whitespace (a trailing newline is common).
fn read_secret(path: &std::path::Path) -> Result<String, String> {
    let raw = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    String::from_utf8(raw.trim_ascii().to_vec())
        .map_err(|_| format!("{}: not UTF-8 text", path.display()))
}

/// Why the sink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sinks.kafka.tls.ca_file: {0}")]
    Tls(String),
}

/// One failed attempt.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("cannot connect to the brokers: {0}")]
    Connect(String),
    #[error("topic {0:?} does not exist on the brokers (herald does not create topics)")]
    NoTopic(String),
    #[error("{0}")]
    Client(#[from] rskafka::client::error::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// One message on its way: topic, partition chosen later, key, value.
struct Message {
    topic: String,
    key: Vec<u8>,
    value: Vec<u8>,
    timestamp_ms: i64,
}

pub struct KafkaSink {
    settings: KafkaConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    identity: Identity,
    client: Option<Client>,
    /// Partition counts per topic, from the brokers' metadata.
    partitions: HashMap<String, usize>,
    producers: HashMap<(String, i32), Arc<PartitionClient>>,
    sent: Counter,
    failures: Counter,
    retries: Counter,
    health: Arc<SinkHealth>,
    /// The current outage was already logged.
    outage_logged: bool,
}

impl KafkaSink {
    pub fn new(
        settings: KafkaConfig,
        identity: Identity,
        telemetry: &Telemetry,
        health: Arc<SinkHealth>,
    ) -> Result<KafkaSink, Error> {
        let tls = match settings.tls.enabled {
            true => Some(Arc::new(
                tls_config(settings.tls.ca_file.as_deref()).map_err(Error::Tls)?,
            )),
            false => None,
        };
        let labels = [("sink", NAME)];
        Ok(KafkaSink {
            settings,
            tls,
            identity,
            client: None,
            partitions: HashMap::new(),
            producers: HashMap::new(),
            sent: telemetry.counter(telemetry::SINK_SENT, &labels),
            failures: telemetry.counter(telemetry::SINK_FAILURES, &labels),
            retries: telemetry.counter(telemetry::SINK_RETRIES, &labels),
            health,
            outage_logged: false,
        })
    }

    /// Drain the ring until it is closed and empty, producing batches.
    pub async fn run(mut self, ring: Arc<Ring<Shared>>) {
        let mut batch: Vec<Message> = Vec::new();
        loop {
            let mut bytes = 0;
            let gathered = ring
                .gather(|record| {
                    self.push(&mut batch, &mut bytes, &record);
                    match batch.len() < self.settings.batch_size
                        && bytes < self.settings.batch_bytes
                    {
                        true => Fill::Room {
                            linger: self.settings.linger.0,
                        },
                        false => Fill::Full,
                    }
                })
                .await;
            if gathered == Gathered::Closed {
                break;
            }
            self.deliver(std::mem::take(&mut batch)).await;
            if gathered == Gathered::Last {
                break;
            }
        }
    }

    fn push(&self, batch: &mut Vec<Message>, bytes: &mut usize, record: &Record) {
        // Checkpoint barriers only go to the metrics sink; nothing else reaches this ring without an entry.
        let Some(entry) = record.log_entry() else {
            return;
        };
        let r = entry.event;
        let mut value = Vec::with_capacity(1024);
        super::json::write_object(&mut value, entry, &self.identity);
        let key = key_for(r).into_bytes();
        *bytes += key.len() + value.len();
        batch.push(Message {
            topic: topic_for(&self.settings.topic, r),
            key,
            value,
            timestamp_ms: r.observed.as_millisecond(),
        });
    }

    /// Send one gathered batch: one request per partition, each retried within the budget; the partitions
    /// in the order their first record came, each partition's records in ring order.
    async fn deliver(&mut self, batch: Vec<Message>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        // Partition counts are needed to group the batch: without them (brokers down) the whole batch waits
        // through the same retries as a produce request.
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        let mut attempt = 0;
        let groups = loop {
            match self.group(&batch).await {
                Ok(groups) => break groups,
                Err(error) => {
                    if !self.retry(&error, &mut attempt, &mut backoff).await {
                        self.failed(n, &error);
                        return;
                    }
                }
            }
        };
        let mut messages: Vec<Option<Message>> = batch.into_iter().map(Some).collect();
        for ((topic, partition), indexes) in groups {
            let records: Vec<KafkaRecord> = indexes
                .iter()
                .filter_map(|&i| messages.get_mut(i).and_then(Option::take))
                .map(|m| KafkaRecord {
                    key: Some(m.key),
                    value: Some(m.value),
                    headers: Default::default(),
                    timestamp: chrono::DateTime::from_timestamp_millis(m.timestamp_ms)
                        .unwrap_or_default(),
                })
                .collect();
            self.produce(&topic, partition, records).await;
        }
    }

    /// The (topic, partition) of each message, grouped, in first-seen order.
    async fn group(
        &mut self,
        batch: &[Message],
    ) -> Result<Vec<((String, i32), Vec<usize>)>, AttemptError> {
        let mut groups: Vec<((String, i32), Vec<usize>)> = Vec::new();
        for (i, m) in batch.iter().enumerate() {
            let count = self.partition_count(&m.topic).await?;
            let p = partition_for(&m.key, count);
            match groups
                .iter_mut()
                .find(|((t, q), _)| *q == p && *t == m.topic)
            {
                Some((_, idx)) => idx.push(i),
                None => groups.push(((m.topic.clone(), p), vec![i])),
            }
        }
        Ok(groups)
    }

    /// Produce one partition's records, retrying within the budget; count them as sent or failed.
    async fn produce(&mut self, topic: &str, partition: i32, records: Vec<KafkaRecord>) {
        let n = records.len() as u64;
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        let mut attempt = 0;
        let compression = compression(self.settings.compression);
        loop {
            let timeout = self.settings.timeout.0;
            let result = async {
                let producer = self.producer(topic, partition).await?;
                match tokio::time::timeout(timeout, producer.produce(records.clone(), compression))
                    .await
                {
                    Ok(r) => r.map(|_| ()).map_err(AttemptError::from),
                    Err(_) => Err(AttemptError::Timeout(timeout)),
                }
            }
            .await;
            match result {
                Ok(()) => {
                    if !self.health.accepting() || std::mem::take(&mut self.outage_logged) {
                        tracing::info!(sink = NAME, "Kafka delivery recovered");
                    }
                    self.health.set_accepting(true);
                    self.sent.increment(n);
                    return;
                }
                Err(error) => {
                    if !self.retry(&error, &mut attempt, &mut backoff).await {
                        self.failed(n, &error);
                        return;
                    }
                }
            }
        }
    }

    /// After a failed attempt: forget the connections (the next attempt reconnects), say the sink is failing,
    /// and wait before the next try; `false` when the retries are used up.
    async fn retry(
        &mut self,
        error: &AttemptError,
        attempt: &mut u32,
        backoff: &mut Backoff,
    ) -> bool {
        self.client = None;
        self.producers.clear();
        self.partitions.clear();
        // A broker outage shows at once (readiness, SinkFailing), not only when a batch is given up.
        self.health.set_accepting(false);
        if *attempt >= self.settings.max_retries {
            return false;
        }
        *attempt += 1;
        self.retries.increment(1);
        let wait = backoff.next_delay();
        if std::mem::replace(&mut self.outage_logged, true) {
            tracing::debug!(sink = NAME, %error, attempt = *attempt, ?wait, "Kafka produce failed, retrying");
        } else {
            tracing::warn!(
                sink = NAME,
                %error,
                max_retries = self.settings.max_retries,
                "Kafka produce failed; retrying with backoff (further retries are not logged until it recovers)"
            );
        }
        tokio::time::sleep(wait).await;
        true
    }

    fn failed(&mut self, n: u64, error: &AttemptError) {
        tracing::error!(
            sink = NAME,
            %error,
            records = n,
            "Kafka batch given up after its retries; counted in herald_sink_failures_total"
        );
        self.failures.increment(n);
    }

    /// The client, connecting (with the password file read now) when there is none.
    async fn client(&mut self) -> Result<&Client, AttemptError> {
        if self.client.is_none() {
            let timeout = self.settings.timeout.0;
            let mut builder = ClientBuilder::new(self.settings.brokers.clone())
                .client_id(concat!("herald/", env!("CARGO_PKG_VERSION")))
                // The client's own retries stop within half an attempt's time, so its error (refused,
                // unreachable) is what the attempt reports rather than a timeout; herald's backoff does the rest.
                .backoff_config(rskafka::BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(1),
                    base: 2.0,
                    deadline: Some(timeout / 2),
                });
            if let Some(tls) = &self.tls {
                builder = builder.tls_config(tls.clone());
            }
            if let (Some(mechanism), Some(path)) = (
                self.settings.sasl.mechanism,
                &self.settings.sasl.password_file,
            ) {
                let password = read_secret(path).map_err(AttemptError::Connect)?;
                let credentials = Credentials::new(self.settings.sasl.username.clone(), password);
                builder = builder.sasl_config(match mechanism {
                    SaslMechanism::Plain => SaslConfig::Plain(credentials),
                    SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(credentials),
                    SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(credentials),
                });
            }
            let client = tokio::time::timeout(timeout, builder.build())
                .await
                .map_err(|_| AttemptError::Timeout(timeout))?
                .map_err(|e| AttemptError::Connect(e.to_string()))?;
            self.client = Some(client);
        }
        self.client
            .as_ref()
            .ok_or_else(|| AttemptError::Connect("no client".into()))
    }

    /// How many partitions `topic` has, asking the brokers the first time.
    async fn partition_count(&mut self, topic: &str) -> Result<usize, AttemptError> {
        if let Some(&n) = self.partitions.get(topic) {
            return Ok(n);
        }
        let timeout = self.settings.timeout.0;
        let topics = tokio::time::timeout(timeout, self.client().await?.list_topics())
            .await
            .map_err(|_| AttemptError::Timeout(timeout))??;
        if self.partitions.len() >= MAX_TOPICS {
            self.partitions.clear();
        }
        let n = topics
            .iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions.len())
            .filter(|&n| n > 0)
            .ok_or_else(|| AttemptError::NoTopic(topic.to_string()))?;
        self.partitions.insert(topic.to_string(), n);
        Ok(n)
    }

    /// The connection to the leader of one partition.
    async fn producer(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<PartitionClient>, AttemptError> {
        let key = (topic.to_string(), partition);
        if let Some(p) = self.producers.get(&key) {
            return Ok(p.clone());
        }
        let timeout = self.settings.timeout.0;
        let fut =
            self.client()
                .await?
                .partition_client(topic, partition, UnknownTopicHandling::Error);
        let p = Arc::new(
            tokio::time::timeout(timeout, fut)
                .await
                .map_err(|_| AttemptError::Timeout(timeout))??,
        );
        if self.producers.len() >= MAX_PARTITION_CLIENTS {
            self.producers.clear();
        }
        self.producers.insert(key, p.clone());
        Ok(p)
    }
}

fn compression(c: KafkaCompression) -> Compression {
    match c {
        KafkaCompression::None => Compression::NoCompression,
        KafkaCompression::Gzip => Compression::Gzip,
        KafkaCompression::Lz4 => Compression::Lz4,
        KafkaCompression::Snappy => Compression::Snappy,
        KafkaCompression::Zstd => Compression::Zstd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from the Java client's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_the_java_client() {
        for (input, want) in [
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            ("abc", 479470107),
        ] {
            assert_eq!(murmur2(input.as_bytes()), want, "{input}");
        }
        assert!((0..3).contains(&partition_for(b"ns/Pod/a", 3)));
        assert_eq!(partition_for(b"anything", 1), 0);
    }

    #[test]
    fn key_and_topic_come_from_the_involved_object() {
        let r = EventRecord::for_test("prod", "Pod", "web-1", "BackOff", "Warning");
        assert_eq!(key_for(&r), "prod/Pod/web-1");
        assert_eq!(topic_for("k8s-events", &r), "k8s-events");
        assert_eq!(topic_for("k8s-{namespace}.{kind}", &r), "k8s-prod.Pod");
        let node = EventRecord::for_test("", "Node", "n1", "Rebooted", "Warning");
        assert_eq!(key_for(&node), "/Node/n1");
        assert_eq!(topic_for("ev-{namespace}", &node), "ev-_cluster");
    }

    fn check(yaml: &str) -> Result<(), ConfigError> {
        let c: KafkaConfig = serde_saphyr::from_str(yaml).unwrap();
        c.validate("sinks.kafka")
    }

    #[test]
    fn bad_settings_name_their_key() {
        assert!(check("{}").is_ok(), "off: nothing checked");
        assert!(check("brokers: [kafka:9092, '[::1]:9093']").is_ok());
        let e = check("brokers: [kafka:9092, kafka]").unwrap_err();
        assert_eq!(e.key, "sinks.kafka.brokers[1]");
        assert!(e.reason.contains("host:port"), "{e}");
        assert_eq!(
            check("brokers: ['kafka:x']").unwrap_err().key,
            "sinks.kafka.brokers[0]"
        );
        let e = check("brokers: [k:1]\ntopic: 'ev-{ns}'").unwrap_err();
        assert_eq!(e.key, "sinks.kafka.topic");
        assert!(e.reason.contains("{namespace}"), "{e}");
        assert!(check("brokers: [k:1]\ntopic: 'ev-{namespace}-{kind}'").is_ok());
        assert_eq!(
            check("brokers: [k:1]\ntopic: 'a b'").unwrap_err().key,
            "sinks.kafka.topic"
        );
        let e = check(
            "brokers: [k:1]\nsasl: {mechanism: PLAIN, username: u, password_file: /nonexistent/pw}",
        )
        .unwrap_err();
        assert_eq!(e.key, "sinks.kafka.sasl.password_file");
        assert!(e.reason.contains("/nonexistent/pw"), "{e}");
        let e = check("brokers: [k:1]\nsasl: {mechanism: SCRAM-SHA-512}").unwrap_err();
        assert_eq!(e.key, "sinks.kafka.sasl.password_file");
        let e = check("brokers: [k:1]\ntls: {enabled: true, ca_file: /nonexistent/ca.pem}")
            .unwrap_err();
        assert_eq!(e.key, "sinks.kafka.tls.ca_file");
        assert_eq!(
            check("brokers: [k:1]\nbatch_size: 0").unwrap_err().key,
            "sinks.kafka.batch_size"
        );
    }

    #[test]
    fn a_password_file_is_read_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(read_secret(&path).unwrap(), "s3cret");
        let yaml = format!(
            "brokers: [k:1]\nsasl: {{mechanism: SCRAM-SHA-256, username: herald, password_file: {}}}",
            path.display()
        );
        assert!(check(&yaml).is_ok());
    }

    /// No broker listening: each batch is retried within its budget, then counted as failed; the sink
    /// says it is failing and ends when its ring closes (it never retries forever).
    #[tokio::test]
    async fn an_unreachable_broker_fails_batches_within_the_budget() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let t = Telemetry::new(&crate::config::MetricsConfig::default());
        let health = crate::health::Health::default();
        let settings = KafkaConfig {
            brokers: vec![addr.to_string()],
            timeout: ConfigDuration::from_millis(300),
            max_retries: 1,
            linger: ConfigDuration::from_millis(10),
            ..KafkaConfig::default()
        };
        let sink_health = health.sink(NAME);
        sink_health.set_accepting(true);
        let sink = KafkaSink::new(settings, Identity::default(), &t, sink_health.clone()).unwrap();
        let ring = Arc::new(Ring::new(NAME, 16));
        for name in ["a", "b"] {
            let r = EventRecord::for_test("ns", "Pod", name, "BackOff", "Warning");
            assert!(ring.try_push(Arc::new(Record::Event(r))).is_ok());
        }
        ring.close();
        tokio::time::timeout(Duration::from_secs(20), sink.run(ring))
            .await
            .unwrap();
        assert!(!sink_health.accepting());
        let text = t.render();
        assert!(
            text.contains(r#"herald_sink_failures_total{sink="kafka"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"herald_sink_retries_total{sink="kafka"} 1"#),
            "{text}"
        );
    }
}
