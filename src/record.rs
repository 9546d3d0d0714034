//! The one compact record every Kubernetes Event is normalised into, whichever API it came from, and
//! [`Record`], what travels on the rings from the sources through the pipeline to the sinks: an Event, a
//! KubeVirt lifecycle transition, or an Event watch's checkpoint barrier, never a mix of them.
//!
//! Strings that repeat across thousands of Events (namespace, kind, reason, type, component) are interned
//! ([`Interner`]) so a record holds a pointer, not a copy, and metric handles can be cached by pointer-cheap keys.
//! Nothing here does I/O; the record is built once by the source and then only read (and redacted) downstream.

use std::sync::Arc;

use jiff::Timestamp;

/// An interned string: cloning is a reference-count increment.
pub type Sym = Arc<str>;

/// Which Events API a record was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventApi {
    /// `v1` Events (`/api/v1/events`).
    CoreV1,
    /// `events.k8s.io/v1` Events.
    EventsV1,
}

impl EventApi {
    /// The `apiVersion` string the API server uses for this API.
    pub fn api_version(self) -> &'static str {
        match self {
            EventApi::CoreV1 => "v1",
            EventApi::EventsV1 => "events.k8s.io/v1",
        }
    }
}

/// What happened to the Event object that produced this record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Seen in an initial list or relist.
    Listed,
    /// ADDED on a watch.
    Added,
    /// MODIFIED on a watch (usually a count increase).
    Modified,
    /// DELETED on a watch, or missing from a relist. Carries no occurrences.
    Deleted,
}

/// herald's severity classes, in increasing order, so "minimum severity" is a comparison.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Routine: nothing to do.
    Info,
    /// Worth a look when convenient.
    Low,
    /// Degraded: look soon.
    Medium,
    /// Failing: act now.
    High,
    /// Down or losing data: act immediately.
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// One step up, saturating at critical (repeat escalation).
    pub fn escalate(self) -> Severity {
        match self {
            Severity::Info => Severity::Low,
            Severity::Low => Severity::Medium,
            Severity::Medium => Severity::High,
            Severity::High | Severity::Critical => Severity::Critical,
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("expected one of info, low, medium, high, critical, got {s:?}"))
    }
}

/// A reference to the object an Event is about (`involvedObject` / `regarding`, or `related`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectRef {
    pub kind: Sym,
    pub api_version: Sym,
    pub namespace: Sym,
    pub name: Box<str>,
    pub uid: Box<str>,
    pub field_path: Box<str>,
    pub resource_version: Box<str>,
}

/// One Kubernetes Event, as herald keeps it.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub api: EventApi,
    pub change: Change,
    /// The Event object's own identity.
    pub name: Box<str>,
    pub namespace: Sym,
    pub uid: Box<str>,
    pub resource_version: Box<str>,
    /// The object the Event is about.
    pub regarding: ObjectRef,
    pub related: Option<ObjectRef>,
    pub reason: Sym,
    /// `Normal`, `Warning`, or whatever the reporter wrote (kept verbatim).
    pub type_: Sym,
    /// `reportingComponent`/`reportingController`, else `source.component`.
    pub component: Sym,
    /// `reportingComponent`/`reportingController` exactly as the object carries it, empty when unset (the
    /// collector's receiver writes this one, without falling back to `source.component`).
    pub reporting_controller: Sym,
    pub reporting_instance: Box<str>,
    /// `source.host` (the node that reported it), empty when unknown.
    pub host: Box<str>,
    pub action: Box<str>,
    /// The message (`note` in events.k8s.io/v1), redacted by the pipeline before any sink sees it.
    pub message: String,
    /// The message was longer than `source.events.max_message_bytes` and was cut.
    pub truncated: bool,
    /// Total occurrences of this Event object so far (`count`, `series.count`, at least 1).
    pub count: u32,
    /// `count` (events.k8s.io/v1 `deprecatedCount`) exactly as the object carries it, 0 when unset: the
    /// collector's receiver writes this one, not [`EventRecord::count`].
    pub reported_count: i64,
    /// Occurrences this record stands for: new ones since herald last saw the object (0 for a baseline or delete).
    pub delta: u32,
    /// First time herald sees this Event object (counted in `herald_events_total`).
    pub new_object: bool,
    /// `series.count` when the Event has a series.
    pub series_count: Option<u32>,
    pub series_last_observed: Option<Timestamp>,
    pub event_time: Option<Timestamp>,
    pub first_timestamp: Option<Timestamp>,
    pub last_timestamp: Option<Timestamp>,
    pub creation_timestamp: Option<Timestamp>,
    /// Wall-clock time herald decoded it (OTLP's observed timestamp).
    pub observed: Timestamp,
    /// Monotonic time herald decoded it, for `herald_processing_seconds`.
    pub decoded_at: std::time::Instant,
    /// Set by the pipeline: severity class, repeat escalation, dedup.
    pub severity: Severity,
    pub repeated: bool,
    pub duplicate: bool,
    pub fingerprint: u64,
    /// Which Event watch emitted it (an index into `events::watch_keys`), so the metrics sink can keep each
    /// watch's totals apart for its checkpoint.
    pub watch: u16,
}

