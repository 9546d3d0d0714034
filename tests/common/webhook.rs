//! A webhook receiver for tests: plain HTTP/1.1 (hyper), recording every POST it accepts (headers and the
//! raw body), answering with chosen statuses, delays and outages on demand.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

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

#[derive(Default)]
pub struct State {
    pub received: Mutex<Vec<Received>>,
    /// Answers for the next requests, in order: `(status, Retry-After)`. Empty: 200.
    pub answers: Mutex<VecDeque<(u16, Option<u64>)>>,
    /// Delay before answering every request.
    pub delay: Mutex<Duration>,
    /// Requests answered with a failure status.
    pub refused: Mutex<u64>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    task: Option<JoinHandle<()>>,
    stop: tokio_util::sync::CancellationToken,
}

impl Receiver {
    pub async fn start(addr: SocketAddr) -> Receiver {
        Receiver::start_with(addr, Arc::new(State::default())).await
    }

    /// Serve again on a fixed address with existing state (after [`Receiver::stop`]).
    pub async fn start_with(addr: SocketAddr, state: Arc<State>) -> Receiver {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = {
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
                        let svc = service_fn(move |req| handle(req, state.clone()));
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc);
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
            task: Some(task),
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Stop listening; connections in flight are dropped.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Every record received so far, in order.
    pub fn records(&self) -> Vec<serde_json::Value> {
        self.requests().iter().flat_map(|r| r.records()).collect()
    }

    pub fn answer_next(&self, answers: &[(u16, Option<u64>)]) {
        self.state.answers.lock().unwrap().extend(answers);
    }

    pub fn refused(&self) -> u64 {
        *self.state.refused.lock().unwrap()
    }

    pub fn set_delay(&self, d: Duration) {
        *self.state.delay.lock().unwrap() = d;
    }

    /// Wait until at least `n` records arrived.
    pub async fn wait_records(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.records().len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "receiver got {} records, wanted {n}",
                self.records().len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
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
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let answer = state.answers.lock().unwrap().pop_front();
    if let Some((status, retry_after)) = answer {
        *state.refused.lock().unwrap() += 1;
        let mut resp = Response::builder().status(status);
        if let Some(s) = retry_after {
            resp = resp.header("retry-after", s.to_string());
        }
        return Ok(resp.body(Full::new(Bytes::from_static(b"no"))).unwrap());
    }
    state
        .received
        .lock()
        .unwrap()
        .push(Received { headers, body });
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}
