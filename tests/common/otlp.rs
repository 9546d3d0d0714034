//! An OTLP logs receiver for tests: real protobuf over gRPC (tonic) and over HTTP (hyper), recording every
//! request it accepts, with failures, delays and outages on demand.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the receiver does with the next request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer {
    /// gRPC UNAVAILABLE / HTTP 503.
    Unavailable,
    /// gRPC RESOURCE_EXHAUSTED / HTTP 429 with `Retry-After: secs`.
    TooMany { retry_after: u64 },
}

#[derive(Debug, Clone)]
pub struct Received {
    pub grpc: bool,
    /// Request headers (gRPC metadata), names lower-case.
    pub headers: BTreeMap<String, String>,
    pub gzip: bool,
    pub request: ExportLogsServiceRequest,
}

#[derive(Default)]
pub struct State {
    pub received: Mutex<Vec<Received>>,
    /// Answers for the next requests, in order; empty: accept.
    pub answers: Mutex<VecDeque<Answer>>,
    /// Delay before answering every request.
    pub delay: Mutex<Duration>,
    /// Requests answered with a failure.
    pub refused: Mutex<u64>,
    /// Every span received (traces are always accepted).
    pub spans: Mutex<Vec<Span>>,
}

impl State {
    fn spans(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
    }
}

impl State {
    /// The failure to answer with, if one is queued; else record the request.
    fn handle(&self, received: Received) -> Option<Answer> {
        if let Some(a) = self.answers.lock().unwrap().pop_front() {
            *self.refused.lock().unwrap() += 1;
            return Some(a);
        }
        self.received.lock().unwrap().push(received);
        None
    }
}

/// One log record as received, with its resource's attributes.
#[derive(Debug, Clone)]
pub struct Record {
    pub resource: BTreeMap<String, Attr>,
    pub attributes: BTreeMap<String, Attr>,
    pub record: LogRecord,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl Record {
    pub fn body(&self) -> String {
        match self.record.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            other => panic!("body is not a string: {other:?}"),
        }
    }
    pub fn attr(&self, key: &str) -> Option<&Attr> {
        self.attributes.get(key)
    }
    pub fn str(&self, key: &str) -> &str {
        match self.attributes.get(key).or_else(|| self.resource.get(key)) {
            Some(Attr::Str(s)) => s,
            other => panic!("{key}: {other:?}"),
        }
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, Attr> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v: &AnyValue| v.value.clone()) {
                Some(any_value::Value::StringValue(s)) => Attr::Str(s),
                Some(any_value::Value::IntValue(i)) => Attr::Int(i),
                Some(any_value::Value::BoolValue(b)) => Attr::Bool(b),
                other => panic!("unexpected attribute value {other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

pub struct Receiver {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    pub grpc: bool,
    task: Option<JoinHandle<()>>,
    stop: tokio_util::sync::CancellationToken,
}

impl Receiver {
    /// Serve OTLP/gRPC (`grpc`) or OTLP/HTTP on `addr` (port 0 for any).
    pub async fn start(grpc: bool, addr: SocketAddr) -> Receiver {
        Receiver::start_with(grpc, addr, Arc::new(State::default())).await
    }

    /// Serve again on a fixed address with existing state (after [`Receiver::stop`]).
    pub async fn start_with(grpc: bool, addr: SocketAddr, state: Arc<State>) -> Receiver {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = if grpc {
            let stop = stop.clone();
            let svc = LogsServiceServer::new(Grpc(state.clone()))
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
            let traces = TraceServiceServer::new(Grpc(state.clone()))
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
            let incoming = tokio_stream_from(listener);
            tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(svc)
                    .add_service(traces)
                    .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                    .await;
            })
        } else {
            let state = state.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    let stream = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => stream,
                            Err(_) => return,
                        },
                        _ = stop.cancelled() => return,
                    };
                    let state = state.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| http_export(req, state.clone()));
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc);
                        // Dropping the connection closes its socket: the collector is gone.
                        tokio::select! {
                            _ = conn => {}
                            _ = stop.cancelled() => {}
                        }
                    });
                }
            })
        };
        Receiver {
            addr,
            state,
            grpc,
            task: Some(task),
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop listening (connections in flight are dropped): the collector is down.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Every record received so far, flattened.
    pub fn records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        for r in self.requests() {
            for rl in &r.request.resource_logs {
                let resource = attrs(&rl.resource.as_ref().unwrap().attributes);
                for sl in &rl.scope_logs {
                    for lr in &sl.log_records {
                        out.push(Record {
                            resource: resource.clone(),
                            attributes: attrs(&lr.attributes),
                            record: lr.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    pub fn spans(&self) -> Vec<Span> {
        self.state.spans.lock().unwrap().clone()
    }

    pub fn answer_next(&self, answers: &[Answer]) {
        self.state.answers.lock().unwrap().extend(answers);
    }

    pub fn refused(&self) -> u64 {
        *self.state.refused.lock().unwrap()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// tonic wants a stream of connections; accept errors end it.
fn tokio_stream_from(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| s);
        Some((next, l))
    })
}

struct Grpc(Arc<State>);

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let delay = *self.0.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        let headers: BTreeMap<String, String> = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let gzip = headers.get("grpc-encoding").is_some_and(|e| e == "gzip");
        let received = Received {
            grpc: true,
            headers,
            gzip,
            request: request.into_inner(),
        };
        match self.0.handle(received) {
            None => Ok(tonic::Response::new(ExportLogsServiceResponse::default())),
            Some(Answer::Unavailable) => Err(tonic::Status::unavailable("test says unavailable")),
            Some(Answer::TooMany { .. }) => {
                Err(tonic::Status::resource_exhausted("test says too many"))
            }
        }
    }
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.spans(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn http_export(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let delay = *state.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let path = req.uri().path().to_string();
    let path_ok = path == "/v1/logs" || path == "/v1/traces";
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let gzip = headers.get("content-encoding").is_some_and(|e| e == "gzip");
    let bytes = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        body.to_vec()
    };
    let status = |code: u16| {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
        r
    };
    if !path_ok || headers.get("content-type").map(String::as_str) != Some("application/x-protobuf")
    {
        return Ok(status(400));
    }
    if path == "/v1/traces" {
        return Ok(match ExportTraceServiceRequest::decode(&bytes[..]) {
            Ok(request) => {
                state.spans(request);
                Response::new(Full::new(Bytes::from(
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )))
            }
            Err(_) => status(400),
        });
    }
    let Ok(request) = ExportLogsServiceRequest::decode(&bytes[..]) else {
        return Ok(status(400));
    };
    let received = Received {
        grpc: false,
        headers,
        gzip,
        request,
    };
    Ok(match state.handle(received) {
        None => Response::new(Full::new(Bytes::from(
            ExportLogsServiceResponse::default().encode_to_vec(),
        ))),
        Some(Answer::Unavailable) => status(503),
        Some(Answer::TooMany { retry_after }) => {
            let mut r = status(429);
            r.headers_mut()
                .insert("retry-after", retry_after.to_string().parse().unwrap());
            r
        }
    })
}
