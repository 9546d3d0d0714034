//! The Event source: watches core/v1 or events.k8s.io/v1 Events and puts one record per new occurrence (or
//! batch of occurrences) on the ingest ring.
//!
//! Normalising happens once, while each object is decoded ([`normalise`], called by [`LeanEvent`]'s
//! `Deserialize`): both APIs become the same [`EventRecord`] and repeated strings are interned. Here, counts
//! become occurrence deltas ([`Accounting`]). Objects that carry no new occurrence (a baseline listing,
//! a delete, an update that did not raise the count) never enter the pipeline. A malformed object is counted
//! in `herald_invalid_objects_total`, logged once per kind of problem with its namespace/name, and skipped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::Client;
use metrics::{Counter, Gauge};
use tokio_util::sync::CancellationToken;

use super::accounting::Accounting;
use super::decode::{
    self, EventFields, EventsApiMarker, Field, LeanEvent, LeanMeta, LeanObjectRef,
};
use super::watch::{Step, WatchSettings, Watcher};
use crate::checkpoint::{Acks, Barrier, EventWatch};
use crate::config::{EventSourceConfig, EventsApi, Scope};
use crate::health::Health;
use crate::record::{Change, EventApi, EventRecord, ObjectRef, Record, Sym};
use crate::ring::Ring;
use crate::telemetry::{self, Telemetry};

/// Why an object was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} {field} in Event {namespace}/{name}")]
pub struct Invalid {
    /// `missing_field` or `wrong_type` (a metric label).
    pub reason: &'static str,
    pub field: &'static str,
    pub namespace: String,
    pub name: String,
    /// The object's identity, kept so that an unusable object is still tracked and forgotten like any other.
    pub uid: String,
    pub resource_version: String,
}

/// What every Event watch needs from the agent.
#[derive(Clone)]
pub struct SourceContext {
    pub client: Client,
    pub ingest: Arc<Ring<Arc<Record>>>,
    pub telemetry: Arc<Telemetry>,
    pub health: Health,
    pub shutdown: CancellationToken,
}

/// How the Event watches checkpoint: with `state_dir` and the metrics sink, which writes the file.
#[derive(Debug, Clone, Default)]
pub struct Checkpoints {
    /// Send a checkpoint barrier this often while something changed (and at shutdown); `None`: never.
    pub every: Option<Duration>,
    /// What the last run saved; each watch takes the entry with its key.
    pub restored: Vec<Arc<EventWatch>>,
    /// Which barriers the metrics sink saved.
    pub acks: Arc<Acks>,
}

/// The namespaces the configured Event watches cover: one watch per entry, `None` for all namespaces.
fn targets(cfg: &EventSourceConfig, own_namespace: &str) -> Vec<Option<String>> {
    match cfg.scope {
        Scope::All => vec![None],
        Scope::Namespaces => cfg.namespaces.iter().cloned().map(Some).collect(),
        Scope::Own => vec![Some(own_namespace.to_string())],
    }
}

/// The identity of each configured Event watch, in the order of [`spawn`] (a record's `watch` indexes it):
/// what a checkpoint is saved under, so a checkpoint is only used by the same watch.
pub fn watch_keys(cfg: &EventSourceConfig, own_namespace: &str) -> Vec<String> {
    if !cfg.enabled {
        return Vec::new();
    }
    let resource = match cfg.api {
        EventsApi::CoreV1 => <decode::CoreV1 as EventsApiMarker>::RESOURCE,
        EventsApi::EventsV1 => <decode::EventsV1 as EventsApiMarker>::RESOURCE,
    };
    targets(cfg, own_namespace)
        .iter()
        .map(|ns| {
            format!(
                "{resource} namespace={} labels={} fields={}",
                ns.as_deref().unwrap_or("*"),
                cfg.label_selector.as_deref().unwrap_or_default(),
                cfg.field_selector.as_deref().unwrap_or_default()
            )
        })
        .collect()
}

