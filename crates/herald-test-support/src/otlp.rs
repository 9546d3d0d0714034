//! The OTLP collector tests and the load harness send herald's exports to: the project's one OTLP receiver
//! (`herald_sim::otlp_receiver`, OTLP/HTTP) plus its gRPC transport (tonic's server, test-only, so it lives
//! here and not in the demo build), both feeding one recording [`State`]. It keeps the requests it accepted
//! (headers, compression, arrival time, the decoded protobuf), the spans, a count of every log record and the
//! delay from each record's time to its arrival; and it fails, answers slowly or goes away on demand. Every
//! store is bounded by [`Options`]: the tests keep everything they can look at, the harness only counts.
//! It reads what a collector sees and knows none of herald's types.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_sim::otlp_receiver::{Collector, Export};
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
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::{self, Server};

/// What the receiver answers instead of accepting (gRPC UNAVAILABLE / HTTP 503, RESOURCE_EXHAUSTED / 429).
pub use herald_sim::otlp_receiver::Refusal as Answer;

/// One accepted logs export request.
pub type Received = Export<ExportLogsServiceRequest>;

/// How much the receiver keeps, and which records' arrival delays it notes.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Logs requests kept whole (later ones are only counted).
    pub keep_requests: usize,
    /// Spans kept.
    pub keep_spans: usize,
    /// Arrival delays kept.
    pub keep_arrivals: usize,
    /// The records whose delay from `time_unix_nano` to arrival means something (e.g. those stamped when
    /// the event happened, not when it was first seen long ago).
    pub arrival_of: fn(&LogRecord) -> bool,
}

impl Default for Options {
    /// Enough for any test to see everything it sent.
    fn default() -> Self {
        Options {
            keep_requests: 100_000,
            keep_spans: 100_000,
            keep_arrivals: 100_000,
            arrival_of: |r| r.time_unix_nano != 0,
        }
    }
}

/// What the receiver has seen and how it answers next; it outlives a [`Receiver`] that is stopped and
/// started again (the collector restarts, its records stay).
pub struct State {
    options: Options,
    received: Mutex<Vec<Received>>,
    answers: Mutex<VecDeque<Answer>>,
    delay: Mutex<Duration>,
    refused: AtomicU64,
    log_records: AtomicU64,
    spans: Mutex<Vec<Span>>,
    /// Seconds from a record's time to its arrival.
    arrivals: Mutex<Vec<f64>>,
}

impl Default for State {
    fn default() -> Self {
        State::new(Options::default())
    }
}

/// A poisoned lock only means another test thread panicked; what it guards is still whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    pub fn new(options: Options) -> State {
        State {
            options,
            received: Mutex::default(),
            answers: Mutex::default(),
            delay: Mutex::default(),
            refused: AtomicU64::new(0),
            log_records: AtomicU64::new(0),
            spans: Mutex::default(),
            arrivals: Mutex::default(),
        }
    }
}

impl Collector for State {
    fn delay(&self) -> Duration {
        *lock(&self.delay)
    }

    fn logs(&self, export: Received) -> Result<(), Answer> {
        if let Some(a) = lock(&self.answers).pop_front() {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(a);
        }
        let arrived = nanos(export.arrived);
        let mut n = 0;
        let mut delays = Vec::new();
        for r in export
            .request
            .resource_logs
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .flat_map(|sl| &sl.log_records)
        {
            n += 1;
            if (self.options.arrival_of)(r) {
                delays.push(arrived.saturating_sub(r.time_unix_nano) as f64 / 1e9);
            }
        }
        self.log_records.fetch_add(n, Ordering::Relaxed);
        extend_bounded(&self.arrivals, delays, self.options.keep_arrivals);
        extend_bounded(&self.received, [export], self.options.keep_requests);
        Ok(())
    }

