//! herald's configuration: one typed tree, read from YAML, overridable by flags and `HERALD_*` variables.
//!
//! This module keeps the top level: loading, the checks that span sections, the error type and the shared value
//! types (`Duration`, the `unset` convention). Each component's settings live beside the component
//! (`sink/otlp/config.rs`, `pipeline/config.rs`, `server/config.rs`, `source/config.rs`, `leader.rs`, ...) and
//! are re-exported here under the same names.
//!
//! Every struct denies unknown keys, so a typo is an error that names the key instead of a setting silently
//! ignored. Every key has one `///` doc comment, on its field; the types also derive a JSON Schema
//! ([`schema`]) that carries those docs and, as `x-reload`, whether a reload applies the key. The commented
//! default file (`herald config default`, `default-config.yaml` beside this file) and the README's key table
//! are generated from that schema, and tests prove both are current; src/reload.rs derives the
//! restart-needed keys from it.
//!
//! A setting that can be off or unset is written `null` (or left out); `""` still means the same where it
//! always did, so existing files keep working (see [`unset`]).
//!
//! Loading never panics: a bad file becomes a [`ConfigError`] whose `Display` is one line, `key: reason`.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[cfg(test)]
mod reference;
pub mod schema;

pub use crate::leader::LeaderElectionConfig;
pub use crate::pipeline::config::{
    AllowDeny, DedupConfig, DedupField, FilterConfig, PipelineConfig, RedactConfig, RedactRule,
    SeverityConfig,
};
pub use crate::reload::ReloadConfig;
pub use crate::self_events::SelfEventsConfig;
pub use crate::server::config::{ListenTlsConfig, ServerConfig};
pub use crate::sink::config::{
    JsonSinkConfig, MetricsSinkConfig, SinksConfig, TemplatePer, WebhookConfig, WebhookFormat,
};
pub use crate::sink::otlp::config::{OtlpCompression, OtlpProtocol, OtlpSinkConfig};
pub use crate::source::config::{
    EventSourceConfig, EventsApi, KubevirtSourceConfig, Scope, SourceConfig, StartupPolicy,
};
pub use crate::telemetry::MetricsConfig;

/// The commented default configuration printed by `herald config default`.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("default-config.yaml");

/// A configuration problem: which key, and why. Displayed as `key: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    /// Dotted path of the offending key (`filters.max_age`, `redact.rules[1].pattern`), or the file for
    /// errors that have no key (unreadable file, invalid YAML).
    pub key: String,
    /// What is wrong, in the file's words (never a Rust type name).
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

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration with its unit: \"500ms\", \"30s\", \"5m\", \"1h 30m\".",
        })
    }
}

/// The one way to say "not set": `null` or a missing key, read into `None`. Every optional setting is an
/// `Option`, so code cannot mistake "off" for a value; `""` reads as `None` too, so files written when some of
/// these keys meant "off" by an empty string load unchanged, and no user has to know which keys those were.
pub mod unset {
    use serde::{Deserialize, Deserializer};