/// Start the configured Event watches; each runs until shutdown. `own_namespace` is used by `scope: own`.
pub fn spawn(
    cfg: &EventSourceConfig,
    own_namespace: &str,
    ctx: &SourceContext,
    checkpoints: &Checkpoints,
) -> Vec<tokio::task::JoinHandle<()>> {
    let EventSourceConfig {
        enabled,
        api,
        scope: _,
        namespaces: _,
        label_selector,
        field_selector,
        page_size,
        startup: _,
        max_tracked_objects: _,
        stall_timeout,
        max_message_bytes: _,
    } = cfg;
    if !enabled {
        return Vec::new();
    }
    let keys = watch_keys(cfg, own_namespace);
    let settings = WatchSettings {
        label_selector: label_selector.clone(),
        field_selector: field_selector.clone(),
        page_size: *page_size,
        stall_after: stall_timeout.0,
        ..WatchSettings::default()
    };
    targets(cfg, own_namespace)
        .into_iter()
        .zip(keys)
        .enumerate()
        .map(|(index, (ns, key))| {
            let (ctx, cfg, settings) = (ctx.clone(), cfg.clone(), settings.clone());
            let restored = checkpoints.restored.iter().find(|w| w.key == key).cloned();
            let checkpoint = WatchCheckpoint {
                index: u16::try_from(index).unwrap_or(u16::MAX),
                key,
                every: checkpoints.every,
                restored,
                acks: checkpoints.acks.clone(),
            };
            // Registered before the task runs, so /readyz cannot answer 200 in the moment before it does.
            let resource = match api {
                EventsApi::CoreV1 => <decode::CoreV1 as EventsApiMarker>::RESOURCE,
                EventsApi::EventsV1 => <decode::EventsV1 as EventsApiMarker>::RESOURCE,
            };
            let health = ctx.health.source(match &ns {
                Some(n) => format!("{resource} (namespace {n})"),
                None => resource.to_string(),
            });
            match api {
                EventsApi::CoreV1 => tokio::spawn(run::<decode::CoreV1>(
                    ns, settings, cfg, ctx, health, checkpoint,
                )),
                EventsApi::EventsV1 => tokio::spawn(run::<decode::EventsV1>(
                    ns, settings, cfg, ctx, health, checkpoint,
                )),
            }
        })
        .collect()
}

struct SourceMetrics {
    tracked: Gauge,
    evictions: Counter,
    missing_field: Counter,
    wrong_type: Counter,
    truncated: Counter,
}

/// One watch's part of [`Checkpoints`].
struct WatchCheckpoint {
    index: u16,
    key: String,
    every: Option<Duration>,
    restored: Option<Arc<EventWatch>>,
    acks: Arc<Acks>,
}

