//! The metrics sink: Event objects and occurrences as Prometheus counters by namespace, kind, reason and type.
//!
//! Handles are resolved once per label set and cached, so a record costs a hash look-up and an add.
//! The cardinality guard caps the label sets; past the cap, updates go to one `__other__` set and are counted
//! in `herald_metric_series_overflow_total`, so totals stay exact even when labels do not.
//! It bounds bytes as well as series: a label value longer than [`MAX_LABEL_VALUE_BYTES`] is cut (counted in
//! `herald_label_values_truncated_total`), because core/v1 accepts reasons and kinds of any length and a few
//! thousand 4 KB reasons would otherwise make every scrape, the registry and the checkpoint tens of MB.
//! The quota map obeys the same guard: past the cap a new (namespace, resource) is folded, never remembered.
//!
//! With `state_dir`, the sink also writes the Event checkpoint (see [`crate::checkpoint`]) and the counters
//! it exports only ever show saved values: each Event watch's share of every series is kept apart, copied
//! when the watch's checkpoint barrier arrives, and published (`Counter::absolute`) once the checkpoint is
//! written. So a scrape never shows a count that a crash (or a fail-over) could take back, and a restarted
//! agent continues its counters from the checkpoint instead of from zero. The price is that counters move in
//! steps of the checkpoint interval, and stand still while the checkpoint cannot be written.
//!
//! Writes are paced to [`CHECKPOINT_BYTES_PER_SECOND`]: after writing N bytes the sink takes no other
//! barrier for N / rate seconds (a barrier it does not take is not acknowledged, so its watch sends a newer
//! one). A small checkpoint is still written every interval; the largest the bounds allow (tens of MB) no
//! longer turns a trickle of Events into a constant stream of disk writes. The newest barrier held back is
//! written when the pipeline shuts down, so a clean stop saves everything.

use std::sync::Arc;

use metrics::Counter;

use super::Shared;
use crate::checkpoint::{self, Acks, Barrier, EventWatch, EventsFile, SavedCounter, SavedWatch};
use crate::record::{EventRecord, Record, Sym};
use crate::ring::Ring;
use crate::telemetry::{self, Telemetry};

/// The most the Event checkpoint may write per second, on average.
pub const CHECKPOINT_BYTES_PER_SECOND: u64 = 1024 * 1024;

/// Name of the label set that absorbs overflow.
pub const OTHER: &str = "__other__";

/// The longest label value exported, in bytes. events.k8s.io/v1 validates `reason` to 128 characters and
/// Kubernetes names are at most 63 (namespace) or 253 bytes; core/v1 checks nothing. 128 keeps every real
/// reason, kind and quota resource whole while bounding a series to a few hundred bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 128;

/// Appended to a cut label value, so a reader sees it is not the whole value.
const CUT_MARK: &str = "...";

/// `value` itself when short enough, else its first bytes (on a UTF-8 boundary) and [`CUT_MARK`], at most
/// [`MAX_LABEL_VALUE_BYTES`] in all.
pub fn bound_label(value: &Sym) -> Option<Sym> {
    if value.len() <= MAX_LABEL_VALUE_BYTES {
        return None;
    }
    let mut end = MAX_LABEL_VALUE_BYTES - CUT_MARK.len();
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Some(Sym::from(format!("{}{CUT_MARK}", &value[..end])))
}

/// Labels of the Event counters: namespace, kind, reason, type.
type EventLabels = (Sym, Sym, Sym, Sym);

/// One counter series the sink owns, as it is saved in the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Series {
    Events(EventLabels),
    Occurrences(EventLabels),
    /// namespace, resource
    Quota(Sym, Sym),
}

