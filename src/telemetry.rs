//! herald's own metrics: the catalogue of names, and a registry that hands out pre-resolved handles.
//!
//! No global recorder: the agent owns one [`Telemetry`], registers each label set once and keeps the
//! returned handle, so updating a metric on the hot path is an atomic add, never a registry look-up.
//! Every metric herald exports is listed in [`CATALOGUE`]; a test checks that the README documents each one.

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// One exported metric: its name, type, labels and meaning.
pub struct MetricDef {
    pub name: &'static str,
    pub kind: &'static str,
    pub labels: &'static str,
    pub help: &'static str,
}

macro_rules! catalogue {
    ($($ident:ident = $name:literal, $kind:literal, $labels:literal, $help:literal;)*) => {
        $(pub const $ident: &str = $name;)*
        /// Every metric herald exports.
        pub const CATALOGUE: &[MetricDef] = &[
            $(MetricDef { name: $name, kind: $kind, labels: $labels, help: $help },)*
        ];
    };
}

catalogue! {
    EVENTS = "herald_events_total", "counter", "namespace, kind, reason, type",
        "Event objects seen for the first time (an Event with count 57 is one object).";
    OCCURRENCES = "herald_event_occurrences_total", "counter", "namespace, kind, reason, type",
        "Occurrences: a new Event adds its count, a count increase adds the increase, a delete adds nothing.";
    WATCH_EVENTS = "herald_watch_events_total", "counter", "resource, type",
        "Objects received from the API server, by type: LISTED, ADDED, MODIFIED, DELETED.";
    RECEIVED = "herald_pipeline_received_total", "counter", "",
        "Records that entered the pipeline (objects that carried new occurrences).";
    FILTERED = "herald_pipeline_filtered_total", "counter", "filter",
        "Records dropped by a filter: type, reason, namespace, kind, max_age, min_severity, own_event.";
    DEDUPLICATED = "herald_pipeline_deduplicated_total", "counter", "",
        "Records marked duplicate (still counted in metrics, not written to log sinks).";
    REDACTED = "herald_pipeline_redacted_total", "counter", "",
        "Records whose message, reason or action was changed by redaction (or whose message was dropped).";
    QUEUE_DROPPED = "herald_queue_dropped_total", "counter", "queue",
        "Records a full queue refused (a sink queue drops for that sink only).";
    QUEUE_BACKLOG = "herald_queue_backlog", "gauge", "queue", "Records waiting in a queue.";
    QUEUE_CAPACITY = "herald_queue_capacity", "gauge", "queue", "Capacity of a queue.";
    LEADER = "herald_leader", "gauge", "",
        "1 while this agent emits cluster-wide signals (the Lease holder in daemonset mode; always in single and sidecar mode).";
    SINK_SENT = "herald_sink_sent_total", "counter", "sink", "Records a sink delivered.";
    SINK_FAILURES = "herald_sink_failures_total", "counter", "sink", "Records a sink failed to deliver.";
    SINK_RETRIES = "herald_sink_retries_total", "counter", "sink",
        "Export requests retried after a retryable failure (unavailable, 429, 502-504, timeout).";
    DELAY = "herald_event_delay_seconds", "histogram", "",
        "Event's last occurrence (eventTime, else lastTimestamp, else firstTimestamp) to processed.";
    PROCESSING = "herald_processing_seconds", "histogram", "",
        "Object decoded to every sink handed the record (herald's own processing time).";
    WATCH_RESTARTS = "herald_watch_restarts_total", "counter", "resource, reason",
        "Watches re-established: timeout (normal end), closed, error, expired (410, relist), stalled.";
    WATCH_ERRORS = "herald_watch_errors_total", "counter", "resource, kind",
        "Failed list or watch requests: list, watch.";
    WATCH_LAST_EVENT = "herald_watch_last_event_timestamp_seconds", "gauge", "resource",
        "Unix time of the last object or bookmark received on a watch.";
    INVALID_OBJECTS = "herald_invalid_objects_total", "counter", "resource, reason",
        "Malformed objects from the API, counted and skipped: missing_field, wrong_type, undecodable; invalid_utf8 counts list pages whose invalid UTF-8 was replaced by U+FFFD (objects kept).";
    MESSAGES_TRUNCATED = "herald_messages_truncated_total", "counter", "resource",
        "Event messages longer than source.events.max_message_bytes, cut on a UTF-8 boundary and marked truncated.";
    STATE_EVICTIONS = "herald_source_state_evictions_total", "counter", "resource",
        "Per-Event count state forgotten because max_tracked_objects was reached.";
    TRACKED_OBJECTS = "herald_source_tracked_objects", "gauge", "resource",
        "Event objects whose last count herald remembers.";
    SERIES_OVERFLOW = "herald_metric_series_overflow_total", "counter", "metric",
        "Updates folded into the __other__ label set by the cardinality guard.";
    LABELS_TRUNCATED = "herald_label_values_truncated_total", "counter", "metric",
        "Label values longer than 128 bytes, cut (ending in ...) so the guard bounds the bytes of a series too.";
    VM_TRANSITIONS = "herald_vm_transitions_total", "counter", "namespace, transition",
        "KubeVirt lifecycle transitions: created, started, stopped, paused, unpaused, deleted, failed, error, node_changed, migration_started, migration_rejected, migration_succeeded, migration_failed.";
    VM_MIGRATIONS = "herald_vm_migrations_total", "counter", "namespace, outcome",
        "Finished VM migrations (VirtualMachineInstanceMigration phase Succeeded or Failed): succeeded, failed.";
    VM_START_DURATION = "herald_vm_start_duration_seconds", "histogram", "namespace",
        "VMI Pending (else created) to Running, from status.phaseTransitionTimestamps.";
    VM_MIGRATION_DURATION = "herald_vm_migration_duration_seconds", "histogram", "namespace, outcome",
        "migrationState startTimestamp to endTimestamp (the migration's, else its VMI's), once per finished migration that has both.";
    VMIS = "herald_vmis", "gauge", "namespace, phase", "VirtualMachineInstances by status.phase (KubeVirt's phases, Unset, other), exact across relists.";
    VM_MIGRATIONS_PENDING = "herald_vm_migrations_pending", "gauge", "namespace, blocked",
        "VirtualMachineInstanceMigrations in phase Pending: blocked=resource_quota while KubeVirt reports migrationRejectedByResourceQuota, else none.";
    CHECKPOINT_FAILURES = "herald_checkpoint_failures_total", "counter", "checkpoint",
        "Checkpoint writes that failed (state_dir unwritable or full); until one succeeds, a crash repeats counts.";
    QUOTA_EXCEEDED = "herald_quota_exceeded_total", "counter", "namespace, resource",
        "Occurrences of Events saying a ResourceQuota was exceeded (exceeded quota: ..., requested: RESOURCE=...), per resource.";
    SOURCE_UP = "herald_source_up", "gauge", "source",
        "1 when a source's API is served (source=kubevirt: KubeVirt installed), else 0.";
    BUILD_INFO = "herald_build_info", "gauge", "version", "Always 1; carries the version.";
    SINK_FILTERED = "herald_sink_filtered_total", "counter", "sink",
        "Records a webhook's own filter left out.";
    SELF_EVENTS = "herald_self_events_total", "counter", "reason, result",
        "Kubernetes Events herald recorded about itself: written, rate_limited, dropped (queue full), failed.";
    CONFIG_RELOADS = "herald_config_reloads_total", "counter", "result",
        "Configuration reloads: applied, unchanged, rejected (invalid; the running configuration stays).";
    CONFIG_HASH = "herald_config_hash", "gauge", "",
        "Hash of the running configuration (first 48 bits of its SHA-256, as a number).";
    HTTP_CONNECTIONS = "herald_http_connections", "gauge", "",
        "Connections the HTTP server holds (at most server.max_connections, plus a small probe-only lane).";
    HTTP_CLOSED = "herald_http_connections_closed_total", "counter", "reason",
        "Connections the server closed itself: evicted (idle, to make room at the limit), refused (every place, probe lane included, stayed busy for 2 s), header_timeout, header_too_large, idle_timeout.";
    HTTP_REFUSED = "herald_http_requests_refused_total", "counter", "reason",
        "Requests answered with an error instead of their content: unauthorized (/metrics without the bearer token), no_client_certificate (/metrics without a verified client certificate), busy (only probes are answered at the connection limit).";
    HTTP_ACCEPT_ERRORS = "herald_http_accept_errors_total", "counter", "",
        "Failed accepts (e.g. out of file descriptors); the server backs off and logs them at most every 10 s.";
    METRICS_RENDERS = "herald_metrics_renders_total", "counter", "",
        "Renderings of /metrics; concurrent scrapes share one, HEAD renders none.";
}

