//! The physical limit of decoding: the bare JSON parse of the watch lines the recorded API server of
//! `herald-bench stream` serves (the same bytes, realistic 1.2 KB core/v1 Events with `managedFields`), with
//! no Kubernetes or herald logic at all, so the agent's whole per-Event cost can be put next to it:
//!
//! - `serde_json_value`: `serde_json::from_str::<serde_json::Value>` (every key and string allocated);
//! - `serde_json_borrowed`: `serde_json::from_str` into a minimal typed struct of the fields an Event agent
//!   reads, strings borrowed from the line where they have no escapes (`Cow`), everything else skipped;
//! - `sonic_value` and `sonic_borrowed`: the same two with sonic-rs, a SIMD JSON parser (this bench only; the
//!   agent never links it). sonic-rs picks its SIMD code at compile time: for its best, build the bench with
//!   `RUSTFLAGS="-C target-cpu=native"` (BENCHMARKS.md says how the numbers were taken).
//!
//! One op parses one watch line; the lines cycle over 1 000 prepared Events (the four kinds of the server).
//! Run with `cargo bench -p herald-bench --bench parse`.

// A bench: a failed expect is a broken input, reported loudly.
#![allow(clippy::expect_used)]

use std::borrow::Cow;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::Deserialize;

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    object: Event<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    #[serde(borrow)]
    metadata: Meta<'a>,
    #[serde(borrow)]
    involved_object: Involved<'a>,
    #[serde(borrow, default)]
    reason: Cow<'a, str>,
    #[serde(borrow, default)]
    message: Cow<'a, str>,
    #[serde(borrow, default)]
    source: Option<Source<'a>>,
    #[serde(borrow, default)]
    first_timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    last_timestamp: Option<Cow<'a, str>>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(rename = "type", borrow, default)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    reporting_component: Cow<'a, str>,
    #[serde(borrow, default)]
    reporting_instance: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    namespace: Cow<'a, str>,
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    resource_version: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Involved<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    namespace: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    uid: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Source<'a> {
    #[serde(borrow, default)]
    component: Cow<'a, str>,
    #[serde(borrow, default)]
    host: Cow<'a, str>,
}

/// A checksum over the fields, so the parse cannot be optimised away and both parsers are checked alike.
fn touch(l: &Line<'_>) -> usize {
    let e = &l.object;
    l.kind.len()
        + e.metadata.name.len()
        + e.metadata.namespace.len()
        + e.metadata.uid.len()
        + e.metadata.resource_version.len()
        + e.involved_object.kind.len()
        + e.involved_object.namespace.len()
        + e.involved_object.name.len()
        + e.involved_object.uid.len()
        + e.reason.len()
        + e.message.len()
        + e.source
            .as_ref()
            .map_or(0, |s| s.component.len() + s.host.len())
        + e.first_timestamp.as_ref().map_or(0, |t| t.len())
        + e.last_timestamp.as_ref().map_or(0, |t| t.len())
        + e.count.unwrap_or(0) as usize
        + e.kind.len()
        + e.reporting_component.len()
        + e.reporting_instance.len()
}

fn parse(c: &mut Criterion) {
    let lines: Vec<String> = (0..1000)
        .map(|i| herald_bench::recorded::watch_line("ADDED", i, 1 + i % 5, 5_000_000 + i))
        .collect();
    let bytes: usize = lines.iter().map(String::len).sum();
    eprintln!(
        "parse: {} watch lines, {} bytes on average",
        lines.len(),
        bytes / lines.len()
    );
    // Both parsers read the same fields from every line before anything is timed.
    for l in &lines {
        let a: Line<'_> = serde_json::from_str(l).expect("serde_json parses the line");
        let b: Line<'_> = sonic_rs::from_str(l).expect("sonic-rs parses the line");
        assert_eq!(touch(&a), touch(&b));
    }
    let mut g = c.benchmark_group("parse_watch_line");
    g.throughput(Throughput::Elements(1));
    let cycle = |f: fn(&str) -> usize| {
        let lines = &lines;
        let mut i = 0;
        move || {
            let l = &lines[i % lines.len()];
            i += 1;
            f(black_box(l))
        }
    };
    g.bench_function("serde_json_value", |b| {
        b.iter(cycle(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON");
            v.as_object().map_or(0, |o| o.len())
        }))
    });
    g.bench_function("serde_json_borrowed", |b| {
        b.iter(cycle(|l| {
            let line: Line<'_> = serde_json::from_str(l).expect("a watch line");
            touch(&line)
        }))
    });
    g.bench_function("sonic_value", |b| {
        b.iter(cycle(|l| {
            use sonic_rs::JsonContainerTrait;
            let v: sonic_rs::Value = sonic_rs::from_str(l).expect("JSON");
            v.as_object().map_or(0, |o| o.len())
        }))
    });
    g.bench_function("sonic_borrowed", |b| {
        b.iter(cycle(|l| {
            let line: Line<'_> = sonic_rs::from_str(l).expect("a watch line");
            touch(&line)
        }))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = parse
}
criterion_main!(benches);