impl Series {
    fn metric(&self) -> &'static str {
        match self {
            Series::Events(_) => telemetry::EVENTS,
            Series::Occurrences(_) => telemetry::OCCURRENCES,
            Series::Quota(..) => telemetry::QUOTA_EXCEEDED,
        }
    }

    fn labels(&self) -> Vec<(&'static str, &str)> {
        match self {
            Series::Events(l) | Series::Occurrences(l) => vec![
                ("namespace", &*l.0),
                ("kind", &*l.1),
                ("reason", &*l.2),
                ("type", &*l.3),
            ],
            Series::Quota(ns, resource) => vec![("namespace", &**ns), ("resource", &**resource)],
        }
    }

    /// The series a saved counter stands for; `None` for one this version does not know. Values are cut as
    /// new ones are, so a checkpoint written before the cut existed cannot bring long labels back.
    fn from_saved(c: &SavedCounter) -> Option<Series> {
        let get = |name: &str| -> Option<Sym> {
            c.labels.iter().find(|(k, _)| k == name).map(|(_, v)| {
                let v = Sym::from(v.as_str());
                bound_label(&v).unwrap_or(v)
            })
        };
        let event_labels = || {
            Some((
                get("namespace")?,
                get("kind")?,
                get("reason")?,
                get("type")?,
            ))
        };
        match c.metric.as_str() {
            telemetry::EVENTS => Some(Series::Events(event_labels()?)),
            telemetry::OCCURRENCES => Some(Series::Occurrences(event_labels()?)),
            telemetry::QUOTA_EXCEEDED => Some(Series::Quota(get("namespace")?, get("resource")?)),
            _ => None,
        }
    }
}

/// A counter and, with checkpoints, each Event watch's share of it: `live` as records arrive, `saved` as of
/// the watch's last barrier.
struct Tally {
    series: Series,
    counter: Counter,
    live: Vec<u64>,
    saved: Vec<u64>,
}

impl Tally {
    fn add(&mut self, watch: u16, n: u64) {
        match self.live.get_mut(usize::from(watch)) {
            Some(v) => *v += n,
            None => self.counter.increment(n),
        }
    }
}

/// Where and for which watches the sink keeps the Event checkpoint.
pub struct Persist {
    pub store: checkpoint::Store,
    /// `events::watch_keys`: a record's `watch` indexes it.
    pub keys: Vec<String>,
    /// The checkpoint's counters to continue from, if any.
    pub restored: Option<EventsFile>,
    /// This agent, as the checkpoint's writer.
    pub writer: String,
    pub acks: Arc<Acks>,
}

/// The checkpoint state while running.
struct Saving {
    store: checkpoint::Store,
    keys: Vec<String>,
    writer: String,
    /// Each watch's last barrier.
    watches: Vec<Option<Arc<EventWatch>>>,
    acks: Arc<Acks>,
    failures: Counter,
    failing: bool,
    /// No barrier is written before this, except while shutting down ([`CHECKPOINT_BYTES_PER_SECOND`]).
    next_write: std::time::Instant,
    /// Per watch, the newest barrier the pacing held back and the watch's share of every series then.
    pending: Vec<Option<(Arc<EventWatch>, Vec<u64>)>>,
    bytes_per_second: u64,
}

pub struct MetricsSink {
    telemetry: Arc<Telemetry>,
    tallies: Vec<Tally>,
    by_series: ahash::HashMap<Series, usize>,
    /// (events, occurrences) tallies by label set.
    cache: ahash::HashMap<EventLabels, (usize, usize)>,
    max_series: usize,
    other: (usize, usize),
    overflow: Counter,
    /// Label values cut to [`MAX_LABEL_VALUE_BYTES`]: Event counters, quota counter.
    truncated: Counter,
    truncated_quota: Counter,
    sent: Counter,
    /// `herald_quota_exceeded_total` tallies by (namespace, resource).
    quota: ahash::HashMap<(Sym, Sym), usize>,
    overflow_quota: Counter,
    saving: Option<Saving>,
}

/// The resources named by a quota refusal, as the API server words it:
/// `... exceeded quota: NAME, requested: limits.memory=2Gi,requests.cpu=1, used: ..., limited: ...`.
pub fn quota_resources(message: &str) -> Option<impl Iterator<Item = &str>> {
    let rest = &message[message.find("exceeded quota:")?..];
    let requested = &rest[rest.find("requested: ")? + "requested: ".len()..];
    let requested = requested.split(", used:").next().unwrap_or(requested);
    Some(
        requested
            .split(',')
            .filter_map(|pair| pair.split_once('=').map(|(r, _)| r.trim()))
            .filter(|r| !r.is_empty()),
    )
}

