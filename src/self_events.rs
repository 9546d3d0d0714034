//! Kubernetes Events herald records about itself (`events.k8s.io/v1`, on its own Pod), written through
//! kube's event recorder ([`kube::runtime::events::Recorder`]).
//!
//! Like client-go's broadcaster, recording never blocks the caller: [`SelfEvents::record`] puts the Event in a
//! small bounded queue (full: dropped and counted) and one task writes them. Spam control like client-go's
//! correlator, per reason and message: a repeat of an Event already written raises its count (kube's
//! recorder patches `series.count`) instead of adding an object, and a token bucket per reason and message
//! (`burst`, then one per `refill_interval`) drops the rest, counted in `herald_self_events_total`.
//!
//! Reasons herald records: `Started`, `BecameLeader`, `LostLeadership`, `SinkFailing`, `SinkRecovered`,
//! `EventsDropped`, `ConfigRejected`. herald's pipeline leaves these Events out by default
//! (`filters.exclude_own_events`), so they cannot feed back into its own sinks. This module must never make
//! the pipeline, a source or a sink wait.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use metrics::Counter;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::ring::Ring;
use crate::sink::Shared;
use crate::telemetry::{self, Telemetry};

/// herald's reporting controller on the Events it records (and how its pipeline recognises them).
pub const CONTROLLER: &str = "herald";

/// Every reason herald records (metric label values).
pub const REASONS: [&str; 7] = [
    "Started",
    "BecameLeader",
    "LostLeadership",
    "SinkFailing",
    "SinkRecovered",
    "EventsDropped",
    "ConfigRejected",
];

/// Most distinct reason/message pairs remembered for aggregation and rate limiting; the oldest go first.
const MAX_KEYS: usize = 128;

/// One Event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    /// One of [`REASONS`].
    pub reason: &'static str,
    /// A short machine-readable action (`Start`, `Lead`, `Deliver`, `Reload`).
    pub action: &'static str,
    pub message: String,
}

/// herald's Pod, the object its Events are about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub name: String,
    pub namespace: String,
    /// `POD_UID` when the downward API provides it.
    pub uid: Option<String>,
}

impl PodRef {
    /// From `POD_NAME`, `POD_NAMESPACE` (and optionally `POD_UID`); `None` when either is unknown.
    pub fn from_env() -> Option<PodRef> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Some(PodRef {
            name: var("POD_NAME")?,
            namespace: var("POD_NAMESPACE")?,
            uid: var("POD_UID"),
        })
    }

    fn object_ref(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(self.name.clone()),
            namespace: Some(self.namespace.clone()),
            uid: self.uid.clone(),
            ..ObjectReference::default()
        }
    }
}

#[derive(Clone)]
struct Counters {
    by_reason: Arc<Vec<(&'static str, [Counter; 4])>>,
}

const WRITTEN: usize = 0;
const RATE_LIMITED: usize = 1;
const DROPPED: usize = 2;
const FAILED: usize = 3;

impl Counters {
    fn new(t: &Telemetry) -> Counters {
        let by_reason = REASONS
            .iter()
            .map(|reason| {
                let c = |result| {
                    t.counter(
                        telemetry::SELF_EVENTS,
                        &[("reason", reason), ("result", result)],
                    )
                };
                (
                    *reason,
                    [c("written"), c("rate_limited"), c("dropped"), c("failed")],
                )
            })
            .collect();
        Counters {
            by_reason: Arc::new(by_reason),
        }
    }

    fn inc(&self, reason: &str, result: usize) {
        if let Some((_, c)) = self.by_reason.iter().find(|(r, _)| *r == reason) {
            c[result].increment(1);
        }
    }
}

/// The recording handle: cheap to clone, never blocks. A disabled handle ignores everything.
#[derive(Clone, Default)]
pub struct SelfEvents {
    inner: Option<(mpsc::Sender<Note>, Counters)>,
}

impl SelfEvents {
    /// A handle that records nothing.
    pub fn disabled() -> SelfEvents {
        SelfEvents::default()
    }

