//! Typed vs lean decode of Event objects: kube/k8s-openapi's typed decode against herald's own lean decode of
//! only the fields it needs.
//!
//! Every op decodes one Event object (a JSON string, as one item of a list or one watch line's object):
//! - `typed`: `serde_json::from_str` into k8s-openapi's `Event`, what kube's `Api<Event>` list and watch do;
//! - `lean`: into herald's [`EventFields`] (only the fields herald reads, every field lenient);
//! - `lean_normalise`: into a [`LeanEvent`], which is `lean` then normalising into an [`EventRecord`]
//!   (interning included), what the agent does per object.
//!
//! Groups:
//! - `typed_vs_lean_core_v1`: the 13 core/v1 Events of the shared fixtures, cycled (the same objects as
//!   `benches/pipeline.rs`);
//! - `typed_vs_lean_events_v1`: the real events.k8s.io/v1 Event of the fixtures (skipped without them);
//! - `managed_fields`: one core/v1 Event without and with a `metadata.managedFields` block. The fixtures have
//!   none (`kubectl get` hides them), so the block is written for this bench (see [`KUBELET_MANAGED_FIELDS`]).
//!
//! Run with `cargo bench --bench decode`; see `BENCHMARKS.md`.

// A test binary: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use herald::record::Record;
use herald::source::decode::{CoreV1, EventFields, EventsApiMarker, EventsV1, LeanEvent};
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event as EventsV1Event;
use serde::de::DeserializeOwned;

mod common;

/// Written for this bench, not taken from a fixture: the `managedFields` the API server stores for an Event
/// the kubelet wrote (one `Update` entry by manager `kubelet`; `f:involvedObject` is atomic, so it has no
/// children). Its shape is that of the kubelet Events seen in real API output (e.g. an OpenShift eventrouter
/// log, 2025); `{time}` is replaced with the object's `creationTimestamp`.
const KUBELET_MANAGED_FIELDS: &str = r#"[{"manager":"kubelet","operation":"Update","apiVersion":"v1","time":"{time}","fieldsType":"FieldsV1","fieldsV1":{"f:count":{},"f:firstTimestamp":{},"f:involvedObject":{},"f:lastTimestamp":{},"f:message":{},"f:reason":{},"f:reportingComponent":{},"f:reportingInstance":{},"f:source":{"f:component":{},"f:host":{}},"f:type":{}}}]"#;

/// `object` with [`KUBELET_MANAGED_FIELDS`] in its metadata.
fn with_managed_fields(object: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(object).expect("a JSON object");
    let meta = v
        .get_mut("metadata")
        .and_then(|m| m.as_object_mut())
        .expect("an object with metadata");
    let time = meta
        .get("creationTimestamp")
        .and_then(|t| t.as_str())
        .unwrap_or("2024-12-02T10:12:36Z")
        .to_owned();
    let block = KUBELET_MANAGED_FIELDS.replace("{time}", &time);
    meta.insert(
        "managedFields".into(),
        serde_json::from_str(&block).expect("valid managedFields JSON"),
    );
    v.to_string()
}

/// Decode `objects` in turn, one per op.
fn cycle<T>(objects: &[String], mut decode: impl FnMut(&str) -> T) -> impl FnMut() -> T {
    let mut i = 0;
    move || {
        let o = &objects[i % objects.len()];
        i += 1;
        decode(black_box(o))
    }
}

fn typed<T: DeserializeOwned>(json: &str) -> T {
    serde_json::from_str(json).expect("a typed Event")
}

/// The lean decode alone: the fields herald reads, not yet a record.
fn lean(json: &str) -> EventFields {
    serde_json::from_str(json).expect("a lean Event")
}

/// The lean decode and normalising, as the source decodes an object: its record.
fn lean_normalise<A: EventsApiMarker>(json: &str) -> Arc<Record> {
    let event: LeanEvent<A> = serde_json::from_str(json).expect("a lean Event");
    event.into_record().expect("a valid Event")
}

/// The three variants for one API, over `objects`.
fn compare<Typed: DeserializeOwned, A: EventsApiMarker>(
    c: &mut Criterion,
    group: &str,
    objects: &[String],
) {
    // Fail before measuring if any object does not decode either way or does not normalise.
    for o in objects {
        let _: Typed = typed(o);
        lean_normalise::<A>(o);
    }
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    g.bench_function("typed", |b| b.iter(cycle(objects, typed::<Typed>)));
    g.bench_function("lean", |b| b.iter(cycle(objects, lean)));
    g.bench_function("lean_normalise", |b| {
        b.iter(cycle(objects, lean_normalise::<A>))
    });
    g.finish();
}

fn core_v1(c: &mut Criterion) {
    let objects = common::inputs().objects;
    let bytes: usize = objects.iter().map(String::len).sum();
    eprintln!(
        "core/v1: {} objects, {} bytes on average",
        objects.len(),
        bytes / objects.len()
    );
    compare::<CoreEvent, CoreV1>(c, "typed_vs_lean_core_v1", &objects);
}

fn events_v1(c: &mut Criterion) {
    let Some(object) = common::events_v1_object() else {
        eprintln!("no events.k8s.io/v1 fixture: skipping typed_vs_lean_events_v1");
        return;
    };
    eprintln!("events.k8s.io/v1: 1 object, {} bytes", object.len());
    compare::<EventsV1Event, EventsV1>(c, "typed_vs_lean_events_v1", &[object]);
}

fn managed_fields(c: &mut Criterion) {
    let plain = common::inputs().object;
    let managed = with_managed_fields(&plain);
    eprintln!(
        "managed_fields: {} bytes without, {} bytes with",
        plain.len(),
        managed.len()
    );
    let mut g = c.benchmark_group("managed_fields");
    g.throughput(Throughput::Elements(1));
    for (suffix, object) in [("without", &plain), ("with", &managed)] {
        let typed_event: CoreEvent = typed(object);
        assert_eq!(
            typed_event.metadata.managed_fields.is_some(),
            suffix == "with"
        );
        g.bench_function(format!("typed_{suffix}"), |b| {
            b.iter(|| typed::<CoreEvent>(black_box(object)))
        });
        g.bench_function(format!("lean_{suffix}"), |b| {
            b.iter(|| lean(black_box(object)))
        });
        g.bench_function(format!("lean_normalise_{suffix}"), |b| {
            b.iter(|| lean_normalise::<CoreV1>(black_box(object)))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = core_v1, events_v1, managed_fields
}
criterion_main!(benches);
