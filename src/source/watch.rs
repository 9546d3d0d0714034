//! A list-then-watch loop over kube's `Api::list` / `Api::watch`, yielding one [`Step`] at a time.
//!
//! Why not `kube::runtime::watcher`: it hides bookmarks and quiet re-watches, so herald could not tell an
//! open-but-quiet watch from a dead one (readiness, `herald_watch_last_event_timestamp_seconds`), could not
//! detect a stalled stream on its own terms, could not count restarts by cause, and cannot resume from a
//! stored resourceVersion. The protocol is the same: paged list (`limit`/`continue`), then watch from the
//! list's resourceVersion with bookmarks and a server timeout; a clean end re-watches from the last
//! resourceVersion; 410 Gone (or a clean close that delivered nothing at once, as some API servers do for a
//! stale version) relists; errors back off exponentially with jitter. It never gives up: only shutdown ends it.
//!
//! The watch body is split into lines and decoded here, one line at a time ([`open_lines`]): a line that is
//! not a watch event (malformed or truncated JSON, an unknown type, a wrong shape) is counted in
//! `herald_invalid_objects_total{reason="undecodable"}`, logged once per kind of problem, and skipped; the
//! stream goes on. List pages are read by [`list_page_lossy`], so invalid UTF-8 in one object cannot fail a
//! whole list.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::api::{ListParams, WatchEvent, WatchParams};
use metrics::{Counter, Gauge};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::health::SourceHealth;
use crate::retry::Backoff;
use crate::telemetry::{self, Telemetry};

/// What the watch loop hands to its consumer, in the order of kube's watcher.
#[derive(Debug)]
pub enum Step<K> {
    /// A (re)list starts; objects not listed before `ListDone` no longer exist. `expected` is how many
    /// objects the server says the list holds (the first page's items and its `remainingItemCount`; 0 when
    /// the server does not say, as with selectors), so a consumer can size its state once.
    ListStart {
        expected: usize,
    },
    Listed(K),
    ListDone,
    Added(K),
    Modified(K),
    Deleted(K),
    /// Time passed (see [`Watcher::with_tick`]): a chance for the consumer to do periodic work, such as a
    /// checkpoint, on a stream that has gone quiet.
    Tick,
}

/// Settings for one watch.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub page_size: u32,
    /// Server-side watch timeout; the stream is re-opened after it.
    pub timeout: Duration,
    /// A watch that delivers nothing (not even a bookmark) for this long is treated as stalled and re-opened.
    pub stall_after: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            label_selector: None,
            field_selector: None,
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
        stream: LineStream<K>,
        opened: Instant,
        delivered: bool,
        /// When the last line (object, bookmark or anything else) arrived: the stall timer runs from here.
        last_line: Instant,
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
    /// List pages whose invalid UTF-8 was replaced.
    invalid_utf8: Counter,
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
            invalid_utf8: t.counter(
                telemetry::INVALID_OBJECTS,
                &[("resource", resource), ("reason", "invalid_utf8")],
            ),
            last_event: t.gauge(telemetry::WATCH_LAST_EVENT, &[("resource", resource)]),
            restarts: {
                // Every reason exists at 0 from the start, so `rate()` panels and alerts show 0, not no data.
                for reason in RESTART_REASONS {
                    t.declare_counter(
                        telemetry::WATCH_RESTARTS,
                        &[("resource", resource), ("reason", reason)],
                    );
                }
                t.clone()
            },
            resource,
        }
    }

    /// `reason` is one of [`RESTART_REASONS`].
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

/// Why a watch was opened again: `herald_watch_restarts_total{reason}`.
const RESTART_REASONS: [&str; 5] = ["timeout", "closed", "error", "expired", "stalled"];

/// What the watch reads of the objects it hands out.
pub trait Versioned {
    /// `metadata.resourceVersion`: where a watch resumes after this object.
    fn resource_version(&self) -> Option<&str>;
}

impl Versioned for kube::core::DynamicObject {
    fn resource_version(&self) -> Option<&str> {
        self.metadata.resource_version.as_deref()
    }
}

/// One list+watch of the collection at a URL.
pub struct Watcher<K: Versioned + Clone + DeserializeOwned + Debug + Send + 'static> {
    /// The collection's path, as kube's `Api::resource_url` gives it.
    url: String,
    client: kube::Client,
    settings: WatchSettings,
    /// The body of the list page being read, kept for the next page; emptied when the list is done.
    page: Vec<u8>,
    state: State<K>,
    pending: VecDeque<Step<K>>,
    health: Arc<SourceHealth>,
    metrics: WatchMetrics,
    backoff: Backoff,
    lists: u64,
    /// Hand out [`Step::Tick`] at most this often, and at least this often while waiting.
    tick: Option<Duration>,
    next_tick: Instant,
    shutdown: CancellationToken,
}

