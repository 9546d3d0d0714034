//! A small OTLP/HTTP logs receiver for the load harness: it accepts every export, counts the log records and
//! notes, for records that carry a sub-second event time, how long after that time they arrived.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;
use tokio::net::TcpListener;

#[derive(Default)]
struct State {
    records: AtomicU64,
    /// Seconds from event time to arrival.
    delays: Mutex<Vec<f64>>,
}

/// Serving on its own one-thread runtime until dropped.
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<State>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    pub fn start() -> std::io::Result<Receiver> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-otlp")
            .enable_all()
            .build()?;
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        runtime.spawn(serve(listener, state.clone()));
        Ok(Receiver {
            addr,
            state,
            _runtime: runtime,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Log records received so far.
    pub fn records(&self) -> u64 {
        self.state.records.load(Ordering::Relaxed)
    }

    pub fn reset_delays(&self) {
        self.lock().clear();
    }

    pub fn arrival_delays(&self) -> Vec<f64> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<f64>> {
        self.state.delays.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(req, &state).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(req: Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return answer(400, Bytes::new()),
    };
    let arrived = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let Ok(request) = ExportLogsServiceRequest::decode(body) else {
        return answer(400, Bytes::new());
    };
    let mut n = 0;
    let mut delays = Vec::new();
    for rl in &request.resource_logs {
        for sl in &rl.scope_logs {
            for r in &sl.log_records {
                n += 1;
                if fresh_event_time(r) {
                    delays.push(arrived.saturating_sub(r.time_unix_nano) as f64 / 1e9);
                }
            }
        }
    }
    state.records.fetch_add(n, Ordering::Relaxed);
    if !delays.is_empty() {
        state
            .delays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(delays);
    }
    answer(
        200,
        ExportLogsServiceResponse::default().encode_to_vec().into(),
    )
}

/// A record whose time is the simulator's microsecond `eventTime` of a new Event: a sub-second part, and no
/// count above 1 (a count increase keeps the old `eventTime`, so its delay would say nothing).
fn fresh_event_time(r: &LogRecord) -> bool {
    let increased = r.attributes.iter().any(|kv| {
        kv.key == "k8s.event.count"
            && matches!(
                kv.value.as_ref().and_then(|v| v.value.as_ref()),
                Some(any_value::Value::IntValue(c)) if *c > 1
            )
    });
    !r.time_unix_nano.is_multiple_of(1_000_000_000) && !increased
}

fn answer(status: u16, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-protobuf"),
    );
    resp
}
