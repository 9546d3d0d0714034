//! herald's configuration: one typed tree, read from YAML, overridable by flags and `HERALD_*` variables.
//!
//! Every struct denies unknown keys, so a typo is an error that names the key instead of a setting silently
//! ignored. The commented default file (`herald config default`) is `default-config.yaml` beside this file; a
//! unit test proves it parses to exactly [`Config::default`], so the two cannot drift.
//!
//! Loading never panics: a bad file becomes a [`ConfigError`] whose `Display` is one line, `key: reason`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::record::Severity;

/// The commented default configuration printed by `herald config default`.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("default-config.yaml");

/// A configuration problem: which key, and why. Displayed as `key: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    /// Dotted path of the offending key (`filters.max_age`, `redact.rules[1].pattern`), or the file for
    /// errors that have no key (unreadable file, invalid YAML).
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        // A key may be any YAML string ("a\nb"): escape control characters so the error stays one line.
        let one_line = |s: String| {
            if s.contains(char::is_control) {
                s.chars()
                    .map(|c| {
                        if c.is_control() {
                            c.escape_default().to_string()
                        } else {
                            c.to_string()
                        }
                    })
                    .collect()
            } else {
                s
            }
        };
        ConfigError {
            key: one_line(key.into()),
            reason: one_line(reason.into()),
        }
    }
}

/// A duration written the human way in YAML (`"30s"`, `"5m"`, `"1h 30m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub StdDuration);

