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
    /// `herald_quota_exceeded_total` handles by (namespace, resource).
    quota: ahash::HashMap<(Sym, Sym), Counter>,
    overflow_quota: Counter,
}

/// The resources named by a quota refusal, as the API server words it:
/// `... exceeded quota: NAME, requested: limits.memory=2Gi,requests.cpu=1, used: ..., limited: ...`.
pub fn quota_resources(message: &str) -> Option<impl Iterator<Item = &str>> {
    let rest = &message[message.find("exceeded quota:")?..];
    let requested = &rest[rest.find("requested: ")? + "requested: ".len()..];
    let requested = requested.split(", used:").next().unwrap_or(requested);
    Some(
        requested
            .split(',')
            .filter_map(|pair| pair.split_once('=').map(|(r, _)| r.trim()))
            .filter(|r| !r.is_empty()),
    )
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
            quota: ahash::HashMap::default(),
            overflow_quota: telemetry.counter(
                telemetry::SERIES_OVERFLOW,
                &[("metric", telemetry::QUOTA_EXCEEDED)],
            ),
            cache: ahash::HashMap::default(),
            max_series,
            telemetry,
        }
    }

    pub fn record(&mut self, r: &EventRecord) {
        if r.vm.is_some() {
            // Lifecycle transitions have their own metrics, kept by the KubeVirt source.
            return;
        }
        // Quota refusals are Warnings; skip the message search for everything else.
        if r.delta > 0
            && &*r.type_ == "Warning"
            && let Some(resources) = quota_resources(&r.message)
        {
            for resource in resources {
                self.quota(&r.namespace, resource)
                    .increment(u64::from(r.delta));
            }
        }
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

    fn quota(&mut self, namespace: &Sym, resource: &str) -> &Counter {
        let key = (namespace.clone(), Sym::from(resource));
        if !self.quota.contains_key(&key) {
            let labels = if self.quota.len() < self.max_series {
                [("namespace", &*key.0), ("resource", &*key.1)]
            } else {
                self.overflow_quota.increment(1);
                [("namespace", OTHER), ("resource", OTHER)]
            };
            let c = self.telemetry.counter(telemetry::QUOTA_EXCEEDED, &labels);
            self.quota.insert(key.clone(), c);
        }
        &self.quota[&key]
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
    fn quota_messages_name_their_resources() {
        let m = "Error creating: pods \"virt-launcher-vm-abcde\" is forbidden: exceeded quota: compute, requested: limits.memory=2Gi,requests.cpu=1, used: limits.memory=8Gi,requests.cpu=4, limited: limits.memory=8Gi,requests.cpu=4";
        assert_eq!(
            quota_resources(m).unwrap().collect::<Vec<_>>(),
            ["limits.memory", "requests.cpu"]
        );
        assert!(quota_resources("Back-off restarting failed container").is_none());
    }

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
