//! herald's one HTTP listener: `/metrics` (Prometheus text), `/healthz` (live) and `/readyz` (ready).
//!
//! HTTP/1.1 on hyper 1, plain or over TLS (`listen_tls`, see [`tls`]). Probes answer 200 or 503 with one
//! line per check, so `kubectl describe pod` and a curl both show what is wrong.

pub mod tls;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::telemetry::Telemetry;

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
}

impl Error {
    /// Another process holds the address (the demo then takes a free port).
    pub fn is_address_in_use(&self) -> bool {
        matches!(self, Error::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse)
    }
}

/// The bound address, and the TLS set-up when `listen_tls` is on.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
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
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Bind the listen address and load the TLS files (separately from serving, so a bad address or an
/// unusable certificate fails at start-up).
pub async fn bind(
    addr: std::net::SocketAddr,
    tls: &crate::config::ListenTlsConfig,
) -> Result<Listener, Error> {
    let tls = tls::acceptor(tls)?;
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    Ok(Listener { tcp, tls })
}

/// Serve until `shutdown`; connections in flight are dropped then (probes and scrapes are short).
pub async fn serve(
    listener: Listener,
    telemetry: Arc<Telemetry>,
    health: Health,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.tcp.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let (telemetry, health) = (telemetry.clone(), health.clone());
        let service = service_fn(move |req: Request<Incoming>| {
            let (telemetry, health) = (telemetry.clone(), health.clone());
            async move {
                if req.uri().path() == "/metrics" && req.method() == Method::GET {
                    // Rendering thousands of series takes a while (0.2 s for 20k, BENCHMARKS.md): do it off
                    // the runtime's workers, which the pipeline needs.
                    let body = tokio::task::spawn_blocking(move || telemetry.render())
                        .await
                        .unwrap_or_default();
                    return Ok::<_, Infallible>(metrics_response(body));
                }
                Ok(route(req, &telemetry, &health))
            }
        });
        let shutdown = shutdown.clone();
        let tls = listener.tls.clone();
        tokio::spawn(async move {
            let http = hyper::server::conn::http1::Builder::new();
            let served = async {
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                    Some(tls) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                            // A plain-HTTP client, a port scan, an untrusting client: its problem alone.
                            Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                }
            };
            tokio::select! {
                _ = served => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

fn route(req: Request<Incoming>, telemetry: &Telemetry, health: &Health) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match req.uri().path() {
        "/metrics" => metrics_response(telemetry.render()),
        "/healthz" | "/livez" => probe(health.live()),
        "/readyz" => probe(health.ready()),
        "/" => text(StatusCode::OK, "herald: /metrics /healthz /readyz\n".into()),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn metrics_response(body: String) -> Response<Full<Bytes>> {
    let mut resp = text(StatusCode::OK, body);
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
