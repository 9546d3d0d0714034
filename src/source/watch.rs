//! A list-then-watch loop over kube's `Api::list` / `Api::watch`, yielding one [`Step`] at a time.
//!
//! Why not `kube::runtime::watcher`: it hides bookmarks and quiet re-watches, so herald could not tell an
//! open-but-quiet watch from a dead one (readiness, `herald_watch_last_event_timestamp_seconds`), could not
//! detect a stalled stream on its own terms, could not count restarts by cause, and cannot resume from a
//! stored resourceVersion. The protocol is the same: paged list (`limit`/`continue`), then watch from the
//! list's resourceVersion with bookmarks and a server timeout; a clean end re-watches from the last
//! resourceVersion; 410 Gone (or a clean close that delivered nothing at once, as some API servers do for a
//! stale version) relists; errors back off exponentially with jitter. It never gives up: only shutdown ends it.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use kube::Resource;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use metrics::{Counter, Gauge};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::health::SourceHealth;
use crate::telemetry::{self, Telemetry};

/// What the watch loop hands to its consumer, in the order of kube's watcher.
#[derive(Debug)]
pub enum Step<K> {
    /// A (re)list starts; objects not listed before `ListDone` no longer exist.
    ListStart,
    Listed(K),
    ListDone,
    Added(K),
    Modified(K),
    Deleted(K),
}

/// Settings for one watch.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    pub label_selector: String,
    pub field_selector: String,
    pub page_size: u32,
    /// Server-side watch timeout; the stream is re-opened after it.
    pub timeout: Duration,
    /// A watch that delivers nothing (not even a bookmark) for this long is treated as stalled and re-opened.
    pub stall_after: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            label_selector: String::new(),
            field_selector: String::new(),
            page_size: 500,
            timeout: Duration::from_secs(290),
            stall_after: Duration::from_secs(305),
        }
    }
}

enum State<K> {
    List {
        continue_token: Option<String>,
    },
    Open {
        resource_version: String,
    },
    Watching {
        resource_version: String,
        stream: BoxStream<'static, kube::Result<WatchEvent<K>>>,
        opened: Instant,
        delivered: bool,
    },
}

/// Metric handles of one watch, resolved once.
struct WatchMetrics {
    listed: Counter,
    added: Counter,
    modified: Counter,
    deleted: Counter,
    list_errors: Counter,
    watch_errors: Counter,
    undecodable: Counter,
    last_event: Gauge,
    restarts: Arc<Telemetry>,
    resource: &'static str,
}

impl WatchMetrics {
    fn new(t: &Arc<Telemetry>, resource: &'static str) -> WatchMetrics {
        let typed = |ty| {
            t.counter(
                telemetry::WATCH_EVENTS,
                &[("resource", resource), ("type", ty)],
            )
        };
        let errors = |kind| {
            t.counter(
                telemetry::WATCH_ERRORS,
                &[("resource", resource), ("kind", kind)],
            )
        };
        WatchMetrics {
            listed: typed("LISTED"),
            added: typed("ADDED"),
            modified: typed("MODIFIED"),
            deleted: typed("DELETED"),
            list_errors: errors("list"),
            watch_errors: errors("watch"),
            undecodable: t.counter(
                telemetry::INVALID_OBJECTS,
                &[("resource", resource), ("reason", "undecodable")],
            ),
            last_event: t.gauge(telemetry::WATCH_LAST_EVENT, &[("resource", resource)]),
            restarts: t.clone(),
            resource,
        }
    }

    fn restart(&self, reason: &'static str) {
        // Rare: resolving the handle here keeps the struct small.
        self.restarts
            .counter(
                telemetry::WATCH_RESTARTS,
                &[("resource", self.resource), ("reason", reason)],
            )
            .increment(1);
    }

    fn activity(&self) {
        let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
        self.last_event.set(now);
    }
}

/// One list+watch over an `Api<K>`.
pub struct Watcher<K: Resource + Clone + DeserializeOwned + Debug + Send + 'static> {
    api: Api<K>,
    settings: WatchSettings,
    state: State<K>,
    pending: VecDeque<Step<K>>,
    health: Arc<SourceHealth>,
    metrics: WatchMetrics,
    backoff: Backoff,
    lists: u64,
    shutdown: CancellationToken,
}

