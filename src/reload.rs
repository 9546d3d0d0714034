//! Live reload: on SIGHUP, or when the configuration file's content changes (polled, because a ConfigMap
//! volume changes by swapping a symlink, which inotify on the file itself misses), load and validate the
//! file again and publish it to the parts that can change without a restart: the pipeline (filters,
//! severity table, dedup, redaction) and the webhook sinks (their filter, batching, timeout, retries,
//! secret files). The watches are never restarted.
//!
//! An invalid file is refused: one clear log line, a `ConfigRejected` Event, `herald_config_reloads_total
//! {result="rejected"}`, and the running configuration stays. Settings that need a restart (listen, mode,
//! state_dir, sources, other sinks, ...) are named in a warning and left as they are: which ones is not a list
//! kept here but derived from the settings' types (`crate::config::schema`), so a new key cannot be missed.

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

/// The settings a reload does not apply (they need a restart), derived from the settings' types: every key
/// whose struct does not mark it `x-reload: applied` (see `crate::config::schema`).
fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    crate::config::schema::restart_needed(old, new)
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

/// Live reload of the configuration file (`reload`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Reload on SIGHUP and when the file's content changes: a valid new configuration applies without
    /// restarting the watches (the keys marked so); an invalid one is refused (logged, `ConfigRejected` Event)
    /// and the running configuration stays.
    pub enabled: bool,
    /// How often the file's content is checked (a ConfigMap volume changes by a symlink swap).
    pub poll_interval: crate::config::Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            enabled: true,
            poll_interval: crate::config::Duration::from_secs(5),
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

    /// Every leaf of a configuration (with one webhook), changed alone, is named as restart-needed exactly when
    /// a reload cannot apply it. The truth is written out here from what the agent re-reads on a reload: the
    /// pipeline's `filters`, `dedup`, `severity` and `redact`, and a webhook's settings except its URL and
    /// queue (src/pipeline/mod.rs `reconfigure`, src/sink/webhook.rs `reconfigure`).
    #[test]
    fn every_key_a_reload_cannot_apply_is_restart_needed_and_no_other() {
        const APPLIED: &[&str] = &["filters.", "dedup.", "severity.", "redact."];
        const WEBHOOK_APPLIED: &[&str] = &[
            "filter.",
            "batch_size",
            "flush_interval",
            "timeout",
            "max_retries",
            "hmac_secret_file",
            "bearer_token_file",
            "format",
            "template",
            "template_per",
            "alert_resolve_after",
        ];
        let applied = |path: &str| {
            if let Some(rest) = path.strip_prefix("sinks.webhooks[0].") {
                return WEBHOOK_APPLIED
                    .iter()
                    .any(|k| rest == *k || (k.ends_with('.') && rest.starts_with(k)));
            }
            APPLIED.iter().any(|k| path.starts_with(k))
        };
        let mut config = Config::default();
        config.sinks.webhooks.push(crate::config::WebhookConfig {
            url: "http://a/".into(),
            ..Default::default()
        });
        let base = serde_json::to_value(&config).unwrap();
        let mut leaves = Vec::new();
        fn walk(v: &serde_json::Value, path: String, out: &mut Vec<String>) {
            let join = |k: &str| {
                if path.is_empty() {
                    k.to_string()
                } else {
                    format!("{path}.{k}")
                }
            };
            match v {
                serde_json::Value::Object(m) if !m.is_empty() => {
                    for (k, v) in m {
                        walk(v, join(k), out)
                    }
                }
                serde_json::Value::Array(a) if a.first().is_some_and(|x| x.is_object()) => {
                    for (i, v) in a.iter().enumerate() {
                        walk(v, format!("{path}[{i}]"), out)
                    }
                }
                _ => out.push(path),
            }
        }
        walk(&base, String::new(), &mut leaves);
        for must in [
            "state_dir",
            "checkpoint_interval",
            "listen",
            "mode",
            "shutdown_timeout",
        ] {
            assert!(leaves.iter().any(|l| l == must), "{must} is a key");
        }
        assert!(leaves.len() > 100, "{}", leaves.len());
        for leaf in &leaves {
            let mut changed = base.clone();
            let pointer = format!("/{}", leaf.replace(['.', '['], "/").replace(']', ""));
            let v = changed.pointer_mut(&pointer).unwrap();
            *v = match v.take() {
                serde_json::Value::Null => "set".into(),
                serde_json::Value::Bool(b) => (!b).into(),
                serde_json::Value::Number(n) => (n.as_f64().unwrap() + 1.0).into(),
                serde_json::Value::String(s) => format!("{s}x").into(),
                serde_json::Value::Array(mut a) => {
                    a.push("x".into());
                    a.into()
                }
                serde_json::Value::Object(mut m) => {
                    m.insert("x".into(), "y".into());
                    m.into()
                }
            };
            let named = crate::config::schema::restart_needed_values(&base, &changed);
            if applied(leaf) {
                assert!(
                    named.is_empty(),
                    "{leaf} is applied by a reload, named {named:?}"
                );
            } else {
                assert_eq!(named, [leaf.as_str()], "{leaf} needs a restart");
            }
        }
    }

    #[test]
    fn lists_of_settings_name_what_changed() {
        let a = Config::default();
        let mut b = a.clone();
        b.sinks.webhooks.push(crate::config::WebhookConfig {
            url: "http://a/".into(),
            ..Default::default()
        });
        assert_eq!(
            needs_restart(&a, &b),
            ["sinks.webhooks (number of entries)"]
        );
        let mut c = b.clone();
        c.sinks.webhooks[0].url = "http://b/".into();
        c.sinks.webhooks[0].batch_size = 7;
        c.sinks.webhooks[0].queue_capacity = 7;
        assert_eq!(
            needs_restart(&b, &c),
            ["sinks.webhooks[0].queue_capacity", "sinks.webhooks[0].url"]
        );
        // Redaction rules are applied, however many there are.
        let mut d = a.clone();
        d.redact.rules.pop();
        d.redact.rules[0].pattern = "x".into();
        assert!(needs_restart(&a, &d).is_empty());
        // The keys that slipped through the hand-kept list before.
        let mut e = a.clone();
        e.state_dir = Some("/var/lib/herald".into());
        e.checkpoint_interval = crate::config::Duration::from_secs(9);
        assert_eq!(needs_restart(&a, &e), ["checkpoint_interval", "state_dir"]);
    }
}