    /// Queue an Event; dropped (counted) when the queue is full or the writer has stopped.
    pub fn record(
        &self,
        warning: bool,
        reason: &'static str,
        action: &'static str,
        message: impl Into<String>,
    ) {
        let Some((tx, counters)) = &self.inner else {
            return;
        };
        let note = Note {
            warning,
            reason,
            action,
            message: message.into(),
        };
        if tx.try_send(note).is_err() {
            counters.inc(reason, DROPPED);
        }
    }

    pub fn normal(&self, reason: &'static str, action: &'static str, message: impl Into<String>) {
        self.record(false, reason, action, message);
    }

    pub fn warning(&self, reason: &'static str, action: &'static str, message: impl Into<String>) {
        self.record(true, reason, action, message);
    }

    /// Start the writer for `pod`. Without a pod (not in a cluster, or no downward API) or when disabled,
    /// says so once and returns a handle that records nothing.
    pub fn start(
        client: Client,
        pod: Option<PodRef>,
        cfg: &SelfEventsConfig,
        telemetry: &Telemetry,
    ) -> (SelfEvents, Option<JoinHandle<()>>) {
        let SelfEventsConfig {
            enabled,
            queue_capacity,
            burst,
            refill_interval,
        } = cfg;
        // The series exist at 0 whether or not herald records Events, so dashboards show 0, not no data.
        let counters = Counters::new(telemetry);
        if !enabled {
            return (SelfEvents::disabled(), None);
        }
        let Some(pod) = pod else {
            tracing::info!(
                "not recording Kubernetes Events about herald: POD_NAME and POD_NAMESPACE are not set (downward API)"
            );
            return (SelfEvents::disabled(), None);
        };
        let (tx, rx) = mpsc::channel((*queue_capacity).max(1));
        let writer = Writer {
            client,
            reporter: Reporter {
                controller: CONTROLLER.into(),
                instance: Some(pod.name.clone()),
            },
            regarding: pod.object_ref(),
            limiter: Limiter::new(*burst, refill_interval.0),
            recorders: HashMap::new(),
            order: VecDeque::new(),
            counters: counters.clone(),
            logged_error: false,
        };
        let task = tokio::spawn(writer.run(rx));
        (
            SelfEvents {
                inner: Some((tx, counters)),
            },
            Some(task),
        )
    }
}

type Key = (bool, &'static str, String);

struct Writer {
    client: Client,
    reporter: Reporter,
    regarding: ObjectReference,
    limiter: Limiter,
    /// One recorder per reason and message: kube's recorder aggregates by type, action and reason only (a
    /// repeat keeps the first message), so a new message gets its own Event and a repeat raises its count.
    recorders: HashMap<Key, Recorder>,
    order: VecDeque<Key>,
    counters: Counters,
    logged_error: bool,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Note>) {
        while let Some(note) = rx.recv().await {
            let key: Key = (note.warning, note.reason, note.message.clone());
            if !self.limiter.allow(&key, Instant::now()) {
                self.counters.inc(note.reason, RATE_LIMITED);
                continue;
            }
            let recorder = self.recorder(&key);
            let event = Event {
                type_: if note.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: note.reason.into(),
                note: Some(note.message),
                action: note.action.into(),
                secondary: None,
            };
            match recorder.publish(&event, &self.regarding).await {
                Ok(()) => {
                    self.logged_error = false;
                    self.counters.inc(note.reason, WRITTEN);
                }
                Err(error) => {
                    self.counters.inc(note.reason, FAILED);
                    if !self.logged_error {
                        tracing::warn!(%error, reason = note.reason, "cannot record a Kubernetes Event about herald");
                        self.logged_error = true;
                    }
                }
            }
        }
    }

    fn recorder(&mut self, key: &Key) -> Recorder {
        if let Some(r) = self.recorders.get(key) {
            return r.clone();
        }
        while self.recorders.len() >= MAX_KEYS {
            match self.order.pop_front() {
                Some(old) => {
                    self.recorders.remove(&old);
                }
                None => break,
            }
        }
        let r = Recorder::new(self.client.clone(), self.reporter.clone());
        self.recorders.insert(key.clone(), r.clone());
        self.order.push_back(key.clone());
        r
    }
}

/// A token bucket per key: `burst` tokens, one more every `refill`, bounded to [`MAX_KEYS`] keys.
struct Limiter {
    burst: f64,
    refill: Duration,
    buckets: HashMap<Key, (f64, Instant)>,
    order: VecDeque<Key>,
}

impl Limiter {
    fn new(burst: u32, refill: Duration) -> Limiter {
        Limiter {
            burst: f64::from(burst.max(1)),
            refill,
            buckets: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn allow(&mut self, key: &Key, now: Instant) -> bool {
        if !self.buckets.contains_key(key) {
            while self.buckets.len() >= MAX_KEYS {
                match self.order.pop_front() {
                    Some(old) => {
                        self.buckets.remove(&old);
                    }
                    None => break,
                }
            }
            self.buckets.insert(key.clone(), (self.burst, now));
            self.order.push_back(key.clone());
        }
        let Some((tokens, last)) = self.buckets.get_mut(key) else {
            return false;
        };
        if !self.refill.is_zero() {
            let earned =
                now.saturating_duration_since(*last).as_secs_f64() / self.refill.as_secs_f64();
            *tokens = (*tokens + earned).min(self.burst);
        }
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Record `EventsDropped` when a sink queue starts dropping (it dropped in this check and not in the one
/// before), checking every `every`, and say on `/readyz` which queues are dropping. That line does not fail
/// readiness: a not-ready pod leaves its Service's endpoints, and Prometheus would lose the very metrics that
/// count the drops. Off the hot path: it only reads the rings' drop counts.
pub fn watch_drops(
    rings: Vec<Arc<Ring<Shared>>>,
    events: SelfEvents,
    health: crate::health::Health,
    every: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: Vec<u64> = rings.iter().map(|r| r.dropped()).collect();
        let mut dropping = vec![false; rings.len()];
        let note = |dropping: &[bool]| {
            let full: Vec<&str> = rings
                .iter()
                .zip(dropping)
                .filter(|(_, d)| **d)
                .map(|(r, _)| r.name())
                .collect();
            if full.is_empty() {
                "no records dropped in the last check".to_string()
            } else {
                format!("full, dropping records: {}", full.join(", "))
            }
        };
        health.set_note("queues", note(&dropping));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for (i, ring) in rings.iter().enumerate() {
                let now = ring.dropped();
                let grew = now > last[i];
                if grew && !dropping[i] {
                    events.warning(
                        "EventsDropped",
                        "Deliver",
                        format!(
                            "the queue of sink {} is full: its records are being dropped (see herald_queue_dropped_total{{queue=\"{}\"}})",
                            ring.name(),
                            ring.name()
                        ),
                    );
                }
                dropping[i] = grew;
                last[i] = now;
            }
            health.set_note("queues", note(&dropping));
        }
    })
}

/// Record `SinkFailing` / `SinkRecovered` whenever a sink's readiness flips.
pub fn observe_sinks(health: &crate::health::Health, events: &SelfEvents) {
    let events = events.clone();
    health.observe_sinks(Arc::new(move |sink, accepting| {
        if accepting {
            events.normal(
                "SinkRecovered",
                "Deliver",
                format!("sink {sink} delivers records again"),
            );
        } else {
            events.warning(
                "SinkFailing",
                "Deliver",
                format!(
                    "sink {sink} cannot deliver records; they are counted in herald_sink_failures_total{{sink=\"{sink}\"}}"
                ),
            );
        }
    }));
}

/// Record `BecameLeader` / `LostLeadership` on every change of `leading`, until the elector ends.
pub async fn record_leadership(
    mut leading: tokio::sync::watch::Receiver<bool>,
    events: SelfEvents,
    lease: String,
    shutdown: tokio_util::sync::CancellationToken,
) {
    // Every agent starts as a follower; a term that began before this task first looked still counts.
    let mut was = false;
    loop {
        let now = *leading.borrow_and_update();
        if now == was {
            if leading.changed().await.is_err() {
                return;
            }
            continue;
        }
        was = now;
        if now {
            events.normal(
                "BecameLeader",
                "Lead",
                format!("holds Lease {lease}: watches and exports the cluster-wide Events"),
            );
        } else if shutdown.is_cancelled() {
            events.normal(
                "LostLeadership",
                "Lead",
                format!("released Lease {lease} on shutdown"),
            );
        } else {
            events.warning(
                "LostLeadership",
                "Lead",
                format!("no longer holds Lease {lease}: stopped exporting cluster-wide Events"),
            );
        }
    }
}

/// Kubernetes Events herald records about itself on its own Pod (`self_events`; needs `POD_NAME` and
/// `POD_NAMESPACE` from the downward API): Started, BecameLeader, LostLeadership, SinkFailing, SinkRecovered,
/// EventsDropped, ConfigRejected. Loaded and checked by `crate::config`, which re-exports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SelfEventsConfig {
    /// Record herald's own Events.
    pub enabled: bool,
    /// Events waiting to be written; when full, new ones are dropped (recording never blocks herald).
    pub queue_capacity: usize,
    /// Spam control per reason and message, like client-go's: at most `burst` writes at once, then one more per
    /// `refill_interval`; the rest are dropped. Repeats that are written raise the Event's count.
    pub burst: u32,
    /// One more write per reason and message is allowed after each interval this long (see `burst`).
    pub refill_interval: crate::config::Duration,
}

impl Default for SelfEventsConfig {
    fn default() -> Self {
        SelfEventsConfig {
            enabled: true,
            queue_capacity: 64,
            burst: 25,
            refill_interval: crate::config::Duration::from_secs(300),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(m: &str) -> Key {
        (true, "SinkFailing", m.to_string())
    }

    #[test]
    fn limiter_allows_a_burst_then_one_per_interval_per_key() {
        let mut l = Limiter::new(2, Duration::from_secs(60));
        let t = Instant::now();
        assert!(l.allow(&key("a"), t));
        assert!(l.allow(&key("a"), t));
        assert!(!l.allow(&key("a"), t), "burst spent");
        assert!(l.allow(&key("b"), t), "another message has its own bucket");
        assert!(!l.allow(&key("a"), t + Duration::from_secs(30)));
        assert!(l.allow(&key("a"), t + Duration::from_secs(61)), "refilled");
        assert!(!l.allow(&key("a"), t + Duration::from_secs(62)));
    }

    #[test]
    fn limiter_is_bounded() {
        let mut l = Limiter::new(1, Duration::from_secs(60));
        let t = Instant::now();
        for i in 0..(MAX_KEYS + 10) {
            l.allow(&key(&i.to_string()), t);
        }
        assert_eq!(l.buckets.len(), MAX_KEYS);
    }

    #[tokio::test]
    async fn a_full_queue_drops_without_waiting() {
        let t = Telemetry::new(&crate::config::MetricsConfig::default());
        let counters = Counters::new(&t);
        let (tx, _rx) = mpsc::channel(1);
        let events = SelfEvents {
            inner: Some((tx, counters)),
        };
        events.warning("SinkFailing", "Deliver", "one");
        events.warning("SinkFailing", "Deliver", "two");
        let text = t.render();
        assert!(
            text.contains(r#"herald_self_events_total{reason="SinkFailing",result="dropped"} 1"#),
            "{text}"
        );
        SelfEvents::disabled().normal("Started", "Start", "ignored");
    }

    #[tokio::test]
    async fn leadership_changes_are_recorded_with_their_type() {
        let t = Telemetry::new(&crate::config::MetricsConfig::default());
        let (tx, mut rx) = mpsc::channel(8);
        let events = SelfEvents {
            inner: Some((tx, Counters::new(&t))),
        };
        let (leading, watching) = tokio::sync::watch::channel(false);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(record_leadership(
            watching,
            events,
            "herald/herald-leader".into(),
            shutdown.clone(),
        ));
        let mut got = Vec::new();
        for v in [true, false, true] {
            leading.send(v).unwrap();
            let n = rx.recv().await.unwrap();
            got.push((n.warning, n.reason));
        }
        shutdown.cancel();
        leading.send(false).unwrap();
        let n = rx.recv().await.unwrap();
        got.push((n.warning, n.reason));
        assert_eq!(
            got,
            [
                (false, "BecameLeader"),
                (true, "LostLeadership"),
                (false, "BecameLeader"),
                (false, "LostLeadership"),
            ],
            "losing the Lease is a Warning, releasing it on shutdown is not"
        );
        drop(leading);
        task.await.unwrap();
    }
}
