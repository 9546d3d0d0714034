//! The HTTP client side shared by the sinks that POST (OTLP/HTTP, webhooks): one HTTPS-capable client, one
//! failure type that says whether a retry is worth it, and one POST that reads the answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;

/// A client for `http://` and `https://` URLs (rustls with the `ring` provider, like kube's).
pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why the TLS set-up failed (an unusable CA bundle).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// A failed send.
#[derive(Debug, Clone, PartialEq)]
pub struct SendError {
    /// Worth another try: unavailable, overloaded, timed out, unreachable.
    pub retryable: bool,
    /// The server's `Retry-After` (seconds form), when it sent one.
    pub retry_after: Option<Duration>,
    pub message: String,
}

impl SendError {
    pub fn new(retryable: bool, message: impl Into<String>) -> SendError {
        SendError {
            retryable,
            retry_after: None,
            message: message.into(),
        }
    }
}

/// An HTTPS-capable client trusting the system roots (when `system_roots`), plus `ca_pem` when given.
/// A sink whose URLs are all `http://` passes `false`: parsing the system bundle costs a few hundred KiB of
/// memory, kept for as long as the client lives, for certificates such a sink never checks.
pub fn client(ca_pem: Option<&[u8]>, system_roots: bool) -> Result<HttpsClient, TlsError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let tls = |e: &dyn std::fmt::Display| TlsError(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    if system_roots {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
    }
    if let Some(pem) = ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            roots.add(cert.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// Send `req`; the response body on a 2xx. Otherwise a [`SendError`], retryable when the connection failed or
/// `retryable(status)` says so, carrying the server's Retry-After. `peer` names the other side in messages.
pub async fn send(
    client: &HttpsClient,
    req: http::Request<Full<Bytes>>,
    peer: &str,
    retryable: fn(http::StatusCode) -> bool,
) -> Result<Bytes, SendError> {
    let resp = client
        .request(req)
        .await
        .map_err(|e| SendError::new(true, format!("cannot reach the {peer}: {e}")))?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // Read the body either way, so the connection can be reused.
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| SendError::new(true, format!("response body: {e}")))?
        .to_bytes();
    if status.is_success() {
        return Ok(body);
    }
    Err(SendError {
        retryable: retryable(status),
        retry_after,
        message: format!("HTTP {status}"),
    })
}