    fn traces(&self, export: Export<ExportTraceServiceRequest>) -> Result<(), Answer> {
        let spans = export
            .request
            .resource_spans
            .into_iter()
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans);
        extend_bounded(&self.spans, spans, self.options.keep_spans);
        Ok(())
    }
}

fn extend_bounded<T>(store: &Mutex<Vec<T>>, items: impl IntoIterator<Item = T>, cap: usize) {
    let mut store = lock(store);
    let room = cap.saturating_sub(store.len());
    store.extend(items.into_iter().take(room));
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One log record as received, with its resource's attributes.
#[derive(Debug, Clone)]
pub struct Record {
    pub resource: BTreeMap<String, Attr>,
    pub attributes: BTreeMap<String, Attr>,
    pub record: LogRecord,
    pub arrived: SystemTime,
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
    /// A string attribute of the record or, failing that, of its resource.
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
            let v = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                Some(any_value::Value::StringValue(s)) => Attr::Str(s),
                Some(any_value::Value::IntValue(i)) => Attr::Int(i),
                Some(any_value::Value::BoolValue(b)) => Attr::Bool(b),
                other => panic!("unexpected attribute value {other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// A running receiver: OTLP/gRPC or OTLP/HTTP on one address.
pub struct Receiver {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    pub grpc: bool,
    server: Server,
}

impl Receiver {
    /// Serve OTLP/gRPC (`grpc`) or OTLP/HTTP on `addr` (port 0 for any), keeping everything.
    pub async fn start(grpc: bool, addr: SocketAddr) -> Receiver {
        Receiver::start_with(grpc, addr, Arc::new(State::default())).await
    }

    /// Serve again on a fixed address with existing state (after [`Receiver::stop`]).
    pub async fn start_with(grpc: bool, addr: SocketAddr, state: Arc<State>) -> Receiver {
        Receiver::bind(grpc, addr, state).await.unwrap()
    }

    /// [`Receiver::start_with`] that says why it cannot listen instead of panicking (for the harness).
    pub async fn bind(
        grpc: bool,
        addr: SocketAddr,
        state: Arc<State>,
    ) -> std::io::Result<Receiver> {
        let collector = state.clone();
        let server = Server::start(addr, move |listener, stop| async move {
            if grpc {
                serve_grpc(listener, collector, stop).await;
            } else {
                herald_sim::otlp_receiver::serve_http(listener, collector, stop).await;
            }
        })
        .await?;
        Ok(Receiver {
            addr: server.addr,
            state,
            grpc,
            server,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop listening (connections in flight are dropped): the collector is down.
    pub async fn stop(&mut self) {
        self.server.stop().await;
    }

    /// The logs requests accepted and kept, in order of arrival.
    pub fn requests(&self) -> Vec<Received> {
        lock(&self.state.received).clone()
    }

    /// Every record kept so far, flattened.
    pub fn records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        for r in lock(&self.state.received).iter() {
            for rl in &r.request.resource_logs {
                let resource = attrs(&rl.resource.as_ref().unwrap().attributes);
                for sl in &rl.scope_logs {
                    for lr in &sl.log_records {
                        out.push(Record {
                            resource: resource.clone(),
                            attributes: attrs(&lr.attributes),
                            record: lr.clone(),
                            arrived: r.arrived,
                        });
                    }
                }
            }
        }
        out
    }

    /// Wait until at least `n` records were kept; all of them.
    pub async fn wait_records(&self, n: usize) -> Vec<Record> {
        server::at_least(n, "records", || self.records()).await
    }

    /// Log records accepted, kept or not.
    pub fn log_records(&self) -> u64 {
        self.state.log_records.load(Ordering::Relaxed)
    }

    pub fn spans(&self) -> Vec<Span> {
        lock(&self.state.spans).clone()
    }

    /// Seconds from each chosen record's time ([`Options::arrival_of`]) to its arrival.
    pub fn arrival_delays(&self) -> Vec<f64> {
        lock(&self.state.arrivals).clone()
    }

    /// Forget the arrival delays noted so far (e.g. those of a warm-up).
    pub fn reset_arrivals(&self) {
        lock(&self.state.arrivals).clear();
    }

    /// Refuse the next requests with `answers`, in order; then accept again.
    pub fn answer_next(&self, answers: &[Answer]) {
        lock(&self.state.answers).extend(answers);
    }

    /// Requests answered with a refusal.
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::Relaxed)
    }

    /// Wait this long before answering each request (a slow collector).
    pub fn set_delay(&self, d: Duration) {
        *lock(&self.state.delay) = d;
    }
}

/// OTLP/gRPC into `collector` until `stop` (tonic's server, with gzip accepted).
async fn serve_grpc<C: Collector>(
    listener: TcpListener,
    collector: Arc<C>,
    stop: CancellationToken,
) {
    let logs = LogsServiceServer::new(Grpc(collector.clone()))
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let traces = TraceServiceServer::new(Grpc(collector))
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    // tonic takes a stream of connections; an accept error ends it.
    let incoming = futures::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| s);
        Some((next, l))
    });
    let _ = tonic::transport::Server::builder()
        .add_service(logs)
        .add_service(traces)
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await;
}

