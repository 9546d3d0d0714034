//! herald's one HTTP listener: `/metrics` (Prometheus text), `/healthz` (live) and `/readyz` (ready).
//!
//! HTTP/1.1 on hyper 1, plain or over TLS (`listen_tls`, see [`tls`]). Probes answer 200 or 503 with one
//! line per check, so `kubectl describe pod` and a curl both show what is wrong.
//!
//! The server is bounded against slow, idle and hostile clients (`server.*` settings): a limit on connections
//! that closes idle ones to make room and keeps a probe-only lane ([`conns`]), a deadline for each request
//! header (which also closes keep-alives left idle) and a cap on its size, an idle timeout for connections
//! where nothing moves, one shared rendering of `/metrics` off the runtime's workers ([`render`]), an
//! optional bearer token and client certificate for `/metrics` ([`auth`], [`tls`]; the probes stay open, the
//! kubelet has neither), and an accept loop that backs off and logs rarely when the process runs out of file
//! descriptors. It must never let a client delay a probe past the kubelet's timeout.

mod auth;
pub mod config;
mod conns;
mod render;
pub mod tls;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::{Counter, Gauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::health::Health;
use crate::telemetry::{self, Telemetry};

/// Errors of the HTTP server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound (in use, or not allowed).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] tls::Error),
    /// The `/metrics` token file cannot be used.
    #[error(transparent)]
    Token(#[from] auth::Error),
}

impl Error {
    /// Another process holds the address (the demo then takes a free port).
    pub fn is_address_in_use(&self) -> bool {
        matches!(self, Error::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse)
    }
}

/// The bound address, the TLS set-up when `listen_tls` is on, and the server's limits.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
}

/// `server.*` as the connection tasks use it.
#[derive(Clone)]
struct Limits {
    max_connections: usize,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    max_header_bytes: usize,
    token: Option<auth::TokenFile>,
    require_client_cert: bool,
}

impl Listener {
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.tcp.local_addr()
    }

    /// `https` or `http`, for messages that print the address.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// How long a client may take over its TLS handshake before the connection is dropped, so half-open
/// connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A probe-lane connection must send its request at once: the kubelet does, a slow client loses the place.
const PROBE_LANE_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the accept loop holds a connection for which every place is busy, and how often it looks
/// again; past the wait the connection is closed (`refused`).
const ADMISSION_WAIT: Duration = Duration::from_secs(2);
const ADMISSION_POLL: Duration = Duration::from_millis(5);

/// Failed accepts are logged at most this often (with how many were not logged), so running out of file
/// descriptors cannot flood the log.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Back-off after a failed accept: doubles from the first to the last value, reset by a success.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

/// Bind the listen address, load the TLS files and check the token file (separately from serving, so a
/// bad address, an unusable certificate or a missing token fails at start-up).
pub async fn bind(
    addr: std::net::SocketAddr,
    tls: &crate::config::ListenTlsConfig,
    server: &ServerConfig,
) -> Result<Listener, Error> {
    let ServerConfig {
        max_connections,
        header_read_timeout,
        idle_timeout,
        max_header_bytes,
        metrics_bearer_token_file,
    } = server;
    let require_client_cert = tls.enabled() && tls.client_ca_file.is_some();
    let tls = tls::acceptor(tls)?;
    let token = match metrics_bearer_token_file {
        Some(path) => Some(auth::TokenFile::open(path)?),
        None => None,
    };
    let max_connections = match open_file_limit() {
        // Half the descriptors stay for the watches, sinks and checkpoints; the probe lane comes out of
        // the server's half.
        Some(limit)
            if (limit / 2).saturating_sub(conns::PROBE_LANE as u64) < *max_connections as u64 =>
        {
            let capped = (limit / 2).saturating_sub(conns::PROBE_LANE as u64).max(1) as usize;
            tracing::info!(
                max_connections,
                capped,
                open_file_limit = limit,
                "server.max_connections capped at half the open-file limit"
            );
            capped
        }
        _ => *max_connections,
    };
    let tcp = listen(addr).map_err(|source| Error::Bind { addr, source })?;
    Ok(Listener {
        tcp,
        tls,
        limits: Limits {
            max_connections,
            header_read_timeout: header_read_timeout.0,
            idle_timeout: idle_timeout.0,
            max_header_bytes: (*max_header_bytes).max(ServerConfig::MIN_HEADER_BYTES),
            token,
            require_client_cert,
        },
    })
}

