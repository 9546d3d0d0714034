//! Why herald's rings are crossbeam's `ArrayQueue` + `tokio::sync::Notify` (the ring candidates measured side by side).
//!
//! Three bounded queues carrying what herald's rings carry, an `Arc<Record>` (one pointer):
//! - `ring`: herald's [`Ring`] (lock-free `ArrayQueue`, `Notify` only to wait when empty/full);
//! - `tokio_mpsc`: `tokio::sync::mpsc::channel` (bounded, semaphore-based);
//! - `mutex_deque`: a `std::sync::Mutex<VecDeque>` with the same two `Notify`s, the obvious hand-rolled design.
//!
//! Groups:
//! - `uncontended`: one push then one pop on one thread, no waiting: the raw cost of an operation
//!   (`ring_push_await`: the waiting `push` the sources use, into a ring with room).
//! - `spsc` / `mpsc_2p1c`: tasks on a 2-worker tokio runtime move `BATCH` items through a queue of
//!   `CAPACITY` with the waiting `push`/`pop` (as source → pipeline does). Reported per item.
//! - `full_try_push`: the drop path (pipeline → a stalled sink): `try_push` on a full queue, item handed back,
//!   plus herald's `SinkQueue::offer`, which also bumps the drop counter.
//!
//! Run with `cargo bench --bench ring`; see `BENCHMARKS.md` for results on the reference machine.

// A test binary: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use herald::config::MetricsConfig;
use herald::record::{EventRecord, Record};
use herald::ring::Ring;
use herald::sink::{Shared, SinkQueue};
use herald::telemetry::Telemetry;
use tokio::sync::{Notify, mpsc};

/// Items moved per measured iteration of the threaded groups.
const BATCH: u64 = 10_000;
/// Queue capacity for the threaded groups (the default sink queue is 8192; smaller makes the full/empty
/// waiting paths show up more often).
const CAPACITY: usize = 1024;

fn item() -> Shared {
    Arc::new(Record::Event(EventRecord::for_test(
        "default", "Pod", "web-0", "BackOff", "Warning",
    )))
}

/// The baseline a lock-free ring has to beat: a mutex-guarded deque with the same waiting scheme as [`Ring`].
struct MutexDeque<T> {
    queue: Mutex<VecDeque<T>>,
    capacity: usize,
    not_empty: Notify,
    not_full: Notify,
}

impl<T> MutexDeque<T> {
    fn new(capacity: usize) -> MutexDeque<T> {
        MutexDeque {
            queue: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            not_empty: Notify::new(),
            not_full: Notify::new(),
        }
    }

    fn try_push(&self, item: T) -> Result<(), T> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= self.capacity {
            return Err(item);
        }
        q.push_back(item);
        drop(q);
        self.not_empty.notify_one();
        Ok(())
    }

    fn try_pop(&self) -> Option<T> {
        let item = self
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        if item.is_some() {
            self.not_full.notify_one();
        }
        item
    }

    async fn push(&self, mut item: T) {
        loop {
            let room = self.not_full.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_push(item) {
                Ok(()) => return,
                Err(back) => item = back,
            }
            room.await;
        }
    }

    async fn pop(&self) -> T {
        loop {
            if let Some(item) = self.try_pop() {
                return item;
            }
            let more = self.not_empty.notified();
            tokio::pin!(more);
            more.as_mut().enable();
            if let Some(item) = self.try_pop() {
                return item;
            }
            more.await;
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("tokio runtime")
}

/// One push then one pop on the same thread, never waiting.
fn uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("uncontended");
    g.throughput(Throughput::Elements(1));
    let it = item();

    let ring = Ring::new("bench", CAPACITY);
    g.bench_function("ring", |b| {
        b.iter(|| {
            let _ = ring.try_push(black_box(it.clone()));
            black_box(ring.try_pop())
        })
    });

    // The waiting push (source → pipeline) when there is room: ready at its first poll.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    g.bench_function("ring_push_await", |b| {
        b.iter(|| {
            let push = std::pin::pin!(ring.push(black_box(it.clone())));
            assert!(
                push.poll(&mut cx).is_ready(),
                "a ring with room takes the item"
            );
            black_box(ring.try_pop())
        })
    });

    let (tx, mut rx) = mpsc::channel::<Shared>(CAPACITY);
    g.bench_function("tokio_mpsc", |b| {
        b.iter(|| {
            let _ = tx.try_send(black_box(it.clone()));
            black_box(rx.try_recv().ok())
        })
    });

    let deque = MutexDeque::new(CAPACITY);
    g.bench_function("mutex_deque", |b| {
        b.iter(|| {
            let _ = deque.try_push(black_box(it.clone()));
            black_box(deque.try_pop())
        })
    });
    g.finish();
}

