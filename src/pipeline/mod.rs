//! The pipeline: one worker takes records off the ingest ring and, for each, classifies it (severity and
//! repeat escalation), filters, deduplicates, redacts the message, and hands it to every sink's own ring.
//!
//! Classification comes before filtering because `filters.min_severity` needs the severity. The worker
//! never waits on a log sink: a full sink ring drops for that sink only ([`SinkQueue::offer`]). It waits for
//! room in the metrics sink's ring (lossless): that sink does no I/O, and a record dropped there would be an
//! occurrence never counted; the ingest ring behind it then makes the watches wait. It owns all its state (no
//! locks), and its loop beats the liveness heartbeat at least once a second while it is not waiting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram};

use crate::config::{Config, DedupConfig};
use crate::health::Health;
use crate::record::{EventRecord, Record};
use crate::sink::{Shared, SinkQueue};
use crate::telemetry::{self, Telemetry};

pub mod classify;
pub mod config;
pub mod dedup;
pub mod filter;
pub mod redact;

use crate::ring::Ring;
use classify::Classifier;
use dedup::Dedup;
use filter::{Filter, Filtered};
use redact::Redactor;

/// Errors building the pipeline from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A redaction rule did not compile (config validation normally catches this first).
    #[error(transparent)]
    Redact(#[from] redact::Error),
}

struct Stats {
    received: Counter,
    filtered: Vec<(Filtered, Counter)>,
    deduplicated: Counter,
    redacted: Counter,
    delay: Histogram,
    processing: Histogram,
    ingest_backlog: Gauge,
    sink_backlog: Vec<Gauge>,
}

pub struct Pipeline {
    classifier: Classifier,
    filter: Filter,
    dedup: Dedup,
    redactor: Redactor,
    sinks: Vec<SinkQueue>,
    stats: Stats,
    /// The dedup settings in force: a reload keeps the dedup windows unless these change.
    dedup_config: DedupConfig,
    reload: Option<tokio::sync::watch::Receiver<Arc<Config>>>,
}

/// The redaction rules for these sinks: messages are left alone when no sink writes them.
fn redactor(config: &Config, sinks: &[SinkQueue]) -> Result<Redactor, redact::Error> {
    let r = Redactor::new(&config.redact)?;
    Ok(if sinks.iter().any(|s| s.writes_messages) {
        r
    } else {
        r.without_messages()
    })
}

impl Pipeline {
    pub fn new(config: &Config, sinks: Vec<SinkQueue>, t: &Telemetry) -> Result<Pipeline, Error> {
        let stats = Stats {
            received: t.counter(telemetry::RECEIVED, &[]),
            filtered: Filtered::ALL
                .iter()
                .map(|f| {
                    (
                        *f,
                        t.counter(telemetry::FILTERED, &[("filter", f.as_str())]),
                    )
                })
                .collect(),
            deduplicated: t.counter(telemetry::DEDUPLICATED, &[]),
            redacted: t.counter(telemetry::REDACTED, &[]),
            delay: t.histogram(telemetry::DELAY, &[]),
            processing: t.histogram(telemetry::PROCESSING, &[]),
            ingest_backlog: t.gauge(telemetry::QUEUE_BACKLOG, &[("queue", "ingest")]),
            sink_backlog: sinks
                .iter()
                .map(|s| t.gauge(telemetry::QUEUE_BACKLOG, &[("queue", s.name)]))
                .collect(),
        };
        Ok(Pipeline {
            classifier: Classifier::new(&config.severity),
            filter: Filter::new(&config.filters),
            dedup: Dedup::new(&config.dedup),
            redactor: redactor(config, &sinks)?,
            sinks,
            stats,
            dedup_config: config.dedup.clone(),
            reload: None,
        })
    }

    /// Follow configuration reloads: each configuration published on `rx` replaces the severity table,
    /// filters, redaction and (when its settings changed) dedup, before the next record.
    pub fn with_reload(mut self, rx: tokio::sync::watch::Receiver<Arc<Config>>) -> Pipeline {
        self.reload = Some(rx);
        self
    }

    /// Apply a new configuration's decisions (it was validated; a redaction rule that still fails to
    /// compile keeps the old rules).
    pub fn reconfigure(&mut self, config: &Config) {
        self.classifier = Classifier::new(&config.severity);
        self.filter = Filter::new(&config.filters);
        match redactor(config, &self.sinks) {
            Ok(r) => self.redactor = r,
            Err(error) => {
                tracing::error!(%error, "reloaded redaction rules refused; the old ones stay")
            }
        }
        if config.dedup != self.dedup_config {
            self.dedup = Dedup::new(&config.dedup);
            self.dedup_config = config.dedup.clone();
        }
    }

    /// A reload published since the last record, if any.
    fn check_reload(&mut self) {
        let Some(rx) = &mut self.reload else { return };
        match rx.has_changed() {
            Ok(true) => {
                let config = rx.borrow_and_update().clone();
                self.reconfigure(&config);
            }
            Ok(false) => {}
            Err(_) => self.reload = None,
        }
    }