/// What the rings carry. Each stage matches on the kinds it handles, so an Event cannot be mistaken for a
/// barrier or a transition for an Event.
#[derive(Debug, Clone)]
pub enum Record {
    /// A Kubernetes Event: every stage and sink takes it.
    Event(EventRecord),
    /// A KubeVirt lifecycle transition: classified, filtered and redacted like an Event (never deduplicated,
    /// each is unique), written by the log sinks with VM attributes (and a span when it has a duration);
    /// the Event metrics skip it (the KubeVirt source keeps its own).
    Vm(VmTransition),
    /// An Event watch's checkpoint barrier, behind every record that watch emitted before: the pipeline
    /// passes it to the metrics sink only, which writes the checkpoint.
    Checkpoint(WatchBarrier),
}

/// A KubeVirt lifecycle transition: the report log sinks write, shaped like an Event about the KubeVirt
/// object (so severity rules, filters and redaction apply to it unchanged), and the VM's details.
#[derive(Debug, Clone)]
pub struct VmTransition {
    pub report: EventRecord,
    /// Boxed: transitions are rare, and every record on the rings is as large as the largest kind.
    pub details: Box<VmDetails>,
}

/// A checkpoint barrier and the Event watch it belongs to (an index into `events::watch_keys`).
#[derive(Debug, Clone, PartialEq)]
pub struct WatchBarrier {
    pub watch: u16,
    pub barrier: crate::checkpoint::Barrier,
}

/// What a log sink writes for one record: the Event, or a transition's report with its VM details.
#[derive(Debug, Clone, Copy)]
pub struct LogEntry<'a> {
    pub event: &'a EventRecord,
    pub vm: Option<&'a VmDetails>,
}

impl Record {
    /// A checkpoint barrier of Event watch `watch`.
    pub fn barrier(watch: u16, barrier: crate::checkpoint::Barrier) -> Record {
        Record::Checkpoint(WatchBarrier { watch, barrier })
    }

    /// What log sinks write for this record; `None` for a checkpoint barrier, which is not written.
    pub fn log_entry(&self) -> Option<LogEntry<'_>> {
        match self {
            Record::Event(event) => Some(LogEntry { event, vm: None }),
            Record::Vm(t) => Some(LogEntry {
                event: &t.report,
                vm: Some(&t.details),
            }),
            Record::Checkpoint(_) => None,
        }
    }
}

/// An Event's log entry (no VM details).
impl<'a> From<&'a EventRecord> for LogEntry<'a> {
    fn from(event: &'a EventRecord) -> LogEntry<'a> {
        LogEntry { event, vm: None }
    }
}

impl From<EventRecord> for Record {
    fn from(event: EventRecord) -> Record {
        Record::Event(event)
    }
}

/// A KubeVirt lifecycle transition, as log sinks write it.
#[derive(Debug, Clone, PartialEq)]
pub struct VmDetails {
    /// `started`, `migration_succeeded`, ...
    pub transition: &'static str,
    /// The VM's name (VMIs are named like their VM).
    pub vm: String,
    /// The VM's uid where known, else empty (traces then key on namespace/name).
    pub vm_uid: String,
    pub node: String,
    pub source_node: String,
    pub target_node: String,
    /// Status before and after (VM printableStatus, VMI or migration phase).
    pub before: String,
    pub after: String,
    /// Start, end and failure of a lifecycle with a duration (VM start, migration), for a span.
    pub span: Option<(Timestamp, Timestamp, bool)>,
}

impl EventRecord {
    /// When the Event last happened, for herald's own decisions (`max_age`, lag): `eventTime`, else
    /// `lastTimestamp`, else `firstTimestamp` (else the creation time), and a series' last observation when
    /// newer. The log sinks write the collector receiver's pick instead, which ignores the series
    /// (`sink::shape::record_time`).
    pub fn timestamp(&self) -> Option<Timestamp> {
        let base = self
            .event_time
            .or(self.last_timestamp)
            .or(self.first_timestamp);
        match (base, self.series_last_observed) {
            (Some(b), Some(s)) if s > b => Some(s),
            (None, s) => s.or(self.creation_timestamp),
            (b, _) => b,
        }
    }

