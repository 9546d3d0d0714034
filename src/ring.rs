//! Bounded lock-free rings between the stages of the hot path: sources → pipeline (the ingest ring) and
//! pipeline → each sink. Its own module because both sides use it: neither the pipeline nor the sinks own it.
//!
//! The storage is crossbeam's `ArrayQueue` (a lock-free bounded MPMC array queue, allocation-free after
//! construction), made on the first push rather than with the ring: a ring holds `capacity` slots of 16 bytes
//! (an `Arc` and a stamp), 128 KiB for the default 8192, and a sink that never gets a record (an idle agent, a
//! webhook for rare Events) should not keep them resident. The bound, the drops and the order are the same as
//! with an array made up front; the only cost is one atomic load per operation. Waiting is done with
//! `tokio::sync::Notify`, only when a ring is empty (consumer) or full (producer that chose to wait): the
//! common case, an uncontended push and pop, touches two atomics (three with the load) and takes no lock.
//! `benches/ring.rs` compares it with `tokio::sync::mpsc` and a mutex-guarded `VecDeque`.
//!
//! Two ways to push, matching client-go's broadcaster: [`Ring::push`] waits for room (used where losing the
//! item would lose data, source → pipeline), [`Ring::try_push`] drops and counts (pipeline → each log sink, so
//! one slow sink never holds up the others). The pipeline waits for [`Ring::room`] in the metrics sink's ring
//! before it fans out, because a record dropped there would be an occurrence never counted.
//!
//! Two ways for a sink to wait for its next batch: [`Ring::ready`] lingers, then the sink drains what is there
//! (OTLP, JSON lines); [`Ring::gather`] takes record by record until the batch is full or its deadline
//! passes (webhook, Kafka: a batch is one request, bounded by count or bytes).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;
use tokio::sync::Notify;

/// The ring was closed: no more items will be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ring {0} is closed")]
pub struct Closed(pub &'static str);

/// What a consumer's batch says when [`Ring::gather`] hands it an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// The item was not kept and the batch is still empty: wait for another first item, no deadline runs.
    Empty,
    /// The batch has room for more. The answer to the first item kept starts the deadline, `linger` later.
    Room { linger: std::time::Duration },
    /// The batch is full: it goes now.
    Full,
}

/// How [`Ring::gather`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gathered {
    /// A batch ended by being full or by its deadline; more may follow.
    Batch,
    /// A batch ended by the ring closing: deliver it, then stop.
    Last,
    /// The ring was closed and drained before a batch began: nothing to deliver.
    Closed,
}

#[derive(Debug)]
pub struct Ring<T> {
    name: &'static str,
    capacity: usize,
    /// Made by the first push (see the module header); empty until then.
    queue: OnceLock<ArrayQueue<T>>,
    not_empty: Notify,
    not_full: Notify,
    closed: AtomicBool,
    dropped: AtomicU64,
}

