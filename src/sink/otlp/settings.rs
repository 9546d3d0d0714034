//! Resolves `sinks.otlp` and the standard `OTEL_EXPORTER_OTLP_*` variables into one checked [`Settings`].
//!
//! Order for each value: the configuration file, then `OTEL_EXPORTER_OTLP_LOGS_*`, then `OTEL_EXPORTER_OTLP_*`,
//! then the default. Headers merge (file wins per name). Everything is checked here, at start, so a bad
//! header or an unreadable CA file is a `key: reason` error and exit status 2, never a failure per request.

use std::path::Path;
use std::time::Duration;

use crate::config::{ConfigError, OtlpCompression, OtlpProtocol, OtlpSinkConfig};
use crate::sink::shape::Identity;
use crate::sink::url::SinkUrl;

/// Everything the OTLP sink needs, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub protocol: OtlpProtocol,
    /// gRPC: the collector's base URL. HTTP: the full URL of the logs endpoint.
    pub endpoint: String,
    /// `endpoint` as logs and errors show it: without query values (a user:password never reaches
    /// `endpoint`; it is sent as an `authorization` header).
    pub shown_endpoint: String,
    /// HTTP: the full URL for spans (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else the logs URL with
    /// `/v1/traces` for `/v1/logs`). gRPC: the same as `endpoint`.
    pub traces_endpoint: String,
    /// Lower-case names, values checked to be valid header values.
    pub headers: Vec<(String, String)>,
    pub ca_pem: Option<Vec<u8>>,
    pub gzip: bool,
    pub timeout: Duration,
    pub batch_size: usize,
    pub batch_interval: Duration,
    pub queue_capacity: usize,
    pub max_retries: u32,
    pub identity: Identity,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl Settings {
    /// `Ok(None)` when no endpoint is configured anywhere: the sink is off.
    pub fn resolve(
        cfg: &OtlpSinkConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Settings>, ConfigError> {
        // A variable, logs-specific first; empty counts as unset.
        let var = |suffix: &str| -> Option<(String, String)> {
            [
                format!("OTEL_EXPORTER_OTLP_LOGS_{suffix}"),
                format!("OTEL_EXPORTER_OTLP_{suffix}"),
            ]
            .into_iter()
            .find_map(|name| env(&name).filter(|v| !v.is_empty()).map(|v| (name, v)))
        };

        let protocol = match (cfg.protocol, var("PROTOCOL")) {
            (Some(p), _) => p,
            (None, Some((name, v))) => match v.as_str() {
                "grpc" => OtlpProtocol::Grpc,
                "http/protobuf" => OtlpProtocol::HttpProtobuf,
                other => {
                    return Err(ConfigError::new(
                        name,
                        format!("expected grpc or http/protobuf, got {other:?}"),
                    ));
                }
            },
            (None, None) => OtlpProtocol::HttpProtobuf,
        };

        // (key for errors, url, whether the url is signal-specific and taken as-is)
        let (key, url, as_is) = if let Some(endpoint) = &cfg.endpoint {
            ("sinks.otlp.endpoint".to_string(), endpoint.clone(), false)
        } else if let Some(v) = env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT").filter(|v| !v.is_empty()) {
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT".to_string(), v, true)
        } else if let Some(v) = env("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|v| !v.is_empty()) {
            ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), v, false)
        } else {
            return Ok(None);
        };
        // A user:password in the URL becomes Basic authorization; errors and logs never show it.
        let parsed = SinkUrl::parse(&url).map_err(|e| ConfigError::new(&key, e.to_string()))?;
        let shown = parsed.shown;
        let url = parsed.url;
        let uri: http::Uri = url.parse().map_err(|e| {
            ConfigError::new(
                &key,
                format!("expected a URL like http://collector:4318, got {shown:?} ({e})"),
            )
        })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(ConfigError::new(
                &key,
                format!("expected an http:// or https:// URL with a host, got {shown:?}"),
            ));
        }
        let endpoint = match protocol {
            OtlpProtocol::HttpProtobuf if !as_is && !uri.path().ends_with("/v1/logs") => {
                format!("{}/v1/logs", url.trim_end_matches('/'))
            }
            _ => url,
        };

        let traces_endpoint = match protocol {
            OtlpProtocol::Grpc => endpoint.clone(),
            OtlpProtocol::HttpProtobuf => {
                match env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").filter(|v| !v.is_empty()) {
                    Some(v) => {
                        let key = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
                        let traces =
                            SinkUrl::parse(&v).map_err(|e| ConfigError::new(key, e.to_string()))?;
                        // One Authorization header serves both signals.
                        if traces.basic_auth.is_some() && traces.basic_auth != parsed.basic_auth {
                            return Err(ConfigError::new(
                                key,
                                "has a user:password that the logs endpoint does not have; put it on the logs endpoint",
                            ));
                        }
                        traces.url
                    }
                    None => match endpoint.strip_suffix("/v1/logs") {
                        Some(base) => format!("{base}/v1/traces"),
                        None => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
                    },
                }
            }
        };

        let mut headers: Vec<(String, String)> = Vec::new();
        let mut add = |key: &str, name: &str, value: &str| -> Result<(), ConfigError> {
            let name = name.trim().to_ascii_lowercase();
            http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                ConfigError::new(key, format!("{name:?} is not a valid header name"))
            })?;
            http::HeaderValue::from_str(value.trim()).map_err(|_| {
                ConfigError::new(
                    key,
                    format!("the value of {name:?} is not a valid header value"),
                )
            })?;
            headers.retain(|(n, _)| *n != name);
            headers.push((name, value.trim().to_string()));
            Ok(())
        };
        if let Some((name, list)) = var("HEADERS") {
            for pair in list.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = pair.split_once('=').ok_or_else(|| {
                    ConfigError::new(
                        &name,
                        format!("expected name=value pairs separated by commas, got {pair:?}"),
                    )
                })?;
                let decode = |s: &str| {
                    form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                add(&name, &decode(k), &decode(v))?;
            }
        }
        if let Some(path) = &cfg.headers_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(
                    "sinks.otlp.headers_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                let (k, v) = line.split_once('=').ok_or_else(|| {
                    ConfigError::new(
                        "sinks.otlp.headers_file",
                        format!("{}: expected name=value lines", path.display()),
                    )
                })?;
                add("sinks.otlp.headers_file", k, v)?;
            }
        }
        for (k, v) in &cfg.headers {
            add(&format!("sinks.otlp.headers.{k}"), k, v)?;
        }

        if let Some(basic) = parsed.basic_auth {
            if headers.iter().any(|(n, _)| n == "authorization") {
                return Err(ConfigError::new(
                    &key,
                    "has a user:password (sent as Basic authorization) and an Authorization header is set too; keep one",
                ));
            }
            headers.push(("authorization".to_string(), basic));
        }

        let ca_pem = match (&cfg.ca_file, var("CERTIFICATE")) {
            (Some(path), _) => Some(read_ca("sinks.otlp.ca_file", path)?),
            (None, Some((name, path))) => Some(read_ca(&name, Path::new(&path))?),
            (None, None) => None,
        };

        let gzip = match (cfg.compression, var("COMPRESSION")) {
            (Some(c), _) => c == OtlpCompression::Gzip,
            (None, Some((name, v))) => match v.as_str() {
                "gzip" => true,
                "none" => false,
                other => {
                    return Err(ConfigError::new(
                        name,
                        format!("expected gzip or none, got {other:?}"),
                    ));
                }
            },
            (None, None) => false,
        };

        let timeout = match (cfg.timeout, var("TIMEOUT")) {
            (Some(t), _) => t.0,
            (None, Some((name, v))) => Duration::from_millis(v.parse().map_err(|_| {
                ConfigError::new(name, format!("expected milliseconds, got {v:?}"))
            })?),
            (None, None) => DEFAULT_TIMEOUT,
        };
        if timeout.is_zero() {
            return Err(ConfigError::new(
                "sinks.otlp.timeout",
                "must be greater than 0",
            ));
        }

        Ok(Some(Settings {
            protocol,
            shown_endpoint: crate::sink::url::shown(&endpoint),
            endpoint,
            traces_endpoint,
            headers,
            ca_pem,
            gzip,
            timeout,
            batch_size: cfg.batch_size,
            batch_interval: cfg.batch_interval.0,
            queue_capacity: cfg.queue_capacity,
            max_retries: cfg.max_retries,
            identity: Identity {
                cluster_name: cfg.cluster_name.clone().unwrap_or_default(),
                agent_node: env("NODE_NAME").unwrap_or_default(),
            },
        }))
    }
}