impl Duration {
    pub const fn from_secs(secs: u64) -> Duration {
        Duration(StdDuration::from_secs(secs))
    }
    pub const fn from_millis(ms: u64) -> Duration {
        Duration(StdDuration::from_millis(ms))
    }
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl std::str::FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s)
            .map(Duration)
            .map_err(|_| format!("expected a duration like \"5m\", got {s:?}"))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like \"5m\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "expected a duration like \"5m\", got the bare number {v} (add a unit)"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                self.visit_u64(v.unsigned_abs())
            }
        }
        d.deserialize_any(V)
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTP server for `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
    /// Serve `listen` over TLS instead of plain HTTP.
    pub listen_tls: ListenTlsConfig,
    /// Limits of the HTTP server, and who may read `/metrics`.
    pub server: ServerConfig,
    /// How long a shutdown may take to drain queues and flush sinks before herald exits anyway.
    pub shutdown_timeout: Duration,
    /// `single` (one replica), `daemonset` (one agent per node; the cluster-wide Event watch runs only on
    /// the agent that holds the leader Lease) or `sidecar` (only the pod's own namespace, no Lease).
    pub mode: Mode,
    /// A directory for checkpoints (watch positions, per-object counts and states, Event counter totals), so
    /// a restarted agent resumes where it stopped instead of taking a new baseline. Empty: no checkpoints.
    pub state_dir: String,
    /// How often checkpoints are written while something changed (and always on shutdown). With
    /// `state_dir`, Event counters show only saved values, so they move in steps of this interval.
    pub checkpoint_interval: Duration,
    pub leader_election: LeaderElectionConfig,
    pub source: SourceConfig,
    pub pipeline: PipelineConfig,
    pub filters: FilterConfig,
    pub dedup: DedupConfig,
    pub severity: SeverityConfig,
    pub redact: RedactConfig,
    pub metrics: MetricsConfig,
    pub sinks: SinksConfig,
    pub log: LogConfig,
    pub self_events: SelfEventsConfig,
    pub reload: ReloadConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 9477)),
            listen_tls: ListenTlsConfig::default(),
            server: ServerConfig::default(),
            shutdown_timeout: Duration::from_secs(10),
            mode: Mode::Single,
            state_dir: String::new(),
            checkpoint_interval: Duration::from_secs(2),
            leader_election: LeaderElectionConfig::default(),
            source: SourceConfig::default(),
            pipeline: PipelineConfig::default(),
            filters: FilterConfig::default(),
            dedup: DedupConfig::default(),
            severity: SeverityConfig::default(),
            redact: RedactConfig::default(),
            metrics: MetricsConfig::default(),
            sinks: SinksConfig::default(),
            log: LogConfig::default(),
            self_events: SelfEventsConfig::default(),
            reload: ReloadConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    pub events: EventSourceConfig,
    pub kubevirt: KubevirtSourceConfig,
}

/// KubeVirt VM lifecycle (`kubevirt.io/v1` VirtualMachines, VMIs and migrations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubevirtSourceConfig {
    /// Watch KubeVirt when the cluster serves it; a cluster without KubeVirt is fine either way.
    pub enabled: bool,
    /// How often to check again whether KubeVirt got installed.
    pub discovery_interval: Duration,
    /// Objects per list page.
    pub page_size: u32,
    /// Bound on the per-object state kept to derive transitions, per resource (new objects beyond it are
    /// not tracked).
    pub max_tracked_objects: usize,
}

impl Default for KubevirtSourceConfig {
    fn default() -> Self {
        KubevirtSourceConfig {
            enabled: true,
            discovery_interval: Duration::from_secs(60),
            page_size: 500,
            max_tracked_objects: 100_000,
        }
    }
}

/// Which Events API to watch. Both carry the same objects on a real cluster; pick one, not both, or every
/// occurrence is seen twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum EventsApi {
    #[default]
    #[serde(rename = "core/v1")]
    CoreV1,
    #[serde(rename = "events.k8s.io/v1")]
    EventsV1,
}

/// Which namespaces the Event source watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One cluster-wide watch.
    #[default]
    All,
    /// One watch per namespace listed in `namespaces`.
    Namespaces,
    /// Only herald's own namespace (sidecar): `POD_NAMESPACE`, else the service account's namespace, else the
    /// kubeconfig context's namespace.
    Own,
}

/// What to do with Events that already exist when herald starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StartupPolicy {
    /// They are a baseline: only their later count increases are occurrences.
    #[default]
    SkipExisting,
    /// Count every existing Event's full count once, as if it had just happened.
    Replay,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventSourceConfig {
    pub enabled: bool,
    pub api: EventsApi,
    pub scope: Scope,
    /// Used when `scope: namespaces`.
    pub namespaces: Vec<String>,
    pub label_selector: String,
    pub field_selector: String,
    /// Objects per list page.
    pub page_size: u32,
    pub startup: StartupPolicy,
    /// Bound on the per-Event state kept to turn counts into occurrence deltas. Past it the oldest entries are
    /// forgotten (a forgotten Event's next update counts its full count again: counted in
    /// `herald_source_state_evictions_total`).
    pub max_tracked_objects: usize,
    /// A watch that delivers nothing (no object, no bookmark) for this long is treated as stalled and
    /// re-opened from its last resourceVersion (counted as `herald_watch_restarts_total{reason="stalled"}`).
    /// Keep it above the API server's bookmark interval (about 1m) and the watch timeout (290s).
    pub stall_timeout: Duration,
    /// Messages longer than this many bytes are cut on a UTF-8 character boundary and the record is marked
    /// truncated (`herald.truncated` in the logs, `herald_messages_truncated_total`).
    pub max_message_bytes: usize,
}

impl Default for EventSourceConfig {
    fn default() -> Self {
        EventSourceConfig {
            enabled: true,
            api: EventsApi::CoreV1,
            scope: Scope::All,
            namespaces: Vec::new(),
            label_selector: String::new(),
            field_selector: String::new(),
            page_size: 500,
            startup: StartupPolicy::SkipExisting,
            max_tracked_objects: 200_000,
            stall_timeout: Duration::from_secs(305),
            max_message_bytes: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Capacity of the ring between the sources and the pipeline worker. When full the sources wait
    /// (the API server buffers), so nothing is lost here.
    pub ingest_capacity: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            ingest_capacity: 8192,
        }
    }
}

/// An allow list and a deny list. An empty allow list allows everything; deny wins over allow.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllowDeny {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// Event types to keep (`Normal`, `Warning`); empty keeps all.
    pub types: Vec<String>,
    pub reasons: AllowDeny,
    pub namespaces: AllowDeny,
    /// Kinds of the involved object (`Pod`, `Node`, ...).
    pub kinds: AllowDeny,
    /// Drop Events whose last occurrence is older than this (`0s` turns the filter off).
    pub max_age: Duration,
    pub min_severity: Severity,
    /// Drop the Events herald itself records (reporting controller `herald`), so they never feed back
    /// into its own sinks.
    pub exclude_own_events: bool,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            types: Vec::new(),
            reasons: AllowDeny::default(),
            namespaces: AllowDeny::default(),
            kinds: AllowDeny::default(),
            max_age: Duration::from_secs(0),
            min_severity: Severity::Info,
            exclude_own_events: true,
        }
    }
}

/// The fields a dedup fingerprint is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DedupField {
    Namespace,
    Kind,
    Name,
    Reason,
    Type,
    Message,
    Component,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    pub enabled: bool,
    pub key: Vec<DedupField>,
    /// A record whose fingerprint was first seen less than `ttl` ago is a duplicate.
    pub ttl: Duration,
    /// Hard bound on remembered fingerprints; the oldest go first.
    pub max_entries: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            enabled: true,
            key: vec![
                DedupField::Namespace,
                DedupField::Kind,
                DedupField::Name,
                DedupField::Reason,
            ],
            ttl: Duration::from_secs(60),
            max_entries: 50_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeverityConfig {
    /// Per-reason severity, merged over the built-in table (see the README).
    pub reasons: BTreeMap<String, Severity>,
    /// Severity of a `Warning` whose reason is in neither table.
    pub warning: Severity,
    /// Severity of a `Normal` Event whose reason is in neither table.
    pub normal: Severity,
    /// An Event whose count reaches this is marked `repeated` and raised one severity step (0 turns it off).
    pub repeat_threshold: u32,
}

impl Default for SeverityConfig {
    fn default() -> Self {
        SeverityConfig {
            reasons: BTreeMap::new(),
            warning: Severity::Low,
            normal: Severity::Info,
            repeat_threshold: 10,
        }
    }
}

/// A regular-expression redaction applied to every record's message, reason and action before any sink or
/// metric label sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactRule {
    pub name: String,
    pub pattern: String,
    /// Replacement text; `$1`-style groups allowed.
    pub replacement: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactConfig {
    /// Drop the message of Events about Secrets entirely (they may quote secret data): any kind ending in
    /// `Secret` (SealedSecret, ExternalSecret), as the object the Event is about or as its related object.
    pub drop_secret_messages: bool,
    /// Applied in order to the message (note), reason and action of every record: the defaults cover the
    /// common credential shapes (PEM private keys, secret-named JSON values, URL userinfo, Basic and Bearer
    /// authorization, AWS access key IDs, GitHub tokens, bare JWTs, password=, token=, api_key=).
    pub rules: Vec<RedactRule>,
}

impl Default for RedactConfig {
    fn default() -> Self {
        let rule = |name: &str, pattern: &str, replacement: &str| RedactRule {
            name: name.into(),
            pattern: pattern.into(),
            replacement: replacement.into(),
        };
        RedactConfig {
            drop_secret_messages: true,
            rules: vec![
                // Private keys in PEM form (a cut message may lack the END line).
                rule(
                    "private_key",
                    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?s:.*?)(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|$)",
                    "[REDACTED PRIVATE KEY]",
                ),
                // Secret-named JSON string values: {"password":"x"}, also with escaped quotes.
                rule(
                    "json_secret",
                    r#"(?i)(\\?"(?:password|passwd|secret|token|access_token|refresh_token|api[_-]?key|access[_-]?key|secret[_-]?key|client[_-]?secret|private[_-]?key)\\?"\s*:\s*\\?")[^"\\]*"#,
                    "${1}[REDACTED]",
                ),
                // user:password@ in URLs.
                rule(
                    "url_credentials",
                    r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]*@",
                    "${1}[REDACTED]@",
                ),
                // Basic authorization headers.
                rule(
                    "basic_auth",
                    r"(?i)((?:proxy-)?authorization\s*[=:]\s*basic\s+)[A-Za-z0-9+/]+=*",
                    "${1}[REDACTED]",
                ),
                // Bearer tokens.
                rule(
                    "bearer",
                    r"(?i)(bearer\s+)[A-Za-z0-9\-._~+/]+=*",
                    "${1}[REDACTED]",
                ),
                // AWS access key IDs.
                rule(
                    "aws_access_key",
                    r"\b(?:AKIA|ASIA|AIDA|AROA|AGPA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b",
                    "[REDACTED]",
                ),
                // GitHub tokens (classic and fine-grained).
                rule(
                    "github_token",
                    r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})",
                    "[REDACTED]",
                ),
                // Bare JSON Web Tokens (header and payload are base64url JSON, so start with eyJ).
                rule(
                    "jwt",
                    r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
                    "[REDACTED]",
                ),
                // password=... and password: ...
                rule(
                    "password",
                    r"(?i)(password\s*[=:]\s*)[^\s,;&]+",
                    "${1}[REDACTED]",
                ),
                // token=... and token: ...
                rule("token", r"(?i)(token\s*[=:]\s*)[^\s,;&]+", "${1}[REDACTED]"),
                // api_key=..., access_key: ..., client_secret=... (query strings and headers).
                rule(
                    "api_key",
                    r#"(?i)((?:api[_-]?key|apikey|access[_-]?key|secret[_-]?key|client[_-]?secret)\s*[=:]\s*)[^\s,;&"']+"#,
                    "${1}[REDACTED]",
                ),
            ],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Label-cardinality guard: at most this many label sets per metric; the rest are folded into
    /// `__other__` and counted in `herald_metric_series_overflow_total`.
    pub max_series_per_metric: usize,
    /// Buckets (seconds) of `herald_event_delay_seconds`: Event's last occurrence → processed.
    pub delay_buckets: Vec<f64>,
    /// Buckets (seconds) of `herald_processing_seconds`: object decoded → every sink handed the record.
    pub processing_buckets: Vec<f64>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            max_series_per_metric: 10_000,
            delay_buckets: vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
            processing_buckets: vec![
                0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5,
            ],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Single,
    Daemonset,
    Sidecar,
}

/// The Lease that elects the one agent of a DaemonSet that watches cluster-wide Events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaderElectionConfig {
    /// Lease name, in herald's own namespace.
    pub lease_name: String,
    /// A Lease not renewed for this long may be taken over by another agent.
    pub lease_duration: Duration,
    /// How often the leader renews (and the others check).
    pub renew_interval: Duration,
    /// A leader that has not renewed for this long stops emitting cluster-wide signals. Shorter than
    /// `lease_duration` so the leader has stopped before any other agent may take the Lease over, with the
    /// difference as margin for clock rate and scheduling; `null`: two thirds of `lease_duration` (10s for 15s).
    pub renew_deadline: Option<Duration>,
}

impl LeaderElectionConfig {
    /// `renew_deadline`, or two thirds of `lease_duration` when it is not set.
    pub fn effective_renew_deadline(&self) -> StdDuration {
        self.renew_deadline
            .map(|d| d.0)
            .unwrap_or_else(|| self.lease_duration.0 * 2 / 3)
    }
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        LeaderElectionConfig {
            lease_name: "herald-leader".into(),
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(2),
            renew_deadline: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    pub metrics: MetricsSinkConfig,
    pub json: JsonSinkConfig,
    pub otlp: OtlpSinkConfig,
    /// HTTP endpoints that receive JSON batches of records, each with its own filter and queue.
    pub webhooks: Vec<WebhookConfig>,
    /// Records as messages to Kafka (off without brokers); its settings live with the sink.
    pub kafka: crate::sink::kafka::KafkaConfig,
}

/// OTLP logs to an OpenTelemetry collector. Unset values fall back to the standard `OTEL_EXPORTER_OTLP_*`
/// variables (the `_LOGS_` ones first), then to the defaults noted; a value in this file wins over a variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpSinkConfig {
    /// Collector URL (`http://otel-collector:4318`). Empty and no variable set: the sink is off.
    /// For `http/protobuf`, `/v1/logs` is appended unless the path already ends with it.
    pub endpoint: String,
    /// `grpc` or `http/protobuf` (default `http/protobuf`, as the OTLP specification says).
    pub protocol: Option<OtlpProtocol>,
    /// Extra request headers (gRPC metadata), e.g. a tenant id.
    pub headers: BTreeMap<String, String>,
    /// A file of `name=value` lines added to the headers, for tokens kept in a Secret.
    pub headers_file: Option<std::path::PathBuf>,
    /// PEM CA bundle that signs the collector's certificate (for `https://` endpoints), added to the
    /// system roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// `gzip` or `none` (default `none`).
    pub compression: Option<OtlpCompression>,
    /// Time limit of one export request (default 10s).
    pub timeout: Option<Duration>,
    /// Most records in one export request.
    pub batch_size: usize,
    /// Longest a record waits for its batch to fill.
    pub batch_interval: Duration,
    /// This sink's own ring. When full, this sink drops (counted) and the others go on.
    pub queue_capacity: usize,
    /// Retries of a batch after a retryable failure (unavailable, 429, 502-504), with exponential backoff
    /// from 0.5s (or the server's Retry-After) up to 30s; after them the batch is counted as failed.
    pub max_retries: u32,
    /// `k8s.cluster.name` on every record; omitted when empty.
    pub cluster_name: String,
}