impl<T> Ring<T> {
    /// `capacity` must be at least 1.
    pub fn new(name: &'static str, capacity: usize) -> Ring<T> {
        Ring {
            name,
            capacity: capacity.max(1),
            queue: OnceLock::new(),
            not_empty: Notify::new(),
            not_full: Notify::new(),
            closed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The storage, made now if this is the first item.
    fn storage(&self) -> &ArrayQueue<T> {
        self.queue.get_or_init(|| ArrayQueue::new(self.capacity))
    }

    /// Into the storage, waking the consumer; the item back when the ring is full.
    fn offer(&self, item: T) -> Result<(), T> {
        self.storage().push(item)?;
        self.not_empty.notify_one();
        Ok(())
    }

    /// Push without waiting. On a full (or closed) ring the item is dropped, counted, and handed back.
    pub fn try_push(&self, item: T) -> Result<(), T> {
        if self.closed.load(Ordering::Relaxed) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(item);
        }
        self.offer(item).inspect_err(|_| {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// Push, waiting while the ring is full. Fails only when the ring is closed.
    pub async fn push(&self, mut item: T) -> Result<(), Closed> {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(Closed(self.name));
            }
            // A ring with room, the common case, takes the item without a waiter being registered (enabling
            // a `Notified` takes the `Notify`'s lock and dropping it takes it again: 2-3 % of a list's profile).
            match self.offer(item) {
                Ok(()) => return Ok(()),
                Err(back) => item = back,
            }
            // Full: register interest, then try once more, so a pop between the attempt and the wait is not
            // missed.
            let room = self.not_full.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.offer(item) {
                Ok(()) => return Ok(()),
                Err(back) => item = back,
            }
            room.await;
        }
    }

    /// Wait until the ring has room for one more item, or is closed. For a producer that is the ring's only
    /// one and must not lose an item but has other work to do first (the pipeline, before it fans a record
    /// out to the metrics sink's ring): after `room`, its next `try_push` succeeds.
    pub async fn room(&self) {
        loop {
            if self.len() < self.capacity || self.closed.load(Ordering::Acquire) {
                return;
            }
            let room = self.not_full.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.len() < self.capacity || self.closed.load(Ordering::Acquire) {
                return;
            }
            room.await;
        }
    }

    /// Pop without waiting.
    pub fn try_pop(&self) -> Option<T> {
        let item = self.queue.get()?.pop();
        if item.is_some() {
            self.not_full.notify_one();
        }
        item
    }

    /// Pop, waiting while the ring is empty. `None` once the ring is closed and drained.
    /// Meant for a single consumer per ring.
    pub async fn pop(&self) -> Option<T> {
        loop {
            if let Some(item) = self.try_pop() {
                return Some(item);
            }
            if self.closed.load(Ordering::Acquire) {
                // A push may have raced with close: drain before reporting the end.
                return self.try_pop();
            }
            let more = self.not_empty.notified();
            tokio::pin!(more);
            more.as_mut().enable();
            if let Some(item) = self.try_pop() {
                return Some(item);
            }
            if self.closed.load(Ordering::Acquire) {
                continue;
            }
            more.await;
        }
    }

    /// Wait until the ring holds an item, then, unless it already holds a good part of its capacity, let
    /// more arrive for `linger` before returning; the consumer then drains with [`Ring::try_pop`]. `false`
    /// once the ring is closed and empty.
    ///
    /// For consumers that work in batches and need no item the moment it is pushed (the sinks). Waking a
    /// parked task costs a futex call and a context switch; woken per item, a trickle of 10k Events/s cost
    /// each sink 10k of those a second, more CPU than handling the Events. Lingering, a sink wakes at most
    /// once per `linger`, and a burst still never waits (a ring filling up is drained at once).
    pub async fn ready(&self, linger: std::time::Duration) -> bool {
        loop {
            if !self.is_empty() {
                break;
            }
            if self.closed.load(Ordering::Acquire) {
                return !self.is_empty();
            }
            let more = self.not_empty.notified();
            tokio::pin!(more);
            more.as_mut().enable();
            if !self.is_empty() || self.closed.load(Ordering::Acquire) {
                continue;
            }
            more.await;
        }
        if self.len() < self.capacity / 8 && !self.closed.load(Ordering::Acquire) {
            tokio::time::sleep(linger).await;
        }
        true
    }

    /// Gather one batch: wait for a first item, then take more, in ring order, until `add` answers
    /// [`Fill::Full`], the deadline its first [`Fill::Room`] set passes, or the ring closes. `add` owns the
    /// batch, so it decides what counts towards full (records, bytes) and may drop an item (a filter).
    ///
    /// For sinks that send each batch as one request with a latency budget (webhook, Kafka): unlike
    /// [`Ring::ready`], the wait for the next item ends at once when it arrives, so a batch goes the
    /// moment it is full and never later than its deadline.
    pub async fn gather(&self, mut add: impl FnMut(T) -> Fill) -> Gathered {
        let deadline = loop {
            let Some(first) = self.pop().await else {
                return Gathered::Closed;
            };
            match add(first) {
                Fill::Empty => {}
                Fill::Room { linger } => break tokio::time::Instant::now() + linger,
                Fill::Full => return Gathered::Batch,
            }
        };
        loop {
            let next = match self.try_pop() {
                Some(item) => item,
                None => tokio::select! {
                    next = self.pop() => match next {
                        Some(item) => item,
                        None => return Gathered::Last,
                    },
                    _ = tokio::time::sleep_until(deadline) => return Gathered::Batch,
                },
            };
            if add(next) == Fill::Full {
                return Gathered::Batch;
            }
        }
    }

    /// Stop accepting items; the consumer drains what is left, then sees `None`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.not_empty.notify_waiters();
        self.not_empty.notify_one();
        self.not_full.notify_waiters();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn len(&self) -> usize {
        self.queue.get().map_or(0, ArrayQueue::len)
    }

    pub fn is_empty(&self) -> bool {
        self.queue.get().is_none_or(ArrayQueue::is_empty)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Items refused by `try_push` since the ring was made.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn room_waits_for_a_pop_of_a_full_ring_and_not_for_a_closed_one() {
        let ring = Arc::new(Ring::new("t", 2));
        ring.room().await;
        assert!(ring.try_push(1).is_ok() && ring.try_push(2).is_ok());
        let waiting = tokio::spawn({
            let ring = ring.clone();
            async move { ring.room().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a full ring has no room");
        assert_eq!(ring.try_pop(), Some(1));
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert!(
            ring.try_push(3).is_ok(),
            "room means the next push succeeds"
        );
        ring.close();
        tokio::time::timeout(Duration::from_secs(5), ring.room())
            .await
            .unwrap();
    }

    #[test]
    fn storage_is_made_by_the_first_push_with_the_full_bound() {
        let r: Ring<u32> = Ring::new("t", 3);
        assert!(r.queue.get().is_none());
        assert_eq!((r.len(), r.is_empty(), r.capacity()), (0, true, 3));
        assert_eq!(r.try_pop(), None);
        assert!(
            r.queue.get().is_none(),
            "popping an empty ring allocates nothing"
        );
        for i in 0..3 {
            assert!(r.try_push(i).is_ok());
        }
        assert_eq!(r.queue.get().map(ArrayQueue::capacity), Some(3));
        assert_eq!(r.try_push(9), Err(9));
        assert_eq!((r.len(), r.dropped()), (3, 1));
        let closed: Ring<u32> = Ring::new("c", 0);
        closed.close();
        assert_eq!(closed.try_push(1), Err(1));
        assert_eq!((closed.capacity(), closed.dropped()), (1, 1));
        assert!(
            closed.queue.get().is_none(),
            "a push refused by a closed ring allocates nothing"
        );
    }

    #[test]
    fn try_push_drops_and_counts_when_full() {
        let r = Ring::new("t", 2);
        assert!(r.try_push(1).is_ok());
        assert!(r.try_push(2).is_ok());
        assert_eq!(r.try_push(3), Err(3));
        assert_eq!(r.dropped(), 1);
        assert_eq!(r.len(), 2);
        assert_eq!(r.try_pop(), Some(1));
        assert!(r.try_push(4).is_ok());
        assert_eq!(r.try_pop(), Some(2));
        assert_eq!(r.try_pop(), Some(4));
        assert_eq!(r.try_pop(), None);
    }

    #[tokio::test]
    async fn push_waits_for_room_and_loses_nothing() {
        let r = Arc::new(Ring::new("t", 4));
        let producer = {
            let r = r.clone();
            tokio::spawn(async move {
                for i in 0..10_000u32 {
                    r.push(i).await.unwrap();
                }
                r.close();
            })
        };
        let mut expected = 0u32;
        while let Some(v) = r.pop().await {
            assert_eq!(v, expected);
            expected += 1;
        }
        producer.await.unwrap();
        assert_eq!(expected, 10_000);
        assert_eq!(r.dropped(), 0);
    }

    #[tokio::test]
    async fn ready_lingers_for_a_batch_and_ends_after_close_and_drain() {
        let r = Arc::new(Ring::new("t", 1024));
        let producer = {
            let r = r.clone();
            tokio::spawn(async move {
                for i in 0..10_000u32 {
                    r.push(i).await.unwrap();
                    if i % 100 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                r.close();
            })
        };
        let (mut expected, mut wakes) = (0u32, 0u32);
        while r.ready(Duration::from_millis(2)).await {
            wakes += 1;
            while let Some(v) = r.try_pop() {
                assert_eq!(v, expected);
                expected += 1;
            }
        }
        producer.await.unwrap();
        assert_eq!(expected, 10_000);
        assert!(wakes < 10_000, "{wakes} wakes for 10 000 items");
        assert!(r.is_empty() && r.is_closed());
    }

    /// A batch of at most `size` items and `bytes` bytes (an item of value `n` weighs `n` bytes), lingering
    /// `linger`; odd items are dropped, as a filter would.
    fn batch(
        into: &mut Vec<u32>,
        size: usize,
        bytes: u32,
        linger: Duration,
    ) -> impl FnMut(u32) -> Fill + '_ {
        move |item| {
            if item % 2 == 0 {
                into.push(item);
            }
            if into.is_empty() {
                Fill::Empty
            } else if into.len() < size && into.iter().sum::<u32>() < bytes {
                Fill::Room { linger }
            } else {
                Fill::Full
            }
        }
    }

    #[tokio::test]
    async fn gather_ends_a_batch_when_full_by_count_or_bytes_and_keeps_ring_order() {
        let r = Ring::new("t", 16);
        for i in [2, 4, 6, 8, 10, 12, 14] {
            r.try_push(i).unwrap();
        }
        let (mut got, long) = (Vec::new(), Duration::from_secs(3600));
        assert_eq!(
            r.gather(batch(&mut got, 3, 1000, long)).await,
            Gathered::Batch
        );
        assert_eq!(got, [2, 4, 6], "full by count");
        got.clear();
        assert_eq!(
            r.gather(batch(&mut got, 9, 18, long)).await,
            Gathered::Batch
        );
        assert_eq!(got, [8, 10], "full by bytes: 18 reached with the second");
        got.clear();
        assert_eq!(
            r.gather(batch(&mut got, 1, 1000, long)).await,
            Gathered::Batch
        );
        assert_eq!(got, [12], "a first item may fill the batch alone");
        assert_eq!(r.try_pop(), Some(14));
    }

    #[tokio::test]
    async fn gather_sends_a_batch_at_its_deadline_and_starts_it_with_the_first_item_kept() {
        let r = Arc::new(Ring::new("t", 16));
        let linger = Duration::from_millis(100);
        let producer = {
            let r = r.clone();
            tokio::spawn(async move {
                // Dropped items before the first kept one start no deadline.
                r.try_push(1).unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
                r.try_push(3).unwrap();
                r.try_push(2).unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
                r.try_push(4).unwrap();
                tokio::time::sleep(Duration::from_millis(400)).await;
                r.try_push(6).unwrap();
            })
        };
        let mut got = Vec::new();
        let start = tokio::time::Instant::now();
        assert_eq!(
            r.gather(batch(&mut got, 10, 1000, linger)).await,
            Gathered::Batch
        );
        let took = start.elapsed();
        assert_eq!(
            got,
            [2, 4],
            "the item after the deadline is left for the next batch"
        );
        assert!(
            took >= Duration::from_millis(390) && took < Duration::from_millis(650),
            "the batch went {took:?} after the start, 100 ms after its first kept item"
        );
        producer.await.unwrap();
        assert_eq!(r.try_pop(), Some(6));
    }

    #[tokio::test]
    async fn gather_tells_a_last_batch_from_a_closed_ring() {
        let r = Arc::new(Ring::new("t", 16));
        r.try_push(2).unwrap();
        let closer = {
            let r = r.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                r.close();
            })
        };
        let mut got = Vec::new();
        let long = Duration::from_secs(3600);
        assert_eq!(
            r.gather(batch(&mut got, 10, 1000, long)).await,
            Gathered::Last
        );
        assert_eq!(got, [2], "closing ends the batch before its deadline");
        closer.await.unwrap();
        assert_eq!(
            r.gather(batch(&mut got, 10, 1000, long)).await,
            Gathered::Closed
        );
        let dropped_only = Ring::new("d", 4);
        dropped_only.try_push(1).unwrap();
        dropped_only.close();
        got.clear();
        assert_eq!(
            dropped_only.gather(batch(&mut got, 10, 1000, long)).await,
            Gathered::Closed,
            "a ring that held only dropped items closes without a batch"
        );
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn close_wakes_a_waiting_consumer_after_draining() {
        let r = Arc::new(Ring::new("t", 4));
        r.try_push(7).unwrap();
        let consumer = {
            let r = r.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(v) = r.pop().await {
                    got.push(v);
                }
                got
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        r.close();
        assert_eq!(consumer.await.unwrap(), vec![7]);
        assert_eq!(r.push(1).await, Err(Closed("t")));
    }
}
