//! Per-Event cost of herald's hot path, on real Events.
//!
//! - `decode/*`: one core/v1 Event JSON into an [`EventRecord`] (lenient decode + normalise + interning),
//!   both as a bare object and as a watch line (`{"type":"ADDED","object":{...}}`), as the watcher sees it.
//! - `pipeline/*`: [`Pipeline::process`] per record with the default configuration: classify, filter, dedup,
//!   redact, and offer to two sink queues (metrics, which takes duplicates, and json, which does not).
//!   `unique` gives every record its own fingerprint; `duplicate` repeats one fingerprint inside the TTL.
//!
//! The Events come from the shared fixtures (`../shared/fixtures`, or `HERALD_FIXTURES`), read at run time;
//! without them an inline hand-written sample is used and a message says so.
//!
//! Run with `cargo bench --bench pipeline`; see `BENCHMARKS.md`.

// A test binary: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use herald::config::Config;
use herald::pipeline::Pipeline;
use herald::record::{EventRecord, LogEntry, Record};
use herald::sink::{Shared, SinkQueue};
use herald::source::decode::{CoreV1, LeanEvent};
use herald::telemetry::Telemetry;
use kube::core::WatchEvent;

mod common;
use common::inputs;

/// Records moved through the pipeline per untimed drain of the sink queues (below their capacity, so
/// nothing is dropped and only the decision path is measured).
const CHUNK: usize = 2048;

/// One Event object decoded and normalised, as the source does it.
fn to_record(json: &str) -> Arc<Record> {
    let event: LeanEvent<CoreV1> = serde_json::from_str(json).expect("a core/v1 Event");
    event.into_record().expect("a valid Event")
}

fn decode(c: &mut Criterion) {
    let inputs = inputs();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("object", |b| {
        b.iter(|| black_box(to_record(black_box(&inputs.object))))
    });
    g.bench_function("watch_line", |b| {
        b.iter(|| {
            let line: WatchEvent<LeanEvent<CoreV1>> =
                serde_json::from_str(black_box(&inputs.watch_line)).expect("a watch line");
            match line {
                WatchEvent::Added(event) => black_box(event.into_record().expect("a valid Event")),
                _ => panic!("expected an ADDED line"),
            }
        })
    });
    g.finish();
}

/// The fixture Events as records, in the order the pipeline will see them (cycled).
fn base_records() -> Vec<EventRecord> {
    let inputs = inputs();
    inputs
        .objects
        .iter()
        .map(|o| to_record(o).log_entry().expect("an Event").event.clone())
        .collect()
}

/// Time `Pipeline::process` over `iters` records; building the Arcs and draining the sinks is not timed.
/// `unique` gives each record its own involved-object name (so its own dedup fingerprint); otherwise every
/// record is the first Event again, a duplicate after the first.
fn run_pipeline(base: &[EventRecord], unique: bool, iters: u64) -> Duration {
    let config = Config::default();
    let telemetry = Telemetry::new(&config.metrics);
    let sinks = vec![
        SinkQueue::new("metrics", CHUNK, true, &telemetry),
        SinkQueue::new("json", CHUNK, false, &telemetry),
    ];
    let rings: Vec<_> = sinks.iter().map(|s| s.ring.clone()).collect();
    let mut pipeline = Pipeline::new(&config, sinks, &telemetry).expect("default config");
    let now_wall = jiff::Timestamp::now();
    let mut left = iters;
    let mut elapsed = Duration::ZERO;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        let batch: Vec<Shared> = (0..n)
            .map(|i| {
                let mut r = base[if unique { i % base.len() } else { 0 }].clone();
                if unique {
                    r.regarding.name = format!("{}-{left}-{i}", r.regarding.name).into();
                }
                Arc::new(Record::Event(r))
            })
            .collect();
        let start = Instant::now();
        for record in batch {
            pipeline.process(record, now_wall, start);
        }
        elapsed += start.elapsed();
        for ring in &rings {
            while ring.try_pop().is_some() {}
        }
        telemetry.run_upkeep();
        left -= n as u64;
    }
    assert_eq!(
        rings.iter().map(|r| r.dropped()).sum::<u64>(),
        0,
        "a sink dropped: the bench would measure the drop path"
    );
    elapsed
}

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    let base = base_records();
    for (name, unique) in [("unique", true), ("duplicate", false)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| run_pipeline(&base, unique, iters))
        });
    }
    g.finish();
}

/// OTLP: build one `ExportLogsServiceRequest` for a batch of 512 records (grouped per involved object, full
/// attribute mapping) and encode it to protobuf, per record; the same written straight to protobuf bytes
/// (`otlp_wire_512`, what the sink does); and the same records as JSON lines.
fn otlp(c: &mut Criterion) {
    use herald::sink::otlp::encode;
    use herald::sink::shape::Identity;
    use prost::Message;
    let base = base_records();
    let batch: Vec<EventRecord> = (0..512)
        .map(|i| {
            let mut r = base[i % base.len()].clone();
            // 64 distinct involved objects per batch, as in a busy namespace.
            r.regarding.name = format!("{}-{}", r.regarding.name, i % 64).into();
            r
        })
        .collect();
    let id = Identity {
        cluster_name: "bench".into(),
        agent_node: "node-1".into(),
    };
    let mut g = c.benchmark_group("sink");
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("otlp_build_encode_512", |b| {
        b.iter(|| {
            let request = encode::export_request(batch.iter().map(LogEntry::from), &id);
            std::hint::black_box(request.encode_to_vec())
        })
    });
    g.bench_function("otlp_wire_512", |b| {
        let refs: Vec<LogEntry> = batch.iter().map(LogEntry::from).collect();
        let mut encoder = herald::sink::otlp::wire::Encoder::default();
        b.iter(|| std::hint::black_box(encoder.logs(&refs, &id)))
    });
    g.bench_function("json_lines_512", |b| {
        let mut out = Vec::with_capacity(512 * 1024);
        b.iter(|| {
            out.clear();
            for r in &batch {
                herald::sink::json::write_line(&mut out, r.into(), &id);
            }
            std::hint::black_box(out.len())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = decode, pipeline, otlp
}
criterion_main!(benches);