impl<K> Watcher<K>
where
    K: Versioned + Clone + DeserializeOwned + Debug + Send + 'static,
{
    pub fn new(
        client: kube::Client,
        url: String,
        settings: WatchSettings,
        resource: &'static str,
        telemetry: &Arc<Telemetry>,
        health: Arc<SourceHealth>,
        shutdown: CancellationToken,
    ) -> Watcher<K> {
        Watcher {
            client,
            url,
            settings,
            page: Vec::new(),
            state: State::List {
                continue_token: None,
            },
            pending: VecDeque::new(),
            health,
            metrics: WatchMetrics::new(telemetry, resource),
            // 0.8 s doubling to 30 s, like kube's default.
            backoff: Backoff::new(Duration::from_millis(800), Duration::from_secs(30)),
            lists: 0,
            tick: None,
            next_tick: Instant::now(),
            shutdown,
        }
    }

    /// Start by watching from `resource_version` (a checkpoint) instead of listing. Replayed changes arrive as
    /// `Added`/`Modified`/`Deleted`; if the version is too old (410), the watcher relists as usual.
    pub fn resume_from(mut self, resource_version: String) -> Watcher<K> {
        self.state = State::Open { resource_version };
        self.health.set_listed(true);
        self
    }

    /// Also hand out [`Step::Tick`] every `every`, even while the stream is quiet or the API unreachable.
    pub fn with_tick(mut self, every: Duration) -> Watcher<K> {
        self.tick = Some(every);
        self.next_tick = Instant::now() + every;
        self
    }

    /// The resourceVersion that everything handed out so far is consistent with, to resume from later; `None`
    /// while steps are still queued (e.g. in the middle of a list) or before the first list completed.
    pub fn checkpoint(&self) -> Option<&str> {
        if !self.pending.is_empty() {
            return None;
        }
        match &self.state {
            State::Open { resource_version }
            | State::Watching {
                resource_version, ..
            } if !resource_version.is_empty() => Some(resource_version),
            _ => None,
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
            if let Some(every) = self.tick
                && Instant::now() >= self.next_tick
            {
                self.next_tick = Instant::now() + every;
                return Some(Step::Tick);
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
                    last_line,
                } => {
                    if let Some(step) = self
                        .watch_one(resource_version, stream, opened, delivered, last_line)
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
        if let Some(selector) = &self.settings.label_selector {
            params = params.labels(selector);
        }
        if let Some(selector) = &self.settings.field_selector {
            params = params.fields(selector);
        }
        if let Some(token) = &continue_token {
            params = params.continue_token(token);
        }
        let result = tokio::select! {
            r = list_page_lossy::<K>(&self.client, &self.url, &params, &mut self.page) => r,
            _ = self.shutdown.cancelled() => return,
        };
        match result {
            Ok((page, replaced)) => {
                if replaced {
                    self.metrics.invalid_utf8.increment(1);
                    warn_once_invalid_utf8(self.metrics.resource);
                }
                if continue_token.is_none() {
                    self.lists += 1;
                    let remaining = page.metadata.remaining_item_count.unwrap_or(0);
                    let expected = page
                        .items
                        .len()
                        .saturating_add(usize::try_from(remaining).unwrap_or(0));
                    self.pending.push_back(Step::ListStart { expected });
                }
                self.metrics.listed.increment(page.items.len() as u64);
                // Each page that arrives is progress: the next failure backs off from the start.
                self.backoff.reset();
                self.pending
                    .extend(page.items.into_iter().map(Step::Listed));
                match page.metadata.continue_.filter(|t| !t.is_empty()) {
                    Some(token) => {
                        self.state = State::List {
                            continue_token: Some(token),
                        }
                    }
                    None => {
                        self.page = Vec::new();
                        self.pending.push_back(Step::ListDone);
                        self.health.set_listed(true);
                        self.metrics.activity();
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
                // A failed page is asked for again with the same continue token (valid for minutes), so a
                // large list under an error rate does not start over on every failure and fall behind the
                // Event TTL (found by the soak harness: 40 pages at 5 % errors completed one try in eight).
                // An expired token (410) restarts the whole list.
                let expired = matches!(&error, kube::Error::Api(s) if s.code == 410);
                self.state = State::List {
                    continue_token: if expired { None } else { continue_token },
                };
                self.sleep_backoff_at_least(retry_after(&error)).await;
            }
        }
    }

    async fn open(&mut self, resource_version: String) {
        let mut params =
            WatchParams::default().timeout(self.settings.timeout.as_secs().max(1) as u32);
        if let Some(selector) = &self.settings.label_selector {
            params = params.labels(selector);
        }
        if let Some(selector) = &self.settings.field_selector {
            params = params.fields(selector);
        }
        let result = tokio::select! {
            r = open_lines(&self.client, &self.url, &params, &resource_version) => r,
            _ = self.shutdown.cancelled() => {
                self.state = State::Open { resource_version };
                return;
            }
        };
        match result {
            Ok(stream) => {
                self.health.set_watching(true);
                self.state = State::Watching {
                    resource_version,
                    stream,
                    opened: Instant::now(),
                    delivered: false,
                    last_line: Instant::now(),
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
                self.sleep_backoff_at_least(retry_after(&error)).await;
            }
        }
    }

    async fn watch_one(
        &mut self,
        mut resource_version: String,
        mut stream: LineStream<K>,
        opened: Instant,
        mut delivered: bool,
        last_line: Instant,
    ) -> Option<Step<K>> {
        let stall_at = tokio::time::Instant::from_std(last_line + self.settings.stall_after);
        let tick_at = tokio::time::Instant::from_std(self.next_tick);
        // Biased, the line first: a busy stream has its next line ready, and polling a timer first would
        // register it in the timer wheel and take it out again for every line. Shutdown and ticks are
        // also checked at the top of `next`, before every step.
        let item = tokio::select! {
            biased;
            item = tokio::time::timeout_at(stall_at, stream.next()) => item,
            // Reading a line is cancel-safe: the stream stays as it was, for the next call.
            _ = tokio::time::sleep_until(tick_at), if self.tick.is_some() => {
                self.state = State::Watching { resource_version, stream, opened, delivered, last_line };
                return None;
            }
            _ = self.shutdown.cancelled() => {
                // Keep the position, so a checkpoint taken at shutdown can resume from it.
                self.state = State::Open { resource_version };
                return None;
            }
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
            Some(Ok(Line::Event(WatchEvent::Added(obj)))) => {
                self.metrics.added.increment(1);
                advance(&mut resource_version, &obj);
                Some(Step::Added(obj))
            }
            Some(Ok(Line::Event(WatchEvent::Modified(obj)))) => {
                self.metrics.modified.increment(1);
                advance(&mut resource_version, &obj);
                Some(Step::Modified(obj))
            }
            Some(Ok(Line::Event(WatchEvent::Deleted(obj)))) => {
                self.metrics.deleted.increment(1);
                advance(&mut resource_version, &obj);
                Some(Step::Deleted(obj))
            }
            Some(Ok(Line::Event(WatchEvent::Bookmark(bookmark)))) => {
                resource_version = bookmark.metadata.resource_version;
                None
            }
            Some(Ok(Line::Event(WatchEvent::Error(status)))) => {
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
            Some(Ok(Line::Undecodable(error))) => {
                // One bad line: counted and skipped, the stream goes on.
                self.metrics.undecodable.increment(1);
                warn_once_undecodable(self.metrics.resource, &error);
                None
            }
            Some(Err(kube::Error::Api(status))) if status.code == 410 => {
                tracing::info!(
                    resource = self.metrics.resource,
                    "watch expired (410), relisting"
                );
                self.metrics.restart("expired");
                self.state = State::List {
                    continue_token: None,
                };
                return None;
            }
            Some(Err(error)) => {
                self.metrics.watch_errors.increment(1);
                self.metrics.restart("error");
                self.health.set_watching(false);
                tracing::warn!(resource = self.metrics.resource, %error, "watch stream failed, re-opening");
                self.state = State::Open { resource_version };
                self.sleep_backoff().await;
                return None;
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
            last_line: Instant::now(),
        };
        step
    }

    async fn sleep_backoff(&mut self) {
        self.sleep_backoff_at_least(None).await;
    }

    /// Back off, and at least as long as the server asked (`Retry-After`, capped at the backoff maximum).
    async fn sleep_backoff_at_least(&mut self, server: Option<Duration>) {
        let delay = self
            .backoff
            .next_delay()
            .max(server.unwrap_or_default().min(self.backoff.max()));
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

/// Log an undecodable line once per resource and kind of problem (syntax, truncated, data).
fn warn_once_undecodable(resource: &'static str, error: &serde_json::Error) {
    static SEEN: std::sync::Mutex<Vec<(&'static str, &'static str)>> =
        std::sync::Mutex::new(Vec::new());
    let problem = match error.classify() {
        serde_json::error::Category::Syntax => "malformed JSON",
        serde_json::error::Category::Eof => "truncated JSON",
        serde_json::error::Category::Data => "not a watch event (unknown type or wrong shape)",
        serde_json::error::Category::Io => "unreadable",
    };
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if !seen.contains(&(resource, problem)) {
        seen.push((resource, problem));
        tracing::warn!(resource, problem, %error, "skipping an undecodable watch line (counted in herald_invalid_objects_total{{reason=\"undecodable\"}}; logged once per kind of problem)");
    }
}

/// Move the watch's position to `object`'s resourceVersion, in place: no allocation per line.
fn advance(resource_version: &mut String, object: &impl Versioned) {
    if let Some(version) = object.resource_version() {
        resource_version.clear();
        resource_version.push_str(version);
    }
}

/// How long the server asked to wait: `details.retryAfterSeconds` of its Status (the API server sets it with
/// 429; [`open_lines`] also fills it from a `Retry-After` header).
fn retry_after(error: &kube::Error) -> Option<Duration> {
    match error {
        kube::Error::Api(status) => status
            .details
            .as_ref()
            .map(|d| d.retry_after_seconds)
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s.into())),
        _ => None,
    }
}

/// One page of a list. Not `Api::list`: kube reads the body as one UTF-8 string, so one object with invalid
/// UTF-8 failed the whole list, on every retry, forever, and the valid objects on the page were never
/// counted. Here invalid UTF-8 is replaced by U+FFFD (the object is kept with that text, as for any other
/// text herald cannot read), and the page says so (`true`). Errors are the API server's Status, as kube
/// reports them.
///
/// The body is read into `body`, whose capacity the next page reuses: a page of 500 Events is about 600 KB,
/// and a fresh buffer per page was allocated, faulted in and given back to the kernel each time.
pub async fn list_page_lossy<K>(
    client: &kube::Client,
    url: &str,
    params: &ListParams,
    body: &mut Vec<u8>,
) -> kube::Result<(kube::core::ObjectList<K>, bool)>
where
    K: Clone + DeserializeOwned,
{
    use http_body_util::BodyExt;

    let mut request = kube::core::Request::new(url)
        .list(params)
        .map_err(kube::Error::BuildRequest)?;
    request.extensions_mut().insert("list");
    let response = client.send(request.map(kube::client::Body::from)).await?;
    let status = response.status();
    let mut incoming = response.into_body();
    body.clear();
    while let Some(frame) = incoming.frame().await {
        if let Some(data) = frame?.data_ref() {
            body.extend_from_slice(data);
        }
    }
    let body = &body[..];
    if status.is_client_error() || status.is_server_error() {
        let text = String::from_utf8_lossy(body);
        let status = serde_json::from_str::<kube::core::Status>(&text)
            .ok()
            .filter(|s| s.code != 0)
            .unwrap_or_else(|| {
                kube::core::Status::failure(text.trim(), "").with_code(status.as_u16())
            });
        return Err(kube::Error::Api(status.boxed()));
    }
    let (text, replaced) = match std::str::from_utf8(body) {
        Ok(text) => (std::borrow::Cow::Borrowed(text), false),
        Err(_) => (String::from_utf8_lossy(body), true),
    };
    let page = serde_json::from_str(&text).map_err(kube::Error::SerdeError)?;
    Ok((page, replaced))
}

fn warn_once_invalid_utf8(resource: &'static str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            resource,
            "a list page held invalid UTF-8: replaced by U+FFFD and the objects kept (counted in herald_invalid_objects_total{{reason=\"invalid_utf8\"}}; logged once)"
        )
    });
}

/// One line of a watch stream.
pub enum Line<K> {
    Event(WatchEvent<K>),
    /// A complete line that is no watch event: malformed or truncated JSON, an unknown type, a wrong shape.
    Undecodable(serde_json::Error),
}

type LineStream<K> = BoxStream<'static, kube::Result<Line<K>>>;

/// Open a watch and split its body into lines, decoding each on its own.
///
/// Not `Api::watch`: kube drops a truncated line (a JSON EOF error) without a word, and turns any complete
/// line that is not a watch event into `Error::Api` with code 0, which would restart the watch (and, for an
/// object stored that way, restart it forever). Here a complete line that does not decode is reported as
/// [`Line::Undecodable`], counted and skipped; only data cut off by the end of the connection is dropped
/// silently, because the watch resumes from the last resourceVersion and the object comes again.
async fn open_lines<K>(
    client: &kube::Client,
    url: &str,
    params: &WatchParams,
    resource_version: &str,
) -> kube::Result<LineStream<K>>
where
    K: Clone + DeserializeOwned + Send + 'static,
{
    use http_body_util::BodyExt;

    let mut request = kube::core::Request::new(url)
        .watch(params, resource_version)
        .map_err(kube::Error::BuildRequest)?;
    // Same reason as kube: multi-member gzip watch streams are not decoded by its middleware.
    request.headers_mut().insert(
        http::header::ACCEPT_ENCODING,
        http::HeaderValue::from_static("identity"),
    );
    request.extensions_mut().insert("watch");
    let response = client.send(request.map(kube::client::Body::from)).await?;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        let header_retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u32>().ok());
        let body = response.into_body().collect().await?.to_bytes();
        let mut status = serde_json::from_slice::<kube::core::Status>(&body)
            .ok()
            .filter(|s| s.code != 0)
            .unwrap_or_else(|| {
                kube::core::Status::failure(&String::from_utf8_lossy(&body), "")
                    .with_code(status.as_u16())
            });
        if let Some(seconds) = header_retry_after {
            let details =
                status
                    .details
                    .get_or_insert_with(|| kube::core::response::StatusDetails {
                        name: String::new(),
                        group: String::new(),
                        kind: String::new(),
                        uid: String::new(),
                        causes: Vec::new(),
                        retry_after_seconds: 0,
                    });
            if details.retry_after_seconds == 0 {
                details.retry_after_seconds = seconds;
            }
        }
        return Err(kube::Error::Api(status.boxed()));
    }
    Ok(split_lines(response.into_body().into_data_stream()))
}

/// Split a watch body into lines and decode each; see [`open_lines`].
fn split_lines<K, S>(body: S) -> LineStream<K>
where
    K: Clone + DeserializeOwned + Send + 'static,
    S: futures::Stream<Item = kube::Result<bytes::Bytes>> + Send + Unpin + 'static,
{
    let lines = futures::stream::unfold(
        // (body, bytes not yet returned, the body failed, how much of the buffer has no newline)
        (body, bytes::BytesMut::new(), false, 0),
        |(mut body, mut buf, mut ended, mut scanned)| async move {
            loop {
                if let Some(i) = memchr::memchr(b'\n', &buf[scanned..]) {
                    let i = scanned + i;
                    scanned = 0;
                    let line = buf.split_to(i + 1);
                    let line = line[..i].trim_ascii();
                    if line.is_empty() {
                        continue;
                    }
                    return Some((decode_line::<K>(line), (body, buf, ended, scanned)));
                }
                if ended {
                    return None;
                }
                // A long line arrives in many chunks: search only what is new.
                scanned = buf.len();
                let parks = crate::wakes::parks();
                let next = body.next().await;
                if crate::wakes::parks() != parks {
                    crate::wakes::waited_for_line();
                }
                match next {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    // The end of the stream; a partial last line was cut off with the connection.
                    None => return None,
                    Some(Err(error)) if is_cut_off(&error) => return None,
                    Some(Err(error)) => {
                        ended = true;
                        buf.clear();
                        scanned = 0;
                        let error = kube::Error::ReadEvents(std::io::Error::other(error));
                        return Some((Err(error), (body, buf, ended, scanned)));
                    }
                }
            }
        },
    );
    lines.boxed()
}

/// Decode one complete line of a watch body (without its newline): a watch event, a line that is none
/// ([`Line::Undecodable`], counted and skipped), or the server's bare `Status` with a code (`Error::Api`).
/// Public for the robustness tests (`tests/agent/fuzz_inputs.rs`).
pub fn decode_line<K: DeserializeOwned>(line: &[u8]) -> kube::Result<Line<K>> {
    // One UTF-8 check of the whole line lets serde_json read it as `str` and skip its check of each
    // string (about 5% of the agent's CPU in a load run). Invalid UTF-8 goes the byte way, which names it.
    let decoded = match std::str::from_utf8(line) {
        Ok(text) => serde_json::from_str::<WatchEvent<K>>(text),
        Err(_) => serde_json::from_slice::<WatchEvent<K>>(line),
    };
    match decoded {
        Ok(event) => Ok(Line::Event(event)),
        Err(error) => match serde_json::from_slice::<kube::core::Status>(line) {
            // A bare Status (not wrapped in an ERROR event) that carries a code: the server's error.
            Ok(status) if status.code != 0 => Err(kube::Error::Api(status.boxed())),
            _ => Ok(Line::Undecodable(error)),
        },
    }
}

/// A body error that means the connection ended mid-stream (chunked EOF, TLS close): resumable.
fn is_cut_off(error: &kube::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    for _ in 0..16 {
        let Some(e) = current else { break };
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
        {
            return true;
        }
        current = e.source();
    }
    error.to_string().contains("unexpected EOF")
}

#[cfg(test)]
mod tests {
    use super::*;

    type Ev = crate::source::decode::LeanEvent<crate::source::decode::CoreV1>;

    fn undecodable(line: &str) -> serde_json::error::Category {
        match decode_line::<Ev>(line.as_bytes()) {
            Ok(Line::Undecodable(e)) => e.classify(),
            Ok(Line::Event(e)) => panic!("decoded {e:?}"),
            Err(e) => panic!("error {e}"),
        }
    }

    #[tokio::test]
    async fn lines_split_across_chunks_and_a_cut_off_tail() {
        let chunk = |s: &str| Ok(bytes::Bytes::from(s.to_string()));
        let added = r#"{"type":"ADDED","object":{"metadata":{"name":"a","namespace":"n"}}}"#;
        let (head, tail) = added.split_at(20);
        let body = futures::stream::iter(vec![
            chunk(head),
            chunk(&format!("{tail}\n\n<html>\n")),
            chunk(r#"{"type":"MODIFIED","object":{"metadata":"#),
            chunk("\n"),
            chunk(r#"{"type":"DELETED","object":{"met"#),
        ]);
        let got: Vec<_> = split_lines::<Ev, _>(body).collect().await;
        let kinds: Vec<&str> = got
            .iter()
            .map(|r| match r {
                Ok(Line::Event(WatchEvent::Added(_))) => "added",
                Ok(Line::Undecodable(_)) => "undecodable",
                _ => "other",
            })
            .collect();
        // The empty line is skipped; the unterminated last line was cut off with the connection.
        assert_eq!(kinds, ["added", "undecodable", "undecodable"]);
    }

    #[test]
    fn each_bad_line_is_undecodable_on_its_own() {
        use serde_json::error::Category;
        assert_eq!(
            undecodable(r#"{"type":"ADDED","object":{"metadata":{"name":"cut"#),
            Category::Eof
        );
        assert_eq!(undecodable("<html>502</html>"), Category::Syntax);
        assert_eq!(
            undecodable(r#"{"type":"EXPLODED","object":{"metadata":{}}}"#),
            Category::Data
        );
        assert_eq!(
            undecodable(r#"{"type":"ADDED","object":"not an object"}"#),
            Category::Data
        );
        assert!(matches!(
            decode_line::<Ev>(
                br#"{"type":"ADDED","object":{"metadata":{"name":"a"},"count":"x"}}"#
            ),
            Ok(Line::Event(WatchEvent::Added(_)))
        ));
        // Invalid UTF-8 inside a string: the line alone is skipped.
        assert!(matches!(
            decode_line::<Ev>(b"{\"type\":\"ADDED\",\"object\":{\"reason\":\"\xff\"}}"),
            Ok(Line::Undecodable(e)) if e.classify() == Category::Syntax
        ));
        assert!(matches!(
            decode_line::<Ev>(br#"{"kind":"Status","code":410,"reason":"Expired"}"#),
            Err(kube::Error::Api(s)) if s.code == 410
        ));
    }

    #[test]
    fn retry_after_comes_from_the_status_details() {
        let status: kube::core::Status = serde_json::from_str(
            r#"{"kind":"Status","code":429,"reason":"TooManyRequests","details":{"retryAfterSeconds":3}}"#,
        )
        .unwrap();
        let error = kube::Error::Api(status.boxed());
        assert_eq!(retry_after(&error), Some(Duration::from_secs(3)));
        let status = kube::core::Status::failure("x", "InternalError").with_code(500);
        assert_eq!(retry_after(&kube::Error::Api(status.boxed())), None);
    }
}