async fn run<A: EventsApiMarker>(
    namespace: Option<String>,
    settings: WatchSettings,
    cfg: EventSourceConfig,
    ctx: SourceContext,
    health: Arc<crate::health::SourceHealth>,
    checkpoint: WatchCheckpoint,
) {
    let mut watcher = Watcher::<LeanEvent<A>>::new(
        ctx.client.clone(),
        decode::events_url::<A>(namespace.as_deref()),
        settings,
        A::RESOURCE,
        &ctx.telemetry,
        health,
        ctx.shutdown.clone(),
    );
    let t = &ctx.telemetry;
    let resource = A::RESOURCE;
    let metrics = SourceMetrics {
        tracked: t.gauge(telemetry::TRACKED_OBJECTS, &[("resource", resource)]),
        evictions: t.counter(telemetry::STATE_EVICTIONS, &[("resource", resource)]),
        missing_field: t.counter(
            telemetry::INVALID_OBJECTS,
            &[("resource", resource), ("reason", "missing_field")],
        ),
        wrong_type: t.counter(
            telemetry::INVALID_OBJECTS,
            &[("resource", resource), ("reason", "wrong_type")],
        ),
        truncated: t.counter(telemetry::MESSAGES_TRUNCATED, &[("resource", resource)]),
    };
    let mut accounting = Accounting::new(cfg.startup, cfg.max_tracked_objects);
    let mut reported_evictions = 0;
    let mut last_event_time = None;
    if let Some(saved) = &checkpoint.restored {
        tracing::info!(
            resource,
            objects = saved.objects.len(),
            resource_version = %saved.resource_version,
            "resuming Event counts from the checkpoint"
        );
        accounting.restore(saved.objects.iter().cloned());
        last_event_time = saved.last_event_time;
        if !saved.resource_version.is_empty() {
            watcher = watcher.resume_from(saved.resource_version.clone());
        }
    }
    if let Some(every) = checkpoint.every {
        watcher = watcher.with_tick(every);
    }
    let mut changed = false;
    let mut sequence = checkpoint.acks.saved(checkpoint.index);
    if checkpoint.every.is_some() {
        let start = Record::barrier(checkpoint.index, Barrier::Start);
        if ctx.ingest.push(Arc::new(start)).await.is_err() {
            return;
        }
    }

    loop {
        let step = watcher.next().await;
        // On a tick or at the end, every step handed out so far is accounted for: the watch position and
        // the counts agree, and the barrier follows every record they include down the pipeline.
        if matches!(step, None | Some(Step::Tick))
            && checkpoint.every.is_some()
            && (changed || checkpoint.acks.saved(checkpoint.index) < sequence)
            && accounting.is_listed()
            && let Some(resource_version) = watcher.checkpoint()
        {
            sequence += 1;
            let state = EventWatch {
                key: checkpoint.key.clone(),
                sequence,
                resource_version: resource_version.to_string(),
                last_event_time,
                objects: accounting.snapshot(),
            };
            let barrier = Record::barrier(checkpoint.index, Barrier::Save(Arc::new(state)));
            if ctx.ingest.push(Arc::new(barrier)).await.is_err() {
                break;
            }
            changed = false;
        }
        let Some(step) = step else { break };
        if !matches!(step, Step::Tick) {
            changed = true;
        }
        let (object, change) = match step {
            Step::Tick => continue,
            Step::ListStart { expected } => {
                accounting.list_start(expected);
                continue;
            }
            Step::ListDone => {
                let gone = accounting.list_done();
                if gone > 0 {
                    tracing::debug!(resource, gone, "relist: Events deleted while not watching");
                }
                metrics.tracked.set(accounting.len() as f64);
                continue;
            }
            Step::Deleted(object) => {
                accounting.forget(&object.key());
                metrics.tracked.set(accounting.len() as f64);
                continue;
            }
            Step::Listed(object) => (object, Change::Listed),
            Step::Added(object) => (object, Change::Added),
            Step::Modified(object) => (object, Change::Modified),
        };
        let key = accounting.key_of(&object.key());
        let mut shared = match object.into_record() {
            Ok(shared) => shared,
            Err(invalid) => {
                match invalid.reason {
                    "missing_field" => metrics.missing_field.increment(1),
                    _ => metrics.wrong_type.increment(1),
                }
                log_invalid_once(resource, &invalid);
                continue;
            }
        };
        // Held by nothing else yet: make_mut never clones here. Decoding builds Events only.
        let Record::Event(record) = Arc::make_mut(&mut shared) else {
            continue;
        };
        if truncate_message(&mut record.message, cfg.max_message_bytes) {
            record.truncated = true;
            metrics.truncated.increment(1);
            log_truncated_once(resource, record, cfg.max_message_bytes);
        }
        let observation = accounting.observe_hash(key, record.count);
        if accounting.evictions() != reported_evictions {
            metrics
                .evictions
                .increment(accounting.evictions() - reported_evictions);
            reported_evictions = accounting.evictions();
        }
        if observation.delta == 0 {
            continue;
        }
        record.delta = observation.delta;
        record.new_object = observation.new_object;
        record.change = change;
        record.watch = checkpoint.index;
        last_event_time = last_event_time.max(record.timestamp());
        if ctx.ingest.push(shared).await.is_err() {
            break;
        }
        if change != Change::Listed {
            metrics.tracked.set(accounting.len() as f64);
        }
    }
}

fn log_invalid_once(resource: &'static str, invalid: &Invalid) {
    static SEEN: std::sync::Mutex<Vec<(&'static str, &'static str)>> =
        std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let kind = (invalid.reason, invalid.field);
    if !seen.contains(&kind) {
        seen.push(kind);
        tracing::warn!(
            resource,
            reason = invalid.reason,
            field = invalid.field,
            namespace = %invalid.namespace,
            name = %invalid.name,
            "skipping malformed Event (counted in herald_invalid_objects_total; logged once per kind of problem)"
        );
    }
}

/// Cut `message` to at most `max` bytes on a UTF-8 character boundary; true when it was cut.
pub fn truncate_message(message: &mut String, max: usize) -> bool {
    if message.len() <= max {
        return false;
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.shrink_to_fit();
    true
}

fn log_truncated_once(resource: &'static str, record: &EventRecord, max: usize) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            resource,
            namespace = %record.namespace,
            name = %record.name,
            max_message_bytes = max,
            "cut a long Event message (marked herald.truncated, counted in herald_messages_truncated_total; logged once)"
        )
    });
}