impl<K> Watcher<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    pub fn new(
        api: Api<K>,
        settings: WatchSettings,
        resource: &'static str,
        telemetry: &Arc<Telemetry>,
        health: Arc<SourceHealth>,
        shutdown: CancellationToken,
    ) -> Watcher<K> {
        Watcher {
            api,
            settings,
            state: State::List {
                continue_token: None,
            },
            pending: VecDeque::new(),
            health,
            metrics: WatchMetrics::new(telemetry, resource),
            backoff: Backoff::default(),
            lists: 0,
            shutdown,
        }
    }

    /// The next step; `None` once shutdown was requested.
    pub async fn next(&mut self) -> Option<Step<K>> {
        loop {
            if let Some(step) = self.pending.pop_front() {
                return Some(step);
            }
            if self.shutdown.is_cancelled() {
                return None;
            }
            match std::mem::replace(
                &mut self.state,
                State::List {
                    continue_token: None,
                },
            ) {
                State::List { continue_token } => self.list_page(continue_token).await,
                State::Open { resource_version } => self.open(resource_version).await,
                State::Watching {
                    resource_version,
                    stream,
                    opened,
                    delivered,
                } => {
                    if let Some(step) = self
                        .watch_one(resource_version, stream, opened, delivered)
                        .await
                    {
                        return Some(step);
                    }
                }
            }
        }
    }

    async fn list_page(&mut self, continue_token: Option<String>) {
        let mut params = ListParams::default().limit(self.settings.page_size);
        if !self.settings.label_selector.is_empty() {
            params = params.labels(&self.settings.label_selector);
        }
        if !self.settings.field_selector.is_empty() {
            params = params.fields(&self.settings.field_selector);
        }
        if let Some(token) = &continue_token {
            params = params.continue_token(token);
        }
        let result = tokio::select! {
            r = self.api.list(&params) => r,
            _ = self.shutdown.cancelled() => return,
        };
        match result {
            Ok(page) => {
                if continue_token.is_none() {
                    self.lists += 1;
                    self.pending.push_back(Step::ListStart);
                }
                self.metrics.listed.increment(page.items.len() as u64);
                self.pending
                    .extend(page.items.into_iter().map(Step::Listed));
                match page.metadata.continue_.filter(|t| !t.is_empty()) {
                    Some(token) => {
                        self.state = State::List {
                            continue_token: Some(token),
                        }
                    }
                    None => {
                        self.pending.push_back(Step::ListDone);
                        self.health.set_listed(true);
                        self.metrics.activity();
                        self.backoff.reset();
                        let rv = page.metadata.resource_version.unwrap_or_default();
                        self.state = State::Open {
                            resource_version: rv,
                        };
                    }
                }
            }
            Err(error) => {
                self.metrics.list_errors.increment(1);
                self.health.set_watching(false);
                tracing::warn!(resource = self.metrics.resource, %error, "list failed, retrying");
                // A page that failed (an expired continue token included) restarts the whole list.
                self.state = State::List {
                    continue_token: None,
                };
                self.sleep_backoff().await;
            }
        }
    }

    async fn open(&mut self, resource_version: String) {
        let mut params =
            WatchParams::default().timeout(self.settings.timeout.as_secs().max(1) as u32);
        if !self.settings.label_selector.is_empty() {
            params = params.labels(&self.settings.label_selector);
        }
        if !self.settings.field_selector.is_empty() {
            params = params.fields(&self.settings.field_selector);
        }
        let result = tokio::select! {
            r = self.api.watch(&params, &resource_version) => r,
            _ = self.shutdown.cancelled() => return,
        };
        match result {
            Ok(stream) => {
                self.health.set_watching(true);
                self.state = State::Watching {
                    resource_version,
                    stream: stream.into_stream().boxed(),
                    opened: Instant::now(),
                    delivered: false,
                };
            }
            Err(error) => {
                self.metrics.watch_errors.increment(1);
                self.health.set_watching(false);
                let gone = matches!(&error, kube::Error::Api(s) if s.code == 410);
                tracing::warn!(resource = self.metrics.resource, %error, "watch failed, retrying");
                self.state = if gone {
                    self.metrics.restart("expired");
                    State::List {
                        continue_token: None,
                    }
                } else {
                    State::Open { resource_version }
                };
                self.sleep_backoff().await;
            }
        }
    }

    async fn watch_one(
        &mut self,
        mut resource_version: String,
        mut stream: BoxStream<'static, kube::Result<WatchEvent<K>>>,
        opened: Instant,
        mut delivered: bool,
    ) -> Option<Step<K>> {
        let item = tokio::select! {
            item = tokio::time::timeout(self.settings.stall_after, stream.next()) => item,
            _ = self.shutdown.cancelled() => return None,
        };
        let item = match item {
            Ok(item) => item,
            Err(_) => {
                tracing::warn!(
                    resource = self.metrics.resource,
                    "watch delivered nothing for {:?}, re-opening",
                    self.settings.stall_after
                );
                self.metrics.restart("stalled");
                self.state = State::Open { resource_version };
                return None;
            }
        };
        let step = match item {
            Some(Ok(WatchEvent::Added(obj))) => {
                self.metrics.added.increment(1);
                resource_version = obj
                    .meta()
                    .resource_version
                    .clone()
                    .unwrap_or(resource_version);
                Some(Step::Added(obj))
            }
            Some(Ok(WatchEvent::Modified(obj))) => {
                self.metrics.modified.increment(1);
                resource_version = obj
                    .meta()
                    .resource_version
                    .clone()
                    .unwrap_or(resource_version);
                Some(Step::Modified(obj))
            }
            Some(Ok(WatchEvent::Deleted(obj))) => {
                self.metrics.deleted.increment(1);
                resource_version = obj
                    .meta()
                    .resource_version
                    .clone()
                    .unwrap_or(resource_version);
                Some(Step::Deleted(obj))
            }
            Some(Ok(WatchEvent::Bookmark(bookmark))) => {
                resource_version = bookmark.metadata.resource_version;
                None
            }
            Some(Ok(WatchEvent::Error(status))) => {
                if status.code == 410 {
                    tracing::info!(
                        resource = self.metrics.resource,
                        "watch expired (410), relisting"
                    );
                    self.metrics.restart("expired");
                    self.state = State::List {
                        continue_token: None,
                    };
                } else {
                    self.metrics.watch_errors.increment(1);
                    self.metrics.restart("error");
                    self.health.set_watching(false);
                    tracing::warn!(resource = self.metrics.resource, code = status.code, message = %status.message, "watch error");
                    self.state = State::Open { resource_version };
                    self.sleep_backoff().await;
                }
                return None;
            }
            Some(Err(error)) => {
                if matches!(error, kube::Error::SerdeError(_)) {
                    // One undecodable line: kube skips it and the stream goes on.
                    self.metrics.undecodable.increment(1);
                    warn_once_undecodable(self.metrics.resource, &error);
                    None
                } else {
                    self.metrics.watch_errors.increment(1);
                    self.metrics.restart("error");
                    self.health.set_watching(false);
                    tracing::warn!(resource = self.metrics.resource, %error, "watch stream failed, re-opening");
                    self.state = State::Open { resource_version };
                    self.sleep_backoff().await;
                    return None;
                }
            }
            None => {
                // A clean end. Right after opening with nothing delivered, some API servers mean "your
                // resourceVersion is too old" (they close instead of sending 410): relist then.
                if !delivered && opened.elapsed() < Duration::from_secs(1) {
                    self.metrics.restart("expired");
                    self.state = State::List {
                        continue_token: None,
                    };
                    self.sleep_backoff().await;
                } else {
                    self.metrics.restart(
                        if opened.elapsed() + Duration::from_secs(1) >= self.settings.timeout {
                            "timeout"
                        } else {
                            "closed"
                        },
                    );
                    self.state = State::Open { resource_version };
                }
                return None;
            }
        };
        delivered = true;
        self.metrics.activity();
        self.backoff.reset();
        self.state = State::Watching {
            resource_version,
            stream,
            opened,
            delivered,
        };
        step
    }

    async fn sleep_backoff(&mut self) {
        let delay = self.backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    /// How many (re)lists have started.
    pub fn lists(&self) -> u64 {
        self.lists
    }
}

fn warn_once_undecodable(resource: &str, error: &kube::Error) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(resource, %error, "skipping an undecodable watch line (counted in herald_invalid_objects_total; logged once)")
    });
}

/// Exponential backoff with full jitter: 0.8 s doubling to 30 s, like kube's default.
#[derive(Debug, Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(800);
    const MAX: Duration = Duration::from_secs(30);

    fn next_delay(&mut self) -> Duration {
        let ceiling = Self::BASE
            .saturating_mul(1u32 << self.attempt.min(6))
            .min(Self::MAX);
        self.attempt = self.attempt.saturating_add(1);
        // Half fixed, half random: spreads reconnect storms without ever retrying instantly.
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(400) && first <= Duration::from_millis(800));
        for _ in 0..10 {
            b.next_delay();
        }
        let late = b.next_delay();
        assert!(
            late >= Duration::from_secs(15) && late <= Duration::from_secs(30),
            "{late:?}"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(800));
    }
}
