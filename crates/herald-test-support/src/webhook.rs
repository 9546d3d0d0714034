//! The webhook endpoint tests send herald's POSTs to: plain HTTP/1.1 on the shared accept loop
//! ([`crate::serve`]), keeping every POST it accepts (headers and the raw body) and answering with chosen
//! statuses, delays and outages on demand. It keeps at most [`KEEP`] requests and knows none of herald's
//! types: a body is whatever JSON arrived.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::server::{self, Server};

/// Requests kept; later ones are answered but not kept.
pub const KEEP: usize = 100_000;

#[derive(Debug, Clone)]
pub struct Received {
    /// Header names lower-case.
    pub headers: BTreeMap<String, String>,
    pub body: Bytes,
}

impl Received {
    /// The `records` array of the body.
    pub fn records(&self) -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).expect("body is JSON");
        v["records"].as_array().expect("records array").clone()
    }
}

/// What the receiver has seen and how it answers next; it outlives a stopped [`Receiver`].
#[derive(Default)]
pub struct State {
    received: Mutex<Vec<Received>>,
    /// Answers for the next requests, in order: `(status, Retry-After)`. Empty: 200.
    answers: Mutex<VecDeque<(u16, Option<u64>)>>,
    /// Delay before answering every request.
    delay: Mutex<Duration>,
    /// Requests answered with a failure status.
    refused: AtomicU64,
}

/// A poisoned lock only means another test thread panicked; what it guards is still whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Receiver {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    server: Server,
}

impl Receiver {
    pub async fn start(addr: SocketAddr) -> Receiver {
        Receiver::start_with(addr, Arc::new(State::default())).await
    }

    /// Serve again on a fixed address with existing state (after [`Receiver::stop`]).
    pub async fn start_with(addr: SocketAddr, state: Arc<State>) -> Receiver {
        let shared = state.clone();
        let server = Server::start(addr, move |listener, stop| {
            crate::serve::http1(listener, stop, move |req| handle(req, shared.clone()))
        })
        .await
        .unwrap();
        Receiver {
            addr: server.addr,
            state,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Stop listening; connections in flight are dropped.
    pub async fn stop(&mut self) {
        self.server.stop().await;
    }

    pub fn requests(&self) -> Vec<Received> {
        lock(&self.state.received).clone()
    }

    /// Every record received so far, in order.
    pub fn records(&self) -> Vec<serde_json::Value> {
        self.requests().iter().flat_map(|r| r.records()).collect()
    }

    /// Answer the next requests with these `(status, Retry-After seconds)`, in order; then 200 again.
    pub fn answer_next(&self, answers: &[(u16, Option<u64>)]) {
        lock(&self.state.answers).extend(answers);
    }

    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::Relaxed)
    }

    pub fn set_delay(&self, d: Duration) {
        *lock(&self.state.delay) = d;
    }

    /// Wait until at least `n` records arrived; all of them.
    pub async fn wait_records(&self, n: usize) -> Vec<serde_json::Value> {
        server::at_least(n, "records", || self.records()).await
    }

    /// Wait until at least `n` requests arrived; all of them.
    pub async fn wait_requests(&self, n: usize) -> Vec<Received> {
        server::at_least(n, "requests", || self.requests()).await
    }
}

async fn handle(req: Request<Incoming>, state: Arc<State>) -> Response<Full<Bytes>> {
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let delay = *lock(&state.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let answer = lock(&state.answers).pop_front();
    if let Some((status, retry_after)) = answer {
        state.refused.fetch_add(1, Ordering::Relaxed);
        let mut resp = Response::builder().status(status);
        if let Some(s) = retry_after {
            resp = resp.header("retry-after", s.to_string());
        }
        return resp.body(Full::new(Bytes::from_static(b"no"))).unwrap();
    }
    let mut received = lock(&state.received);
    if received.len() < KEEP {
        received.push(Received { headers, body });
    }
    Response::new(Full::new(Bytes::from_static(b"ok")))
}