/// Buckets for VM start and migration durations: 1 s to 30 min.
pub const VM_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
];

/// The process-wide metric registry and renderer.
pub struct Telemetry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// `metrics.max_series_per_metric`, for the sources that keep metrics of their own (KubeVirt) and must stay
    /// under the same cardinality guard as the metrics sink.
    max_series: usize,
}

static METADATA: Metadata<'static> = Metadata::new("herald", metrics::Level::INFO, Some("herald"));

impl Telemetry {
    pub fn new(cfg: &MetricsConfig) -> Telemetry {
        let builder = PrometheusBuilder::new();
        // Buckets were validated with the config; a failure here means an empty list, which validation refuses.
        let builder = builder
            .set_buckets_for_metric(Matcher::Full(DELAY.into()), &cfg.delay_buckets)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(PROCESSING.into()), &cfg.processing_buckets)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(VM_START_DURATION.into()), VM_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(VM_MIGRATION_DURATION.into()), VM_BUCKETS)
            })
            .unwrap_or_else(|e| {
                // Unreachable with a validated configuration (validation refuses an empty bucket list); the
                // histograms then render as summaries rather than the agent refusing to start.
                tracing::error!(error = %e, "histogram buckets refused; histograms render as summaries");
                PrometheusBuilder::new()
            });
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        for def in CATALOGUE {
            let help = def.help.into();
            match def.kind {
                "counter" => recorder.describe_counter(def.name.into(), None, help),
                "gauge" => recorder.describe_gauge(def.name.into(), None, help),
                _ => recorder.describe_histogram(def.name.into(), Some(Unit::Seconds), help),
            }
        }
        let t = Telemetry {
            recorder,
            handle,
            max_series: cfg.max_series_per_metric,
        };
        t.gauge(BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))])
            .set(1.0);
        t
    }

    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.recorder
            .register_counter(&key(name, labels), &METADATA)
    }

    /// Create a counter's series at 0 without keeping a handle, so it is exported (with HELP and TYPE) before
    /// its first increment: dashboards and `rate()` alerts then show 0 instead of no data.
    pub fn declare_counter(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        let _ = self.counter(name, labels);
    }

    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.recorder.register_gauge(&key(name, labels), &METADATA)
    }

    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        self.recorder
            .register_histogram(&key(name, labels), &METADATA)
    }

    /// The cardinality guard's limit: label sets per metric (`metrics.max_series_per_metric`).
    pub fn max_series_per_metric(&self) -> usize {
        self.max_series
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Drains histogram buffers; call every few seconds so rendering stays cheap.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// A writer for the text log format that keeps one event on one line and the terminal in its state: every
/// control character except tab is written as `\xNN`, the final newline excepted. Object names and messages
/// come from the API server; a newline or carriage return in one would forge log lines, an ESC would drive
/// the reader's terminal (tracing-subscriber does not escape `%`-formatted field values). So the text format
/// is written without colours. The fmt layer writes each event with one call: the final newline is its own.
pub struct OneLine<W>(pub W);

impl<W: std::io::Write> std::io::Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let escape = |b: u8| (b < 0x20 && b != b'\t') || b == 0x7f;
        let (body, newline) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, true),
            None => (buf, false),
        };
        if !body.iter().any(|b| escape(*b)) {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut out = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            if escape(b) {
                out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
            } else {
                out.push(b);
            }
        }
        if newline {
            out.push(b'\n');
        }
        self.0.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, v.to_string()))
        .collect();
    Key::from_parts(name, labels)
}

