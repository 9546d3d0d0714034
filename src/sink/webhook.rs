//! The webhook sink: records POSTed as JSON batches to an HTTP endpoint, by default `{"records": [...]}`, or
//! in the shape a chat tool, Alertmanager or the user's template wants ([`super::webhook_format`]).
//!
//! Each record is the object the JSON line sink writes (same keys, [`super::json::write_object`]), so a
//! receiver can parse either. Every configured webhook is its own sink: its own bounded ring (a slow or dead
//! endpoint only drops its own records, counted), its own filter on top of the pipeline's, its own batching.
//! A batch is retried a bounded number of times with exponential backoff on 5xx, 429 (honouring
//! Retry-After), timeouts and connection errors; any other 4xx means the receiver refuses this batch, so it
//! is counted as failed at once. The body can be signed (HMAC-SHA256 of the exact bytes, in
//! `X-Herald-Signature: sha256=<hex>`) and carry a bearer token; both secrets are read from files at each
//! batch, so a rotated Kubernetes Secret takes effect without a restart.
//!
//! It must never block the pipeline and never retry forever.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use metrics::Counter;
use sha2::Sha256;
use tokio::sync::watch;

use super::Shared;
use super::https::{self, HttpsClient, SendError};
use super::shape::Identity;
use super::url::SinkUrl;
use super::webhook_format::{self, Formatter};
use crate::config::{Config, WebhookConfig};
use crate::health::SinkHealth;
use crate::pipeline::filter::Filter;
use crate::retry::Backoff;
use crate::ring::{Fill, Gathered, Ring};
use crate::telemetry::{self, Telemetry};

/// The signature header: `sha256=` and the lower-case hex HMAC-SHA256 of the body.
pub const SIGNATURE_HEADER: &str = "x-herald-signature";

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a webhook could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL did not parse (config validation normally catches this first).
    #[error("sinks.webhooks[{index}].url: {reason}")]
    Url { index: usize, reason: String },
    /// The body format could not be set up (a template that does not compile).
    #[error("sinks.webhooks[{index}].template: {source}")]
    Format {
        index: usize,
        #[source]
        source: webhook_format::Error,
    },
    /// The TLS client could not be built.
    #[error("sinks.webhooks[{index}]: {source}")]
    Tls {
        index: usize,
        #[source]
        source: https::TlsError,
    },
}

/// The metric label and queue name of webhook `index`: `webhook:<index>`.
///
/// Queue, ring and health names are `&'static str` (they are metric labels made once); these few are made
/// once at start, one per configured webhook, and live as long as the process.
pub fn sink_name(index: usize) -> &'static str {
    Box::leak(format!("webhook:{index}").into_boxed_str())
}

pub struct WebhookSink {
    name: &'static str,
    index: usize,
    /// The URL without userinfo.
    uri: http::Uri,
    /// `Basic ...` from the URL's userinfo.
    basic_auth: Option<String>,
    /// The URL as logs show it (no userinfo, no query values).
    shown: String,
    settings: WebhookConfig,
    filter: Filter,
    formatter: Formatter,
    /// A render error is logged when it starts, not per batch, until a body renders again.
    render_failing: bool,
    client: HttpsClient,
    identity: Identity,
    sent: Counter,
    failures: Counter,
    retries: Counter,
    filtered: Counter,
    health: Arc<SinkHealth>,
    /// The current outage was already logged: its first failed attempt is logged at once, not only after
    /// every retry has run out.
    outage_logged: bool,
    reload: Option<watch::Receiver<Arc<Config>>>,
}

impl WebhookSink {
    pub fn new(
        index: usize,
        name: &'static str,
        settings: WebhookConfig,
        identity: Identity,
        telemetry: &Telemetry,
        health: Arc<SinkHealth>,
    ) -> Result<WebhookSink, Error> {
        let url = SinkUrl::parse(&settings.url).map_err(|e| Error::Url {
            index,
            reason: e.to_string(),
        })?;
        let uri: http::Uri = url.url.parse().map_err(|_| Error::Url {
            index,
            reason: format!("expected an http:// or https:// URL, got {:?}", url.shown),
        })?;
        let client = https::client(None, true).map_err(|source| Error::Tls { index, source })?;
        let formatter = formatter(&settings).map_err(|source| Error::Format { index, source })?;
        let labels = [("sink", name)];
        Ok(WebhookSink {
            name,
            index,
            uri,
            basic_auth: url.basic_auth,
            shown: url.shown,
            filter: Filter::new(&settings.filter),
            formatter,
            render_failing: false,
            settings,
            client,
            identity,
            sent: telemetry.counter(telemetry::SINK_SENT, &labels),
            failures: telemetry.counter(telemetry::SINK_FAILURES, &labels),
            retries: telemetry.counter(telemetry::SINK_RETRIES, &labels),
            filtered: telemetry.counter(telemetry::SINK_FILTERED, &labels),
            health,
            outage_logged: false,
            reload: None,
        })
    }

