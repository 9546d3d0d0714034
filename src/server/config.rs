//! The settings of herald's HTTP server (`listen_tls`, `server`): their types, defaults and checks. The server
//! itself (src/server/) reads them; loading and the error type stay in `crate::config`, which re-exports these
//! names. Must not read files or open sockets: checks here look at the values only.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Duration, unset};

/// TLS for herald's HTTP server: PEM files, typically a mounted Secret (cert-manager's `tls.crt` and `tls.key`).
/// Both unset: plain HTTP. The files are read again when they change (a renewed certificate is served from the
/// next connection on, without a restart).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ListenTlsConfig {
    /// The certificate chain (PEM, leaf first). Set both this and `key_file` to serve HTTPS; renewed files are
    /// picked up without a restart.
    #[serde(deserialize_with = "unset::option")]
    pub cert_file: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of `cert_file`.
    #[serde(deserialize_with = "unset::option")]
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that sign the client certificates `/metrics` then requires (mutual TLS); the
    /// probes stay open to clients without a certificate (the kubelet has none). Unset: no client certificate
    /// is asked for.
    #[serde(deserialize_with = "unset::option")]
    pub client_ca_file: Option<PathBuf>,
}

impl ListenTlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some()
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match (&self.cert_file, &self.key_file) {
            (None, Some(_)) => Err(ConfigError::new(
                "listen_tls.cert_file",
                "missing: listen_tls.key_file is set, and TLS needs both",
            )),
            (Some(_), None) => Err(ConfigError::new(
                "listen_tls.key_file",
                "missing: listen_tls.cert_file is set, and TLS needs both",
            )),
            (None, None) if self.client_ca_file.is_some() => Err(ConfigError::new(
                "listen_tls.client_ca_file",
                "needs listen_tls.cert_file and listen_tls.key_file: client certificates are checked in TLS",
            )),
            _ => Ok(()),
        }
    }
}

/// Limits of herald's HTTP server, so scrapers, port scans and slow or hostile clients cannot take its memory,
/// its file descriptors or the kubelet's probes. `/healthz`, `/livez` and `/readyz` stay open and answered at
/// every limit; only `/metrics` can require a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Connections served at once (also capped at half the open-file limit, so connections never starve
    /// checkpoints and watches). At the limit the longest-open idle connection is closed to make room; when
    /// every one is mid-request, a newcomer may only ask for a probe.
    pub max_connections: usize,
    /// A complete request header must arrive within this time, counted from the connection's start or from the
    /// previous response; a connection that stays silent or trickles its header longer is closed.
    pub header_read_timeout: Duration,
    /// A connection on which no byte moved either way for this long (a client that stops reading its
    /// response) is closed.
    pub idle_timeout: Duration,
    /// Largest request header accepted (bytes, at least 8192); a larger one is refused with 431.
    pub max_header_bytes: usize,
    /// A file holding the bearer token `/metrics` requires (`Authorization: Bearer <token>`, Prometheus's
    /// `authorization.credentials_file`); read again on each scrape, so a rotated Secret applies at once.
    /// Unset: `/metrics` is open.
    #[serde(deserialize_with = "unset::option")]
    pub metrics_bearer_token_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 128,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            metrics_bearer_token_file: None,
        }
    }
}

impl ServerConfig {
    /// hyper refuses a read buffer below 8 KiB.
    pub const MIN_HEADER_BYTES: usize = 8192;

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(ConfigError::new(
                "server.max_connections",
                "must be greater than 0",
            ));
        }
        if self.header_read_timeout.is_zero() {
            return Err(ConfigError::new(
                "server.header_read_timeout",
                "must be greater than 0",
            ));
        }
        if self.idle_timeout.is_zero() {
            return Err(ConfigError::new(
                "server.idle_timeout",
                "must be greater than 0",
            ));
        }
        if self.max_header_bytes < Self::MIN_HEADER_BYTES {
            return Err(ConfigError::new(
                "server.max_header_bytes",
                format!("must be at least {}", Self::MIN_HEADER_BYTES),
            ));
        }
        Ok(())
    }
}