impl Default for OtlpSinkConfig {
    fn default() -> Self {
        OtlpSinkConfig {
            endpoint: String::new(),
            protocol: None,
            headers: BTreeMap::new(),
            headers_file: None,
            ca_file: None,
            compression: None,
            timeout: None,
            batch_size: 512,
            batch_interval: Duration::from_secs(1),
            queue_capacity: 8192,
            max_retries: 5,
            cluster_name: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpCompression {
    None,
    Gzip,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSinkConfig {
    pub enabled: bool,
    /// This sink's own ring. When full, this sink drops (counted) and the others go on.
    pub queue_capacity: usize,
}

impl Default for MetricsSinkConfig {
    fn default() -> Self {
        MetricsSinkConfig {
            enabled: true,
            queue_capacity: 8192,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonSinkConfig {
    /// One JSON line per processed Event on stdout.
    pub enabled: bool,
    /// This sink's own ring. When full, this sink drops (counted) and the others go on.
    pub queue_capacity: usize,
}

impl Default for JsonSinkConfig {
    fn default() -> Self {
        JsonSinkConfig {
            enabled: true,
            queue_capacity: 8192,
        }
    }
}

/// TLS for herald's HTTP server: PEM files, typically a mounted Secret (cert-manager's `tls.crt` and
/// `tls.key`). Both empty: plain HTTP. The files are read again when they change (a renewed certificate
/// is served from the next connection on, without a restart).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenTlsConfig {
    /// The certificate chain, leaf first.
    pub cert_file: String,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// CA certificates (PEM) that sign the client certificates `/metrics` then requires (mutual TLS). The
    /// probes stay open to clients without a certificate (the kubelet has none). "" asks for none.
    pub client_ca_file: String,
}

impl ListenTlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty() || !self.key_file.is_empty()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match (self.cert_file.is_empty(), self.key_file.is_empty()) {
            (true, false) => Err(ConfigError::new(
                "listen_tls.cert_file",
                "missing: listen_tls.key_file is set, and TLS needs both",
            )),
            (false, true) => Err(ConfigError::new(
                "listen_tls.key_file",
                "missing: listen_tls.cert_file is set, and TLS needs both",
            )),
            (true, true) if !self.client_ca_file.is_empty() => Err(ConfigError::new(
                "listen_tls.client_ca_file",
                "needs listen_tls.cert_file and listen_tls.key_file: client certificates are checked in TLS",
            )),
            _ => Ok(()),
        }
    }
}

/// Limits of herald's HTTP server, so scrapers, port scans and slow or hostile clients cannot take its
/// memory, its file descriptors or the kubelet's probes. `/healthz`, `/livez` and `/readyz` stay open and
/// answered at every limit; only `/metrics` can require a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Connections served at once. At the limit, the longest-open connection that is not in the middle of a
    /// request is closed to make room; when every one is, a new connection may only ask for a probe. Also
    /// capped at half the process's open-file limit, so connections never starve checkpoints and watches.
    pub max_connections: usize,
    /// Time a client has to send a complete request header, counted from the connection's start or from the
    /// previous response; a connection that stays silent or trickles its header longer is closed.
    pub header_read_timeout: Duration,
    /// A connection on which no byte moved either way for this long (a client that stops reading its
    /// response) is closed.
    pub idle_timeout: Duration,
    /// Largest request header accepted (bytes, at least 8192); a larger one is refused with 431.
    pub max_header_bytes: usize,
    /// A file holding the bearer token `/metrics` requires (`Authorization: Bearer <token>`, Prometheus's
    /// `authorization.credentials_file`). Read again on each scrape, so a rotated Secret applies at once.
    /// "" leaves `/metrics` open.
    pub metrics_bearer_token_file: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 128,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            metrics_bearer_token_file: String::new(),
        }
    }
}

impl ServerConfig {
    /// hyper refuses a read buffer below 8 KiB.
    pub const MIN_HEADER_BYTES: usize = 8192;

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(ConfigError::new(
                "server.max_connections",
                "must be greater than 0",
            ));
        }
        if self.header_read_timeout.is_zero() {
            return Err(ConfigError::new(
                "server.header_read_timeout",
                "must be greater than 0",
            ));
        }
        if self.idle_timeout.is_zero() {
            return Err(ConfigError::new(
                "server.idle_timeout",
                "must be greater than 0",
            ));
        }
        if self.max_header_bytes < Self::MIN_HEADER_BYTES {
            return Err(ConfigError::new(
                "server.max_header_bytes",
                format!("must be at least {}", Self::MIN_HEADER_BYTES),
            ));
        }
        Ok(())
    }
}