/// Build the record from an object's decoded fields, or say which field makes it unusable. Runs while the
/// object is decoded ([`LeanEvent`]'s `Deserialize`), so what travels from the page or line to the source is
/// the record, not the fields it came from.
pub fn normalise(fields: EventFields, api: EventApi) -> Result<EventRecord, Box<Invalid>> {
    let (metadata, metadata_invalid) = match fields.metadata.0 {
        Field::Value(m) => (m, false),
        Field::Invalid => (LeanMeta::default(), true),
        Field::Missing | Field::Null => (LeanMeta::default(), false),
    };
    // What identifies the object even when it is unusable: the source forgets or tracks it by these, and a
    // watch resumes from its resourceVersion.
    let text = |f: Field<String>| match f {
        Field::Value(v) => (v, false),
        Field::Invalid => (String::new(), true),
        Field::Missing | Field::Null => (String::new(), false),
    };
    let (name, bad_name) = text(metadata.name);
    let (uid, bad_uid) = text(metadata.uid);
    let (resource_version, bad_version) = text(metadata.resource_version);
    let (namespace, bad_namespace) = match metadata.namespace {
        Field::Value(v) => (v, false),
        Field::Invalid => (decode::intern(""), true),
        Field::Missing | Field::Null => (decode::intern(""), false),
    };
    let creation_timestamp = metadata.creation_timestamp;
    let fail = |reason: &'static str, field: &'static str| {
        Box::new(Invalid {
            reason,
            field,
            namespace: namespace.to_string(),
            name: name.clone(),
            uid: uid.clone(),
            resource_version: resource_version.clone(),
        })
    };
    if metadata_invalid
        || bad_name
        || bad_uid
        || bad_version
        || bad_namespace
        || creation_timestamp.is_invalid()
    {
        return Err(fail("wrong_type", "metadata"));
    }
    if name.is_empty() {
        return Err(fail("missing_field", "metadata.name"));
    }
    if namespace.is_empty() {
        return Err(fail("missing_field", "metadata.namespace"));
    }
    macro_rules! get {
        ($field:expr, $name:literal) => {
            $field.get().map_err(|_| fail("wrong_type", $name))?
        };
    }
    let involved_name = match api {
        EventApi::CoreV1 => "involvedObject",
        EventApi::EventsV1 => "regarding",
    };
    let regarding = match fields.involved_object.0 {
        Field::Value(r) => object_ref(r).map_err(|f| fail("wrong_type", f))?,
        Field::Invalid => return Err(fail("wrong_type", involved_name)),
        // events.k8s.io/v1 makes `regarding` optional; core/v1 requires involvedObject.
        Field::Missing | Field::Null if api == EventApi::CoreV1 => {
            return Err(fail("missing_field", involved_name));
        }
        Field::Missing | Field::Null => ObjectRef::default(),
    };
    let related = match fields.related.0 {
        Field::Value(r) => Some(object_ref(r).map_err(|f| fail("wrong_type", f))?),
        Field::Invalid => return Err(fail("wrong_type", "related")),
        Field::Missing | Field::Null => None,
    };
    let (source_component, host) = match fields.source.0 {
        Field::Value(s) => (
            get!(s.component, "source.component"),
            get!(s.host, "source.host"),
        ),
        Field::Invalid => return Err(fail("wrong_type", "source")),
        Field::Missing | Field::Null => (None, None),
    };
    let (series_count, series_last_observed) = match fields.series.0 {
        Field::Value(s) => (
            get!(s.count, "series.count"),
            get!(s.last_observed_time, "series.lastObservedTime"),
        ),
        Field::Invalid => return Err(fail("wrong_type", "series")),
        Field::Missing | Field::Null => (None, None),
    };
    let count_field = get!(fields.count, "count");
    // Both are int32 in the API: an API server refuses larger values, so one object can never stand for more
    // than 2^31-1 occurrences. A larger one is not an Event an API server would keep: malformed.
    if count_field.is_some_and(|c| c > i64::from(i32::MAX)) {
        return Err(fail("wrong_type", "count"));
    }
    if series_count.is_some_and(|c| c > i64::from(i32::MAX)) {
        return Err(fail("wrong_type", "series.count"));
    }
    // A series carries the running count; otherwise `count`; an Event without either happened once.
    // Zero or negative counts (seen in fuzzed objects) also mean once.
    let count = series_count
        .filter(|c| *c > 0)
        .or(count_field.filter(|c| *c > 0))
        .map_or(1, |c| u32::try_from(c).unwrap_or(u32::MAX));
    // Interned while decoding (`decode::intern`); only absent values are interned here.
    let reporting = get!(fields.reporting_component, "reportingComponent")
        .unwrap_or_else(|| decode::intern(""));
    let component = if reporting.is_empty() {
        source_component.unwrap_or_else(|| decode::intern(""))
    } else {
        reporting.clone()
    };
    let reason = get!(fields.reason, "reason").unwrap_or_else(|| decode::intern(""));
    let type_ = get!(fields.type_, "type").unwrap_or_else(|| decode::intern(""));
    let reporting_instance =
        get!(fields.reporting_instance, "reportingInstance").unwrap_or_default();
    let action = get!(fields.action, "action").unwrap_or_default();
    let message = get!(fields.message, "message").unwrap_or_default();
    let event_time = get!(fields.event_time, "eventTime");
    let first_timestamp = get!(fields.first_timestamp, "firstTimestamp");
    let last_timestamp = get!(fields.last_timestamp, "lastTimestamp");
    Ok(EventRecord {
        api,
        change: Change::Listed,
        namespace,
        // Moved, not copied: nothing can fail past this point.
        name: name.into_boxed_str(),
        uid: uid.into_boxed_str(),
        resource_version: resource_version.into_boxed_str(),
        regarding,
        related,
        reason,
        type_,
        component,
        reporting_controller: reporting,
        reporting_instance: reporting_instance.into(),
        host: host.unwrap_or_default().into(),
        action: action.into(),
        message,
        truncated: false,
        count,
        reported_count: count_field.unwrap_or(0),
        delta: 0,
        new_object: false,
        series_count: series_count.map(|c| u32::try_from(c.max(0)).unwrap_or(u32::MAX)),
        series_last_observed,
        event_time,
        first_timestamp,
        last_timestamp,
        creation_timestamp: creation_timestamp.get().ok().flatten(),
        observed: Timestamp::now(),
        decoded_at: Instant::now(),
        severity: crate::record::Severity::Info,
        repeated: false,
        duplicate: false,
        fingerprint: 0,
        watch: 0,
    })
}