    /// Follow configuration reloads: the filter, batching, timeout, retries and secret files of this
    /// webhook change at the next batch. The URL and queue capacity need a restart.
    pub fn with_reload(mut self, rx: watch::Receiver<Arc<Config>>) -> WebhookSink {
        self.reload = Some(rx);
        self
    }

    fn reconfigure(&mut self) {
        let Some(rx) = &mut self.reload else { return };
        if !rx.has_changed().unwrap_or(false) {
            return;
        }
        let config = rx.borrow_and_update().clone();
        match config.sinks.webhooks.get(self.index) {
            Some(new) if new.url == self.settings.url => {
                if *new != self.settings {
                    match formatter(new) {
                        Ok(f) => self.formatter = f,
                        // Validation compiles the template before a reload is accepted; keep the old body.
                        Err(error) => {
                            tracing::warn!(sink = self.name, %error, "the reloaded webhook format is unusable, keeping the previous one");
                        }
                    }
                    self.filter = Filter::new(&new.filter);
                    self.settings = new.clone();
                    tracing::info!(sink = self.name, "webhook settings reloaded");
                }
            }
            _ => tracing::warn!(
                sink = self.name,
                "the reloaded configuration changes or removes this webhook's URL; that takes a restart, \
                 the running webhook keeps its settings"
            ),
        }
    }

    /// Drain the ring until it is closed and empty, POSTing batches.
    pub async fn run(mut self, ring: Arc<Ring<Shared>>) {
        let mut batch: Vec<Shared> = Vec::new();
        loop {
            let gathered = ring
                .gather(|record| {
                    // A reload applies from the next batch, as its first record arrives.
                    if batch.is_empty() {
                        self.reconfigure();
                    }
                    // Checkpoint barriers never reach a webhook ([`super::SinkQueue::offer`]).
                    match record.log_entry() {
                        Some(e) if self.filter.check(e.event, jiff::Timestamp::now()).is_ok() => {
                            batch.push(record)
                        }
                        Some(_) => self.filtered.increment(1),
                        None => {}
                    }
                    if batch.is_empty() {
                        Fill::Empty
                    } else if batch.len() < self.settings.batch_size {
                        Fill::Room {
                            linger: self.settings.flush_interval.0,
                        }
                    } else {
                        Fill::Full
                    }
                })
                .await;
            if gathered == Gathered::Closed {
                break;
            }
            self.deliver(&batch).await;
            batch.clear();
            if gathered == Gathered::Last {
                break;
            }
        }
    }

    /// POST the bodies of one batch (one, or one per record for a per-record template).
    async fn deliver(&mut self, batch: &[Shared]) {
        for body in self.formatter.bodies(batch, &self.identity) {
            match body {
                Ok(body) => {
                    if self.render_failing {
                        tracing::info!(sink = self.name, "webhook template renders again");
                        self.render_failing = false;
                    }
                    self.post(Bytes::from(body.bytes), body.records).await;
                }
                Err(error) => {
                    // Not the receiver's fault: health stays as it is, the records are counted as failed.
                    if !self.render_failing {
                        tracing::error!(
                            sink = self.name,
                            %error,
                            "webhook body could not be built; counting records in herald_sink_failures_total until it renders again"
                        );
                        self.render_failing = true;
                    }
                    let n = match self.settings.template_per {
                        crate::config::TemplatePer::Record => 1,
                        crate::config::TemplatePer::Batch => batch.len() as u64,
                    };
                    self.failures.increment(n);
                }
            }
        }
    }

    /// POST one body standing for `n` records, retrying within the budget; count them as sent or failed.
    async fn post(&mut self, body: Bytes, n: u64) {
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        let mut attempt = 0;
        loop {
            let result = match self.request(body.clone()).await {
                Ok(req) => {
                    let fut = send(&self.client, req);
                    match tokio::time::timeout(self.settings.timeout.0, fut).await {
                        Ok(r) => r,
                        Err(_) => Err(SendError::new(true, "timed out")),
                    }
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    if !self.health.accepting() || std::mem::take(&mut self.outage_logged) {
                        tracing::info!(sink = self.name, url = %self.shown, "webhook delivery recovered");
                    }
                    self.health.set_accepting(true);
                    self.sent.increment(n);
                    return;
                }
                Err(e) if e.retryable && attempt < self.settings.max_retries => {
                    attempt += 1;
                    self.retries.increment(1);
                    let wait = backoff.next_delay_or(e.retry_after);
                    if std::mem::replace(&mut self.outage_logged, true) {
                        tracing::debug!(sink = self.name, error = %e.message, attempt, ?wait, "webhook POST failed, retrying");
                    } else {
                        tracing::warn!(
                            sink = self.name,
                            url = %self.shown,
                            error = %e.message,
                            max_retries = self.settings.max_retries,
                            "webhook POST failed; retrying with backoff (further retries are not logged until it recovers)"
                        );
                    }
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    // Logged once per outage, not once per batch. Health first, then the counter, so
                    // whoever sees the failure counted also sees the sink failing.
                    if self.health.accepting() {
                        tracing::error!(
                            sink = self.name,
                            url = %self.shown,
                            error = %e.message,
                            records = n,
                            "webhook delivery failed; counting records in herald_sink_failures_total until it recovers"
                        );
                    }
                    self.health.set_accepting(false);
                    self.failures.increment(n);
                    return;
                }
            }
        }
    }