/// herald's own diagnostics, on stderr.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter (`info`, `herald=debug,kube=warn`).
    pub level: String,
    pub format: LogFormat,
    /// Also send herald's own diagnostics (info and above, herald's own targets only) as OTLP logs through the
    /// OTLP sink's endpoint, scope `herald.diagnostics`. Off by default.
    pub otlp: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
            otlp: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The body a webhook POSTs, in the shape its receiver takes (see the README for one example each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// `{"records": [...]}`, each record the JSON line object.
    #[default]
    Records,
    /// A Slack incoming-webhook message (`text` and Block Kit `blocks`).
    Slack,
    /// A Teams message with an Adaptive Card (Teams workflows and incoming webhooks).
    Teams,
    /// Alerts for Alertmanager's `POST /api/v2/alerts`.
    Alertmanager,
    /// The user's `template`.
    Template,
}

/// How often a webhook `template` is rendered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplatePer {
    /// Once per batch, with `records` (a list of JSON line objects): one POST per batch.
    #[default]
    Batch,
    /// Once per record, with `record`: one POST per record (for receivers that take one item).
    Record,
}

/// One webhook: records are POSTed in batches, as `{"records": [...]}` or in a receiver's own format (see
/// the README).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL the batches are POSTed to (required). A `user:password@` in it is sent as
    /// `Authorization: Basic` (not with `bearer_token_file`); logs and errors show the URL without it and
    /// without query values.
    pub url: String,
    /// Which records this webhook gets, on top of the pipeline's `filters` (same keys).
    pub filter: FilterConfig,
    /// Most records in one POST.
    pub batch_size: usize,
    /// Longest a record waits for its batch to fill.
    pub flush_interval: Duration,
    /// Time limit of one POST.
    pub timeout: Duration,
    /// Retries of a batch after 5xx, 429 (honouring Retry-After), a timeout or a connection error, with
    /// exponential backoff from 0.5s to 30s; other 4xx answers are never retried. Then the batch is counted
    /// as failed.
    pub max_retries: u32,
    /// File holding a secret; when set, every POST carries `X-Herald-Signature: sha256=<hex HMAC-SHA256 of
    /// the body>`. Read at each batch, so a rotated Secret takes effect without a restart.
    pub hmac_secret_file: Option<std::path::PathBuf>,
    /// File holding a token sent as `Authorization: Bearer <token>`; read at each batch.
    pub bearer_token_file: Option<std::path::PathBuf>,
    /// This webhook's own ring. When full, this webhook drops (counted) and the other sinks go on.
    pub queue_capacity: usize,
    /// The body: `records` (`{"records": [...]}`), `slack`, `teams`, `alertmanager` (the URL is then
    /// Alertmanager's `/api/v2/alerts`) or `template` (the user's `template`). Signature and token apply to
    /// every format.
    pub format: WebhookFormat,
    /// With `format: template`: a Jinja template (minijinja, sandboxed: no files, bounded work) whose output
    /// is the body. It sees `records` (per batch) or `record` (per record), the JSON line objects; write
    /// values with `| tojson`. A render error fails that batch, counted in `herald_sink_failures_total`.
    pub template: Option<String>,
    /// With `format: template`: `batch` renders once per batch, `record` once per record (one POST each).
    pub template_per: TemplatePer,
    /// With `format: alertmanager`: an alert's `endsAt` is this long after its Event last occurred, so an
    /// Event that stops repeating resolves by itself and one that repeats keeps firing.
    pub alert_resolve_after: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: String::new(),
            filter: FilterConfig::default(),
            batch_size: 100,
            flush_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            max_retries: 3,
            hmac_secret_file: None,
            bearer_token_file: None,
            queue_capacity: 4096,
            format: WebhookFormat::Records,
            template: None,
            template_per: TemplatePer::Batch,
            alert_resolve_after: Duration::from_secs(300),
        }
    }
}