struct Grpc<C>(Arc<C>);

impl<C: Collector> Grpc<C> {
    /// The request as an [`Export`], after the collector's delay.
    async fn export<T>(&self, request: tonic::Request<T>) -> Export<T> {
        let delay = self.0.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let headers: BTreeMap<String, String> = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        let gzip = headers.get("grpc-encoding").is_some_and(|e| e == "gzip");
        Export {
            grpc: true,
            headers,
            gzip,
            arrived: SystemTime::now(),
            request: request.into_inner(),
        }
    }
}

fn status(answer: Answer) -> tonic::Status {
    match answer {
        Answer::Unavailable => tonic::Status::unavailable("the collector is unavailable"),
        Answer::TooMany { .. } => tonic::Status::resource_exhausted("the collector is busy"),
    }
}

#[tonic::async_trait]
impl<C: Collector> LogsService for Grpc<C> {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let export = self.export(request).await;
        self.0.logs(export).map_err(status)?;
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl<C: Collector> TraceService for Grpc<C> {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let export = self.export(request).await;
        self.0.traces(export).map_err(status)?;
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};

    fn export(times: &[u64]) -> Received {
        Export {
            grpc: false,
            headers: BTreeMap::new(),
            gzip: false,
            arrived: UNIX_EPOCH + Duration::from_secs(10),
            request: ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    scope_logs: vec![ScopeLogs {
                        log_records: times
                            .iter()
                            .map(|&t| LogRecord {
                                time_unix_nano: t,
                                ..LogRecord::default()
                            })
                            .collect(),
                        ..ScopeLogs::default()
                    }],
                    ..ResourceLogs::default()
                }],
            },
        }
    }

    #[test]
    fn counts_everything_keeps_within_bounds() {
        let state = State::new(Options {
            keep_requests: 1,
            keep_arrivals: 2,
            ..Options::default()
        });
        state
            .logs(export(&[9_000_000_000, 0, 9_500_000_000]))
            .unwrap();
        state.logs(export(&[8_000_000_000])).unwrap();
        assert_eq!(state.log_records.load(Ordering::Relaxed), 4);
        assert_eq!(lock(&state.received).len(), 1, "one request kept");
        assert_eq!(*lock(&state.arrivals), [1.0, 0.5], "untimed record skipped");
    }

    #[test]
    fn refuses_as_told_then_accepts() {
        let state = State::default();
        lock(&state.answers).extend([Answer::Unavailable]);
        assert_eq!(state.logs(export(&[1])), Err(Answer::Unavailable));
        assert_eq!(state.logs(export(&[1])), Ok(()));
        assert_eq!(state.refused.load(Ordering::Relaxed), 1);
        assert_eq!(
            lock(&state.received).len(),
            1,
            "a refused request is not kept"
        );
    }
}