fn read_ca(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let pem = std::fs::read(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(ConfigError::new(
            key,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(
        cfg: &OtlpSinkConfig,
        vars: &[(&str, &str)],
    ) -> Result<Option<Settings>, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::resolve(cfg, |k| vars.get(k).cloned())
    }

    #[test]
    fn a_user_password_in_the_endpoint_is_basic_auth_and_never_shown() {
        let cfg = OtlpSinkConfig {
            endpoint: Some("http://admin:S3cretPW@collector:4318?api_key=k3y".into()),
            ..OtlpSinkConfig::default()
        };
        let s = resolve(&cfg, &[]).unwrap().unwrap();
        assert!(!s.endpoint.contains("S3cretPW"), "{}", s.endpoint);
        assert!(!s.shown_endpoint.contains("S3cretPW"));
        assert!(!s.shown_endpoint.contains("k3y"), "{}", s.shown_endpoint);
        // base64("admin:S3cretPW")
        assert!(
            s.headers
                .contains(&("authorization".into(), "Basic YWRtaW46UzNjcmV0UFc=".into())),
            "{:?}",
            s.headers
        );
        let both = OtlpSinkConfig {
            headers: [("Authorization".to_string(), "Bearer x".to_string())].into(),
            ..cfg
        };
        let e = resolve(&both, &[]).unwrap_err().to_string();
        assert!(
            e.starts_with("sinks.otlp.endpoint: has a user:password"),
            "{e}"
        );
        let bad = OtlpSinkConfig {
            endpoint: Some("ftp://admin:S3cretPW@collector".into()),
            ..OtlpSinkConfig::default()
        };
        let e = resolve(&bad, &[]).unwrap_err().to_string();
        assert!(!e.contains("S3cretPW"), "{e}");
    }

    #[test]
    fn no_endpoint_anywhere_means_off() {
        assert!(resolve(&OtlpSinkConfig::default(), &[]).unwrap().is_none());
    }

    #[test]
    fn variables_fill_what_the_file_leaves_unset() {
        let s = resolve(
            &OtlpSinkConfig::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "Authorization=Bearer%20abc,x-tenant=a",
                ),
                ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", ""),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
                ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "2500"),
                ("NODE_NAME", "node-1"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(s.endpoint, "http://collector:4318/v1/logs");
        assert_eq!(
            s.headers,
            vec![
                ("authorization".to_string(), "Bearer abc".to_string()),
                ("x-tenant".to_string(), "a".to_string())
            ]
        );
        assert!(s.gzip);
        assert_eq!(s.timeout, Duration::from_millis(2500));
        assert_eq!(s.identity.agent_node, "node-1");
    }

    #[test]
    fn the_file_wins_and_signal_specific_endpoints_are_taken_as_is() {
        let cfg = OtlpSinkConfig {
            protocol: Some(OtlpProtocol::Grpc),
            headers: [("X-Tenant".to_string(), "file".to_string())].into(),
            ..OtlpSinkConfig::default()
        };
        let s = resolve(
            &cfg,
            &[
                ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=env"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.protocol, OtlpProtocol::Grpc);
        assert_eq!(s.endpoint, "http://c:4317");
        assert_eq!(
            s.headers,
            vec![("x-tenant".to_string(), "file".to_string())]
        );

        let http = OtlpSinkConfig {
            endpoint: Some("https://c/otlp/v1/logs".into()),
            ..OtlpSinkConfig::default()
        };
        assert_eq!(
            resolve(&http, &[]).unwrap().unwrap().endpoint,
            "https://c/otlp/v1/logs"
        );
    }

    #[test]
    fn headers_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("headers");
        std::fs::write(&path, "# token\nAuthorization = Bearer s3cret\n").unwrap();
        let cfg = OtlpSinkConfig {
            endpoint: Some("http://c:4318".into()),
            headers_file: Some(path.clone()),
            ..OtlpSinkConfig::default()
        };
        let s = resolve(&cfg, &[]).unwrap().unwrap();
        assert_eq!(
            s.headers,
            vec![("authorization".to_string(), "Bearer s3cret".to_string())]
        );

        std::fs::write(&path, "no equals sign\n").unwrap();
        let e = resolve(&cfg, &[]).unwrap_err();
        assert_eq!(e.key, "sinks.otlp.headers_file");
    }

    #[test]
    fn bad_values_name_their_source() {
        let e = resolve(
            &OtlpSinkConfig::default(),
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
        )
        .unwrap_err();
        assert_eq!(e.key, "OTEL_EXPORTER_OTLP_ENDPOINT");
        let e = resolve(
            &OtlpSinkConfig::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "OTEL_EXPORTER_OTLP_PROTOCOL: expected grpc or http/protobuf, got \"http/json\""
        );
        let cfg = OtlpSinkConfig {
            endpoint: Some("http://c".into()),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..OtlpSinkConfig::default()
        };
        assert_eq!(resolve(&cfg, &[]).unwrap_err().key, "sinks.otlp.ca_file");
    }
}
