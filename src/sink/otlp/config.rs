//! The OTLP sink's settings (`sinks.otlp`): their types and defaults. How unset values fall back to the
//! `OTEL_EXPORTER_OTLP_*` variables is decided in `settings.rs`; loading and the error type stay in
//! `crate::config`, which re-exports these names. Must not read variables or files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{Duration, unset};

/// OTLP logs to an OpenTelemetry collector. Unset values fall back to the standard `OTEL_EXPORTER_OTLP_*`
/// variables (the `_LOGS_` ones first), then to the defaults noted; a value in this file wins over a variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpSinkConfig {
    /// Collector URL (`http://otel-collector:4318`). Unset and neither `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` nor
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` set: the sink is off. For `http/protobuf`, `/v1/logs` is appended unless
    /// the path already ends with it.
    #[serde(deserialize_with = "unset::option")]
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf`; unset: the variable, else `http/protobuf` (as the OTLP specification says).
    #[serde(deserialize_with = "unset::option")]
    pub protocol: Option<OtlpProtocol>,
    /// Extra request headers (gRPC metadata), e.g. `{X-Scope-OrgID: team-a}`, on top of the variable's.
    pub headers: BTreeMap<String, String>,
    /// A file of `name=value` lines added to the headers, for tokens kept in a Secret.
    #[serde(deserialize_with = "unset::option")]
    pub headers_file: Option<PathBuf>,
    /// PEM CA bundle that signs the collector's certificate (for `https://` endpoints), added to the system
    /// roots; unset: the variable, else the system roots only.
    #[serde(deserialize_with = "unset::option")]
    pub ca_file: Option<PathBuf>,
    /// `gzip` or `none`; unset: the variable, else `none`.
    #[serde(deserialize_with = "unset::option")]
    pub compression: Option<OtlpCompression>,
    /// Time limit of one export request; unset: the variable, else 10s.
    #[serde(deserialize_with = "unset::option")]
    pub timeout: Option<Duration>,
    /// Most records in one export request.
    pub batch_size: usize,
    /// Longest a record waits for its batch to fill.
    pub batch_interval: Duration,
    /// This sink's own ring. When full, this sink drops (counted) and the others go on.
    pub queue_capacity: usize,
    /// Retries of a batch after a retryable failure (unavailable, 429, 502-504), backing off from 0.5s (or the
    /// server's Retry-After) up to 30s; then the batch is counted in `herald_sink_failures_total`.
    pub max_retries: u32,
    /// `k8s.cluster.name` on every record; unset: omitted.
    #[serde(deserialize_with = "unset::option")]
    pub cluster_name: Option<String>,
}

impl Default for OtlpSinkConfig {
    fn default() -> Self {
        OtlpSinkConfig {
            endpoint: None,
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
            cluster_name: None,
        }
    }
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (usually port 4317).
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (usually port 4318).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Compression of export requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OtlpCompression {
    /// Uncompressed.
    None,
    /// gzip.
    Gzip,
}
