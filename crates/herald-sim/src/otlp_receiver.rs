//! The one OTLP receiver: what a collector does with an export request, whoever listens. It takes OTLP/HTTP
//! (`POST /v1/logs`, `POST /v1/traces`, protobuf, gzip or not) here, decodes the request with the project's
//! proto crate and hands it to a [`Collector`], which keeps, prints or refuses it; its answer becomes the
//! status a collector would send (200 with an empty export response, 503, 429 with `Retry-After`).
//!
//! The demo's console ([`crate::otlp_console`]) is a collector that prints. herald-test-support's recording
//! receiver is a collector that keeps what arrived, and adds the gRPC transport (tonic's server) on top of the
//! same [`Collector`]. The receiver lives in the simulator's crate because the console is part of the `demo`
//! build, which must not pull test-only crates (herald-test-support, tonic's server side); it must never be
//! needed by the agent.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest export request taken, compressed or not (a collector's default is larger; herald's batches are
/// far smaller).
pub const MAX_BODY: usize = 16 << 20;

/// One export request as it arrived.
#[derive(Debug, Clone)]
pub struct Export<T> {
    /// Over gRPC (else OTLP/HTTP).
    pub grpc: bool,
    /// Request headers (gRPC metadata), names lower-case.
    pub headers: BTreeMap<String, String>,
    /// The body was gzip-compressed.
    pub gzip: bool,
    /// When the whole request had arrived.
    pub arrived: SystemTime,
    pub request: T,
}

impl Export<()> {
    /// The same arrival with its decoded request.
    pub fn carrying<T>(self, request: T) -> Export<T> {
        Export {
            grpc: self.grpc,
            headers: self.headers,
            gzip: self.gzip,
            arrived: self.arrived,
            request,
        }
    }
}

/// How a collector turns an export down: what a busy or failing collector answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// gRPC UNAVAILABLE, HTTP 503.
    Unavailable,
    /// gRPC RESOURCE_EXHAUSTED, HTTP 429 with `Retry-After: retry_after` (seconds).
    TooMany { retry_after: u64 },
}

/// What receives the decoded requests. Called from the receiver's tasks, so it must be shareable.
pub trait Collector: Send + Sync + 'static {
    /// Wait this long before taking each request (a slow collector). A request whose sender gives up
    /// meanwhile is never taken, as with a real collector.
    fn delay(&self) -> Duration {
        Duration::ZERO
    }
    /// Take a logs export, or refuse it.
    fn logs(&self, export: Export<ExportLogsServiceRequest>) -> Result<(), Refusal>;
    /// Take a traces export, or refuse it.
    fn traces(&self, export: Export<ExportTraceServiceRequest>) -> Result<(), Refusal>;
}

/// Serve OTLP/HTTP on `listener` into `collector` until `stop`.
pub async fn serve_http<C: Collector>(
    listener: TcpListener,
    collector: Arc<C>,
    stop: CancellationToken,
) {
    crate::serve::http1(listener, stop, move |req| {
        http_export(req, collector.clone())
    })
    .await;
}

