//! Sending one export request over OTLP/gRPC (tonic) or OTLP/HTTP with protobuf bodies (hyper), and
//! telling retryable failures from final ones the way the OTLP specification does.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http_body_util::Full;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::settings::Settings;
use crate::config::OtlpProtocol;
pub use crate::sink::https::SendError;
use crate::sink::https::{self, HttpsClient};

/// Why the transport could not be built (only TLS set-up can fail, after settings were checked).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sinks.otlp.ca_file: {0}")]
    Tls(String),
    #[error("sinks.otlp.endpoint: {0}")]
    Endpoint(String),
}

pub enum Transport {
    Grpc(Box<GrpcTransport>),
    Http(Box<HttpTransport>),
}

/// One export, encoded once (a retry resends the same bytes): an `ExportLogsServiceRequest` or an
/// `ExportTraceServiceRequest`.
#[derive(Debug, Clone)]
pub enum Export {
    Logs(Bytes),
    Traces(Bytes),
}

pub struct GrpcTransport {
    grpc: tonic::client::Grpc<Channel>,
    metadata: tonic::metadata::MetadataMap,
}

/// gRPC codec for requests that are already protobuf bytes; responses decode with prost.
struct Encoded<R>(std::marker::PhantomData<R>);

impl<R> Default for Encoded<R> {
    fn default() -> Self {
        Encoded(std::marker::PhantomData)
    }
}

impl<R: Message + Default + Send + 'static> Codec for Encoded<R> {
    type Encode = Bytes;
    type Decode = R;
    type Encoder = BytesEncoder;
    type Decoder = ResponseDecoder<R>;

    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder<R> {
        ResponseDecoder(std::marker::PhantomData)
    }
}

struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

struct ResponseDecoder<R>(std::marker::PhantomData<R>);