    /// A record with every string empty and one new occurrence, observed now: what a VM transition's report
    /// (and a test's record) starts from.
    pub fn blank() -> EventRecord {
        EventRecord {
            api: EventApi::CoreV1,
            change: Change::Added,
            name: "".into(),
            namespace: "".into(),
            uid: "".into(),
            resource_version: "".into(),
            regarding: ObjectRef::default(),
            related: None,
            reason: "".into(),
            type_: "".into(),
            component: "".into(),
            reporting_controller: "".into(),
            reporting_instance: "".into(),
            host: "".into(),
            action: "".into(),
            message: String::new(),
            truncated: false,
            count: 1,
            reported_count: 1,
            delta: 1,
            new_object: true,
            series_count: None,
            series_last_observed: None,
            event_time: None,
            first_timestamp: None,
            last_timestamp: None,
            creation_timestamp: None,
            observed: Timestamp::now(),
            decoded_at: std::time::Instant::now(),
            severity: Severity::Info,
            repeated: false,
            duplicate: false,
            fingerprint: 0,
            watch: 0,
        }
    }

    /// A minimal core/v1 record for tests and benches: a new Event `<name>.17a` about object `kind/name`,
    /// reported by the kubelet; every other string empty.
    pub fn for_test(
        namespace: &str,
        kind: &str,
        name: &str,
        reason: &str,
        type_: &str,
    ) -> EventRecord {
        let mut r = EventRecord::blank();
        r.name = format!("{name}.17a").into();
        r.namespace = namespace.into();
        r.uid = format!("uid-{namespace}-{name}-{reason}").into();
        r.resource_version = "1".into();
        r.regarding = ObjectRef {
            kind: kind.into(),
            api_version: "v1".into(),
            namespace: namespace.into(),
            name: name.into(),
            ..ObjectRef::default()
        };
        r.reason = reason.into();
        r.type_ = type_.into();
        r.component = "kubelet".into();
        r.reporting_controller = "kubelet".into();
        r
    }
}

/// Deduplicates repeated strings. Bounded: past `max_entries` distinct values it stops remembering new ones
/// (they are still returned, just not shared), so a hostile stream of unique reasons cannot grow it forever.
/// Interned fields are short by nature (namespace, kind, apiVersion, reason, type, component:
/// events.k8s.io/v1 validates reason to 128 characters, names are at most 253 bytes), but core/v1 checks none
/// of them: a longer value is cut to [`Interner::MAX_BYTES`] on a UTF-8 boundary. That bounds what one record
/// and the interner hold (`max_entries` unique 4 KB reasons pinned hundreds of MB, and a full ring of records
/// carrying them tens of MB more); the metrics sink cuts its label values shorter still.
#[derive(Debug)]
pub struct Interner {
    set: ahash::HashSet<Sym>,
    max_entries: usize,
}

impl Interner {
    pub fn new(max_entries: usize) -> Interner {
        Interner {
            set: ahash::HashSet::default(),
            max_entries,
        }
    }

    /// The longest value kept.
    pub const MAX_BYTES: usize = 256;

    pub fn intern(&mut self, s: &str) -> Sym {
        let s = cut(s, Self::MAX_BYTES);
        if let Some(found) = self.set.get(s) {
            return found.clone();
        }
        let sym: Sym = Arc::from(s);
        if self.set.len() < self.max_entries {
            self.set.insert(sym.clone());
        }
        sym
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interner_shares_and_stays_bounded() {
        let mut i = Interner::new(2);
        let a = i.intern("Pod");
        let b = i.intern("Pod");
        assert!(Arc::ptr_eq(&a, &b));
        i.intern("Node");
        let c1 = i.intern("Deployment");
        let c2 = i.intern("Deployment");
        assert_eq!(i.len(), 2);
        assert_eq!(c1, c2);
        assert!(!Arc::ptr_eq(&c1, &c2));
        // 'é' is two bytes: 256 falls inside one, so the cut keeps 255.
        let long = format!("x{}", "é".repeat(4000));
        let mut i = Interner::new(10);
        let cut = i.intern(&long);
        assert_eq!(cut.len(), Interner::MAX_BYTES - 1);
        assert!(long.starts_with(&*cut));
    }

    #[test]
    fn timestamp_prefers_event_time_then_last_then_first() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        let mut r = EventRecord::for_test("ns", "Pod", "p", "Started", "Normal");
        r.first_timestamp = Some(t("2024-01-01T00:00:00Z"));
        assert_eq!(r.timestamp(), Some(t("2024-01-01T00:00:00Z")));
        r.last_timestamp = Some(t("2024-01-01T00:01:00Z"));
        assert_eq!(r.timestamp(), Some(t("2024-01-01T00:01:00Z")));
        r.event_time = Some(t("2024-01-01T00:00:30Z"));
        assert_eq!(r.timestamp(), Some(t("2024-01-01T00:00:30Z")));
        r.series_last_observed = Some(t("2024-01-01T00:05:00Z"));
        assert_eq!(r.timestamp(), Some(t("2024-01-01T00:05:00Z")));
    }

    #[test]
    fn severity_orders_and_escalates() {
        assert!(Severity::Critical > Severity::High);
        assert_eq!(Severity::Info.escalate(), Severity::Low);
        assert_eq!(Severity::Critical.escalate(), Severity::Critical);
        assert_eq!("high".parse::<Severity>(), Ok(Severity::High));
        assert!("urgent".parse::<Severity>().is_err());
    }
}