/// herald's own metric catalogue settings (`metrics`): the cardinality guard and histogram buckets. Loaded and
/// checked by `crate::config`, which re-exports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Label-cardinality guard: at most this many label sets per metric; the rest are folded into `__other__`
    /// and counted in `herald_metric_series_overflow_total`.
    pub max_series_per_metric: usize,
    /// Buckets (seconds) of `herald_event_delay_seconds`: an Event's last occurrence to processed.
    pub delay_buckets: Vec<f64>,
    /// Buckets (seconds) of `herald_processing_seconds`: object decoded to every sink handed the record.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_render_as_prometheus_text_with_buckets() {
        let t = Telemetry::new(&MetricsConfig::default());
        let c = t.counter(OCCURRENCES, &[("namespace", "default"), ("kind", "Pod")]);
        c.increment(57);
        t.histogram(DELAY, &[]).record(0.3);
        let text = t.render();
        assert!(
            text.contains(r#"herald_event_occurrences_total{namespace="default",kind="Pod"} 57"#),
            "{text}"
        );
        assert!(
            text.contains(r#"herald_event_delay_seconds_bucket{le="0.5"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"herald_event_delay_seconds_bucket{le="0.25"} 0"#),
            "{text}"
        );
        assert!(
            text.contains("# HELP herald_event_occurrences_total Occurrences"),
            "{text}"
        );
        assert!(text.contains(r#"herald_build_info{version=""#), "{text}");
    }

    #[test]
    fn text_logs_keep_one_event_on_one_line() {
        use std::io::Write;
        let mut w = OneLine(Vec::new());
        w.write_all(b"WARN name=web\n2026-01-01 ERROR forged\r\x07 \x1b[2mdim\x1b[0m\ttab\n")
            .unwrap();
        assert_eq!(
            String::from_utf8(w.0).unwrap(),
            "WARN name=web\\x0a2026-01-01 ERROR forged\\x0d\\x07 \\x1b[2mdim\\x1b[0m\ttab\n"
        );
        let mut w = OneLine(Vec::new());
        w.write_all(b"plain line\n").unwrap();
        assert_eq!(w.0, b"plain line\n");
    }

    #[test]
    fn readme_documents_every_metric() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .unwrap_or_default();
        for def in CATALOGUE {
            assert!(
                readme.contains(&format!("`{}`", def.name)),
                "README lacks {}",
                def.name
            );
        }
    }
}