/// Connections the kernel may hold complete but not yet accepted. The usual 128 overflows in a burst
/// of scrapes or a connection flood, and the kernel then drops SYNs, so a probe arriving in that moment
/// waits for its SYN to be resent (1 s, the kubelet's whole timeout). The accept loop takes connections
/// off this queue at once, so a deep queue costs nothing but absorbs bursts.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std and tokio do on Unix: a restarted herald can bind while old connections linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The soft limit on open files, from `/proc/self/limits` (Linux; `None` elsewhere or when unlimited).
fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_file_limit(&text)
}

fn parse_open_file_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The server's own metrics, registered once.
#[derive(Clone)]
struct ServerMetrics {
    connections: Gauge,
    evicted: Counter,
    refused: Counter,
    header_timeout: Counter,
    header_too_large: Counter,
    idle_timeout: Counter,
    unauthorized: Counter,
    no_client_cert: Counter,
    busy: Counter,
    accept_errors: Counter,
}

impl ServerMetrics {
    fn new(t: &Telemetry) -> ServerMetrics {
        let closed = |reason| t.counter(telemetry::HTTP_CLOSED, &[("reason", reason)]);
        let refused = |reason| t.counter(telemetry::HTTP_REFUSED, &[("reason", reason)]);
        ServerMetrics {
            connections: t.gauge(telemetry::HTTP_CONNECTIONS, &[]),
            evicted: closed("evicted"),
            refused: closed("refused"),
            header_timeout: closed("header_timeout"),
            header_too_large: closed("header_too_large"),
            idle_timeout: closed("idle_timeout"),
            unauthorized: refused("unauthorized"),
            no_client_cert: refused("no_client_certificate"),
            busy: refused("busy"),
            accept_errors: t.counter(telemetry::HTTP_ACCEPT_ERRORS, &[]),
        }
    }
}

/// What every connection's handler shares.
struct Shared {
    health: Health,
    render: Arc<render::SharedRender>,
    token: Option<auth::TokenFile>,
    require_client_cert: bool,
    token_log: Mutex<Throttle>,
    metrics: ServerMetrics,
}