impl MetricsSink {
    pub fn new(telemetry: Arc<Telemetry>, max_series: usize) -> MetricsSink {
        // At 0 even without state_dir, so the checkpoint alert's expression always has a series.
        telemetry.declare_counter(telemetry::CHECKPOINT_FAILURES, &[("checkpoint", "events")]);
        let mut sink = MetricsSink {
            overflow: telemetry.counter(
                telemetry::SERIES_OVERFLOW,
                &[("metric", telemetry::OCCURRENCES)],
            ),
            truncated: telemetry.counter(
                telemetry::LABELS_TRUNCATED,
                &[("metric", telemetry::OCCURRENCES)],
            ),
            truncated_quota: telemetry.counter(
                telemetry::LABELS_TRUNCATED,
                &[("metric", telemetry::QUOTA_EXCEEDED)],
            ),
            sent: telemetry.counter(telemetry::SINK_SENT, &[("sink", "metrics")]),
            quota: ahash::HashMap::default(),
            overflow_quota: telemetry.counter(
                telemetry::SERIES_OVERFLOW,
                &[("metric", telemetry::QUOTA_EXCEEDED)],
            ),
            tallies: Vec::new(),
            by_series: ahash::HashMap::default(),
            cache: ahash::HashMap::default(),
            other: (0, 0),
            max_series,
            telemetry,
            saving: None,
        };
        sink.other = sink.event_tallies(&(OTHER.into(), OTHER.into(), OTHER.into(), OTHER.into()));
        sink
    }

    /// Keep the Event checkpoint in `persist.path`, and continue the counters of `persist.restored`.
    pub fn with_checkpoints(mut self, persist: Persist) -> MetricsSink {
        let watches = persist.keys.len();
        for t in &mut self.tallies {
            t.live = vec![0; watches];
            t.saved = vec![0; watches];
        }
        let keys = persist.keys;
        let mut watches = vec![None; keys.len()];
        let mut restored = Vec::new();
        for saved in persist.restored.map(|f| f.watches).unwrap_or_default() {
            match keys.iter().position(|k| *k == saved.watch.key) {
                Some(i) => {
                    watches[i] = Some(saved.watch.clone());
                    restored.push((i, saved.counters));
                }
                None => {
                    tracing::info!(watch = %saved.watch.key, "the checkpoint has a watch the configuration no longer has; its counts start over")
                }
            }
        }
        let pending = vec![None; watches.len()];
        self.saving = Some(Saving {
            store: persist.store,
            writer: persist.writer,
            keys,
            watches,
            acks: persist.acks,
            failures: self
                .telemetry
                .counter(telemetry::CHECKPOINT_FAILURES, &[("checkpoint", "events")]),
            failing: false,
            next_write: std::time::Instant::now(),
            pending,
            bytes_per_second: CHECKPOINT_BYTES_PER_SECOND,
        });
        for (i, counters) in restored {
            for c in &counters {
                if let Some(series) = Series::from_saved(c) {
                    let t = self.tally(series);
                    let t = &mut self.tallies[t];
                    // Added: two long values saved apart may be cut to the same series.
                    t.live[i] += c.value;
                    t.saved[i] += c.value;
                }
            }
        }
        self.publish();
        self
    }

    /// The tally of a series, created (and registered) on first use.
    fn tally(&mut self, series: Series) -> usize {
        if let Some(i) = self.by_series.get(&series) {
            return *i;
        }
        let counter = self.telemetry.counter(series.metric(), &series.labels());
        let watches = self.saving.as_ref().map_or(0, |s| s.keys.len());
        self.tallies.push(Tally {
            series: series.clone(),
            counter,
            live: vec![0; watches],
            saved: vec![0; watches],
        });
        self.by_series.insert(series, self.tallies.len() - 1);
        self.tallies.len() - 1
    }

    fn event_tallies(&mut self, labels: &EventLabels) -> (usize, usize) {
        (
            self.tally(Series::Events(labels.clone())),
            self.tally(Series::Occurrences(labels.clone())),
        )
    }

