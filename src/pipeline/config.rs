//! The settings of the pipeline (`pipeline`, `filters`, `dedup`, `severity`, `redact`): their types and
//! defaults. The worker and its stages in src/pipeline/ read them; loading, checks and the error type stay in
//! `crate::config`, which re-exports these names. A reload applies `filters`, `dedup`, `severity` and `redact`
//! (marked `x-reload: applied` below, which is what src/reload.rs reads); `pipeline` needs a restart.
//! Must not compile patterns or keep state: the stages do that.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::Duration;
use crate::record::Severity;

/// The worker between the sources and the sinks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Capacity of the ring between the sources and the pipeline worker. When full the sources wait (the API
    /// server buffers), so nothing is lost here, and a larger ring only holds more records (about 1 KiB
    /// each) in memory during a burst.
    pub ingest_capacity: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            ingest_capacity: 1024,
        }
    }
}

/// An allow list and a deny list. An empty allow list allows everything; deny wins over allow.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AllowDeny {
    /// Values to keep; empty keeps every value not denied.
    pub allow: Vec<String>,
    /// Values to drop, even when allowed.
    pub deny: Vec<String>,
}

/// Which records go on: applied in the pipeline to every record, and per webhook on top of that.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(extend("x-reload" = "applied"))]
pub struct FilterConfig {
    /// Event types to keep (`Normal`, `Warning`); empty keeps all.
    pub types: Vec<String>,
    /// Event reasons (`BackOff`, `FailedMount`, ...) to allow and deny.
    pub reasons: AllowDeny,
    /// Namespaces of the involved object to allow and deny.
    pub namespaces: AllowDeny,
    /// Kinds of the involved object (`Pod`, `Node`, ...) to allow and deny.
    pub kinds: AllowDeny,
    /// Drop Events whose last occurrence is older than this (`0s` turns the filter off).
    pub max_age: Duration,
    /// Drop records below this severity: `info`, `low`, `medium`, `high` or `critical`.
    pub min_severity: Severity,
    /// Drop the Events herald itself records (reporting controller `herald`), so they never feed back into its
    /// own sinks.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DedupField {
    /// The involved object's namespace.
    Namespace,
    /// The involved object's kind.
    Kind,
    /// The involved object's name.
    Name,
    /// The Event's reason.
    Reason,
    /// The Event's type (`Normal`, `Warning`).
    Type,
    /// The Event's message.
    Message,
    /// The component that reported the Event.
    Component,
}

/// Duplicate suppression for the log sinks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(extend("x-reload" = "applied"))]
pub struct DedupConfig {
    /// Records with the same fingerprint within `ttl` are duplicates: still counted in metrics, not written to
    /// the log sinks.
    pub enabled: bool,
    /// The fields of the fingerprint: any of `namespace`, `kind`, `name`, `reason`, `type`, `message`,
    /// `component`.
    pub key: Vec<DedupField>,
    /// A record whose fingerprint was first seen less than this ago is a duplicate.
    pub ttl: Duration,
    /// Bound on remembered fingerprints; the oldest go first.
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

/// How a record's severity is decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(extend("x-reload" = "applied"))]
pub struct SeverityConfig {
    /// Per-reason severity merged over the built-in table, e.g. `{FailedMount: high}`. Built in: `OOMKilled`,
    /// `OOMKilling`, `CrashLoopBackOff` are critical; `ImagePullBackOff`, `ErrImagePull`, `FailedScheduling`,
    /// `Evicted` high; `Unhealthy`, `BackOff`, `FailedMount` medium.
    pub reasons: BTreeMap<String, Severity>,
    /// Severity of a `Warning` Event whose reason is in neither table.
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedactRule {
    /// A name for the rule, used in logs.
    pub name: String,
    /// The regular expression (Rust `regex` syntax) whose matches are replaced.
    pub pattern: String,
    /// The replacement text; `${1}`-style groups allowed.
    pub replacement: String,
}

/// Redaction of secrets before any sink or metric label sees a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(extend("x-reload" = "applied"))]
pub struct RedactConfig {
    /// Drop the message of Events about Secrets entirely (they may quote secret data): any kind ending in
    /// `Secret` (SealedSecret, ExternalSecret), as the object the Event is about or as its related object.
    pub drop_secret_messages: bool,
    /// Applied in order to the message (note), reason and action of every record. The defaults cover the
    /// common credential shapes: PEM private keys, secret-named JSON values, URL userinfo, Basic and Bearer
    /// authorization, AWS access key IDs, GitHub tokens, bare JWTs, `password=`, `token=`, `api_key=`.
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
                // GitHub tokens (classic and fine-grained). No upper length: a bounded repeat compiles to
                // one copy of the class per allowed length, and a longer token is better hidden whole.
                rule(
                    "github_token",
                    r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
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