/// One OTLP/HTTP request: decoded and handed to `collector`, or answered with what is wrong with it.
pub async fn http_export<C: Collector>(
    req: Request<Incoming>,
    collector: Arc<C>,
) -> Response<Full<Bytes>> {
    let delay = collector.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let path = req.uri().path().to_string();
    if path != "/v1/logs" && path != "/v1/traces" {
        return answer(StatusCode::NOT_FOUND, Bytes::new());
    }
    // OTLP/HTTP also defines JSON; herald sends protobuf only, and so this receiver takes only that.
    let protobuf = headers
        .get("content-type")
        .is_some_and(|t| t.starts_with("application/x-protobuf"));
    if !protobuf {
        return answer(StatusCode::UNSUPPORTED_MEDIA_TYPE, Bytes::new());
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return answer(StatusCode::PAYLOAD_TOO_LARGE, Bytes::new()),
    };
    let gzip = headers.get("content-encoding").is_some_and(|e| e == "gzip");
    let Some(bytes) = (if gzip { gunzip(&body) } else { Some(body) }) else {
        return answer(StatusCode::BAD_REQUEST, Bytes::new());
    };
    let export = Export {
        grpc: false,
        headers,
        gzip,
        arrived: SystemTime::now(),
        request: (),
    };
    let taken = if path == "/v1/logs" {
        decode(bytes).map(|r| {
            let taken = collector.logs(export.carrying(r));
            (taken, ExportLogsServiceResponse::default().encode_to_vec())
        })
    } else {
        decode(bytes).map(|r| {
            let taken = collector.traces(export.carrying(r));
            (taken, ExportTraceServiceResponse::default().encode_to_vec())
        })
    };
    let Some((taken, ok)) = taken else {
        return answer(StatusCode::BAD_REQUEST, Bytes::new());
    };
    match taken {
        Ok(()) => answer(StatusCode::OK, ok.into()),
        Err(Refusal::Unavailable) => answer(StatusCode::SERVICE_UNAVAILABLE, Bytes::new()),
        Err(Refusal::TooMany { retry_after }) => {
            let mut r = answer(StatusCode::TOO_MANY_REQUESTS, Bytes::new());
            r.headers_mut()
                .insert(hyper::header::RETRY_AFTER, retry_after.into());
            r
        }
    }
}

fn decode<T: Message + Default>(bytes: Bytes) -> Option<T> {
    T::decode(bytes).ok()
}

/// The decompressed body, at most [`MAX_BODY`] bytes of it; `None` when it is not gzip or larger.
fn gunzip(body: &[u8]) -> Option<Bytes> {
    let mut out = Vec::new();
    let limit = u64::try_from(MAX_BODY).unwrap_or(u64::MAX) + 1;
    flate2::read::GzDecoder::new(body)
        .take(limit)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() <= MAX_BODY).then(|| out.into())
}

fn answer(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-protobuf"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Mutex;

    /// Keeps the number of log records, refuses the first request.
    #[derive(Default)]
    struct Count {
        records: Mutex<usize>,
        refused_once: Mutex<bool>,
    }

    impl Collector for Count {
        fn logs(&self, export: Export<ExportLogsServiceRequest>) -> Result<(), Refusal> {
            let mut refused = self.refused_once.lock().unwrap();
            if !*refused {
                *refused = true;
                return Err(Refusal::TooMany { retry_after: 2 });
            }
            *self.records.lock().unwrap() += export
                .request
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum::<usize>();
            Ok(())
        }
        fn traces(&self, _: Export<ExportTraceServiceRequest>) -> Result<(), Refusal> {
            Ok(())
        }
    }

    fn one_record() -> Vec<u8> {
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default()],
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        }
        .encode_to_vec()
    }

    /// A raw HTTP/1.1 POST: `(status line, headers and body)`.
    async fn post(addr: std::net::SocketAddr, path: &str, extra: &str, body: Vec<u8>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn answers_like_a_collector() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let collector = Arc::new(Count::default());
        let stop = CancellationToken::new();
        tokio::spawn(serve_http(listener, collector.clone(), stop.clone()));
        let pb = "Content-Type: application/x-protobuf\r\n";

        let refused = post(addr, "/v1/logs", pb, one_record()).await;
        assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
        assert!(
            refused.to_lowercase().contains("retry-after: 2"),
            "{refused}"
        );
        let ok = post(addr, "/v1/logs", pb, one_record()).await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&one_record()).unwrap();
        let gzip = format!("{pb}Content-Encoding: gzip\r\n");
        let ok = post(addr, "/v1/logs", &gzip, gz.finish().unwrap()).await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert_eq!(*collector.records.lock().unwrap(), 2);

        let json = "Content-Type: application/json\r\n";
        let wrong_type = post(addr, "/v1/logs", json, b"{}".to_vec()).await;
        assert!(wrong_type.starts_with("HTTP/1.1 415"), "{wrong_type}");
        let wrong_path = post(addr, "/v1/metrics", pb, Vec::new()).await;
        assert!(wrong_path.starts_with("HTTP/1.1 404"), "{wrong_path}");
        let garbage = post(addr, "/v1/logs", pb, b"\xff\xff\xff".to_vec()).await;
        assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
        stop.cancel();
    }
}