    /// Count one Event.
    pub fn record(&mut self, r: &EventRecord) {
        // Quota refusals are Warnings; skip the message search for everything else.
        if r.delta > 0
            && &*r.type_ == "Warning"
            && let Some(resources) = quota_resources(&r.message)
        {
            for resource in resources {
                let t = self.quota(&r.namespace, resource);
                self.tallies[t].add(r.watch, u64::from(r.delta));
            }
        }
        let mut cut = 0;
        let mut bounded = |v: &Sym| match bound_label(v) {
            Some(short) => {
                cut += 1;
                short
            }
            None => v.clone(),
        };
        // Keyed by the values as exported: the cache never holds more bytes than the registry.
        let key = (
            bounded(&r.namespace),
            bounded(&r.regarding.kind),
            bounded(&r.reason),
            bounded(&r.type_),
        );
        if cut > 0 {
            self.truncated.increment(cut);
        }
        let (events, occurrences) = if let Some(h) = self.cache.get(&key) {
            *h
        } else if self.cache.len() < self.max_series {
            let h = self.event_tallies(&key);
            self.cache.insert(key, h);
            h
        } else {
            self.overflow.increment(1);
            self.other
        };
        if r.new_object {
            self.tallies[events].add(r.watch, 1);
        }
        self.tallies[occurrences].add(r.watch, u64::from(r.delta));
        self.sent.increment(1);
    }

    /// The quota tally of (namespace, resource). Past the guard the update goes to `__other__` and the key
    /// is not remembered, so the map holds at most `max_series` keys of bounded size.
    fn quota(&mut self, namespace: &Sym, resource: &str) -> usize {
        let mut cut = 0;
        let mut bounded = |v: Sym| match bound_label(&v) {
            Some(short) => {
                cut += 1;
                short
            }
            None => v,
        };
        let key = (bounded(namespace.clone()), bounded(Sym::from(resource)));
        if cut > 0 {
            self.truncated_quota.increment(cut);
        }
        if let Some(t) = self.quota.get(&key) {
            return *t;
        }
        if self.quota.len() >= self.max_series {
            self.overflow_quota.increment(1);
            return self.tally(Series::Quota(OTHER.into(), OTHER.into()));
        }
        let t = self.tally(Series::Quota(key.0.clone(), key.1.clone()));
        self.quota.insert(key, t);
        t
    }

    /// Label sets remembered by the guard (Event label sets, quota keys), for tests of the bound.
    #[cfg(test)]
    fn remembered(&self) -> (usize, usize) {
        (self.cache.len(), self.quota.len())
    }

    /// A watch's barrier, in order with its records; `closing`: the pipeline is shutting down (always write).
    async fn barrier(&mut self, watch: u16, barrier: &Barrier, closing: bool) {
        let Some(saving) = &mut self.saving else {
            return;
        };
        let i = usize::from(watch);
        if i >= saving.watches.len() {
            return;
        }
        let state = match barrier {
            Barrier::Start => {
                // Unsaved counts of an earlier run of this watch were never shown and will be counted again
                // from the saved state: forget them.
                saving.pending[i] = None;
                for t in &mut self.tallies {
                    t.live[i] = t.saved[i];
                }
                return;
            }
            Barrier::Save(state) => state,
        };
        // The watch's share of every series as of now goes with its state into the checkpoint; the counters
        // show it once the checkpoint is written, never before.
        let candidate: Vec<u64> = self.tallies.iter().map(|t| t.live[i]).collect();
        if !closing && std::time::Instant::now() < saving.next_write {
            // Paced: kept (the newest only) for the end of the run, and not acknowledged, so the watch sends
            // a newer state on its next tick.
            saving.pending[i] = Some((state.clone(), candidate));
            return;
        }
        self.save(i, state, candidate).await;
    }

