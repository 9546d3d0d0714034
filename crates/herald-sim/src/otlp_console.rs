//! A console for OTLP: the project's one OTLP receiver ([`crate::otlp_receiver`]) with a collector that prints
//! one line per log record and per span, so `herald demo --otlp-console` shows what a collector would receive
//! without installing one. It answers like a collector (200 with an empty protobuf response), and it belongs to
//! the simulator's tooling: nothing on the agent's path uses it. It only formats; receiving is not its job.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::otlp_receiver::{Collector, Export, Refusal};

/// Serve OTLP/HTTP on `listener` until `shutdown`, handing each printed line to `print`.
pub async fn serve(
    listener: TcpListener,
    print: fn(&str),
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    tokio::spawn(crate::otlp_receiver::serve_http(
        listener,
        Arc::new(Console(print)),
        shutdown,
    ));
    Ok(addr)
}

/// The collector that prints: it takes every request.
struct Console(fn(&str));

impl Collector for Console {
    fn logs(&self, export: Export<ExportLogsServiceRequest>) -> Result<(), Refusal> {
        log_lines(&export.request).iter().for_each(|l| (self.0)(l));
        Ok(())
    }
    fn traces(&self, export: Export<ExportTraceServiceRequest>) -> Result<(), Refusal> {
        span_lines(&export.request).iter().for_each(|l| (self.0)(l));
        Ok(())
    }
}

/// `otlp log  <time> <severity> <namespace>/<kind>/<name> <reason>: <body>` per record.
pub fn log_lines(req: &ExportLogsServiceRequest) -> Vec<String> {
    let mut out = Vec::new();
    for rl in &req.resource_logs {
        let resource = rl
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        let kind = attr(resource, "k8s.object.kind");
        let name = attr(resource, "k8s.object.name");
        for sl in &rl.scope_logs {
            for r in &sl.log_records {
                let namespace = attr(&r.attributes, "k8s.namespace.name");
                let reason = attr(&r.attributes, "k8s.event.reason");
                let body = r.body.as_ref().map(value).unwrap_or_default();
                let severity = if r.severity_text.is_empty() {
                    "-"
                } else {
                    &r.severity_text
                };
                out.push(format!(
                    "otlp log  {} {severity:<7} {namespace}/{kind}/{name} {reason}: {body}",
                    time(r.time_unix_nano),
                ));
            }
        }
    }
    out
}

/// `otlp span <name> <duration> trace=<id> <attributes>` per span.
pub fn span_lines(req: &ExportTraceServiceRequest) -> Vec<String> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                let seconds =
                    s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) as f64 / 1e9;
                let mut line = format!(
                    "otlp span {} {seconds:.1}s trace={}",
                    s.name,
                    s.trace_id.iter().take(8).fold(String::new(), |mut h, b| {
                        let _ = write!(h, "{b:02x}");
                        h
                    })
                );
                for kv in &s.attributes {
                    let v = kv.value.as_ref().map(value).unwrap_or_default();
                    let _ = write!(line, " {}={v}", kv.key);
                }
                out.push(line);
            }
        }
    }
    out
}

fn attr(attrs: &[KeyValue], key: &str) -> String {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .map(value)
        .unwrap_or_default()
}

fn value(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn time(unix_nano: u64) -> String {
    i64::try_from(unix_nano)
        .ok()
        .and_then(|n| jiff::Timestamp::from_nanosecond(i128::from(n)).ok())
        .map(|t| t.strftime("%H:%M:%S").to_string())
        .unwrap_or_else(|| "--:--:--".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..KeyValue::default()
        }
    }

    #[test]
    fn a_log_record_is_one_line_naming_its_object() {
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv("k8s.object.kind", "Pod"), kv("k8s.object.name", "web-0")],
                    ..Resource::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        time_unix_nano: 1_700_000_000_000_000_000,
                        severity_text: "Warning".into(),
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("Back-off".into())),
                        }),
                        attributes: vec![
                            kv("k8s.namespace.name", "shop"),
                            kv("k8s.event.reason", "BackOff"),
                        ],
                        ..LogRecord::default()
                    }],
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        };
        assert_eq!(
            log_lines(&req),
            ["otlp log  22:13:20 Warning shop/Pod/web-0 BackOff: Back-off"]
        );
    }
}