/// Serve until `shutdown`; connections in flight are dropped then (probes and scrapes are short).
pub async fn serve(
    listener: Listener,
    telemetry: Arc<Telemetry>,
    health: Health,
    shutdown: CancellationToken,
) {
    let Listener { tcp, tls, limits } = listener;
    let metrics = ServerMetrics::new(&telemetry);
    let shared = Arc::new(Shared {
        render: render::SharedRender::new(
            telemetry.clone(),
            telemetry.counter(telemetry::METRICS_RENDERS, &[]),
        ),
        health,
        token: limits.token.clone(),
        require_client_cert: limits.require_client_cert,
        token_log: Mutex::new(Throttle::new(ACCEPT_LOG_EVERY)),
        metrics: metrics.clone(),
    });
    let regular = conns::Registry::new(limits.max_connections);
    let lane = conns::Registry::new(conns::PROBE_LANE);
    let mut accept_errors = AcceptErrors::new();
    let mut refused_log = Throttle::new(ACCEPT_LOG_EVERY);
    let open = Arc::new(OpenSockets::default());
    // Every place, the probe lane, and the one connection held while waiting for a place.
    let max_open = regular.max() + conns::PROBE_LANE + 1;
    loop {
        // An evicted connection closes in its own task a moment later: wait for that before taking another
        // descriptor, so a flood never pushes herald past its cap (and into EMFILE for its checkpoints).
        while open.count.load(Ordering::Acquire) >= max_open {
            tokio::select! {
                _ = open.closed.notified() => {}
                _ = tokio::time::sleep(ADMISSION_POLL) => {}
                _ = shutdown.cancelled() => return,
            }
        }
        let (stream, _) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(conn) => {
                    accept_errors.succeeded();
                    conn
                }
                Err(error) => {
                    // Out of file descriptors (EMFILE) fails every accept until something closes: wait,
                    // longer each time, instead of spinning on the error.
                    metrics.accept_errors.increment(1);
                    let (backoff, log) = accept_errors.failed(Instant::now());
                    if let Some(suppressed) = log {
                        tracing::warn!(%error, suppressed, retry_in = ?backoff, "accept failed");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let socket = OpenSocket::new(&open);
        // Both full means every place is mid-request or not yet read from, which lasts milliseconds
        // (a probe lane answer, a rendering): hold this one connection, and leave the rest in the
        // kernel's queue, rather than reset a probe that happened to arrive in that moment.
        let waiting_since = Instant::now();
        let (admitted, probes_only) = loop {
            if let Some(admitted) = regular.admit() {
                break (Some(admitted), false);
            }
            if let Some(admitted) = lane.admit() {
                break (Some(admitted), true);
            }
            if waiting_since.elapsed() >= ADMISSION_WAIT {
                break (None, true);
            }
            tokio::select! {
                _ = tokio::time::sleep(ADMISSION_POLL) => {}
                _ = shutdown.cancelled() => return,
            }
        };
        let Some(admitted) = admitted else {
            metrics.refused.increment(1);
            if let Some(suppressed) = refused_log.hit(Instant::now()) {
                tracing::warn!(
                    max_connections = regular.max(),
                    suppressed,
                    "connection refused: every connection stayed busy with a request"
                );
            }
            continue;
        };
        if admitted.evicted {
            metrics.evicted.increment(1);
        }
        metrics
            .connections
            .set((regular.held() + lane.held()) as f64);
        let conns = Conns {
            regular: regular.clone(),
            lane: lane.clone(),
        };
        tokio::spawn(connection(
            stream,
            socket,
            tls.clone(),
            limits.clone(),
            admitted,
            probes_only,
            shared.clone(),
            conns,
            shutdown.clone(),
        ));
    }
}

/// Sockets accepted and not yet closed.
#[derive(Default)]
struct OpenSockets {
    count: std::sync::atomic::AtomicUsize,
    closed: tokio::sync::Notify,
}

/// One accepted socket, counted in [`OpenSockets`] until the connection's task drops it.
struct OpenSocket(Arc<OpenSockets>);

impl OpenSocket {
    fn new(open: &Arc<OpenSockets>) -> OpenSocket {
        open.count.fetch_add(1, Ordering::AcqRel);
        OpenSocket(open.clone())
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.closed.notify_one();
    }
}

/// Both registries, for the connection gauge.
struct Conns {
    regular: Arc<conns::Registry>,
    lane: Arc<conns::Registry>,
}

/// Serve one connection until it ends, times out, is evicted, or the server shuts down.
#[allow(clippy::too_many_arguments)]
async fn connection(
    stream: tokio::net::TcpStream,
    _socket: OpenSocket,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    admitted: conns::Admitted,
    probes_only: bool,
    shared: Arc<Shared>,
    conns: Conns,
    shutdown: CancellationToken,
) {
    let conns::Admitted { ticket, fresh, .. } = admitted;
    let activity = Arc::new(Activity::new());
    let stream = Tracked {
        inner: stream,
        activity: activity.clone(),
    };
    let ticket = Arc::new(ticket);
    // `client_cert`: the client presented a certificate that `listen_tls.client_ca_file` verified.
    let service = |client_cert: bool| {
        let (ticket, shared) = (ticket.clone(), shared.clone());
        let caller = Caller {
            probes_only,
            client_cert,
        };
        service_fn(move |req: Request<Incoming>| {
            let (ticket, shared) = (ticket.clone(), shared.clone());
            async move {
                // Not evicted while the request is handled (a scrape waiting for its rendering).
                let _busy = ticket.busy();
                Ok::<_, Infallible>(handle(req, &shared, caller).await)
            }
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(!probes_only)
        .header_read_timeout(if probes_only {
            limits.header_read_timeout.min(PROBE_LANE_HEADER_TIMEOUT)
        } else {
            limits.header_read_timeout
        });
    let served = async {
        let result = match tls {
            None => {
                http.serve_connection(TokioIo::new(stream), service(false))
                    .await
            }
            Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(stream)) => {
                    // rustls only keeps a client certificate it verified against the client CAs.
                    let client_cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .is_some_and(|c| !c.is_empty());
                    http.serve_connection(TokioIo::new(stream), service(client_cert))
                        .await
                }
                // A plain-HTTP client, a port scan, an untrusting client: its problem alone.
                Ok(Err(error)) => {
                    tracing::debug!(%error, "TLS handshake failed");
                    Ok(())
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    Ok(())
                }
            },
        };
        if let Err(error) = result {
            if error.is_timeout() {
                shared.metrics.header_timeout.increment(1);
            } else if error.is_parse_too_large() {
                shared.metrics.header_too_large.increment(1);
            }
        }
    };
    {
        // Protected from eviction until hyper has read from the socket once: a probe's request, already
        // there, is parsed and marked busy in that same poll.
        let mut served = std::pin::pin!(served);
        let mut fresh = Some(fresh);
        let served = std::future::poll_fn(|cx| {
            let polled = served.as_mut().poll(cx);
            fresh.take();
            polled
        });
        tokio::select! {
            _ = served => {}
            _ = activity.idle_for(limits.idle_timeout) => shared.metrics.idle_timeout.increment(1),
            _ = ticket.evicted() => {}
            _ = shutdown.cancelled() => {}
        }
    }
    // The connection (and the service's copies of the ticket) is gone: the last copy gives the place back.
    drop(ticket);
    shared
        .metrics
        .connections
        .set((conns.regular.held() + conns.lane.held()) as f64);
}

/// Who is asking, as far as the connection tells.
#[derive(Clone, Copy)]
struct Caller {
    /// Admitted to the probe lane: only probes are answered.
    probes_only: bool,
    /// Presented a client certificate verified against `listen_tls.client_ca_file`.
    client_cert: bool,
}

async fn handle(req: Request<Incoming>, shared: &Shared, caller: Caller) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match req.uri().path() {
        "/healthz" | "/livez" => probe(shared.health.live()),
        "/readyz" => probe(shared.health.ready()),
        _ if caller.probes_only => {
            shared.metrics.busy.increment(1);
            let mut resp = text(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy: every connection is in use; only probes are answered now\n".into(),
            );
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
        "/metrics" => {
            if shared.require_client_cert && !caller.client_cert {
                shared.metrics.no_client_cert.increment(1);
                return text(
                    StatusCode::FORBIDDEN,
                    "forbidden: /metrics needs a client certificate signed by a CA in listen_tls.client_ca_file\n"
                        .into(),
                );
            }
            if let Some(denied) = authorize(&req, shared) {
                return denied;
            }
            if req.method() == Method::HEAD {
                // hyper sends no body for HEAD: rendering one would be work thrown away.
                return metrics_response(Bytes::new());
            }
            metrics_response(shared.render.get().await)
        }
        "/" => text(StatusCode::OK, "herald: /metrics /healthz /readyz\n".into()),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// `None` when the request may read `/metrics`, else the answer to send.
fn authorize(req: &Request<Incoming>, shared: &Shared) -> Option<Response<Full<Bytes>>> {
    let token = shared.token.as_ref()?;
    match token.check(req.headers().get(AUTHORIZATION)) {
        Ok(auth::Verdict::Allowed) => None,
        Ok(auth::Verdict::Denied) => {
            shared.metrics.unauthorized.increment(1);
            let mut resp = text(
                StatusCode::UNAUTHORIZED,
                "unauthorized: /metrics needs the bearer token\n".into(),
            );
            resp.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"herald\""),
            );
            Some(resp)
        }
        Err(error) => {
            let logged = shared
                .token_log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .hit(Instant::now());
            if let Some(suppressed) = logged {
                tracing::warn!(%error, suppressed, "/metrics refused: the token file cannot be used");
            }
            Some(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the /metrics token file cannot be read\n".into(),
            ))
        }
    }
}

fn metrics_response(body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

fn probe((ok, report): (bool, String)) -> Response<Full<Bytes>> {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    text(status, report)
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// What to do after a failed accept: how long to wait (doubling while accepts keep failing), and whether
/// to log it.
struct AcceptErrors {
    backoff: Duration,
    log: Throttle,
}

impl AcceptErrors {
    fn new() -> AcceptErrors {
        AcceptErrors {
            backoff: Duration::ZERO,
            log: Throttle::new(ACCEPT_LOG_EVERY),
        }
    }

    fn succeeded(&mut self) {
        self.backoff = Duration::ZERO;
    }

    /// The wait before the next accept, and `Some(held back)` when this failure may be logged.
    fn failed(&mut self, now: Instant) -> (Duration, Option<u64>) {
        self.backoff = (self.backoff * 2).clamp(ACCEPT_BACKOFF.0, ACCEPT_BACKOFF.1);
        (self.backoff, self.log.hit(now))
    }
}

/// Lets a repeated warning through at most once per period, and says how many were held back.
struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(held back since the last one)` when this occurrence may be logged.
    fn hit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// When a byte last moved on a connection, either way.
struct Activity {
    /// Tokio's clock, so tests can run it paused.
    start: tokio::time::Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let quiet = last.elapsed();
            if quiet >= limit {
                return;
            }
            tokio::time::sleep(limit - quiet).await;
        }
    }
}

/// A stream that records activity in [`Activity`], under TLS when there is TLS, so bytes of either layer
/// count.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_one_through_per_period_and_counts_the_rest() {
        let mut t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.hit(t0), Some(0));
        for i in 1..=500 {
            assert_eq!(t.hit(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(t.hit(t0 + Duration::from_secs(10)), Some(500));
        assert_eq!(t.hit(t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn accept_failures_back_off_to_a_second_and_are_logged_once_per_period() {
        let mut errors = AcceptErrors::new();
        let t0 = Instant::now();
        let mut now = t0;
        let mut logged = 0;
        let mut waits = Vec::new();
        // A minute of EMFILE: each failure waits before the next accept.
        while now < t0 + Duration::from_secs(60) {
            let (wait, log) = errors.failed(now);
            logged += usize::from(log.is_some());
            waits.push(wait);
            now += wait;
        }
        assert_eq!(waits[..3], [5, 10, 20].map(Duration::from_millis));
        assert_eq!(*waits.last().unwrap(), Duration::from_secs(1));
        assert!(
            waits.len() < 70,
            "{} accepts tried in a minute",
            waits.len()
        );
        assert!((6..=7).contains(&logged), "{logged} log lines in a minute");
        errors.succeeded();
        assert_eq!(errors.failed(now).0, Duration::from_millis(5));
    }

    #[test]
    fn open_file_limit_is_read_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             63422                63422                processes \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_file_limit(text), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_file_limit(unlimited), None);
    }

    #[tokio::test]
    async fn a_connection_is_idle_once_nothing_moved_for_the_limit() {
        let a = Activity::new();
        let limit = Duration::from_millis(300);
        tokio::time::sleep(Duration::from_millis(200)).await;
        a.touch();
        let t0 = Instant::now();
        a.idle_for(limit).await;
        // Measured from the last byte (at 200 ms), not from the start.
        assert!(
            t0.elapsed() >= Duration::from_millis(280),
            "{:?}",
            t0.elapsed()
        );
    }
}