impl WebhookConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let uri: Result<http::Uri, _> = self.url.parse();
        // Errors show the URL as logs do: without its user:password or query values.
        let shown = crate::sink::url::shown(&self.url);
        match uri {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
            _ => {
                return Err(ConfigError::new(
                    format!("{key}.url"),
                    format!("expected an http:// or https:// URL, got {shown:?}"),
                ));
            }
        }
        match crate::sink::url::SinkUrl::parse(&self.url) {
            Err(e) => return Err(ConfigError::new(format!("{key}.url"), e.to_string())),
            Ok(u) if u.basic_auth.is_some() && self.bearer_token_file.is_some() => {
                return Err(ConfigError::new(
                    format!("{key}.url"),
                    "has a user:password (sent as Basic authorization) and bearer_token_file is set too; keep one",
                ));
            }
            Ok(_) => {}
        }
        for (field, v) in [
            ("batch_size", self.batch_size),
            ("queue_capacity", self.queue_capacity),
        ] {
            if v == 0 {
                return Err(ConfigError::new(
                    format!("{key}.{field}"),
                    "must be greater than 0",
                ));
            }
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new(
                format!("{key}.timeout"),
                "must be greater than 0",
            ));
        }
        match (self.format, &self.template) {
            (WebhookFormat::Template, None) => {
                return Err(ConfigError::new(
                    format!("{key}.template"),
                    "required with format: template (the body to render)",
                ));
            }
            (WebhookFormat::Template, Some(t)) => {
                crate::sink::webhook_format::check_template(t)
                    .map_err(|e| ConfigError::new(format!("{key}.template"), e))?;
            }
            (_, Some(_)) => {
                return Err(ConfigError::new(
                    format!("{key}.template"),
                    "only used with format: template; set the format or remove the template",
                ));
            }
            (_, None) => {}
        }
        Ok(())
    }
}

/// Kubernetes Events herald records about itself, on its own Pod (`POD_NAME`/`POD_NAMESPACE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfEventsConfig {
    pub enabled: bool,
    /// Events waiting to be written; when full, new ones are dropped (recording never blocks).
    pub queue_capacity: usize,
    /// Spam control per reason and message, like client-go's: at most `burst` writes at once, then one
    /// more per `refill_interval`; the rest are dropped. Repeats that are written raise the Event's count.
    pub burst: u32,
    pub refill_interval: Duration,
}

impl Default for SelfEventsConfig {
    fn default() -> Self {
        SelfEventsConfig {
            enabled: true,
            queue_capacity: 64,
            burst: 25,
            refill_interval: Duration::from_secs(300),
        }
    }
}

/// Live reload of the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Watch the file (and SIGHUP) and apply a changed, valid configuration without a restart.
    pub enabled: bool,
    /// How often the file's content is checked (a ConfigMap volume changes by a symlink swap).
    pub poll_interval: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            enabled: true,
            poll_interval: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// Parse YAML text; `origin` names the source in errors that have no key.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::from_value(yaml_value(text, origin)?, origin)
    }

    /// Type-check and validate a generic value (YAML already parsed, overrides already applied).
    pub fn from_value(value: serde_json::Value, origin: &str) -> Result<Config, ConfigError> {
        // serde accepts a list where a struct is expected (as positional fields), which would bypass "unknown
        // keys are errors": every place the default tree has a mapping must be a mapping in the file too.
        let defaults = serde_json::to_value(Config::default())
            .map_err(|e| ConfigError::new(origin, format!("cannot describe the defaults: {e}")))?;
        check_mappings(&value, &defaults, "", origin)?;
        let config: Config = serde_path_to_error::deserialize(&value).map_err(|e| {
            let path = e.path().to_string();
            let reason = clean_serde_message(&e.inner().to_string());
            // Echo what was written when the message does not already say it.
            let reason = match value_at(&value, &path) {
                Some(v) if !reason.contains("got ") && !v.is_object() && !v.is_array() => {
                    format!("{reason}, got {}", describe_value(v))
                }
                _ => reason,
            };
            let key = if path == "." {
                origin.to_string()
            } else {
                path
            };
            ConfigError::new(key, reason)
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Read and validate a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(&origin, format!("cannot read: {e}")))?;
        Config::from_yaml(&text, &origin)
    }

    /// Checks that serde cannot express: ranges, non-empty lists, compilable patterns.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |key: &str, v: usize| {
            if v == 0 {
                Err(ConfigError::new(key, "must be greater than 0"))
            } else {
                Ok(())
            }
        };
        self.listen_tls.validate()?;
        self.server.validate()?;
        positive("pipeline.ingest_capacity", self.pipeline.ingest_capacity)?;
        if self.leader_election.renew_interval >= self.leader_election.lease_duration
            || self.leader_election.renew_interval.is_zero()
        {
            return Err(ConfigError::new(
                "leader_election.renew_interval",
                "must be greater than 0 and shorter than leader_election.lease_duration",
            ));
        }
        let deadline = self.leader_election.effective_renew_deadline();
        if deadline >= self.leader_election.lease_duration.0
            || deadline <= self.leader_election.renew_interval.0
        {
            return Err(ConfigError::new(
                "leader_election.renew_deadline",
                "must be longer than leader_election.renew_interval and shorter than leader_election.lease_duration",
            ));
        }
        positive(
            "sinks.metrics.queue_capacity",
            self.sinks.metrics.queue_capacity,
        )?;
        positive("sinks.json.queue_capacity", self.sinks.json.queue_capacity)?;
        positive("sinks.otlp.queue_capacity", self.sinks.otlp.queue_capacity)?;
        positive("sinks.otlp.batch_size", self.sinks.otlp.batch_size)?;
        for (i, w) in self.sinks.webhooks.iter().enumerate() {
            w.validate(&format!("sinks.webhooks[{i}]"))?;
        }
        self.sinks.kafka.validate("sinks.kafka")?;
        positive(
            "self_events.queue_capacity",
            self.self_events.queue_capacity,
        )?;
        positive("self_events.burst", self.self_events.burst as usize)?;
        if self.self_events.refill_interval.is_zero() {
            return Err(ConfigError::new(
                "self_events.refill_interval",
                "must be greater than 0",
            ));
        }
        if self.checkpoint_interval.is_zero() {
            return Err(ConfigError::new(
                "checkpoint_interval",
                "must be greater than 0",
            ));
        }
        if self.reload.poll_interval.is_zero() {
            return Err(ConfigError::new(
                "reload.poll_interval",
                "must be greater than 0",
            ));
        }
        positive(
            "source.events.page_size",
            self.source.events.page_size as usize,
        )?;
        positive(
            "source.events.max_tracked_objects",
            self.source.events.max_tracked_objects,
        )?;
        positive(
            "source.events.max_message_bytes",
            self.source.events.max_message_bytes,
        )?;
        if self.source.events.stall_timeout.is_zero() {
            return Err(ConfigError::new(
                "source.events.stall_timeout",
                "must be greater than 0",
            ));
        }
        positive("dedup.max_entries", self.dedup.max_entries)?;
        positive(
            "metrics.max_series_per_metric",
            self.metrics.max_series_per_metric,
        )?;
        if self.source.events.scope == Scope::Namespaces && self.source.events.namespaces.is_empty()
        {
            return Err(ConfigError::new(
                "source.events.namespaces",
                "must list at least one namespace when scope is \"namespaces\"",
            ));
        }
        if self.dedup.enabled && self.dedup.key.is_empty() {
            return Err(ConfigError::new(
                "dedup.key",
                "must name at least one field when dedup is enabled",
            ));
        }
        for (i, rule) in self.redact.rules.iter().enumerate() {
            if let Err(e) = regex::Regex::new(&rule.pattern) {
                let first_line = e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                return Err(ConfigError::new(
                    format!("redact.rules[{i}].pattern"),
                    format!("invalid regular expression: {first_line}"),
                ));
            }
        }
        for (key, buckets) in [
            ("metrics.delay_buckets", &self.metrics.delay_buckets),
            (
                "metrics.processing_buckets",
                &self.metrics.processing_buckets,
            ),
        ] {
            if buckets.is_empty() || buckets.windows(2).any(|w| w[0] >= w[1]) {
                return Err(ConfigError::new(
                    key,
                    "must be a non-empty, strictly increasing list of seconds",
                ));
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::new("log.level", format!("invalid filter: {e}")))?;
        Ok(())
    }
}

