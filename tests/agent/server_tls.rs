//! `listen_tls`: herald serves `/metrics` and its probes over TLS, a real Prometheus (Debian `prometheus`)
//! scrapes it with `scheme: https` and the certificate's CA, plain HTTP gets no answer, a renewed certificate
//! is served without a restart, and unusable files stop herald at start-up naming the key.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::prometheus::Proc;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for `localhost` and 127.0.0.1, written as `tls.crt` and `tls.key` in `dir`
/// (the names of a cert-manager Secret). Returns the certificate PEM.
fn write_pair(dir: &Path) -> String {
    let pair =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = pair.cert.pem();
    // Key first: a reader that sees the new certificate with the old key refuses the pair and retries.
    std::fs::write(dir.join("tls.key"), pair.signing_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("tls.crt"), &cert).unwrap();
    cert
}

fn tls_config(dir: &Path) -> String {
    format!(
        "listen_tls:\n  cert_file: {}\n  key_file: {}\n",
        dir.join("tls.crt").display(),
        dir.join("tls.key").display()
    )
}

/// GET `path` over TLS, trusting only `ca_pem`: the status and the certificate the server presented.
async fn https_get(addr: SocketAddr, path: &str, ca_pem: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, presented))
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// Prometheus scraping herald over HTTPS, trusting `ca`.
fn start_prometheus(dir: &Path, herald: SocketAddr, ca: &Path) -> (Proc, SocketAddr) {
    let config = format!(
        "global:\n  scrape_interval: 1s\n\
         scrape_configs:\n\
         \x20 - job_name: herald\n    scheme: https\n    tls_config:\n      ca_file: {}\n      server_name: localhost\n    \
         static_configs:\n      - targets: [\"{herald}\"]\n",
        ca.display()
    );
    common::prometheus::start(dir, &config, &[])
}

/// The value of the first sample of `expr` in Prometheus, if any.
fn query(prometheus: SocketAddr, expr: &str) -> Option<f64> {
    let q: String = form_urlencoded::byte_serialize(expr.as_bytes()).collect();
    let (status, body) = common::http_get(prometheus, &format!("/api/v1/query?query={q}"))?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_over_tls_and_a_renewed_certificate_is_served() {
    let Some(_) = common::fixtures::tool(&["prometheus"], "prometheus") else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let first = write_pair(certs.path());
    let sim = common::quiet_sim().await;
    let herald = common::start_herald(&sim.url(), &tls_config(certs.path()), Stdio::null(), &[]);

    let deadline = Instant::now() + Duration::from_secs(30);
    let presented = loop {
        match https_get(herald.addr, "/readyz", &first).await {
            Ok((200, presented)) => break presented,
            other if Instant::now() > deadline => panic!("/readyz over TLS: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(presented, der(&first));
    assert_eq!(
        common::http_get(herald.addr, "/readyz"),
        None,
        "plain HTTP must get no HTTP answer from a TLS listener"
    );

    // A real Prometheus scrapes it, verifying the certificate against its CA.
    let prom_dir = tempfile::tempdir().unwrap();
    let ca = prom_dir.path().join("ca.crt");
    std::fs::write(&ca, &first).unwrap();
    let (_prom, prom) = start_prometheus(prom_dir.path(), herald.addr, &ca);
    common::wait_until(
        Duration::from_secs(30),
        "Prometheus scraping herald over TLS",
        || {
            query(prom, "up{job=\"herald\"}") == Some(1.0)
                && query(prom, "count(herald_queue_capacity)").is_some_and(|n| n > 0.0)
        },
    );

    // Renewal: new files, same paths, no restart; the next connection gets the new certificate.
    tokio::time::sleep(Duration::from_millis(20)).await; // a visible modification time
    let second = write_pair(certs.path());
    let (status, presented) = https_get(herald.addr, "/metrics", &second).await.unwrap();
    assert_eq!((status, presented), (200, der(&second)));
    assert!(
        https_get(herald.addr, "/readyz", &first).await.is_err(),
        "the old certificate is no longer served"
    );
}

#[test]
fn unusable_certificate_files_stop_herald_naming_the_key() {
    let certs = tempfile::tempdir().unwrap();
    write_pair(certs.path());
    let cases = [
        (
            format!(
                "listen_tls:\n  cert_file: {}/missing.crt\n  key_file: {}/tls.key\n",
                certs.path().display(),
                certs.path().display()
            ),
            "listen_tls.cert_file: cannot read",
        ),
        (
            format!(
                "listen_tls:\n  cert_file: {}/tls.crt\n  key_file: {}/tls.crt\n",
                certs.path().display(),
                certs.path().display()
            ),
            "listen_tls.key_file:",
        ),
        (
            format!(
                "listen_tls:\n  cert_file: {}/tls.crt\n",
                certs.path().display()
            ),
            "listen_tls.key_file: missing",
        ),
    ];
    for (config, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.yaml");
        std::fs::write(&path, &config).unwrap();
        // No API server is needed: the files are checked before herald connects anywhere.
        let out = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["run", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .arg("--kubeconfig")
            .arg(dir.path().join("no-kubeconfig"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{config}: exited 0");
        assert!(
            stderr.contains(want),
            "{config}: want {want:?} in:\n{stderr}"
        );
    }
}
