//! TLS for herald's HTTP server (`listen_tls`): the certificate and key come from PEM files and are read
//! again whenever either file changes, so a renewed certificate (cert-manager rewriting a mounted Secret)
//! is served from the next connection on, without a restart and without a file watcher.
//!
//! The check is one `stat` of each file per TLS handshake: Prometheus keeps its scrape connection open and
//! the kubelet's probes open one every few seconds, so that is a few system calls a minute.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::ListenTlsConfig;

/// Why the certificate or key could not be used. Displayed as `listen_tls.<key>: <reason>`, like a
/// configuration error, because that is what a user has to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listen_tls.{key}: cannot read {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("listen_tls.{key}: {path} holds no usable PEM {what}: {reason}")]
    Pem {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error(
        "listen_tls: the key in {key_path} does not fit the certificate in {cert_path}: {reason}"
    )]
    Pair {
        cert_path: PathBuf,
        key_path: PathBuf,
        reason: String,
    },
    #[error("listen_tls: {0}")]
    Setup(rustls::Error),
}

/// A TLS acceptor for `config`, or `None` when TLS is off. Fails when the files cannot be used now, so a
/// wrong path stops herald at start-up rather than at the first scrape.
pub fn acceptor(config: &ListenTlsConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, Error> {
    if !config.enabled() {
        return Ok(None);
    }
    // Loading checks that both are set; should one be missing here anyway, reading no path fails and names it.
    let file = |path: &Option<PathBuf>| path.clone().unwrap_or_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let files = CertFiles::load(
        file(&config.cert_file),
        file(&config.key_file),
        provider.clone(),
    )?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(Error::Setup)?;
    let builder = match &config.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => builder.with_client_cert_verifier(client_verifier(ca_file, provider)?),
    };
    let mut server = builder.with_cert_resolver(Arc::new(files));
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
}