fn object_ref(r: LeanObjectRef) -> Result<ObjectRef, &'static str> {
    let s = |f: Field<String>, name: &'static str| f.get().map_err(|_| name);
    // kind, apiVersion and namespace arrive interned (`decode::intern`).
    let sym = |f: Field<Sym>, name: &'static str| {
        f.get()
            .map(|v| v.unwrap_or_else(|| decode::intern("")))
            .map_err(|_| name)
    };
    Ok(ObjectRef {
        kind: sym(r.kind, "involvedObject.kind")?,
        api_version: sym(r.api_version, "involvedObject.apiVersion")?,
        namespace: sym(r.namespace, "involvedObject.namespace")?,
        name: s(r.name, "involvedObject.name")?.unwrap_or_default().into(),
        uid: s(r.uid, "involvedObject.uid")?.unwrap_or_default().into(),
        field_path: s(r.field_path, "involvedObject.fieldPath")?
            .unwrap_or_default()
            .into(),
        resource_version: s(r.resource_version, "involvedObject.resourceVersion")?
            .unwrap_or_default()
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(json: &str) -> Result<EventRecord, Box<Invalid>> {
        let ev: LeanEvent<decode::CoreV1> = serde_json::from_str(json).unwrap();
        ev.into_record()
            .map(|r| r.log_entry().unwrap().event.clone())
    }

    #[test]
    fn counts_beyond_int32_are_malformed() {
        let ev = |count: &str| {
            format!(
                r#"{{"metadata":{{"name":"p.1","namespace":"default","uid":"u1"}},"involvedObject":{{"kind":"Pod","name":"p"}},"count":{count}}}"#
            )
        };
        assert_eq!(core(&ev("2147483647")).unwrap().count, 2_147_483_647);
        let e = core(&ev("4294967295")).unwrap_err();
        assert_eq!((e.reason, e.field), ("wrong_type", "count"));
    }

    #[test]
    fn core_v1_event_normalises() {
        let r = core(
            r#"{"metadata":{"name":"p.1","namespace":"default","uid":"u1","resourceVersion":"42",
                "creationTimestamp":"2024-12-02T10:00:00Z"},
                "involvedObject":{"kind":"Pod","name":"p","namespace":"default","apiVersion":"v1","fieldPath":"spec.containers{c}"},
                "reason":"BackOff","message":"Back-off restarting failed container","type":"Warning",
                "source":{"component":"kubelet","host":"node-1"},"count":10,
                "firstTimestamp":"2024-12-02T10:00:00Z","lastTimestamp":"2024-12-02T10:05:00Z","reportingComponent":""}"#,
        )
        .unwrap();
        assert_eq!(&*r.namespace, "default");
        assert_eq!(&*r.regarding.kind, "Pod");
        assert_eq!(&*r.regarding.field_path, "spec.containers{c}");
        assert_eq!(&*r.reason, "BackOff");
        assert_eq!(&*r.type_, "Warning");
        assert_eq!(
            &*r.component, "kubelet",
            "empty reportingComponent falls back to source"
        );
        assert_eq!(&*r.host, "node-1");
        assert_eq!(r.count, 10);
        assert_eq!(r.timestamp(), Some("2024-12-02T10:05:00Z".parse().unwrap()));
    }

    #[test]
    fn missing_count_means_once_and_series_wins() {
        let base = r#""metadata":{"name":"a","namespace":"n"},"involvedObject":{"kind":"Pod"}"#;
        assert_eq!(core(&format!("{{{base}}}")).unwrap().count, 1);
        assert_eq!(core(&format!("{{{base},\"count\":-3}}")).unwrap().count, 1);
        let r = core(&format!(
            "{{{base},\"count\":2,\"series\":{{\"count\":9}}}}"
        ))
        .unwrap();
        assert_eq!((r.count, r.series_count), (9, Some(9)));
    }

    #[test]
    fn malformed_objects_name_the_field_and_object() {
        let e = core(r#"{"metadata":{"name":"a","namespace":"n"}}"#).unwrap_err();
        assert_eq!(e.to_string(), "missing_field involvedObject in Event n/a");
        let e = core(r#"{"metadata":{"name":"a","namespace":"n"},"involvedObject":{"kind":5}}"#)
            .unwrap_err();
        assert_eq!((e.reason, e.field), ("wrong_type", "involvedObject.kind"));
        let e =
            core(r#"{"metadata":{"name":"a","namespace":"n"},"involvedObject":{},"count":"x"}"#)
                .unwrap_err();
        assert_eq!((e.reason, e.field), ("wrong_type", "count"));
        let e = core(r#"{"metadata":{"namespace":"n"},"involvedObject":{}}"#).unwrap_err();
        assert_eq!(e.field, "metadata.name");
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let mut m = "ab€cd".to_string(); // € is 3 bytes: a b [€ € €] c d
        assert!(truncate_message(&mut m, 4));
        assert_eq!(m, "ab", "never inside a character");
        let mut m = "ab€cd".to_string();
        assert!(truncate_message(&mut m, 5));
        assert_eq!(m, "ab€");
        let mut m = "short".to_string();
        assert!(!truncate_message(&mut m, 5));
        assert_eq!(m, "short");
        let mut m = "€".to_string();
        assert!(truncate_message(&mut m, 1));
        assert_eq!(m, "");
    }

    #[test]
    fn events_v1_fills_the_same_record() {
        let ev: LeanEvent<decode::EventsV1> = serde_json::from_str(
            r#"{"metadata":{"name":"a","namespace":"n","uid":"u"},"regarding":{"kind":"Node","name":"n1"},
                "note":"m","reason":"NodeNotReady","type":"Normal","reportingController":"node-controller",
                "reportingInstance":"cm-1","action":"Update","eventTime":"2024-01-01T00:00:00.000001Z",
                "deprecatedCount":3,"deprecatedSource":{"component":"x","host":"h"}}"#,
        )
        .unwrap();
        let r = ev.into_record().unwrap();
        let r = r.log_entry().unwrap().event;
        assert_eq!(&*r.regarding.kind, "Node");
        assert_eq!(r.message, "m");
        assert_eq!(&*r.component, "node-controller");
        assert_eq!(&*r.reporting_instance, "cm-1");
        assert_eq!(&*r.action, "Update");
        assert_eq!(&*r.host, "h");
        assert_eq!(r.count, 3);
    }
}
