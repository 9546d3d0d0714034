//! Live reload: on SIGHUP, or when the configuration file's content changes (polled, because a ConfigMap
//! volume changes by swapping a symlink, which inotify on the file itself misses), load and validate the
//! file again and publish it to the parts that can change without a restart: the pipeline (filters,
//! severity table, dedup, redaction) and the webhook sinks (their filter, batching, timeout, retries,
//! secret files). The watches are never restarted.
//!
//! An invalid file is refused: one clear log line, a `ConfigRejected` Event, `herald_config_reloads_total
//! {result="rejected"}`, and the running configuration stays. Settings that need a restart (listen, mode,
//! sources, other sinks, ...) are named in a warning and left as they are.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::self_events::SelfEvents;
use crate::telemetry::{self, Telemetry};

/// Loads the configuration again, with the same flag and variable overrides as at start, validated.
pub type Loader = Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// Where the running configuration came from.
#[derive(Clone)]
pub struct ConfigSource {
    /// The file polled for changes; `None` (no `--config`): only SIGHUP reloads.
    pub path: Option<PathBuf>,
    pub load: Loader,
}

/// The hash of a configuration: SHA-256 of its canonical JSON form (so flags and defaults count, and
/// comments or key order in the file do not), as 12 hex digits.
pub fn config_hash(config: &Config) -> String {
    let json = serde_json::to_vec(config).unwrap_or_default();
    let digest = Sha256::digest(&json);
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash as the value of the `herald_config_hash` gauge (48 bits: exact in an f64).
pub fn hash_value(hash: &str) -> f64 {
    u64::from_str_radix(hash, 16).unwrap_or(0) as f64
}

/// Top-level settings a reload does not apply (they need a restart).
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |key, changed: bool| {
        if changed {
            keys.push(key);
        }
    };
    check("listen", old.listen != new.listen);
    check("listen_tls", old.listen_tls != new.listen_tls);
    check("server", old.server != new.server);
    check(
        "shutdown_timeout",
        old.shutdown_timeout != new.shutdown_timeout,
    );
    check("mode", old.mode != new.mode);
    check(
        "leader_election",
        old.leader_election != new.leader_election,
    );
    check("source", old.source != new.source);
    check("pipeline", old.pipeline != new.pipeline);
    check("metrics", old.metrics != new.metrics);
    check("sinks.metrics", old.sinks.metrics != new.sinks.metrics);
    check("sinks.json", old.sinks.json != new.sinks.json);
    check("sinks.otlp", old.sinks.otlp != new.sinks.otlp);
    check("sinks.kafka", old.sinks.kafka != new.sinks.kafka);
    let urls = |c: &Config| {
        c.sinks
            .webhooks
            .iter()
            .map(|w| (w.url.clone(), w.queue_capacity))
            .collect::<Vec<_>>()
    };
    check(
        "sinks.webhooks (url, queue_capacity, count)",
        urls(old) != urls(new),
    );
    check("log", old.log != new.log);
    check("self_events", old.self_events != new.self_events);
    check("reload", old.reload != new.reload);
    keys
}

/// Counters and the gauge of reloads.
struct Stats {
    applied: Counter,
    unchanged: Counter,
    rejected: Counter,
    hash: Gauge,
}

/// Watch for SIGHUP and file changes until `shutdown`, publishing each accepted configuration on `tx`.
pub async fn run(
    source: ConfigSource,
    tx: watch::Sender<Arc<Config>>,
    poll: Duration,
    events: SelfEvents,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) {
    let result = |r| telemetry.counter(telemetry::CONFIG_RELOADS, &[("result", r)]);
    let stats = Stats {
        applied: result("applied"),
        unchanged: result("unchanged"),
        rejected: result("rejected"),
        hash: telemetry.gauge(telemetry::CONFIG_HASH, &[]),
    };
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; reloading only on file changes");
            None
        }
    };
    let read = |path: &Option<PathBuf>| path.as_ref().and_then(|p| std::fs::read(p).ok());
    let mut last_content = read(&source.path);
    loop {
        let signalled = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = async {
                match &mut hup {
                    Some(s) => { s.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => true,
            _ = tokio::time::sleep(poll) => false,
        };
        if !signalled {
            let content = read(&source.path);
            if content == last_content {
                continue;
            }
            last_content = content;
        }
        let why = if signalled { "SIGHUP" } else { "file changed" };
        reload_once(&source, &tx, why, &events, &stats);
    }
}

fn reload_once(
    source: &ConfigSource,
    tx: &watch::Sender<Arc<Config>>,
    why: &str,
    events: &SelfEvents,
    stats: &Stats,
) {
    match (source.load)() {
        Ok(new) => {
            let old = tx.borrow().clone();
            if *old == new {
                stats.unchanged.increment(1);
                tracing::info!(trigger = why, "configuration reloaded: no change");
                return;
            }
            let restart = needs_restart(&old, &new);
            if !restart.is_empty() {
                tracing::warn!(
                    keys = restart.join(", "),
                    "configuration reload: these changes take effect only after a restart"
                );
            }
            let hash = config_hash(&new);
            // Published first, so whoever sees the counter move can rely on the new configuration.
            tx.send_replace(Arc::new(new));
            stats.hash.set(hash_value(&hash));
            stats.applied.increment(1);
            tracing::info!(trigger = why, config_hash = %hash, "configuration reloaded and applied");
        }
        Err(e) => {
            stats.rejected.increment(1);
            tracing::error!(trigger = why, error = %e, "configuration reload rejected; the running configuration stays");
            events.warning(
                "ConfigRejected",
                "Reload",
                format!("invalid configuration: {e}; the running configuration stays"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_follows_the_effective_configuration() {
        let a = Config::default();
        let mut b = Config::default();
        assert_eq!(config_hash(&a), config_hash(&b));
        b.filters.types = vec!["Warning".into()];
        assert_ne!(config_hash(&a), config_hash(&b));
        assert_eq!(config_hash(&a).len(), 12);
        assert!(hash_value(&config_hash(&a)) < 2f64.powi(48));
    }

    #[test]
    fn restart_only_keys_are_named() {
        let a = Config::default();
        let mut b = a.clone();
        b.filters.types = vec!["Warning".into()];
        b.dedup.ttl = crate::config::Duration::from_secs(5);
        assert!(needs_restart(&a, &b).is_empty());
        b.listen = "127.0.0.1:1".parse().unwrap();
        assert_eq!(needs_restart(&a, &b), ["listen"]);
    }
}