impl<R: Message + Default> Decoder for ResponseDecoder<R> {
    type Item = R;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<R>, tonic::Status> {
        let len = src.remaining();
        R::decode(src.copy_to_bytes(len))
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

pub struct HttpTransport {
    client: HttpsClient,
    uri: http::Uri,
    traces_uri: http::Uri,
    headers: http::HeaderMap,
    gzip: bool,
    timeout: Duration,
}

impl Transport {
    /// Build without connecting: a collector that is down at start is a retryable send error later.
    pub fn new(s: &Settings) -> Result<Transport, Error> {
        match s.protocol {
            OtlpProtocol::Grpc => {
                let mut endpoint = Endpoint::from_shared(s.endpoint.clone())
                    .map_err(|e| Error::Endpoint(e.to_string()))?
                    .timeout(s.timeout)
                    .connect_timeout(s.timeout);
                if s.endpoint.starts_with("https://") {
                    let mut tls = ClientTlsConfig::new().with_native_roots();
                    if let Some(pem) = &s.ca_pem {
                        tls = tls.ca_certificate(Certificate::from_pem(pem));
                    }
                    endpoint = endpoint
                        .tls_config(tls)
                        .map_err(|e| Error::Tls(e.to_string()))?;
                }
                let mut grpc = tonic::client::Grpc::new(endpoint.connect_lazy());
                if s.gzip {
                    grpc = grpc
                        .send_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Gzip);
                }
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (name, value) in &s.headers {
                    // Both were checked as HTTP header names and values when the settings were resolved.
                    if let (Ok(k), Ok(v)) = (
                        tonic::metadata::MetadataKey::from_bytes(name.as_bytes()),
                        value.parse(),
                    ) {
                        metadata.insert(k, v);
                    }
                }
                Ok(Transport::Grpc(Box::new(GrpcTransport { grpc, metadata })))
            }
            OtlpProtocol::HttpProtobuf => {
                // The system roots only when a URL needs them (see `https::client`).
                let tls = is_https(&s.endpoint) || is_https(&s.traces_endpoint);
                let client = https::client(s.ca_pem.as_deref(), tls)
                    .map_err(|e| Error::Tls(e.to_string()))?;
                let mut headers = http::HeaderMap::new();
                for (name, value) in &s.headers {
                    if let (Ok(k), Ok(v)) = (
                        http::HeaderName::from_bytes(name.as_bytes()),
                        http::HeaderValue::from_str(value),
                    ) {
                        headers.insert(k, v);
                    }
                }
                Ok(Transport::Http(Box::new(HttpTransport {
                    client,
                    uri: s
                        .endpoint
                        .parse()
                        .map_err(|e: http::uri::InvalidUri| Error::Endpoint(e.to_string()))?,
                    traces_uri: s
                        .traces_endpoint
                        .parse()
                        .map_err(|e: http::uri::InvalidUri| Error::Endpoint(e.to_string()))?,
                    headers,
                    gzip: s.gzip,
                    timeout: s.timeout,
                })))
            }
        }
    }

    /// Send one request. `Ok(n)`: accepted, except `n` items the collector rejected (partial success).
    /// Several sends may run at once.
    pub async fn send(&self, export: Export) -> Result<u64, SendError> {
        match self {
            Transport::Grpc(g) => {
                // A clone shares the channel (and its connection); it only makes the call's own handle.
                let mut grpc = g.grpc.clone();
                grpc.ready()
                    .await
                    .map_err(|e| SendError::new(true, format!("not connected: {e}")))?;
                let request = |bytes: Bytes| {
                    let mut req = tonic::Request::new(bytes);
                    *req.metadata_mut() = g.metadata.clone();
                    req
                };
                match export {
                    Export::Logs(bytes) => {
                        let path = http::uri::PathAndQuery::from_static(
                            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                        );
                        let codec = Encoded::<ExportLogsServiceResponse>::default();
                        let resp = grpc.unary(request(bytes), path, codec).await;
                        let resp = resp.map_err(grpc_error)?.into_inner();
                        Ok(rejected(
                            resp.partial_success.map(|p| p.rejected_log_records),
                        ))
                    }
                    Export::Traces(bytes) => {
                        let path = http::uri::PathAndQuery::from_static(
                            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                        );
                        let codec = Encoded::<ExportTraceServiceResponse>::default();
                        let resp = grpc.unary(request(bytes), path, codec).await;
                        let resp = resp.map_err(grpc_error)?.into_inner();
                        Ok(rejected(resp.partial_success.map(|p| p.rejected_spans)))
                    }
                }
            }
            Transport::Http(h) => {
                let (uri, body) = match &export {
                    Export::Logs(b) => (&h.uri, b.clone()),
                    Export::Traces(b) => (&h.traces_uri, b.clone()),
                };
                let fut = send_http(&h.client, uri, &h.headers, h.gzip, body);
                let bytes = tokio::time::timeout(h.timeout, fut)
                    .await
                    .map_err(|_| SendError::new(true, "timed out"))??;
                Ok(match export {
                    Export::Logs(_) => rejected(
                        ExportLogsServiceResponse::decode(bytes)
                            .unwrap_or_default()
                            .partial_success
                            .map(|p| p.rejected_log_records),
                    ),
                    Export::Traces(_) => rejected(
                        ExportTraceServiceResponse::decode(bytes)
                            .unwrap_or_default()
                            .partial_success
                            .map(|p| p.rejected_spans),
                    ),
                })
            }
        }
    }
}

/// Whether `url` is an `https://` URL (schemes are case-insensitive, RFC 3986).
fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
}

fn rejected(n: Option<i64>) -> u64 {
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

/// Retryable gRPC codes per the OTLP specification.
fn grpc_error(status: tonic::Status) -> SendError {
    use tonic::Code;
    let retryable = matches!(
        status.code(),
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
    );
    SendError::new(
        retryable,
        format!("{:?}: {}", status.code(), status.message()),
    )
}

/// POST a protobuf body; the response body on success.
async fn send_http(
    client: &HttpsClient,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    gzip: bool,
    mut body: Bytes,
) -> Result<Bytes, SendError> {
    let mut builder = http::Request::post(uri.clone())
        .header(http::header::CONTENT_TYPE, "application/x-protobuf");
    if gzip {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        // Writing into a Vec cannot fail.
        let _ = encoder.write_all(&body);
        body = Bytes::from(encoder.finish().unwrap_or_default());
        builder = builder.header(http::header::CONTENT_ENCODING, "gzip");
    }
    let mut req = builder
        .body(Full::new(body))
        .map_err(|e| SendError::new(false, e.to_string()))?;
    req.headers_mut()
        .extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    // Retryable per the OTLP specification.
    https::send(client, req, "collector", |s| {
        matches!(s.as_u16(), 429 | 502 | 503 | 504)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::is_https;

    #[test]
    fn only_https_urls_load_the_system_roots() {
        assert!(is_https("https://collector:4318/v1/logs"));
        assert!(is_https("HTTPS://collector:4318/v1/logs"));
        assert!(!is_https("http://collector:4318/v1/logs"));
        assert!(!is_https("http://https.example/v1/logs"));
        assert!(!is_https("https:"));
    }
}
