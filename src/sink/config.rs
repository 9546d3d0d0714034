//! The settings of the sinks (`sinks.metrics`, `sinks.json`, `sinks.webhooks`; the OTLP sink's are in
//! src/sink/otlp/config.rs): their types, defaults and per-entry checks. The sinks read them; loading and the
//! error type stay in `crate::config`, which re-exports these names. A webhook's fields marked
//! `x-reload: applied` are taken by a reload (src/sink/webhook.rs follows them); the rest need a restart.
//! Must not open connections or read the files named here.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Duration, positive, unset};
use crate::pipeline::config::FilterConfig;
use crate::sink::otlp::config::OtlpSinkConfig;

/// Where records leave herald. Each sink has its own ring (`queue_capacity`); when a log sink's is full that
/// sink drops (counted) and the others go on; the metrics sink's makes the pipeline wait instead.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    /// Prometheus metrics on `/metrics`.
    pub metrics: MetricsSinkConfig,
    /// JSON lines on stdout.
    pub json: JsonSinkConfig,
    /// OTLP logs to an OpenTelemetry collector. Off unless an endpoint is set here or in a variable; every
    /// unset value falls back to the matching `OTEL_EXPORTER_OTLP_*` variable (the `_LOGS_` one first), then
    /// to the default noted; a value here wins over a variable.
    pub otlp: OtlpSinkConfig,
    /// HTTP endpoints that receive records in batches, each with its own filter, queue, batching and retries
    /// (see the README for one example per `format`).
    pub webhooks: Vec<WebhookConfig>,
    /// Records as messages to Kafka, one JSON object per record keyed by the object it is about (off without
    /// `brokers`); see the README's "Kafka" section.
    pub kafka: crate::sink::kafka::KafkaConfig,
}

/// The Prometheus metrics sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSinkConfig {
    /// Count records in the Prometheus metrics served on `/metrics`.
    pub enabled: bool,
    /// This sink's own ring. Unlike the others it never drops: when full, the pipeline waits for it (a drop
    /// would be an occurrence never counted), and the watches wait behind the ingest ring; so a larger ring
    /// only holds more records (about 1 KiB each) in memory during a burst.
    pub queue_capacity: usize,
}

impl Default for MetricsSinkConfig {
    fn default() -> Self {
        MetricsSinkConfig {
            enabled: true,
            queue_capacity: 1024,
        }
    }
}

/// The JSON lines sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct JsonSinkConfig {
    /// Write one JSON line per processed record on stdout.
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

/// The body a webhook POSTs, in the shape its receiver takes (see the README for one example each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TemplatePer {
    /// Once per batch, with `records` (a list of JSON line objects): one POST per batch.
    #[default]
    Batch,
    /// Once per record, with `record`: one POST per record (for receivers that take one item).
    Record,
}

/// One webhook: records are POSTed in batches, as `{"records": [...]}` or in a receiver's own format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL the batches are POSTed to (required). A `user:password@` in it is sent as
    /// `Authorization: Basic` (not with `bearer_token_file`); logs and errors show the URL without it and
    /// without query values.
    pub url: String,
    /// Which records this webhook gets, on top of the pipeline's `filters` (the same keys).
    pub filter: FilterConfig,
    /// Most records in one POST.
    #[schemars(extend("x-reload" = "applied"))]
    pub batch_size: usize,
    /// Longest a record waits for its batch to fill.
    #[schemars(extend("x-reload" = "applied"))]
    pub flush_interval: Duration,
    /// Time limit of one POST.
    #[schemars(extend("x-reload" = "applied"))]
    pub timeout: Duration,
    /// Retries of a batch after 5xx, 429 (honouring Retry-After), a timeout or a connection error, backing off
    /// from 0.5s to 30s; other 4xx answers are never retried. Then the batch is counted as failed.
    #[schemars(extend("x-reload" = "applied"))]
    pub max_retries: u32,
    /// A file holding a secret; when set, every POST carries `X-Herald-Signature: sha256=<hex HMAC-SHA256 of
    /// the body>`. Read at each batch, so a rotated Secret applies without a restart.
    #[serde(deserialize_with = "unset::option")]
    #[schemars(extend("x-reload" = "applied"))]
    pub hmac_secret_file: Option<PathBuf>,
    /// A file holding a token sent as `Authorization: Bearer <token>`; read at each batch.
    #[serde(deserialize_with = "unset::option")]
    #[schemars(extend("x-reload" = "applied"))]
    pub bearer_token_file: Option<PathBuf>,
    /// This webhook's own ring. When full, this webhook drops (counted) and the other sinks go on.
    pub queue_capacity: usize,
    /// The body: `records` (`{"records": [...]}`), `slack`, `teams`, `alertmanager` (the URL is then
    /// Alertmanager's `/api/v2/alerts`) or `template` (the user's `template`). Signature and token apply to
    /// every format.
    #[schemars(extend("x-reload" = "applied"))]
    pub format: WebhookFormat,
    /// With `format: template`: a Jinja template (minijinja, sandboxed: no files, bounded work) whose output is
    /// the body. It sees `records` (per batch) or `record` (per record), the JSON line objects; write values
    /// with `| tojson`. A render error fails that batch, counted in `herald_sink_failures_total`.
    #[serde(deserialize_with = "unset::option")]
    #[schemars(extend("x-reload" = "applied"))]
    pub template: Option<String>,
    /// With `format: template`: `batch` renders once per batch, `record` once per record (one POST each).
    #[schemars(extend("x-reload" = "applied"))]
    pub template_per: TemplatePer,
    /// With `format: alertmanager`: an alert's `endsAt` is this long after its Event last occurred, so an Event
    /// that stops repeating resolves by itself and one that repeats keeps firing.
    #[schemars(extend("x-reload" = "applied"))]
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
    pub(crate) fn validate(&self, key: &str) -> Result<(), ConfigError> {
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
        positive(format!("{key}.batch_size"), self.batch_size)?;
        positive(format!("{key}.queue_capacity"), self.queue_capacity)?;
        positive(format!("{key}.timeout"), self.timeout)?;
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