    /// Decide about one record and fan it out.
    pub fn process(&mut self, mut shared: Shared, now_wall: jiff::Timestamp, now: Instant) {
        // The record is still owned by this worker alone: make_mut never clones here.
        let (record, unique) = match Arc::make_mut(&mut shared) {
            Record::Checkpoint(_) => {
                // Not an Event: it only has to reach the metrics sink behind the records before it.
                self.fan_out(&shared);
                return;
            }
            Record::Event(event) => (event, false),
            // Lifecycle transitions are each unique; only Events repeat.
            Record::Vm(transition) => (&mut transition.report, true),
        };
        self.stats.received.increment(1);
        if !self.decide(record, unique, now_wall, now) {
            return;
        }
        let decoded_at = record.decoded_at;
        self.fan_out(&shared);
        self.stats
            .processing
            .record(now.saturating_duration_since(decoded_at).as_secs_f64());
    }

    /// Classify, filter, deduplicate (unless `unique`) and redact one Event or transition report; `false`
    /// when a filter dropped it.
    fn decide(
        &mut self,
        record: &mut EventRecord,
        unique: bool,
        now_wall: jiff::Timestamp,
        now: Instant,
    ) -> bool {
        self.classifier.classify(record);
        if let Err(reason) = self.filter.check(record, now_wall) {
            if let Some((_, c)) = self.stats.filtered.iter().find(|(f, _)| *f == reason) {
                c.increment(1);
            }
            return false;
        }
        if !unique && self.dedup.check(record, now) {
            self.stats.deduplicated.increment(1);
        }
        if self.redactor.apply(record) {
            self.stats.redacted.increment(1);
        }
        if let Some(ts) = record.timestamp() {
            let delay = now_wall.duration_since(ts).as_secs_f64().max(0.0);
            self.stats.delay.record(delay);
        }
        true
    }

    fn fan_out(&self, shared: &Shared) {
        for sink in &self.sinks {
            sink.offer(shared);
        }
    }

    /// Wait until every lossless sink's ring can take one more record (the pipeline is their only producer).
    async fn room_in_lossless_sinks(&self) {
        for sink in self.sinks.iter().filter(|s| s.lossless) {
            sink.ring.room().await;
        }
    }

    fn report_backlog(&self, ingest: &Ring<Shared>) {
        self.stats.ingest_backlog.set(ingest.len() as f64);
        for (sink, gauge) in self.sinks.iter().zip(&self.stats.sink_backlog) {
            gauge.set(sink.ring.len() as f64);
        }
    }

    /// Run until the ingest ring is closed and drained, then close every sink ring.
    pub async fn run(mut self, ingest: Arc<Ring<Shared>>, health: Health) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'outer: loop {
            self.check_reload();
            let mut n = 0u32;
            while let Some(r) = ingest.try_pop() {
                self.room_in_lossless_sinks().await;
                self.process(r, jiff::Timestamp::now(), Instant::now());
                n += 1;
                if n.is_multiple_of(1024) {
                    health.beat();
                    self.report_backlog(&ingest);
                }
            }
            health.beat();
            self.report_backlog(&ingest);
            tokio::select! {
                r = ingest.pop() => match r {
                    Some(r) => {
                        self.check_reload();
                        self.room_in_lossless_sinks().await;
                        self.process(r, jiff::Timestamp::now(), Instant::now())
                    }
                    None => break 'outer,
                },
                _ = tick.tick() => {}
            }
        }
        self.report_backlog(&ingest);
        for sink in &self.sinks {
            sink.ring.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one record with a credential in its message and its reason looks like in a sink's ring.
    fn through(queue: SinkQueue) -> EventRecord {
        let t = Telemetry::new(&crate::config::MetricsConfig::default());
        let ring = queue.ring.clone();
        let mut p = Pipeline::new(&Config::default(), vec![queue], &t).unwrap();
        let mut rec = EventRecord::for_test("ns", "Pod", "x", "Failed", "Warning");
        rec.message = "login password=hunter2 failed".into();
        rec.reason = crate::record::Sym::from("token: abc123");
        p.process(
            Arc::new(Record::Event(rec)),
            jiff::Timestamp::now(),
            Instant::now(),
        );
        match ring.try_pop().as_deref() {
            Some(Record::Event(e)) => e.clone(),
            other => panic!("expected the Event, got {other:?}"),
        }
    }

    #[test]
    fn messages_are_redacted_when_a_sink_writes_them() {
        let t = Telemetry::new(&crate::config::MetricsConfig::default());
        let e = through(SinkQueue::new("json", 8, false, &t));
        assert_eq!(e.message, "login password=[REDACTED] failed");
        assert_eq!(&*e.reason, "token: [REDACTED]");
    }

    #[test]
    fn metrics_alone_leave_messages_but_not_reasons() {
        let t = Telemetry::new(&crate::config::MetricsConfig::default());
        let e = through(SinkQueue::new("metrics", 8, true, &t).without_messages());
        assert_eq!(e.message, "login password=hunter2 failed", "goes nowhere");
        assert_eq!(&*e.reason, "token: [REDACTED]", "a metric label");
    }
}