    /// The request for one attempt; the secret files are read now, so rotations apply.
    async fn request(&self, body: Bytes) -> Result<http::Request<Full<Bytes>>, SendError> {
        let mut builder = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("herald/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(basic) = &self.basic_auth {
            builder = builder.header(http::header::AUTHORIZATION, basic.as_str());
        }
        if let Some(path) = &self.settings.bearer_token_file {
            let token = read_secret(path).await?;
            let token = String::from_utf8_lossy(&token).into_owned();
            builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(path) = &self.settings.hmac_secret_file {
            let secret = read_secret(path).await?;
            builder = builder.header(SIGNATURE_HEADER, signature(&secret, &body));
        }
        builder
            .body(Full::new(body))
            .map_err(|e| SendError::new(false, format!("cannot build the request: {e}")))
    }
}

/// A secret file's bytes without surrounding whitespace (a trailing newline is common). Unreadable: a
/// final failure for this batch (retrying will not make the file appear sooner than the next batch).
async fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, SendError> {
    let raw = tokio::fs::read(path)
        .await
        .map_err(|e| SendError::new(false, format!("cannot read {}: {e}", path.display())))?;
    Ok(raw.trim_ascii().to_vec())
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length; new_from_slice cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| {
        unreachable!("HMAC accepts keys of any length");
    });
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The body of the default format: `{"records":[<record>,...]}`.
pub fn payload(batch: &[Shared], id: &Identity) -> Vec<u8> {
    webhook_format::records(batch, id)
}

/// The body builder for a webhook's settings.
fn formatter(settings: &WebhookConfig) -> Result<Formatter, webhook_format::Error> {
    Formatter::new(
        settings.format,
        settings.template.as_deref(),
        settings.template_per,
        settings.alert_resolve_after.0,
    )
}

async fn send(client: &HttpsClient, req: http::Request<Full<Bytes>>) -> Result<(), SendError> {
    // 5xx and 429 are worth another try; any other 4xx will not get better.
    https::send(client, req, "webhook", |s| {
        s.is_server_error() || s.as_u16() == 429
    })
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::EventRecord;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[tokio::test]
    async fn a_reload_swaps_settings_but_not_the_url() {
        let t = Telemetry::new(&crate::config::MetricsConfig::default());
        let health = crate::health::Health::default();
        let settings = WebhookConfig {
            url: "http://127.0.0.1:9/hook".into(),
            ..WebhookConfig::default()
        };
        let mut config = Config::default();
        config.sinks.webhooks = vec![settings.clone()];
        let (tx, rx) = watch::channel(Arc::new(config.clone()));
        let mut sink = WebhookSink::new(
            0,
            "webhook:0",
            settings,
            Identity::default(),
            &t,
            health.sink("webhook:0"),
        )
        .unwrap()
        .with_reload(rx);
        let warning = EventRecord::for_test("ns", "Pod", "a", "BackOff", "Warning");
        let now = jiff::Timestamp::now();
        assert!(sink.filter.check(&warning, now).is_ok());

        config.sinks.webhooks[0].filter.types = vec!["Normal".into()];
        config.sinks.webhooks[0].max_retries = 7;
        tx.send_replace(Arc::new(config.clone()));
        sink.reconfigure();
        assert_eq!(sink.settings.max_retries, 7);
        assert!(sink.filter.check(&warning, now).is_err());

        config.sinks.webhooks[0].url = "http://elsewhere/".into();
        config.sinks.webhooks[0].max_retries = 1;
        tx.send_replace(Arc::new(config));
        sink.reconfigure();
        assert_eq!(sink.settings.max_retries, 7, "a new URL needs a restart");
    }

    #[test]
    fn payload_is_an_object_with_a_records_array() {
        let a: Shared =
            Arc::new(EventRecord::for_test("ns", "Pod", "a", "BackOff", "Warning").into());
        let b: Shared =
            Arc::new(EventRecord::for_test("ns", "Pod", "b", "Started", "Normal").into());
        let body = payload(&[a, b], &Identity::default());
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let records = v["records"].as_array().unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0]["k8s.object.name"], "a");
        assert_eq!(records[1]["k8s.event.reason"], "Started");
        assert_eq!(records[1]["severity_number"], 9);
        let empty = payload(&[], &Identity::default());
        assert_eq!(empty, b"{\"records\":[]}");
    }
}