/// Checks client certificates against the CAs in `path`. A client without a certificate still completes
/// the handshake (the kubelet's probes have none); the server then answers only the probes, and `/metrics`
/// only to a client whose certificate was verified. Read once at start: a new CA bundle needs a restart.
fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, Error> {
    let pem = std::fs::read(path).map_err(|source| Error::Read {
        key: "client_ca_file",
        path: path.to_owned(),
        source,
    })?;
    let pem_error = |reason: String| Error::Pem {
        key: "client_ca_file",
        path: path.to_owned(),
        what: "CA certificate",
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| pem_error(e.to_string()))?;
        roots.add(cert).map_err(|e| pem_error(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(pem_error("no CERTIFICATE block".into()));
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| pem_error(e.to_string()))
}

/// The certificate and key files, and what was last loaded from them.
#[derive(Debug)]
pub struct CertFiles {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    /// Modification times of (certificate, key) when they were last read.
    stamp: (Option<SystemTime>, Option<SystemTime>),
    key: Arc<CertifiedKey>,
}

impl CertFiles {
    pub fn load(
        cert_path: PathBuf,
        key_path: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<CertFiles, Error> {
        let stamp = (modified(&cert_path), modified(&key_path));
        let key = read_pair(&cert_path, &key_path, &provider)?;
        Ok(CertFiles {
            cert_path,
            key_path,
            provider,
            current: Mutex::new(Loaded { stamp, key }),
        })
    }

    /// The pair to serve: the files' current content when they changed since the last read and are usable,
    /// else what was served before (a half-written renewal is logged and tried again at its next change).
    pub fn current(&self) -> Arc<CertifiedKey> {
        let stamp = (modified(&self.cert_path), modified(&self.key_path));
        let mut loaded = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if stamp != loaded.stamp {
            loaded.stamp = stamp;
            match read_pair(&self.cert_path, &self.key_path, &self.provider) {
                Ok(key) => {
                    tracing::info!(cert = %self.cert_path.display(), "listen_tls: serving the renewed certificate");
                    loaded.key = key;
                }
                Err(error) => {
                    tracing::warn!(%error, "listen_tls: keeping the certificate served so far");
                }
            }
        }
        loaded.key.clone()
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    // Follows symlinks: a mounted Secret swaps its `..data` link, which changes the target's time.
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, Error> {
    let read = |key, path: &Path| {
        std::fs::read(path).map_err(|source| Error::Read {
            key,
            path: path.to_owned(),
            source,
        })
    };
    let pem_error = |key, path: &Path, what, reason: String| Error::Pem {
        key,
        path: path.to_owned(),
        what,
        reason,
    };
    let cert_pem = read("cert_file", cert_path)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("cert_file", cert_path, "certificate", e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(
            "cert_file",
            cert_path,
            "certificate",
            "no CERTIFICATE block".into(),
        ));
    }
    let key_pem = read("key_file", key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| pem_error("key_file", key_path, "private key", e.to_string()))?;
    CertifiedKey::from_der(chain, key, provider)
        .map(Arc::new)
        .map_err(|e| Error::Pair {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `localhost`: (certificate PEM, key PEM).
    fn generated() -> (String, String) {
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        (pair.cert.pem(), pair.signing_key.serialize_pem())
    }

    fn files(dir: &Path, cert: &str, key: &str) -> (PathBuf, PathBuf) {
        let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (c, k)
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    #[test]
    fn bad_files_name_the_key_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = generated();
        let (c, k) = files(dir.path(), &cert, &key);
        let missing = dir.path().join("nope.crt");
        let err = |c: &Path, k: &Path| {
            CertFiles::load(c.to_owned(), k.to_owned(), provider())
                .unwrap_err()
                .to_string()
        };

        let e = err(&missing, &k);
        assert!(e.starts_with("listen_tls.cert_file: cannot read "), "{e}");
        assert!(e.contains("nope.crt"), "{e}");

        let e = err(&k, &k);
        assert!(e.starts_with("listen_tls.cert_file: "), "{e}");
        assert!(e.contains("no CERTIFICATE block"), "{e}");

        let e = err(&c, &c);
        assert!(e.starts_with("listen_tls.key_file: "), "{e}");

        let (_, other_key) = generated();
        let other = dir.path().join("other.key");
        std::fs::write(&other, other_key).unwrap();
        let e = err(&c, &other);
        assert!(e.contains("does not fit the certificate"), "{e}");
    }

    #[test]
    fn an_unusable_client_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = generated();
        let (c, k) = files(dir.path(), &cert, &key);
        let config = |ca: &Path| ListenTlsConfig {
            cert_file: Some(c.clone()),
            key_file: Some(k.clone()),
            client_ca_file: Some(ca.to_owned()),
        };
        let err = |ca: &Path| acceptor(&config(ca)).err().expect("refused").to_string();
        let e = err(&dir.path().join("missing.crt"));
        assert!(
            e.starts_with("listen_tls.client_ca_file: cannot read "),
            "{e}"
        );
        let e = err(&k);
        assert!(
            e.starts_with("listen_tls.client_ca_file: ") && e.contains("no CERTIFICATE block"),
            "{e}"
        );
        assert!(acceptor(&config(&c)).is_ok(), "a certificate as its own CA");
    }

    #[test]
    fn a_renewed_pair_is_served_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = generated();
        let (c, k) = files(dir.path(), &cert, &key);
        let files = CertFiles::load(c.clone(), k.clone(), provider()).unwrap();
        let first = files.current().cert[0].clone();
        assert_eq!(files.current().cert[0], first, "unchanged files, same pair");

        // Modification times have coarse granularity on some filesystems: wait for a visible change.
        let renew = |cert: &str, key: &str| {
            let before = (modified(&c), modified(&k));
            for _ in 0..200 {
                std::fs::write(&c, cert).unwrap();
                std::fs::write(&k, key).unwrap();
                if (modified(&c), modified(&k)) != before {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            panic!("modification time never changed");
        };

        let (cert2, key2) = generated();
        renew(&cert2, &key2);
        let second = files.current().cert[0].clone();
        assert_ne!(second, first, "the renewed certificate is served");

        // A certificate written without its key: keep serving the last good pair.
        let (cert3, _) = generated();
        renew(&cert3, &key2);
        assert_eq!(files.current().cert[0], second);
    }
}
