//! The record shape every log sink writes: attribute keys and values of the OpenTelemetry collector's
//! `k8seventsreceiver`, plus herald's own (documented) additions.
//!
//! Every key the receiver writes carries exactly the receiver's value, computed the receiver's way from the same
//! object (it reads core/v1; an events.k8s.io/v1 object is read through the fields the API server maps to
//! core/v1: `regarding`, `note`, `reportingController`, `deprecatedSource`, `deprecatedCount`, ...). Whatever
//! herald derives itself (fallbacks, its occurrence delta, fields the receiver does not write) lives under
//! `herald.*`, never in the receiver's `k8s.*` namespace. The scope stays `herald`: herald does not pretend to
//! be the receiver, it writes the same record.
//!
//! One list, used by both the OTLP sink and the JSON line sink, so a Loki query written against one path works
//! on the other and the two cannot drift. Values borrow from the record; nothing is allocated except the few
//! values that need formatting (timestamps, the fingerprint).

use jiff::Timestamp;

use crate::record::{EventRecord, LogEntry};

/// One attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Str(&'a str),
    Owned(String),
    Int(i64),
    Bool(bool),
}

/// herald's identity, the same on every record it sends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    /// `k8s.cluster.name`, from the configuration; omitted when empty.
    pub cluster_name: String,
    /// The node herald runs on (`NODE_NAME` from the downward API); omitted when empty.
    pub agent_node: String,
}

pub const SERVICE_NAME: &str = "herald";
pub const SERVICE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// OTLP severity number for an Event type, matched case-insensitively like the receiver does:
/// Normal → INFO (9), Warning → WARN (13), Error → ERROR (17), Critical → FATAL (21), anything else unset.
pub fn severity_number(type_: &str) -> Option<i32> {
    [
        ("normal", 9),
        ("warning", 13),
        ("error", 17),
        ("critical", 21),
    ]
    .into_iter()
    .find(|(name, _)| type_.eq_ignore_ascii_case(name))
    .map(|(_, n)| n)
}