    /// For an `Option` setting: `""` reads as `null` (not set), anything else as the value.
    pub fn option<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: serde::de::DeserializeOwned,
    {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(s) if s.is_empty() => Ok(None),
            value => T::deserialize(value)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTP server for `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
    /// Serve `listen` over TLS instead of plain HTTP.
    pub listen_tls: ListenTlsConfig,
    /// Limits of the HTTP server, so slow, idle or hostile clients cannot take herald's memory, file
    /// descriptors or probes, and who may read `/metrics`.
    pub server: ServerConfig,
    /// How long a shutdown (SIGTERM/SIGINT) may take to drain queues and flush sinks; what is left is dropped
    /// and named in a warning. A second signal exits at once.
    pub shutdown_timeout: Duration,
    /// `single`: one replica watches everything. `daemonset`: one agent per node; only the agent holding the
    /// leader Lease watches the cluster-wide Event stream. `sidecar`: only the pod's own namespace (implies
    /// `source.events.scope: own`), no Lease.
    pub mode: Mode,
    /// A directory for checkpoints (watch positions, per-Event counts, counter totals and VM states, written
    /// every `checkpoint_interval` and on shutdown), so a restarted agent continues its counters where it
    /// stopped instead of taking a new baseline. Unset: no checkpoints.
    #[serde(deserialize_with = "unset::option")]
    pub state_dir: Option<PathBuf>,
    /// How often checkpoints are written while something changed (and always on shutdown). With `state_dir`,
    /// Event counters show only saved values, so they move in steps of this interval.
    pub checkpoint_interval: Duration,
    /// The Lease that elects the one agent of a DaemonSet that watches cluster-wide Events.
    pub leader_election: LeaderElectionConfig,
    /// What herald watches: Kubernetes Events and KubeVirt VM lifecycle.
    pub source: SourceConfig,
    /// The worker between the sources and the sinks.
    pub pipeline: PipelineConfig,
    /// Which records go on to the sinks.
    pub filters: FilterConfig,
    /// Duplicate suppression for the log sinks.
    pub dedup: DedupConfig,
    /// How a record's severity is decided.
    pub severity: SeverityConfig,
    /// Redaction of secrets before any sink or metric label sees a record.
    pub redact: RedactConfig,
    /// herald's metrics: the cardinality guard and histogram buckets.
    pub metrics: MetricsConfig,
    /// Where records leave herald. Each sink has its own ring (`queue_capacity`); when it is full that sink
    /// drops (counted) and the others go on.
    pub sinks: SinksConfig,
    /// herald's own diagnostics on stderr.
    pub log: LogConfig,
    /// Kubernetes Events herald records on its own Pod (needs `POD_NAME` and `POD_NAMESPACE` from the downward
    /// API): Started, BecameLeader, LostLeadership, SinkFailing, SinkRecovered, EventsDropped, ConfigRejected.
    pub self_events: SelfEventsConfig,
    /// Live reload of this file.
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
            state_dir: None,
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

/// How herald is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One replica watches everything.
    Single,
    /// One agent per node; the cluster-wide Event watch runs only on the agent that holds the leader Lease.
    Daemonset,
    /// Only the pod's own namespace, no Lease.
    Sidecar,
}

/// herald's own diagnostics, on stderr. Read once at start (the binary sets up logging before anything else).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter (`info`, `herald=debug,kube=warn`); `RUST_LOG` wins when set.
    pub level: String,
    /// `text` (one event per line, no colours) or `json`.
    pub format: LogFormat,
    /// Also send herald's own diagnostics (info and above, herald's own targets only) as OTLP logs through the
    /// OTLP sink's endpoint, scope `herald.diagnostics`.
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

/// The shape of herald's own diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One event per line, no colours; control characters from the API written as `\x0a`, `\x1b`.
    Text,
    /// One JSON object per line.
    Json,
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
        positive(
            "self_events.refill_interval",
            self.self_events.refill_interval,
        )?;
        positive("checkpoint_interval", self.checkpoint_interval)?;
        positive("reload.poll_interval", self.reload.poll_interval)?;
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
        positive(
            "source.events.stall_timeout",
            self.source.events.stall_timeout,
        )?;
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
            // Parsed, not compiled: the syntax is what can be wrong with one pattern, and compiling eleven
            // patterns here only to drop them raised the idle agent's heap by their size (the redactor
            // compiles them, once, as one set).
            if let Err(e) = regex_syntax::Parser::new().parse(&rule.pattern) {
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

/// A count, size or duration that [`positive`] checks.
pub(crate) trait Amount: Copy {
    fn is_none(self) -> bool;
}

impl Amount for usize {
    fn is_none(self) -> bool {
        self == 0
    }
}

impl Amount for Duration {
    fn is_none(self) -> bool {
        self.is_zero()
    }
}

/// Refuse a zero capacity, batch size, limit or interval (a queue of 0 passes nothing, a timeout of 0 fails
/// every request), as `key: must be greater than 0`. Shared by every section's `validate`, so each says
/// it the same way.
pub(crate) fn positive(key: impl Into<String>, value: impl Amount) -> Result<(), ConfigError> {
    match value.is_none() {
        true => Err(ConfigError::new(key, "must be greater than 0")),
        false => Ok(()),
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

    /// Compare a checked-in file (or the part between two markers) with what is generated now; with
    /// `HERALD_BLESS=1`, write the generated text instead.
    fn generated(file: &str, markers: Option<(&str, &str)>, text: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let current = std::fs::read_to_string(&path).unwrap();
        let (before, written, after) = match markers {
            None => ("", current.as_str(), ""),
            Some((begin, end)) => {
                let b = current
                    .find(begin)
                    .unwrap_or_else(|| panic!("{file}: no {begin}"))
                    + begin.len();
                let e = current
                    .find(end)
                    .unwrap_or_else(|| panic!("{file}: no {end}"));
                (&current[..b], &current[b..e], &current[e..])
            }
        };
        let text = if markers.is_some() {
            format!("\n{text}")
        } else {
            text.to_string()
        };
        if written != text {
            if std::env::var_os("HERALD_BLESS").is_some() {
                std::fs::write(&path, format!("{before}{text}{after}")).unwrap();
            } else {
                panic!(
                    "{file} is not what the settings' documentation generates; run \
                     `HERALD_BLESS=1 cargo test --lib config::` and review the diff"
                );
            }
        }
    }

    #[test]
    fn default_file_is_generated_from_the_settings_docs() {
        generated("src/default-config.yaml", None, &reference::default_yaml());
    }

    #[test]
    fn readme_tables_are_generated_from_the_settings_docs() {
        generated(
            "README.md",
            Some(("<!-- config-keys:begin -->", "<!-- config-keys:end -->")),
            &reference::readme_table(),
        );
        let applied = reference::applied_keys()
            .iter()
            .map(|k| format!("- `{k}`\n"))
            .collect::<String>();
        generated(
            "README.md",
            Some((
                "<!-- reload-applied:begin -->",
                "<!-- reload-applied:end -->",
            )),
            &applied,
        );
        // The prose after that list names restart-needed keys by hand: each must be a real key, not applied.
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
                .unwrap();
        let after = readme.split("<!-- reload-applied:end -->").nth(1).unwrap();
        let prose = after.split("When invalid").next().unwrap();
        let defaults = serde_json::to_value(Config::default()).unwrap();
        let applied = reference::applied_keys();
        let mut named = 0;
        for key in prose.split('`').skip(1).step_by(2) {
            let Some(first) = key.split('.').next() else {
                continue;
            };
            if key.contains(' ') || key.contains('[') || defaults.get(first).is_none() {
                continue;
            }
            named += 1;
            assert!(
                !applied
                    .iter()
                    .any(|a| key == a || key.starts_with(&format!("{a}."))),
                "README names {key} as restart-needed, but a reload applies it"
            );
        }
        assert!(named >= 10, "{named}");
        // The flags table names the key each flag sets: a real key, spelled as in the file.
        let mut flags = 0;
        for row in readme.lines().filter(|l| l.starts_with("| `--")) {
            let key_cell = row.split('|').nth(3).unwrap_or_default();
            let Some(key) = key_cell.split('`').nth(1) else {
                continue; // `the file itself`, `which cluster`
            };
            let pointer = format!("/{}", key.replace('.', "/"));
            assert!(
                defaults.pointer(&pointer).is_some(),
                "README flag row names {key}, which is not a key: {row}"
            );
            flags += 1;
        }
        assert!(flags >= 10, "{flags}");
    }

    /// Every key and every value users write has a doc comment (the YAML comments and the README come from
    /// them).
    #[test]
    fn every_key_and_choice_is_documented() {
        fn walk(node: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
            match node {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::Object(props)) = map.get("properties") {
                        for (k, v) in props {
                            if reference::prose(v).is_empty() {
                                missing.push(format!("{path}.{k}"));
                            }
                        }
                    }
                    for key in ["oneOf", "anyOf"] {
                        for choice in map
                            .get(key)
                            .and_then(|v| v.as_array())
                            .into_iter()
                            .flatten()
                        {
                            let is_value =
                                choice.get("const").is_some() || choice.get("enum").is_some();
                            if is_value && reference::prose(choice).is_empty() {
                                missing.push(format!("{path} value {choice}"));
                            }
                        }
                    }
                    // A plain `enum` list means none of its values has a doc comment.
                    if map
                        .get("enum")
                        .and_then(|v| v.as_array())
                        .is_some_and(|v| v.len() > 1)
                    {
                        missing.push(format!("{path} values"));
                    }
                    for (k, v) in map {
                        walk(v, &format!("{path}/{k}"), missing);
                    }
                }
                serde_json::Value::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        walk(v, &format!("{path}/{i}"), missing);
                    }
                }
                _ => {}
            }
        }
        let mut missing = Vec::new();
        walk(schema::root(), "", &mut missing);
        assert!(missing.is_empty(), "undocumented: {missing:#?}");
    }

    #[test]
    fn empty_text_and_null_both_mean_unset() {
        let a = Config::from_yaml(
            "state_dir: \"\"\nsinks:\n  otlp:\n    endpoint: \"\"\n    timeout: \"\"\n    ca_file: \"\"\n  webhooks:\n  - url: http://a/\n    hmac_secret_file: \"\"\nleader_election:\n  renew_deadline: \"\"\n",
            "x",
        )
        .unwrap();
        let b = Config::from_yaml(
            "state_dir: null\nsinks:\n  otlp:\n    endpoint: null\n    timeout: null\n    ca_file: null\n  webhooks:\n  - url: http://a/\n    hmac_secret_file: null\nleader_election:\n  renew_deadline: null\n",
            "x",
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.state_dir, None);
        assert_eq!(a.sinks.otlp.timeout, None);
        assert_eq!(a.sinks.webhooks[0].hmac_secret_file, None);
        let c = Config::from_yaml(
            "state_dir: /var/lib/herald\nsinks:\n  otlp:\n    timeout: 3s\n",
            "x",
        )
        .unwrap();
        assert_eq!(c.state_dir, Some(PathBuf::from("/var/lib/herald")));
        // Every setting that once meant "off" by `""` reads it as unset, like `null` and a missing key.
        for yaml in [
            "listen_tls:\n  cert_file: X\n  key_file: X\n  client_ca_file: X\n",
            "server:\n  metrics_bearer_token_file: X\n",
            "source:\n  events:\n    label_selector: X\n    field_selector: X\n",
            "sinks:\n  otlp:\n    endpoint: X\n    cluster_name: X\n",
            "state_dir: X\n",
        ] {
            for unset in ["\"\"", "null"] {
                let c = Config::from_yaml(&yaml.replace('X', unset), "x").unwrap();
                assert_eq!(c, Config::default(), "{yaml} with {unset}");
            }
        }
        assert_eq!(c.sinks.otlp.timeout, Some(Duration::from_secs(3)));
        // Written back, unset is null, whichever way it was said.
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["state_dir"], serde_json::Value::Null);
        assert_eq!(v["sinks"]["otlp"]["endpoint"], serde_json::Value::Null);
        // A wrong value inside an optional setting still names the key.
        let e = err("sinks:\n  otlp:\n    protocol: http\n");
        assert!(
            e.starts_with("sinks.otlp.protocol: unknown value `http`"),
            "{e}"
        );
        assert_eq!(
            err("state_dir: 5\n"),
            "state_dir: expected path string, got 5"
        );
        assert_eq!(
            err("source:\n  events:\n    label_selector: [a]\n"),
            "source.events.label_selector: expected text, got a list"
        );
        assert_eq!(
            err("sinks:\n  webhooks:\n  - url: http://a/\n    hmac_secret_file: [a]\n"),
            "sinks.webhooks[0].hmac_secret_file: expected path string, got a list"
        );
        let e = err("sinks:\n  otlp:\n    timeout: 5\n");
        assert!(
            e.starts_with("sinks.otlp.timeout: expected a duration"),
            "{e}"
        );
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
    fn zero_counts_and_durations_are_refused_under_their_key() {
        assert_eq!(positive("a.b", 1usize), Ok(()));
        assert_eq!(positive("a.b", Duration::from_millis(1)), Ok(()));
        for (yaml, key) in [
            ("reload:\n  poll_interval: 0s\n", "reload.poll_interval"),
            ("checkpoint_interval: 0s\n", "checkpoint_interval"),
            (
                "sinks:\n  webhooks:\n    - url: http://a/\n      timeout: 0s\n",
                "sinks.webhooks[0].timeout",
            ),
            (
                "sinks:\n  kafka:\n    brokers: [k:9092]\n    batch_bytes: 0\n",
                "sinks.kafka.batch_bytes",
            ),
            (
                "sinks:\n  kafka:\n    brokers: [k:9092]\n    timeout: 0s\n",
                "sinks.kafka.timeout",
            ),
        ] {
            assert_eq!(err(yaml), format!("{key}: must be greater than 0"));
        }
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
