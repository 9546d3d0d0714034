//! The metrics sink: Event objects and occurrences as Prometheus counters by namespace, kind, reason and type.
//!
//! Handles are resolved once per label set and cached, so a record costs a hash look-up and two atomic adds.
//! The cardinality guard caps the label sets; past the cap, updates go to one `__other__` set and are counted
//! in `herald_metric_series_overflow_total`, so totals stay exact even when labels do not.

use std::sync::Arc;

use metrics::Counter;

use super::Shared;
use crate::pipeline::ring::Ring;
use crate::record::{EventRecord, Sym};
use crate::telemetry::{self, Telemetry};

/// Name of the label set that absorbs overflow.
pub const OTHER: &str = "__other__";

struct Handles {
    events: Counter,
    occurrences: Counter,
}

pub struct MetricsSink {
    telemetry: Arc<Telemetry>,
    cache: ahash::HashMap<(Sym, Sym, Sym, Sym), Handles>,
    max_series: usize,
    other: Handles,
    overflow: Counter,
    sent: Counter,
}

impl MetricsSink {
    pub fn new(telemetry: Arc<Telemetry>, max_series: usize) -> MetricsSink {
        let other_labels = [
            ("namespace", OTHER),
            ("kind", OTHER),
            ("reason", OTHER),
            ("type", OTHER),
        ];
        MetricsSink {
            other: Handles {
                events: telemetry.counter(telemetry::EVENTS, &other_labels),
                occurrences: telemetry.counter(telemetry::OCCURRENCES, &other_labels),
            },
            overflow: telemetry.counter(
                telemetry::SERIES_OVERFLOW,
                &[("metric", telemetry::OCCURRENCES)],
            ),
            sent: telemetry.counter(telemetry::SINK_SENT, &[("sink", "metrics")]),
            cache: ahash::HashMap::default(),
            max_series,
            telemetry,
        }
    }

    pub fn record(&mut self, r: &EventRecord) {
        let key = (
            r.namespace.clone(),
            r.regarding.kind.clone(),
            r.reason.clone(),
            r.type_.clone(),
        );
        let handles = if let Some(h) = self.cache.get(&key) {
            h
        } else if self.cache.len() < self.max_series {
            let labels = [
                ("namespace", &*key.0),
                ("kind", &*key.1),
                ("reason", &*key.2),
                ("type", &*key.3),
            ];
            let h = Handles {
                events: self.telemetry.counter(telemetry::EVENTS, &labels),
                occurrences: self.telemetry.counter(telemetry::OCCURRENCES, &labels),
            };
            self.cache.entry(key).or_insert(h)
        } else {
            self.overflow.increment(1);
            &self.other
        };
        if r.new_object {
            handles.events.increment(1);
        }
        handles.occurrences.increment(u64::from(r.delta));
        self.sent.increment(1);
    }

    /// Drain the ring until it is closed and empty.
    pub async fn run(mut self, ring: Arc<Ring<Shared>>) {
        while let Some(r) = ring.pop().await {
            self.record(&r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MetricsConfig;

    #[test]
    fn counts_objects_and_occurrences_and_folds_overflow() {
        let t = Arc::new(Telemetry::new(&MetricsConfig::default()));
        let mut sink = MetricsSink::new(t.clone(), 2);
        let mut a = EventRecord::for_test("default", "Pod", "p", "BackOff", "Warning");
        a.delta = 10;
        sink.record(&a);
        a.new_object = false;
        a.delta = 3;
        sink.record(&a);
        sink.record(&EventRecord::for_test(
            "kube-system",
            "Node",
            "n",
            "NodeNotReady",
            "Normal",
        ));
        sink.record(&EventRecord::for_test("x", "Pod", "q", "Started", "Normal"));
        let text = t.render();
        let line = |s: &str| text.lines().any(|l| l == s);
        assert!(
            line(
                r#"herald_event_occurrences_total{namespace="default",kind="Pod",reason="BackOff",type="Warning"} 13"#
            ),
            "{text}"
        );
        assert!(
            line(
                r#"herald_events_total{namespace="default",kind="Pod",reason="BackOff",type="Warning"} 1"#
            ),
            "{text}"
        );
        assert!(
            line(
                r#"herald_event_occurrences_total{namespace="__other__",kind="__other__",reason="__other__",type="__other__"} 1"#
            ),
            "{text}"
        );
        assert!(
            line(
                r#"herald_metric_series_overflow_total{metric="herald_event_occurrences_total"} 1"#
            ),
            "{text}"
        );
    }
}