/// Parse YAML into a generic value (an empty document is an empty mapping), so the typed pass can report
/// the full key path of any error and overrides can be applied by key.
pub fn yaml_value(text: &str, origin: &str) -> Result<serde_json::Value, ConfigError> {
    let empty = || serde_json::Value::Object(Default::default());
    if text.trim().is_empty() {
        return Ok(empty());
    }
    let value: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| {
        // The parser's message is followed by a multi-line source snippet; keep `key: reason` one line.
        let message = e.to_string();
        let first = message.lines().next().unwrap_or_default();
        let first = first.strip_prefix("error: ").unwrap_or(first);
        let first = first.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
        ConfigError::new(origin, format!("invalid YAML: {first}"))
    })?;
    Ok(match value {
        serde_json::Value::Null => empty(),
        v => v,
    })
}

/// Set `dotted.key` in a generic config value, creating mappings on the way (for flag and env overrides).
pub fn set_key(
    root: &mut serde_json::Value,
    dotted: &str,
    value: serde_json::Value,
) -> Result<(), ConfigError> {
    let mut node = root;
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        let map = match node {
            serde_json::Value::Object(map) => map,
            _ => {
                return Err(ConfigError::new(
                    dotted,
                    "cannot override: a parent key is not a mapping",
                ));
            }
        };
        if parts.peek().is_none() {
            map.insert(part.to_string(), value);
            return Ok(());
        }
        node = map
            .entry(part.to_string())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
    }
    Ok(())
}

/// Refuse a list or a single value wherever the defaults have a mapping (`key` is the dotted path so far).
fn check_mappings(
    value: &serde_json::Value,
    defaults: &serde_json::Value,
    key: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    let serde_json::Value::Object(default_map) = defaults else {
        return Ok(());
    };
    let name = if key.is_empty() { origin } else { key };
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let Some(d) = default_map.get(k) else {
                    continue; // unknown keys are reported by the typed pass, with the list of known ones
                };
                let child = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                check_mappings(v, d, &child, origin)?;
                // Lists of settings (redact rules, webhooks): each item is a mapping like the default's first.
                // The webhook list is empty by default, so its item shape comes from its own default.
                if let (serde_json::Value::Array(items), serde_json::Value::Array(d_items)) = (v, d)
                {
                    let webhook = (child == "sinks.webhooks")
                        .then(|| serde_json::to_value(WebhookConfig::default()).ok())
                        .flatten();
                    if let Some(d_item @ serde_json::Value::Object(_)) =
                        webhook.as_ref().or(d_items.first())
                    {
                        for (i, item) in items.iter().enumerate() {
                            check_mappings(item, d_item, &format!("{child}[{i}]"), origin)?;
                        }
                    }
                }
            }
            Ok(())
        }
        serde_json::Value::Null if !key.is_empty() => Ok(()),
        other => Err(ConfigError::new(
            name,
            format!(
                "expected a mapping of settings (key: value), got {}",
                describe_value(other)
            ),
        )),
    }
}