/// Move `iters * BATCH` items from `producers` tasks to one consumer task; returns the elapsed time.
fn transfer_ring(rt: &tokio::runtime::Runtime, producers: u64, iters: u64) -> Duration {
    let total = iters * BATCH;
    let per_producer = total / producers;
    let ring = Arc::new(Ring::<Shared>::new("bench", CAPACITY));
    let it = item();
    rt.block_on(async {
        let start = Instant::now();
        let consumer = {
            let ring = ring.clone();
            tokio::spawn(async move {
                for _ in 0..per_producer * producers {
                    black_box(ring.pop().await);
                }
            })
        };
        for _ in 0..producers {
            let (ring, it) = (ring.clone(), it.clone());
            tokio::spawn(async move {
                for _ in 0..per_producer {
                    ring.push(it.clone()).await.expect("ring open");
                }
            });
        }
        consumer.await.expect("consumer");
        start.elapsed()
    })
}

fn transfer_mpsc(rt: &tokio::runtime::Runtime, producers: u64, iters: u64) -> Duration {
    let total = iters * BATCH;
    let per_producer = total / producers;
    let it = item();
    rt.block_on(async {
        let start = Instant::now();
        let (tx, mut rx) = mpsc::channel::<Shared>(CAPACITY);
        let consumer = tokio::spawn(async move {
            for _ in 0..per_producer * producers {
                black_box(rx.recv().await);
            }
        });
        for _ in 0..producers {
            let (tx, it) = (tx.clone(), it.clone());
            tokio::spawn(async move {
                for _ in 0..per_producer {
                    tx.send(it.clone()).await.expect("channel open");
                }
            });
        }
        drop(tx);
        consumer.await.expect("consumer");
        start.elapsed()
    })
}

fn transfer_deque(rt: &tokio::runtime::Runtime, producers: u64, iters: u64) -> Duration {
    let total = iters * BATCH;
    let per_producer = total / producers;
    let deque = Arc::new(MutexDeque::<Shared>::new(CAPACITY));
    let it = item();
    rt.block_on(async {
        let start = Instant::now();
        let consumer = {
            let deque = deque.clone();
            tokio::spawn(async move {
                for _ in 0..per_producer * producers {
                    black_box(deque.pop().await);
                }
            })
        };
        for _ in 0..producers {
            let (deque, it) = (deque.clone(), it.clone());
            tokio::spawn(async move {
                for _ in 0..per_producer {
                    deque.push(it.clone()).await;
                }
            });
        }
        consumer.await.expect("consumer");
        start.elapsed()
    })
}

fn threaded(c: &mut Criterion, group: &str, producers: u64) {
    let rt = runtime();
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("ring", |b| {
        b.iter_custom(|iters| transfer_ring(&rt, producers, iters))
    });
    g.bench_function("tokio_mpsc", |b| {
        b.iter_custom(|iters| transfer_mpsc(&rt, producers, iters))
    });
    g.bench_function("mutex_deque", |b| {
        b.iter_custom(|iters| transfer_deque(&rt, producers, iters))
    });
    g.finish();
}

fn spsc(c: &mut Criterion) {
    threaded(c, "spsc", 1);
}

fn mpsc_2p1c(c: &mut Criterion) {
    threaded(c, "mpsc_2p1c", 2);
}

/// The drop path: a full queue refuses an item and hands it back (no allocation, no Arc traffic counted).
fn full_try_push(c: &mut Criterion) {
    let mut g = c.benchmark_group("full_try_push");
    g.throughput(Throughput::Elements(1));

    let ring = Ring::new("bench", CAPACITY);
    while ring.try_push(item()).is_ok() {}
    let mut slot = Some(item());
    g.bench_function("ring", |b| {
        b.iter(|| {
            let it = slot.take().expect("item");
            slot = Some(ring.try_push(black_box(it)).expect_err("ring is full"));
        })
    });

    let (tx, _rx) = mpsc::channel::<Shared>(CAPACITY);
    while tx.try_send(item()).is_ok() {}
    let mut slot = Some(item());
    g.bench_function("tokio_mpsc", |b| {
        b.iter(|| {
            let it = slot.take().expect("item");
            slot = Some(match tx.try_send(black_box(it)) {
                Err(mpsc::error::TrySendError::Full(it)) => it,
                other => panic!("channel should be full: {other:?}"),
            });
        })
    });

    let deque = MutexDeque::new(CAPACITY);
    while deque.try_push(item()).is_ok() {}
    let mut slot = Some(item());
    g.bench_function("mutex_deque", |b| {
        b.iter(|| {
            let it = slot.take().expect("item");
            slot = Some(deque.try_push(black_box(it)).expect_err("deque is full"));
        })
    });

    // What the pipeline really does per refused record: Arc clone, try_push, drop counter, Arc drop.
    let telemetry = Telemetry::new(&MetricsConfig::default());
    let queue = SinkQueue::new("bench", CAPACITY, true, &telemetry);
    while queue.ring.try_push(item()).is_ok() {}
    let it = item();
    g.bench_function("sink_queue_offer", |b| {
        b.iter(|| queue.offer(black_box(&it)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = uncontended, spsc, mpsc_2p1c, full_try_push
}
criterion_main!(benches);