    /// Write watch `i`'s `state` with its share `candidate` of every series (series made since count 0).
    async fn save(&mut self, i: usize, state: &Arc<EventWatch>, candidate: Vec<u64>) {
        let Some(saving) = &mut self.saving else {
            return;
        };
        let Ok(watch) = u16::try_from(i) else { return };
        saving.pending[i] = None;
        let before: Vec<u64> = self.tallies.iter().map(|t| t.saved[i]).collect();
        let previous = saving.watches[i].replace(state.clone());
        for (n, t) in self.tallies.iter_mut().enumerate() {
            t.saved[i] = candidate.get(n).copied().unwrap_or(0);
        }
        let file = self.file();
        let Some(saving) = &mut self.saving else {
            return;
        };
        match saving.store.save(file).await {
            Ok(bytes) => {
                let pause = bytes as f64 / saving.bytes_per_second.max(1) as f64;
                saving.next_write =
                    std::time::Instant::now() + std::time::Duration::from_secs_f64(pause);
                if saving.failing {
                    tracing::info!(to = %saving.store.describe(), "the Event checkpoint is written again");
                    saving.failing = false;
                }
                saving.acks.ack(watch, state.sequence);
                self.publish();
            }
            Err(error) => {
                // Not shown until saved: counters stand still (alert on herald_checkpoint_failures_total),
                // and the watch sends another barrier on its next tick.
                saving.watches[i] = previous;
                for (t, v) in self.tallies.iter_mut().zip(&before) {
                    t.saved[i] = *v;
                }
                if matches!(error, checkpoint::Error::NotLeading { .. }) {
                    tracing::debug!(%error, "Event checkpoint not written");
                    return;
                }
                saving.failures.increment(1);
                if !saving.failing {
                    tracing::error!(%error, "cannot write the Event checkpoint; Event counters stand still until it can");
                    saving.failing = true;
                }
            }
        }
    }

    /// At the end of the run: write the barriers the pacing held back.
    async fn save_pending(&mut self) {
        let Some(saving) = &mut self.saving else {
            return;
        };
        let pending: Vec<_> = saving
            .pending
            .iter_mut()
            .enumerate()
            .filter_map(|(i, p)| p.take().map(|p| (i, p)))
            .collect();
        for (i, (state, candidate)) in pending {
            self.save(i, &state, candidate).await;
        }
    }

    /// The checkpoint document: each watch's last barrier and its saved share of every series.
    fn file(&self) -> EventsFile {
        let Some(saving) = &self.saving else {
            return EventsFile::default();
        };
        let watches = saving
            .watches
            .iter()
            .enumerate()
            .filter_map(|(i, w)| {
                let watch = w.clone()?;
                let counters = self
                    .tallies
                    .iter()
                    .filter(|t| t.saved[i] > 0)
                    .map(|t| SavedCounter {
                        metric: t.series.metric().to_string(),
                        labels: t
                            .series
                            .labels()
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        value: t.saved[i],
                    })
                    .collect();
                Some(SavedWatch { watch, counters })
            })
            .collect();
        EventsFile {
            writer: saving.writer.clone(),
            watches,
        }
    }

    /// Show the saved totals.
    fn publish(&self) {
        for t in &self.tallies {
            t.counter.absolute(t.saved.iter().sum());
        }
    }

