//! Sinks: where records leave herald. Each sink owns a bounded ring filled by the pipeline's fan-out and
//! drains it on its own task, so a slow or failing sink only ever drops its own records (counted).

use std::sync::Arc;

use metrics::Counter;

use crate::record::Record;
use crate::ring::Ring;
use crate::telemetry::{self, Telemetry};

pub mod config;
pub mod https;
pub mod json;
pub mod kafka;
pub mod metrics_sink;
pub mod otlp;
pub mod shape;
pub mod url;
pub mod webhook;
pub mod webhook_format;

/// How long a sink lets records gather after the first one arrives before it drains its ring
/// ([`Ring::ready`]): short against any sink's latency (a scrape, a 1 s OTLP batch), long enough that a
/// steady stream wakes each sink at most 200 times a second instead of once per record.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// A record shared by every sink that takes it.
pub type Shared = Arc<Record>;

/// The pipeline's side of one sink.
pub struct SinkQueue {
    pub name: &'static str,
    pub ring: Arc<Ring<Shared>>,
    /// Log-like sinks skip records the dedup step marked as duplicates; counting sinks take them.
    pub accepts_duplicates: bool,
    /// The metrics sink also takes the Event watches' checkpoint barriers (it writes the checkpoint).
    pub takes_checkpoints: bool,
    /// The pipeline waits for room in this ring instead of dropping: the metrics sink, whose every dropped
    /// record would be an occurrence never counted. It does no I/O, so waiting for it costs only the time it
    /// takes to count; a full ingest ring then makes the watches wait, as in a storm.
    pub lossless: bool,
    /// The sink writes records' messages (every log-like sink); when none does, the pipeline leaves messages
    /// unredacted, since they go nowhere.
    pub writes_messages: bool,
    pub dropped: Counter,
}

impl SinkQueue {
    pub fn new(
        name: &'static str,
        capacity: usize,
        accepts_duplicates: bool,
        telemetry: &Telemetry,
    ) -> SinkQueue {
        telemetry
            .gauge(telemetry::QUEUE_CAPACITY, &[("queue", name)])
            .set(capacity as f64);
        // Every sink's series exist at 0 from the start (dashboards and `rate()` alerts show 0, not no data),
        // whether or not this kind of sink retries or filters.
        for metric in [
            telemetry::SINK_SENT,
            telemetry::SINK_FAILURES,
            telemetry::SINK_RETRIES,
            telemetry::SINK_FILTERED,
        ] {
            telemetry.declare_counter(metric, &[("sink", name)]);
        }
        SinkQueue {
            name,
            ring: Arc::new(Ring::new(name, capacity)),
            accepts_duplicates,
            takes_checkpoints: false,
            lossless: false,
            writes_messages: true,
            dropped: telemetry.counter(telemetry::QUEUE_DROPPED, &[("queue", name)]),
        }
    }

    /// This sink takes checkpoint barriers.
    pub fn taking_checkpoints(mut self) -> SinkQueue {
        self.takes_checkpoints = true;
        self
    }

    /// The pipeline waits for room in this sink's ring rather than drop (see [`SinkQueue::lossless`]).
    pub fn lossless(mut self) -> SinkQueue {
        self.lossless = true;
        self
    }

    /// This sink never writes a record's message (the metrics sink).
    pub fn without_messages(mut self) -> SinkQueue {
        self.writes_messages = false;
        self
    }

    /// Hand a record to the sink without waiting; a full ring drops it for this sink only (a lossless sink's
    /// ring has room: the pipeline waited for it). A checkpoint
    /// barrier goes only to the sink that takes them, and a full ring refuses it without counting a drop
    /// (the watch sends another on its next tick, as the barrier was not acknowledged).
    pub fn offer(&self, record: &Shared) {
        match &**record {
            Record::Checkpoint(_) => {
                if self.takes_checkpoints {
                    let _ = self.ring.try_push(record.clone());
                }
                return;
            }
            Record::Event(event) if event.duplicate && !self.accepts_duplicates => return,
            Record::Event(_) | Record::Vm(_) => {}
        }
        if self.ring.try_push(record.clone()).is_err() {
            self.dropped.increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Barrier;
    use crate::record::{EventRecord, VmDetails, VmTransition};

    fn queues() -> (SinkQueue, SinkQueue) {
        let t = Telemetry::new(&crate::config::MetricsConfig::default());
        let metrics = SinkQueue::new("metrics", 8, true, &t).taking_checkpoints();
        (metrics, SinkQueue::new("json", 8, false, &t))
    }

    fn vm() -> Record {
        Record::Vm(VmTransition {
            report: EventRecord::for_test("ns", "VirtualMachine", "vm1", "started", "Normal"),
            details: Box::new(VmDetails {
                transition: "started",
                vm: "vm1".into(),
                vm_uid: String::new(),
                node: String::new(),
                source_node: String::new(),
                target_node: String::new(),
                before: "Stopped".into(),
                after: "Running".into(),
                span: None,
            }),
        })
    }

    #[test]
    fn each_kind_of_record_reaches_the_sinks_that_take_it() {
        let (metrics, json) = queues();
        let mut duplicate = EventRecord::for_test("ns", "Pod", "p", "BackOff", "Warning");
        duplicate.duplicate = true;
        let records: [Shared; 4] = [
            Arc::new(EventRecord::for_test("ns", "Pod", "p", "BackOff", "Warning").into()),
            Arc::new(duplicate.into()),
            Arc::new(vm()),
            Arc::new(Record::barrier(0, Barrier::Start)),
        ];
        for r in &records {
            metrics.offer(r);
            json.offer(r);
        }
        let kinds = |q: &SinkQueue| {
            std::iter::from_fn(|| q.ring.try_pop())
                .map(|r| match &*r {
                    Record::Event(e) if e.duplicate => "duplicate",
                    Record::Event(_) => "event",
                    Record::Vm(_) => "vm",
                    Record::Checkpoint(_) => "barrier",
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(kinds(&metrics), ["event", "duplicate", "vm", "barrier"]);
        assert_eq!(kinds(&json), ["event", "vm"]);
        assert_eq!(json.ring.dropped(), 0);
        assert!(Record::barrier(0, Barrier::Start).log_entry().is_none());
        assert!(vm().log_entry().is_some_and(|e| e.vm.is_some()));
    }
}
