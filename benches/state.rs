//! Per-Event count state: bytes per tracked Event and the time of one observation.
//!
//! [`Accounting`] (the agent's) against the layout it replaced, kept here as `UidKeyed`: the UID as an
//! `Arc<str>` key in the map and again in the eviction order. Memory is counted by a counting global
//! allocator (stats_alloc, a dev-dependency: benches only), as the net bytes the state holds after
//! 10k, 100k and 1M distinct Events (UUID-shaped UIDs, as the API server makes them), and after churn: 50k
//! live Events while 200k more are created and deleted (Events expiring by TTL). Timing (criterion): one
//! observation of a known Event (the count-increase path) and of a new one, hash of the UID included.
//!
//! Run with `cargo bench --bench state`; see `BENCHMARKS.md`, "Hot path".

// A test binary: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use herald::config::StartupPolicy;
use herald::source::accounting::Accounting;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The per-Event state before: UID-keyed, as `src/source/accounting.rs` had it (the insert and update
/// paths only; relists and eviction do not change what an entry costs).
struct UidKeyed {
    known: ahash::HashMap<Arc<str>, (u32, u32)>,
    order: VecDeque<Arc<str>>,
}

impl UidKeyed {
    fn new() -> UidKeyed {
        UidKeyed {
            known: ahash::HashMap::default(),
            order: VecDeque::new(),
        }
    }

    fn observe(&mut self, key: &str, count: u32) -> u32 {
        if let Some(t) = self.known.get_mut(key) {
            let delta = count.saturating_sub(t.0);
            t.0 = t.0.max(count);
            return delta;
        }
        let key: Arc<str> = Arc::from(key);
        self.known.insert(key.clone(), (count, 0));
        self.order.push_back(key);
        count
    }

    fn forget(&mut self, key: &str) {
        self.known.remove(key);
    }
}

/// A UUID-shaped UID, distinct for every `i`.
fn uid(i: u64) -> String {
    let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!(
        "{:08x}-{:04x}-4{:03x}-9{:03x}-{:012x}",
        x >> 32,
        (x >> 16) & 0xffff,
        x & 0xfff,
        i & 0xfff,
        i
    )
}

/// Net heap bytes allocated while `f` runs and still held when it returns (with what it returns).
fn held<T>(f: impl FnOnce() -> T) -> (T, i64) {
    let region = Region::new(GLOBAL);
    let value = f();
    let s = region.change();
    // stats_alloc adds a realloc's growth to `bytes_allocated` (and its shrink to `bytes_deallocated`)
    // already; `bytes_reallocated` is the same difference again, so it is left out.
    let net = s.bytes_allocated as i64 - s.bytes_deallocated as i64;
    (value, net)
}

fn memory() {
    for n in [10_000u64, 100_000, 1_000_000] {
        let keys: Vec<String> = (0..n).map(uid).collect();
        let (a, now) = held(|| {
            let mut a = Accounting::new(StartupPolicy::Replay, 2_000_000);
            for k in &keys {
                a.observe(k, 1);
            }
            a
        });
        let (b, before) = held(|| {
            let mut b = UidKeyed::new();
            for k in &keys {
                b.observe(k, 1);
            }
            b
        });
        assert_eq!((a.len(), b.known.len()), (n as usize, n as usize));
        println!(
            "state/bytes_per_event/{n}: hash-keyed {:.1} B, UID-keyed {:.1} B",
            now as f64 / n as f64,
            before as f64 / n as f64
        );
        drop((a, b));
    }
    // TTL churn: 50k live, 200k more created and deleted one by one behind them.
    let live = 50_000u64;
    let keys: Vec<String> = (0..live + 200_000).map(uid).collect();
    let (a, now) = held(|| {
        let mut a = Accounting::new(StartupPolicy::Replay, 200_000);
        for (i, k) in keys.iter().enumerate() {
            a.observe(k, 1);
            if i as u64 >= live {
                a.forget(&keys[i - live as usize]);
            }
        }
        a
    });
    let (b, before) = held(|| {
        let mut b = UidKeyed::new();
        for (i, k) in keys.iter().enumerate() {
            b.observe(k, 1);
            if i as u64 >= live {
                b.forget(&keys[i - live as usize]);
            }
        }
        b
    });
    assert_eq!((a.len(), b.known.len()), (live as usize, live as usize));
    println!(
        "state/bytes_per_event/churn_50k_live: hash-keyed {:.1} B, UID-keyed {:.1} B (its order as it was: never compacted below 2 × max_tracked_objects)",
        now as f64 / live as f64,
        before as f64 / live as f64
    );
}

fn observe(c: &mut Criterion) {
    memory();
    let n = 100_000u64;
    let keys: Vec<String> = (0..n).map(uid).collect();
    let mut g = c.benchmark_group("state");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);

    let mut a = Accounting::new(StartupPolicy::Replay, 200_000);
    let mut b = UidKeyed::new();
    for k in &keys {
        a.observe(k, 1);
        b.observe(k, 1);
    }
    let mut i = 0usize;
    let mut count = 1u32;
    g.bench_function("known_hash_keyed", |bench| {
        bench.iter(|| {
            i = (i + 7919) % keys.len();
            count += 1;
            black_box(a.observe(&keys[i], count))
        })
    });
    g.bench_function("known_uid_keyed", |bench| {
        bench.iter(|| {
            i = (i + 7919) % keys.len();
            count += 1;
            black_box(b.observe(&keys[i], count))
        })
    });
    let fresh: Vec<String> = (n..n + 1000).map(uid).collect();
    g.bench_function("new_1000_hash_keyed", |bench| {
        bench.iter_batched_ref(
            || Accounting::new(StartupPolicy::Replay, 200_000),
            |a| {
                for k in &fresh {
                    black_box(a.observe(k, 1));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("new_1000_uid_keyed", |bench| {
        bench.iter_batched_ref(
            UidKeyed::new,
            |b| {
                for k in &fresh {
                    black_box(b.observe(k, 1));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, observe);
criterion_main!(benches);
