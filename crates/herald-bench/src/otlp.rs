//! The load harness's collector: herald-test-support's OTLP receiver (OTLP/HTTP), kept to counts and arrival
//! delays so a long run holds no records, on a one-thread runtime of its own since the harness is
//! synchronous. What is the harness's own is which records' delays mean something ([`fresh_event_time`]).

use std::net::SocketAddr;
use std::sync::Arc;

use herald_test_support::otlp::{self, Options, State};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;

/// Arrival delays kept: a 100k-Event load run needs 100k; past this many (hours of soak) the first ones stand.
const KEEP_ARRIVALS: usize = 2_000_000;

/// Serving on its own one-thread runtime until dropped.
pub struct Receiver {
    inner: otlp::Receiver,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    pub fn start() -> std::io::Result<Receiver> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-otlp")
            .enable_all()
            .build()?;
        let state = Arc::new(State::new(Options {
            keep_requests: 0,
            keep_spans: 0,
            keep_arrivals: KEEP_ARRIVALS,
            arrival_of: fresh_event_time,
        }));
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let inner = runtime.block_on(otlp::Receiver::bind(false, any, state))?;
        Ok(Receiver {
            inner,
            _runtime: runtime,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Log records received so far.
    pub fn records(&self) -> u64 {
        self.inner.log_records()
    }

    pub fn reset_delays(&self) {
        self.inner.reset_arrivals();
    }

    /// Seconds from event time to arrival, of the records [`fresh_event_time`] picks.
    pub fn arrival_delays(&self) -> Vec<f64> {
        self.inner.arrival_delays()
    }
}

/// A record whose time is the simulator's microsecond `eventTime` of a new Event: a sub-second part, and no
/// count above 1 (a count increase keeps the old `eventTime`, so its delay would say nothing).
fn fresh_event_time(r: &LogRecord) -> bool {
    let increased = r.attributes.iter().any(|kv| {
        kv.key == "k8s.event.count"
            && matches!(
                kv.value.as_ref().and_then(|v| v.value.as_ref()),
                Some(any_value::Value::IntValue(c)) if *c > 1
            )
    });
    !r.time_unix_nano.is_multiple_of(1_000_000_000) && !increased
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};

    #[test]
    fn only_new_events_with_sub_second_times_have_a_delay() {
        let count = |c| KeyValue {
            key: "k8s.event.count".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(c)),
            }),
            ..KeyValue::default()
        };
        let record = |t, c| LogRecord {
            time_unix_nano: t,
            attributes: vec![count(c)],
            ..LogRecord::default()
        };
        assert!(fresh_event_time(&record(1_700_000_000_123_456_000, 1)));
        assert!(!fresh_event_time(&record(1_700_000_000_000_000_000, 1)));
        assert!(!fresh_event_time(&record(1_700_000_000_123_456_000, 2)));
    }
}
