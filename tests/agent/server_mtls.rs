//! Mutual TLS (`listen_tls.client_ca_file`): `/metrics` answers only a client whose certificate a configured
//! CA signed; the probes stay open to clients without a certificate (the kubelet has none); a certificate
//! from another CA fails the handshake.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer as Signer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA: its certificate PEM and the signer of client certificates.
fn ca() -> (String, Signer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Signer::new(params, key))
}

/// A client certificate signed by `signer`: (certificate PEM, key PEM).
fn client_cert(signer: &Signer<'static, KeyPair>) -> (String, String) {
    let mut params = CertificateParams::new(vec!["prometheus".to_string()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, signer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// GET `path` over TLS trusting `server_ca`, with a client certificate when given: the status.
async fn get(
    addr: SocketAddr,
    path: &str,
    server_ca: &str,
    client: Option<&(String, String)>,
) -> std::io::Result<u16> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server_ca.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await?;
    Ok(String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_client_certificate_from_the_ca_and_probes_need_none() {
    let dir = tempfile::tempdir().unwrap();
    let server = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let server_pem = server.cert.pem();
    let (ca_pem, signer) = ca();
    let config = format!(
        "listen_tls:\n  cert_file: {}\n  key_file: {}\n  client_ca_file: {}\n",
        write(dir.path(), "tls.crt", &server_pem),
        write(dir.path(), "tls.key", &server.signing_key.serialize_pem()),
        write(dir.path(), "ca.crt", &ca_pem),
    );
    let sim = common::quiet_sim().await;
    let herald = common::start_herald(&sim.url(), &config, Stdio::null(), &[]);

    // Probes without a certificate, as the kubelet sends them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match get(herald.addr, "/readyz", &server_pem, None).await {
            Ok(200) => break,
            other if Instant::now() > deadline => {
                panic!("/readyz without a certificate: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(
        get(herald.addr, "/healthz", &server_pem, None)
            .await
            .unwrap(),
        200
    );
    assert_eq!(
        get(herald.addr, "/metrics", &server_pem, None)
            .await
            .unwrap(),
        403
    );

    let good = client_cert(&signer);
    assert_eq!(
        get(herald.addr, "/metrics", &server_pem, Some(&good))
            .await
            .unwrap(),
        200
    );

    // A certificate from another CA is not accepted at all.
    let (_, other_signer) = ca();
    let stranger = client_cert(&other_signer);
    let refused = get(herald.addr, "/metrics", &server_pem, Some(&stranger)).await;
    assert!(
        !matches!(refused, Ok(200)),
        "a certificate from an unknown CA got /metrics: {refused:?}"
    );
}