/// Resource attributes that depend on the record: the involved object and the reporting node, exactly the
/// receiver's set. They decide which `ResourceLogs` a record goes into.
pub fn object_attributes(r: &EventRecord) -> [(&'static str, &str); 7] {
    let o = &r.regarding;
    [
        ("k8s.node.name", &r.host),
        ("k8s.object.kind", &o.kind),
        ("k8s.object.name", &o.name),
        ("k8s.object.uid", &o.uid),
        ("k8s.object.fieldpath", &o.field_path),
        ("k8s.object.api_version", &o.api_version),
        ("k8s.object.resource_version", &o.resource_version),
    ]
}

/// Resource attributes that describe herald itself.
pub fn agent_attributes(id: &Identity, mut put: impl FnMut(&'static str, &str)) {
    put("service.name", SERVICE_NAME);
    put("service.version", SERVICE_VERSION);
    if !id.cluster_name.is_empty() {
        put("k8s.cluster.name", &id.cluster_name);
    }
    if !id.agent_node.is_empty() {
        put("herald.agent.node", &id.agent_node);
    }
}

/// `k8s.event.start_time` the way the receiver writes it: Go's `time.Time.String()` of the creation time,
/// e.g. `2024-03-01 10:00:00 +0000 UTC` (the receiver runs in UTC containers).
pub fn go_time_string(t: Timestamp) -> String {
    let mut s = String::with_capacity(40);
    match DateTime::utc(t, b' ') {
        // ASCII digits and separators only: never lossy.
        Some(d) => s.push_str(&String::from_utf8_lossy(d.as_bytes())),
        None => {
            use std::fmt::Write;
            let d = jiff::tz::Offset::UTC.to_datetime(t);
            // Writing into a String cannot fail.
            let _ = write!(
                s,
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                d.year(),
                d.month(),
                d.day(),
                d.hour(),
                d.minute(),
                d.second()
            );
            let nanos = d.subsec_nanosecond();
            if nanos != 0 {
                let digits = format!("{nanos:09}");
                s.push('.');
                s.push_str(digits.trim_end_matches('0'));
            }
        }
    }
    s.push_str(" +0000 UTC");
    s
}

/// A UTC date and time as `YYYY-MM-DD`, a separator, `HH:MM:SS`, then `.` and the fraction of a second with
/// its trailing zeros cut when it is not zero: what jiff's RFC 3339 `Display` (before its `Z`) and Go's
/// `time.Time.String()` (before its zone) both print. Written digit by digit: through `format!` and jiff's
/// formatter the log sinks' timestamps were about 5 % of their profile.
pub struct DateTime {
    buf: [u8; 29],
    len: usize,
}

impl DateTime {
    /// `None` for a year outside 0 to 9999 (jiff allows -9999), which callers leave to the general formatter.
    pub fn utc(t: Timestamp, separator: u8) -> Option<DateTime> {
        let d = jiff::tz::Offset::UTC.to_datetime(t);
        let year = u16::try_from(d.year()).ok().filter(|y| *y <= 9999)?;
        let mut buf = *b"0000-00-00T00:00:00.000000000";
        digits(&mut buf[0..4], u32::from(year));
        digits(&mut buf[5..7], u32::from(d.month().unsigned_abs()));
        digits(&mut buf[8..10], u32::from(d.day().unsigned_abs()));
        buf[10] = separator;
        digits(&mut buf[11..13], u32::from(d.hour().unsigned_abs()));
        digits(&mut buf[14..16], u32::from(d.minute().unsigned_abs()));
        digits(&mut buf[17..19], u32::from(d.second().unsigned_abs()));
        let nanos = d.subsec_nanosecond().unsigned_abs();
        let mut len = 19;
        if nanos != 0 {
            digits(&mut buf[20..29], nanos);
            len = 29;
            while buf[len - 1] == b'0' {
                len -= 1;
            }
        }
        Some(DateTime { buf, len })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// `value`'s last `out.len()` decimal digits, zero-padded.
fn digits(out: &mut [u8], mut value: u32) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// What Go's `time.Time.String()` prints for an unset time: the receiver writes this as
/// `k8s.event.start_time` of an Event without `creationTimestamp`.
pub const GO_ZERO_TIME: &str = "0001-01-01 00:00:00 +0000 UTC";

/// The record's time, picked the receiver's way from the same object: `eventTime`, else `lastTimestamp`, else
/// `firstTimestamp` (events.k8s.io/v1: `eventTime`, else `deprecatedLastTimestamp`, else
/// `deprecatedFirstTimestamp`, the fields the API server maps to those three). `None` when none is set, and
/// also when the time is before 1970 or after 2262-04-11T23:47:16.854775807Z: OTLP carries unsigned
/// nanoseconds, and past the 64-bit signed range the receiver's Go arithmetic overflows into a meaningless
/// value. Both log sinks then say "unknown" (OTLP `0`, JSON `null`), so they never disagree.
pub fn record_time(r: &EventRecord) -> Option<Timestamp> {
    r.event_time
        .or(r.last_timestamp)
        .or(r.first_timestamp)
        .filter(|t| unix_nanos(*t).is_some())
}

/// Nanoseconds since the Unix epoch when `t` is in the range every OTLP backend reads (0 to `i64::MAX`).
pub fn unix_nanos(t: Timestamp) -> Option<u64> {
    i64::try_from(t.as_nanosecond())
        .ok()
        .and_then(|n| u64::try_from(n).ok())
}

/// The severity text the receiver writes: the Event's `type` verbatim when it is one of the known types,
/// else nothing (the receiver leaves severity number and text unset together).
pub fn severity_text(r: &EventRecord) -> Option<&str> {
    severity_number(&r.type_).map(|_| &*r.type_)
}

/// Log record attributes: first the receiver's keys, each with the receiver's value computed from the same
/// object; then herald's own, all under `herald.*` (and `kubevirt.*` for VM lifecycle records), so a future
/// receiver version cannot give one of them another meaning.
pub fn log_attributes<'a>(entry: LogEntry<'a>, mut put: impl FnMut(&'static str, Value<'a>)) {
    let LogEntry { event: r, vm } = entry;
    put("k8s.event.reason", Value::Str(&r.reason));
    put("k8s.event.action", Value::Str(&r.action));
    put(
        "k8s.event.start_time",
        match r.creation_timestamp {
            Some(t) => Value::Owned(go_time_string(t)),
            None => Value::Str(GO_ZERO_TIME),
        },
    );
    put("k8s.event.name", Value::Str(&r.name));
    put("k8s.event.uid", Value::Str(&r.uid));
    // The receiver takes the namespace of the involved object, not of the Event.
    put("k8s.namespace.name", Value::Str(&r.regarding.namespace));
    // A VM lifecycle record is herald's own report: herald is its reporting controller.
    let controller = if vm.is_some() {
        &r.component
    } else {
        &r.reporting_controller
    };
    put("k8s.event.reporting_controller", Value::Str(controller));
    put(
        "k8s.event.reporting_instance",
        Value::Str(&r.reporting_instance),
    );
    // The receiver writes `count` when it is not zero, and nothing for an Event without one.
    if r.reported_count != 0 {
        put("k8s.event.count", Value::Int(r.reported_count));
    }

    // herald's own.
    put("herald.event.namespace", Value::Str(&r.namespace));
    put("herald.event.api_version", Value::Str(r.api.api_version()));
    put("herald.event.type", Value::Str(&r.type_));
    put("herald.event.component", Value::Str(&r.component));
    put("herald.event.count", Value::Int(r.count.into()));
    if let Some(n) = r.series_count {
        put("herald.event.series.count", Value::Int(n.into()));
    }
    if let Some(t) = r.series_last_observed {
        put(
            "herald.event.series.last_observed_time",
            Value::Owned(t.to_string()),
        );
    }
    if let Some(rel) = &r.related {
        put("herald.event.related.kind", Value::Str(&rel.kind));
        put("herald.event.related.name", Value::Str(&rel.name));
        put("herald.event.related.namespace", Value::Str(&rel.namespace));
        put("herald.event.related.uid", Value::Str(&rel.uid));
    }
    if let Some(vm) = vm {
        put("kubevirt.transition", Value::Str(vm.transition));
        put("kubevirt.vm.name", Value::Str(&vm.vm));
        put("kubevirt.status.before", Value::Str(&vm.before));
        put("kubevirt.status.after", Value::Str(&vm.after));
        for (key, node) in [
            ("kubevirt.node", &vm.node),
            ("kubevirt.source_node", &vm.source_node),
            ("kubevirt.target_node", &vm.target_node),
        ] {
            if !node.is_empty() {
                put(key, Value::Str(node));
            }
        }
        if let Some((start, end, _)) = vm.span {
            let seconds = end.duration_since(start).as_secs_f64().max(0.0);
            put(
                "kubevirt.duration_ms",
                Value::Int((seconds * 1000.0) as i64),
            );
        }
    }
    put("herald.occurrences", Value::Int(r.delta.into()));
    put("herald.severity", Value::Str(r.severity.as_str()));
    put("herald.repeated", Value::Bool(r.repeated));
    if r.truncated {
        put("herald.truncated", Value::Bool(true));
    }
    put(
        "herald.fingerprint",
        Value::Owned(format!("{:016x}", r.fingerprint)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_numbers_follow_the_receiver() {
        assert_eq!(severity_number("Normal"), Some(9));
        assert_eq!(severity_number("warning"), Some(13));
        assert_eq!(severity_number("Error"), Some(17));
        assert_eq!(severity_number("Critical"), Some(21));
        assert_eq!(severity_number("Weird"), None);
    }

    #[test]
    fn start_time_matches_go_formatting() {
        let t: Timestamp = "2024-03-01T10:00:00Z".parse().unwrap();
        assert_eq!(go_time_string(t), "2024-03-01 10:00:00 +0000 UTC");
        let t: Timestamp = "2024-03-01T10:00:00.5Z".parse().unwrap();
        assert_eq!(go_time_string(t), "2024-03-01 10:00:00.5 +0000 UTC");
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        /// The layout `strftime` writes for the receiver's `%Y-%m-%d %H:%M:%S%.f +0000 UTC`, years 1 to 9999.
        #[test]
        fn start_time_is_what_strftime_writes(
            seconds in -62_135_596_800i64..253_402_300_799,
            nanos in proptest::prop_oneof![proptest::strategy::Just(0i32), 0i32..1_000_000_000, (0i32..1000).prop_map(|m| m * 1_000_000)],
        ) {
            let t = Timestamp::new(seconds, nanos).unwrap();
            proptest::prop_assert_eq!(
                go_time_string(t),
                t.strftime("%Y-%m-%d %H:%M:%S%.f +0000 UTC").to_string()
            );
        }
    }

    #[test]
    fn go_zero_time_is_what_the_formatter_prints_for_year_one() {
        let t: Timestamp = "0001-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(go_time_string(t), GO_ZERO_TIME);
    }

    fn keys(r: &EventRecord) -> Vec<&'static str> {
        let mut keys = Vec::new();
        log_attributes(r.into(), |k, _| keys.push(k));
        keys
    }

    #[test]
    fn the_receiver_keys_are_always_there_and_count_only_when_set() {
        let mut r = EventRecord::for_test("default", "Pod", "web", "Started", "Normal");
        r.reported_count = 0;
        r.reporting_controller = "".into();
        let keys = keys(&r);
        assert!(!keys.contains(&"k8s.event.count"));
        for key in [
            "k8s.event.start_time",
            "k8s.event.reporting_controller",
            "k8s.event.reporting_instance",
            "herald.event.count",
            "herald.occurrences",
        ] {
            assert!(keys.contains(&key), "{key}");
        }
        assert!(!keys.contains(&"herald.event.related.kind"));
    }

    #[test]
    fn only_receiver_keys_sit_in_its_namespace() {
        let receiver = [
            "k8s.event.reason",
            "k8s.event.action",
            "k8s.event.start_time",
            "k8s.event.name",
            "k8s.event.uid",
            "k8s.namespace.name",
            "k8s.event.reporting_controller",
            "k8s.event.reporting_instance",
            "k8s.event.count",
        ];
        let mut r = EventRecord::for_test("default", "Pod", "web", "Started", "Normal");
        r.related = Some(r.regarding.clone());
        r.series_count = Some(3);
        r.series_last_observed = Some("2024-03-01T10:00:00Z".parse().unwrap());
        r.truncated = true;
        for key in keys(&r) {
            assert!(
                receiver.contains(&key) || key.starts_with("herald."),
                "{key} is in the receiver's namespace but not one of its keys"
            );
        }
    }

    #[test]
    fn record_time_is_the_receivers_choice_and_unknown_out_of_range() {
        let mut r = EventRecord::for_test("default", "Pod", "web", "Started", "Normal");
        assert_eq!(record_time(&r), None);
        let first: Timestamp = "2024-03-01T10:00:00Z".parse().unwrap();
        let last: Timestamp = "2024-03-01T10:05:00Z".parse().unwrap();
        r.first_timestamp = Some(first);
        r.creation_timestamp = Some(first);
        assert_eq!(record_time(&r), Some(first));
        r.last_timestamp = Some(last);
        // A newer series observation does not move the receiver's time.
        r.series_last_observed = Some("2024-03-01T11:00:00Z".parse().unwrap());
        assert_eq!(record_time(&r), Some(last));
        r.event_time = Some(first);
        assert_eq!(record_time(&r), Some(first));
        r.event_time = Some("2958-01-01T00:00:00Z".parse().unwrap());
        assert_eq!(record_time(&r), None, "past 2262: unknown, not wrapped");
        r.event_time = Some("1969-12-31T23:59:59Z".parse().unwrap());
        assert_eq!(record_time(&r), None);
        let edge: Timestamp = "2262-04-11T23:47:16.854775807Z".parse().unwrap();
        assert_eq!(unix_nanos(edge), Some(i64::MAX as u64));
    }

    #[test]
    fn severity_text_only_for_known_types() {
        let mut r = EventRecord::for_test("default", "Pod", "web", "Started", "warning");
        assert_eq!(severity_text(&r), Some("warning"));
        r.type_ = "Bizarre".into();
        assert_eq!(severity_text(&r), None);
    }
}