    /// Drain the ring until it is closed and empty.
    pub async fn run(mut self, ring: Arc<Ring<Shared>>) {
        while ring.ready(super::LINGER).await {
            while let Some(r) = ring.try_pop() {
                match &*r {
                    Record::Event(event) => self.record(event),
                    // Lifecycle transitions have their own metrics, kept by the KubeVirt source.
                    Record::Vm(_) => {}
                    Record::Checkpoint(b) => {
                        self.barrier(b.watch, &b.barrier, ring.is_closed()).await
                    }
                }
            }
        }
        self.save_pending().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MetricsConfig;

    #[test]
    fn quota_messages_name_their_resources() {
        let m = "Error creating: pods \"virt-launcher-vm-abcde\" is forbidden: exceeded quota: compute, requested: limits.memory=2Gi,requests.cpu=1, used: limits.memory=8Gi,requests.cpu=4, limited: limits.memory=8Gi,requests.cpu=4";
        assert_eq!(
            quota_resources(m).unwrap().collect::<Vec<_>>(),
            ["limits.memory", "requests.cpu"]
        );
        assert!(quota_resources("Back-off restarting failed container").is_none());
    }

    #[test]
    fn counts_objects_and_occurrences_and_folds_overflow() {
        let t = Arc::new(Telemetry::new(&MetricsConfig::default()));
        let mut sink = MetricsSink::new(t.clone(), 2);
        let mut a = EventRecord::for_test("default", "Pod", "p", "BackOff", "Warning");
        a.delta = 10;
        sink.record(&a);
        a.new_object = false;
        a.delta = 3;
        sink.record(&a);
        sink.record(&EventRecord::for_test(
            "kube-system",
            "Node",
            "n",
            "NodeNotReady",
            "Normal",
        ));
        sink.record(&EventRecord::for_test("x", "Pod", "q", "Started", "Normal"));
        let text = t.render();
        let line = |s: &str| text.lines().any(|l| l == s);
        assert!(
            line(
                r#"herald_event_occurrences_total{namespace="default",kind="Pod",reason="BackOff",type="Warning"} 13"#
            ),
            "{text}"
        );
        assert!(
            line(
                r#"herald_events_total{namespace="default",kind="Pod",reason="BackOff",type="Warning"} 1"#
            ),
            "{text}"
        );
        assert!(
            line(
                r#"herald_event_occurrences_total{namespace="__other__",kind="__other__",reason="__other__",type="__other__"} 1"#
            ),
            "{text}"
        );
        assert!(
            line(
                r#"herald_metric_series_overflow_total{metric="herald_event_occurrences_total"} 1"#
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn checkpoint_writes_are_paced_but_a_closing_barrier_is_always_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.json");
        let acks = Arc::new(Acks::new(1));
        let persist = Persist {
            store: checkpoint::Store::File(path.clone()),
            keys: vec!["w".into()],
            restored: None,
            writer: "herald-0".into(),
            acks: acks.clone(),
        };
        let state = |sequence: u64| {
            Arc::new(EventWatch {
                key: "w".into(),
                resource_version: sequence.to_string(),
                sequence,
                last_event_time: None,
                objects: vec![],
            })
        };
        let t = Arc::new(Telemetry::new(&MetricsConfig::default()));
        let mut sink = MetricsSink::new(t.clone(), 100).with_checkpoints(persist);
        // One byte a second: after the first write, nothing for minutes.
        if let Some(s) = sink.saving.as_mut() {
            s.bytes_per_second = 1;
        }
        let mut r = EventRecord::for_test("default", "Pod", "p", "BackOff", "Warning");
        r.delta = 5;
        sink.record(&r);
        sink.barrier(0, &Barrier::Save(state(1)), false).await;
        assert_eq!(acks.saved(0), 1);
        sink.record(&r);
        sink.barrier(0, &Barrier::Save(state(2)), false).await;
        assert_eq!(acks.saved(0), 1, "paced: not taken, so not acknowledged");
        let saved: EventsFile = checkpoint::load(&path).unwrap().unwrap();
        assert_eq!(saved.watches[0].watch.sequence, 1);
        let occurrences = |t: &Telemetry| {
            herald_test_support::probe::Scrape::parse(&t.render()).sum(telemetry::OCCURRENCES, &[])
        };
        assert_eq!(occurrences(&t), 5.0);
        sink.barrier(0, &Barrier::Save(state(3)), true).await;
        assert_eq!(acks.saved(0), 3, "shutting down: written at once");
        assert_eq!(occurrences(&t), 10.0);

        // Held back at the end of a run: written when the run ends.
        sink.record(&r);
        sink.barrier(0, &Barrier::Save(state(4)), false).await;
        sink.record(&r);
        assert_eq!(acks.saved(0), 3);
        sink.save_pending().await;
        assert_eq!(acks.saved(0), 4);
        assert_eq!(
            occurrences(&t),
            15.0,
            "the share as of the barrier, not the record after it"
        );
        let saved: EventsFile = checkpoint::load(&path).unwrap().unwrap();
        assert_eq!(saved.watches[0].watch.sequence, 4);
    }

    #[test]
    fn long_label_values_are_cut_on_a_character_boundary_and_counted() {
        let t = Arc::new(Telemetry::new(&MetricsConfig::default()));
        let mut sink = MetricsSink::new(t.clone(), 100);
        // 'é' is two bytes: the cut point falls inside one.
        let reason = format!("x{}", "é".repeat(3000));
        let mut r = EventRecord::for_test("default", "Pod", "p", &reason, "Warning");
        r.delta = 4;
        sink.record(&r);
        let text = t.render();
        let cut = format!("x{}...", "é".repeat(62));
        assert!(cut.len() <= MAX_LABEL_VALUE_BYTES);
        assert!(
            text.contains(&format!(
                r#"herald_event_occurrences_total{{namespace="default",kind="Pod",reason="{cut}",type="Warning"}} 4"#
            )),
            "{text}"
        );
        assert!(
            text.contains(
                r#"herald_label_values_truncated_total{metric="herald_event_occurrences_total"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.lines().all(|l| l.len() < 512),
            "no line carries the long reason"
        );
    }

    #[test]
    fn the_quota_map_stops_at_the_guard() {
        let t = Arc::new(Telemetry::new(&MetricsConfig::default()));
        let mut sink = MetricsSink::new(t.clone(), 50);
        let mut total = 0u64;
        for i in 0..100 {
            let requested: Vec<String> = (0..300).map(|j| format!("r{i}-{j}=1")).collect();
            let mut r = EventRecord::for_test("ns", "Pod", "p", "FailedCreate", "Warning");
            r.message = format!(
                "pods \"p\" is forbidden: exceeded quota: q, requested: {}, used: x=1, limited: x=1",
                requested.join(",")
            );
            r.delta = 1;
            total += 300;
            sink.record(&r);
        }
        assert_eq!(sink.remembered().1, 50, "only the guard's worth of keys");
        let scrape = herald_test_support::probe::Scrape::parse(&t.render());
        assert_eq!(
            scrape.sum(telemetry::QUOTA_EXCEEDED, &[]),
            total as f64,
            "the totals stay exact"
        );
        assert_eq!(
            scrape.sum(
                telemetry::SERIES_OVERFLOW,
                &[("metric", telemetry::QUOTA_EXCEEDED)]
            ),
            (total - 50) as f64
        );
    }

    #[tokio::test]
    async fn with_checkpoints_counters_show_only_saved_values_and_continue_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.json");
        let persist = |restored| Persist {
            store: checkpoint::Store::File(path.clone()),
            keys: vec!["events namespace=*".into()],
            restored,
            writer: "herald-0".into(),
            acks: Arc::new(Acks::new(1)),
        };
        let occurrences = |t: &Telemetry| {
            herald_test_support::probe::Scrape::parse(&t.render()).sum(telemetry::OCCURRENCES, &[])
        };
        let state = |sequence| {
            Arc::new(EventWatch {
                key: "events namespace=*".into(),
                resource_version: "42".into(),
                sequence,
                last_event_time: None,
                objects: vec![(crate::source::accounting::key_hash("uid-1"), 5)],
            })
        };

        let t = Arc::new(Telemetry::new(&MetricsConfig::default()));
        let mut sink = MetricsSink::new(t.clone(), 100).with_checkpoints(persist(None));
        let mut r = EventRecord::for_test("default", "Pod", "p", "BackOff", "Warning");
        r.delta = 5;
        sink.record(&r);
        assert_eq!(occurrences(&t), 0.0, "not saved yet, so not shown");
        sink.barrier(0, &Barrier::Save(state(1)), false).await;
        assert_eq!(occurrences(&t), 5.0);
        r.delta = 2;
        sink.record(&r);
        assert_eq!(occurrences(&t), 5.0, "a crash now would take the 2 back");
        // The watch starts again (a new leadership term): the unsaved 2 will be counted from the checkpoint.
        sink.barrier(0, &Barrier::Start, false).await;
        sink.barrier(0, &Barrier::Save(state(2)), false).await;
        assert_eq!(occurrences(&t), 5.0, "the unsaved 2 were forgotten");

        // A restart: the new process shows the saved totals at once and counts on from them.
        let saved: EventsFile = checkpoint::load(&path).unwrap().unwrap();
        assert_eq!(saved.writer, "herald-0");
        assert_eq!(saved.watches[0].watch.objects, state(1).objects);
        let t = Arc::new(Telemetry::new(&MetricsConfig::default()));
        let mut sink = MetricsSink::new(t.clone(), 100).with_checkpoints(persist(Some(saved)));
        assert_eq!(occurrences(&t), 5.0);
        sink.record(&r);
        sink.barrier(0, &Barrier::Save(state(3)), false).await;
        assert_eq!(occurrences(&t), 7.0);
    }
}