/// The value at a path as serde_path_to_error writes it (`sinks.webhooks[0].url`).
fn value_at<'a>(root: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    if path == "." {
        return Some(root);
    }
    let mut node = root;
    for part in path.split('.') {
        let (name, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            node = node.get(name)?;
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            node = node.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(node)
}

/// A value as a user wrote it: `"five"`, `5`, `true`, `a list`, `a mapping`, `nothing`.
fn describe_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "nothing".to_string(),
        serde_json::Value::Array(_) => "a list".to_string(),
        serde_json::Value::Object(_) => "a mapping".to_string(),
        serde_json::Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// serde's messages speak Rust (`expected u32`, `expected struct Config`, `invalid type: map`); say it the way a
/// user thinks of the file.
fn clean_serde_message(msg: &str) -> String {
    // serde_json errors append " at line X column Y", meaningless for a value built from YAML.
    let msg = match msg.find(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    let mut msg = msg
        .replace("unknown field", "unknown key")
        .replace("unknown variant", "unknown value")
        .replace("variant", "value");
    // `invalid type: string "x", expected u32` → `expected a whole number, got "x"`.
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some((got, expected)) = msg
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once(", expected "))
        {
            msg = format!("expected {expected}, got {}", user_words_for_got(got));
        }
    }
    for (rust, user) in [
        ("u8", "a whole number from 0 to 255"),
        ("u16", "a whole number from 0 to 65535"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("u64", "a whole number"),
        ("usize", "a whole number"),
        ("i32", "a whole number"),
        ("i64", "a whole number"),
        ("f32", "a number"),
        ("f64", "a number"),
        ("a sequence", "a list"),
        ("a string", "text"),
        ("a boolean", "true or false"),
    ] {
        for end in ["", ",", ")"] {
            let from = format!("expected {rust}{end}");
            if msg.ends_with(&from) || msg.contains(&format!("{from} ")) {
                msg = msg.replace(&from, &format!("expected {user}{end}"));
            }
        }
    }
    if let Some(i) = msg.find("expected struct ") {
        let after = &msg[i + "expected struct ".len()..];
        let end = after
            .find(|c: char| !c.is_alphanumeric() && c != '_')
            .unwrap_or(after.len());
        msg = format!(
            "{}expected a mapping of settings{}",
            &msg[..i],
            &after[end..]
        );
    }
    msg.replace("expected map", "expected a mapping")
}

/// serde's description of the value found (`string "x"`, `integer `5``, `map`) in a user's words.
fn user_words_for_got(got: &str) -> String {
    let unquote = |s: &str| s.trim_matches('`').to_string();
    if let Some(s) = got.strip_prefix("string ") {
        s.to_string()
    } else if let Some(n) = got
        .strip_prefix("integer ")
        .or_else(|| got.strip_prefix("floating point "))
        .or_else(|| got.strip_prefix("boolean "))
    {
        unquote(n)
    } else {
        match got {
            "map" => "a mapping".to_string(),
            "sequence" => "a list".to_string(),
            "unit value" | "null" => "nothing".to_string(),
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        Config::from_yaml(yaml, "test.yaml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn default_file_is_exactly_the_default_config() {
        let parsed = Config::from_yaml(DEFAULT_CONFIG_YAML, "default").unwrap();
        assert_eq!(parsed, Config::default());
        // And every key of the default tree appears in the file (no undocumented setting).
        let full = serde_json::to_value(Config::default()).unwrap();
        let written: serde_json::Value = serde_saphyr::from_str(DEFAULT_CONFIG_YAML).unwrap();
        assert_eq!(keys(&full), keys(&written));
    }

    fn keys(v: &serde_json::Value) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
            if let serde_json::Value::Object(map) = v {
                for (k, v) in map {
                    let p = format!("{prefix}{k}");
                    out.push(p.clone());
                    walk(v, &format!("{p}."), out);
                }
            }
        }
        walk(v, "", &mut out);
        out.sort();
        out
    }

    #[test]
    fn lists_and_single_values_are_refused_where_settings_are_expected() {
        assert_eq!(
            err("- 0.0.0.0:9477\n- daemonset\n"),
            "test.yaml: expected a mapping of settings (key: value), got a list"
        );
        assert_eq!(
            err("42\n"),
            "test.yaml: expected a mapping of settings (key: value), got 42"
        );
        assert_eq!(
            err("filters: [a, b]\n"),
            "filters: expected a mapping of settings (key: value), got a list"
        );
        assert_eq!(
            err("redact:\n  rules: [a]\n"),
            "redact.rules[0]: expected a mapping of settings (key: value), got \"a\""
        );
        assert_eq!(
            err("sinks:\n  webhooks:\n  - [http://x]\n"),
            "sinks.webhooks[0]: expected a mapping of settings (key: value), got a list"
        );
    }

    #[test]
    fn messages_use_the_users_words_and_echo_the_value() {
        assert_eq!(
            err("metrics:\n  max_series_per_metric: abc\n"),
            "metrics.max_series_per_metric: expected a whole number, got \"abc\""
        );
        assert_eq!(
            err("metrics:\n  max_series_per_metric: -1\n"),
            "metrics.max_series_per_metric: expected a whole number, got -1"
        );
        assert_eq!(
            err("listen: a\n"),
            "listen: invalid socket address syntax, got \"a\""
        );
        assert_eq!(
            err("sinks:\n  json:\n    enabled: yes please\n"),
            "sinks.json.enabled: expected true or false, got \"yes please\""
        );
        for yaml in [
            "metrics:\n  max_series_per_metric: abc\n",
            "redact:\n  rules: [a]\n",
            "redact:\n  rules:\n  - pattern: 5\n",
            "dedup: {ttl: [1]}\n",
        ] {
            let e = err(yaml);
            for rust in ["u32", "usize", "struct", "sequence", "map,", "Config"] {
                assert!(!e.contains(rust), "{e}");
            }
        }
    }

    #[test]
    fn empty_file_means_defaults() {
        assert_eq!(Config::from_yaml("", "x").unwrap(), Config::default());
        assert_eq!(
            Config::from_yaml("# nothing\n", "x").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn bad_duration_names_key_and_shape() {
        assert_eq!(
            err("filters:\n  max_age: five\n"),
            r#"filters.max_age: expected a duration like "5m", got "five""#
        );
        assert!(err("dedup:\n  ttl: 30\n").starts_with("dedup.ttl: expected a duration"));
    }

    #[test]
    fn a_client_ca_needs_tls() {
        assert_eq!(
            err("listen_tls:\n  client_ca_file: /ca.crt\n"),
            "listen_tls.client_ca_file: needs listen_tls.cert_file and listen_tls.key_file: client certificates are checked in TLS"
        );
    }

    #[test]
    fn server_limits_are_checked_by_key() {
        assert_eq!(
            err("server:\n  max_header_bytes: 100\n"),
            "server.max_header_bytes: must be at least 8192"
        );
        assert_eq!(
            err("server:\n  max_connections: 0\n"),
            "server.max_connections: must be greater than 0"
        );
        assert_eq!(
            err("server:\n  header_read_timeout: 0s\n"),
            "server.header_read_timeout: must be greater than 0"
        );
    }

    #[test]
    fn renew_deadline_sits_between_the_retry_and_the_lease() {
        let c = Config::default();
        assert_eq!(
            c.leader_election.effective_renew_deadline(),
            StdDuration::from_secs(10)
        );
        let c = Config::from_yaml(
            "leader_election:\n  lease_duration: 3s\n  renew_interval: 300ms\n",
            "x",
        )
        .unwrap();
        assert_eq!(
            c.leader_election.effective_renew_deadline(),
            StdDuration::from_secs(2)
        );
        for bad in ["15s", "20s", "2s", "1s"] {
            let e = err(&format!("leader_election:\n  renew_deadline: {bad}\n"));
            assert!(
                e.starts_with("leader_election.renew_deadline: must be longer than"),
                "{bad}: {e}"
            );
        }
        let ok = Config::from_yaml("leader_election:\n  renew_deadline: 14s\n", "x").unwrap();
        assert_eq!(
            ok.leader_election.effective_renew_deadline(),
            StdDuration::from_secs(14)
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let e = err("filters:\n  max_agee: 5m\n");
        assert!(
            e.starts_with("filters.max_agee: unknown key `max_agee`"),
            "{e}"
        );
    }

    #[test]
    fn bad_enum_value_is_named() {
        let e = err("source:\n  events:\n    api: v2\n");
        assert!(
            e.starts_with("source.events.api: unknown value `v2`"),
            "{e}"
        );
        let e = err("filters:\n  min_severity: urgent\n");
        assert!(
            e.starts_with("filters.min_severity: unknown value `urgent`"),
            "{e}"
        );
    }

    #[test]
    fn validation_names_key() {
        assert_eq!(
            err("pipeline:\n  ingest_capacity: 0\n"),
            "pipeline.ingest_capacity: must be greater than 0"
        );
        assert!(
            err("source:\n  events:\n    scope: namespaces\n")
                .starts_with("source.events.namespaces: must list")
        );
        assert_eq!(
            err("source:\n  events:\n    stall_timeout: 0s\n"),
            "source.events.stall_timeout: must be greater than 0"
        );
        assert_eq!(
            err("source:\n  events:\n    max_message_bytes: 0\n"),
            "source.events.max_message_bytes: must be greater than 0"
        );
        let e = err("redact:\n  rules:\n    - {name: x, pattern: '(', replacement: ''}\n");
        assert!(
            e.starts_with("redact.rules[0].pattern: invalid regular expression"),
            "{e}"
        );
        let e = err("metrics:\n  delay_buckets: [1, 0.5]\n");
        assert!(e.starts_with("metrics.delay_buckets: must be"), "{e}");
    }

    #[test]
    fn webhooks_are_checked_per_entry() {
        assert_eq!(
            err("sinks:\n  webhooks:\n    - {}\n"),
            "sinks.webhooks[0].url: expected an http:// or https:// URL, got \"\""
        );
        let e = err("sinks:\n  webhooks:\n    - url: https://a.example/x\n    - url: ftp://b\n");
        assert!(e.starts_with("sinks.webhooks[1].url: expected"), "{e}");
        let e = err("sinks:\n  webhooks:\n    - url: http://a/\n      batch_size: 0\n");
        assert_eq!(e, "sinks.webhooks[0].batch_size: must be greater than 0");
        let e = err(
            "sinks:\n  webhooks:\n    - url: http://a/\n      filter: {min_severity: urgent}\n",
        );
        assert!(
            e.starts_with("sinks.webhooks[0].filter.min_severity: unknown value"),
            "{e}"
        );
        let ok = Config::from_yaml(
            "sinks:\n  webhooks:\n    - url: https://a.example/hook\n      filter: {types: [Warning]}\n",
            "x",
        )
        .unwrap();
        assert_eq!(ok.sinks.webhooks[0].filter.types, ["Warning"]);
        assert_eq!(ok.sinks.webhooks[0].batch_size, 100);
        let e = err("sinks:\n  webhooks:\n    - url: http://a/\n      format: discord\n");
        assert!(
            e.starts_with("sinks.webhooks[0].format: unknown value"),
            "{e}"
        );
        assert!(e.contains("alertmanager"), "lists the formats: {e}");
        assert_eq!(
            err("sinks:\n  webhooks:\n    - url: http://a/\n      format: template\n"),
            "sinks.webhooks[0].template: required with format: template (the body to render)"
        );
        let e = err("sinks:\n  webhooks:\n    - url: http://a/\n      template: '{}'\n");
        assert!(
            e.starts_with("sinks.webhooks[0].template: only used with format: template"),
            "{e}"
        );
        let e = err(
            "sinks:\n  webhooks:\n    - url: http://a/\n      format: template\n      template: '{% for %}'\n",
        );
        assert!(
            e.starts_with("sinks.webhooks[0].template: syntax error"),
            "{e}"
        );
    }

    #[test]
    fn webhook_credentials_are_never_in_errors_and_not_given_twice() {
        let e = err("sinks:\n  webhooks:\n    - url: gopher://admin:S3cretPW@a/?api_key=k3y\n");
        assert!(e.starts_with("sinks.webhooks[0].url: expected"), "{e}");
        assert!(!e.contains("S3cretPW") && !e.contains("k3y"), "{e}");
        let e = err(
            "sinks:\n  webhooks:\n    - url: https://admin:S3cretPW@a/\n      bearer_token_file: /t\n",
        );
        assert!(
            e.starts_with("sinks.webhooks[0].url: has a user:password"),
            "{e}"
        );
        assert!(!e.contains("S3cretPW"), "{e}");
    }

    #[test]
    fn invalid_yaml_names_file() {
        let e = err("filters: [\n");
        assert!(e.starts_with("test.yaml: invalid YAML"), "{e}");
    }

    #[test]
    fn wrong_type_names_key() {
        let e = err("listen: 12\n");
        assert!(e.starts_with("listen: "), "{e}");
        let e = err("dedup:\n  enabled: maybe\n");
        assert!(e.starts_with("dedup.enabled: "), "{e}");
    }

    #[test]
    fn overrides_apply_by_key_and_are_checked() {
        let mut v = yaml_value("source:\n  events:\n    scope: all\n", "f").unwrap();
        set_key(&mut v, "source.events.scope", "own".into()).unwrap();
        set_key(&mut v, "listen", "127.0.0.1:1".into()).unwrap();
        let c = Config::from_value(v.clone(), "f").unwrap();
        assert_eq!(c.source.events.scope, Scope::Own);
        assert_eq!(c.listen.port(), 1);
        set_key(&mut v, "source.events.api", "v9".into()).unwrap();
        let e = Config::from_value(v, "f").unwrap_err();
        assert_eq!(e.key, "source.events.api");
    }

    #[test]
    fn durations_round_trip() {
        let d: Duration = "1h 30m".parse().unwrap();
        assert_eq!(d.0, StdDuration::from_secs(5400));
        assert_eq!(d.to_string(), "1h 30m");
    }
}
