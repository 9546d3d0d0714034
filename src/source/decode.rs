//! Lean, forgiving decoding of Event objects: only the fields herald uses, and never a failed stream.
//!
//! kube's list and watch decode a whole page or line at once, so a single object with a wrong-typed field
//! would fail the page and stall the initial list forever. Every field here is therefore a [`Field`], which
//! accepts any JSON value: the expected type becomes `Value`, anything else becomes `Invalid` (the value is
//! consumed and skipped, not kept). Whether an object is usable is decided right after its fields, by
//! [`normalise`], which builds the record or names the bad field; the source counts and skips a bad object
//! with its namespace/name. `managedFields`, annotations and labels are never decoded.
//!
//! The values that become label-like [`Sym`]s in the record (the Event's namespace, namespace and kind of
//! the object it is about, apiVersion, reason, type, the reporting component) are interned while decoding,
//! straight from the text serde_json hands out: a repeated value costs a hash lookup instead of a `String`
//! that normalising would intern and drop again (allocation was the largest cost in a profile of the list
//! path).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use jiff::Timestamp;
use kube::Resource;
use kube::core::{ApiResource, DynamicObject};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::events::{Invalid, normalise};
use super::watch::Versioned;
use crate::record::{EventApi, Interner, Record, Sym};

/// Distinct values the decode-time interner remembers per thread (past it, values are still returned, just
/// not shared); the same bound the source's own interner has.
const INTERNED_PER_THREAD: usize = 50_000;

thread_local! {
    /// Per thread, not per watch: deserialising has no context to carry one in (kube's list and watch types
    /// call `Deserialize`), and a decode runs on one thread from start to end. Bounded by
    /// [`INTERNED_PER_THREAD`] and [`Interner::MAX_BYTES`] per value.
    static INTERNER: std::cell::RefCell<Interner> =
        std::cell::RefCell::new(Interner::new(INTERNED_PER_THREAD));
}

/// `s` interned in this thread's decode interner (cut to [`Interner::MAX_BYTES`], as every interned value is).
pub fn intern(s: &str) -> Sym {
    INTERNER.with(|i| match i.try_borrow_mut() {
        Ok(mut interner) => interner.intern(s),
        // Not reachable (interning does not decode), but never a panic on the Event path.
        Err(_) => Sym::from(crate::record::cut(s, Interner::MAX_BYTES)),
    })
}

/// A field held a JSON value of the wrong type (the caller knows which field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongType;

/// One JSON field, decoded without ever failing.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Field<T> {
    #[default]
    Missing,
    Null,
    Value(T),
    /// Present with the wrong JSON type or an unparsable value.
    Invalid,
}

impl<T> Field<T> {
    /// The value, or `None` when missing or null. Invalid stays an error for the caller to report.
    pub fn get(self) -> Result<Option<T>, WrongType> {
        match self {
            Field::Value(v) => Ok(Some(v)),
            Field::Missing | Field::Null => Ok(None),
            Field::Invalid => Err(WrongType),
        }
    }

    pub fn is_invalid(&self) -> bool {
        matches!(self, Field::Invalid)
    }
}

/// Types a [`Field`] can hold as a JSON scalar.
pub trait Scalar: Sized {
    fn from_str(_: &str) -> Option<Self> {
        None
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
}

impl Scalar for String {
    fn from_str(s: &str) -> Option<Self> {
        Some(s.to_owned())
    }
}

impl Scalar for Sym {
    fn from_str(s: &str) -> Option<Self> {
        Some(intern(s))
    }
}

impl Scalar for i64 {
    fn from_i64(v: i64) -> Option<Self> {
        Some(v)
    }
}

impl Scalar for Timestamp {
    fn from_str(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

struct ScalarVisitor<T>(PhantomData<T>);

impl<'de, T: Scalar> Visitor<'de> for ScalarVisitor<T> {
    type Value = Field<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<Field<T>, E> {
        Ok(T::from_str(v).map_or(Field::Invalid, Field::Value))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Field<T>, E> {
        Ok(T::from_i64(v).map_or(Field::Invalid, Field::Value))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Field<T>, E> {
        Ok(i64::try_from(v)
            .ok()
            .and_then(T::from_i64)
            .map_or(Field::Invalid, Field::Value))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Field<T>, E> {
        Ok(Field::Invalid)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Field<T>, E> {
        Ok(Field::Invalid)
    }
    fn visit_none<E>(self) -> Result<Field<T>, E> {
        Ok(Field::Null)
    }
    fn visit_unit<E>(self) -> Result<Field<T>, E> {
        Ok(Field::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Field<T>, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<T>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::Invalid)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<T>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::Invalid)
    }
}

macro_rules! scalar_field {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for Field<$t> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(ScalarVisitor::<$t>(PhantomData))
            }
        }
    )*};
}
scalar_field!(String, Sym, i64, Timestamp);

/// A nested object whose own fields are all lenient: a map decodes (it cannot fail), anything else is Invalid.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Nested<T>(pub Field<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Nested<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Field<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Field::Value)
            }
            fn visit_none<E>(self) -> Result<Field<T>, E> {
                Ok(Field::Null)
            }
            fn visit_unit<E>(self) -> Result<Field<T>, E> {
                Ok(Field::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Field<T>, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<T>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::Invalid)
            }
            fn visit_str<E>(self, _: &str) -> Result<Field<T>, E> {
                Ok(Field::Invalid)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Field<T>, E> {
                Ok(Field::Invalid)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Field<T>, E> {
                Ok(Field::Invalid)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Field<T>, E> {
                Ok(Field::Invalid)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Field<T>, E> {
                Ok(Field::Invalid)
            }
        }
        d.deserialize_any(V(PhantomData)).map(Nested)
    }
}

/// The part of `metadata` herald reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LeanMeta {
    pub name: Field<String>,
    pub namespace: Field<Sym>,
    pub uid: Field<String>,
    pub resource_version: Field<String>,
    pub creation_timestamp: Field<Timestamp>,
}

/// `involvedObject`, `regarding`, `related`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LeanObjectRef {
    pub kind: Field<Sym>,
    pub namespace: Field<Sym>,
    pub name: Field<String>,
    pub uid: Field<String>,
    pub api_version: Field<Sym>,
    pub resource_version: Field<String>,
    pub field_path: Field<String>,
}

/// `source` / `deprecatedSource`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LeanSource {
    pub component: Field<Sym>,
    pub host: Field<String>,
}

/// `series` (core/v1: `count`, `lastObservedTime`; events.k8s.io/v1 the same).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LeanSeries {
    pub count: Field<i64>,
    pub last_observed_time: Field<Timestamp>,
}

/// Field names as they differ between the two APIs; both decode into this one shape.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EventFields {
    pub metadata: Nested<LeanMeta>,
    #[serde(alias = "regarding")]
    pub involved_object: Nested<LeanObjectRef>,
    pub related: Nested<LeanObjectRef>,
    pub reason: Field<Sym>,
    #[serde(alias = "note")]
    pub message: Field<String>,
    #[serde(rename = "type")]
    pub type_: Field<Sym>,
    pub action: Field<String>,
    #[serde(alias = "deprecatedSource")]
    pub source: Nested<LeanSource>,
    #[serde(alias = "deprecatedCount")]
    pub count: Field<i64>,
    #[serde(alias = "deprecatedFirstTimestamp")]
    pub first_timestamp: Field<Timestamp>,
    #[serde(alias = "deprecatedLastTimestamp")]
    pub last_timestamp: Field<Timestamp>,
    pub event_time: Field<Timestamp>,
    pub series: Nested<LeanSeries>,
    /// core/v1 `reportingComponent`, events.k8s.io/v1 `reportingController`.
    #[serde(alias = "reportingController")]
    pub reporting_component: Field<Sym>,
    pub reporting_instance: Field<String>,
}

/// An Event as herald decodes it: normalised into its record while it is decoded (or found unusable), so
/// that a list page or watch line carries a pointer on, not the decoded fields (several times a record's
/// size, moved from the page to the watch's queue to the source). The record is allocated once, already as
/// the [`Record`] the rings carry. `A` marks the API (and URL) it was read from.
#[derive(Debug, Clone)]
pub struct LeanEvent<A> {
    /// Always a [`Record::Event`].
    decoded: Result<Arc<Record>, Box<Invalid>>,
    api: PhantomData<A>,
}

impl<A> LeanEvent<A> {
    /// The record, a [`Record::Event`] held by nothing else yet, or which field makes the object unusable.
    pub fn into_record(self) -> Result<Arc<Record>, Box<Invalid>> {
        self.decoded
    }

    /// namespace, name, UID and resourceVersion, of the record or of the unusable object.
    fn identity(&self) -> [&str; 4] {
        match &self.decoded {
            Ok(record) => record.log_entry().map_or([""; 4], |e| {
                let r = e.event;
                [&r.namespace, &r.name, &r.uid, &r.resource_version]
            }),
            Err(i) => [&i.namespace, &i.name, &i.uid, &i.resource_version],
        }
    }

    /// The identity occurrences are tracked by: the UID (borrowed, no copy per Event), or namespace/name when
    /// a malformed object has none.
    pub fn key(&self) -> Cow<'_, str> {
        match self.identity() {
            [namespace, name, "", _] => Cow::Owned(format!("{namespace}/{name}")),
            [_, _, uid, _] => Cow::Borrowed(uid),
        }
    }
}

impl<A> Versioned for LeanEvent<A> {
    fn resource_version(&self) -> Option<&str> {
        Some(self.identity()[3]).filter(|v| !v.is_empty())
    }
}

impl<'de, A: EventsApiMarker> Deserialize<'de> for LeanEvent<A> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // No `#[serde(flatten)]`: it would buffer every unknown key (managedFields included) before decoding.
        let fields = EventFields::deserialize(d)?;
        Ok(LeanEvent {
            decoded: normalise(fields, A::API).map(|r| Arc::new(Record::Event(r))),
            api: PhantomData,
        })
    }
}

/// Marker for `v1` Events.
#[derive(Debug, Clone, Copy)]
pub struct CoreV1;
/// Marker for `events.k8s.io/v1` Events.
#[derive(Debug, Clone, Copy)]
pub struct EventsV1;

/// What tells the two Events APIs apart: group and version (the URL), metric label and record kind.
pub trait EventsApiMarker: Clone + fmt::Debug + Send + Sync + 'static {
    const GROUP: &'static str;
    const VERSION: &'static str;
    /// Metric label for this resource (`events`, `events.events.k8s.io`).
    const RESOURCE: &'static str;
    /// The record's [`EventApi`].
    const API: EventApi;
}

impl EventsApiMarker for CoreV1 {
    const GROUP: &'static str = "";
    const VERSION: &'static str = "v1";
    const RESOURCE: &'static str = "events";
    const API: EventApi = EventApi::CoreV1;
}

impl EventsApiMarker for EventsV1 {
    const GROUP: &'static str = "events.k8s.io";
    const VERSION: &'static str = "v1";
    const RESOURCE: &'static str = "events.events.k8s.io";
    const API: EventApi = EventApi::EventsV1;
}

/// The URL of the Events of API `A` in `namespace` (all namespaces when `None`), as kube builds it.
pub fn events_url<A: EventsApiMarker>(namespace: Option<&str>) -> String {
    let resource = ApiResource {
        group: A::GROUP.to_string(),
        version: A::VERSION.to_string(),
        api_version: A::API.api_version().to_string(),
        kind: "Event".to_string(),
        plural: "events".to_string(),
    };
    DynamicObject::url_path(&resource, namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_types_become_invalid_not_errors() {
        let f: EventFields = serde_json::from_str(
            r#"{"metadata":{"name":"a","namespace":"n","resourceVersion":"5","uid":7},
                "involvedObject":"Pod","reason":["x"],"count":"three","message":{"a":1},
                "type":null,"managedFields":[{"x":1}],"firstTimestamp":"yesterday"}"#,
        )
        .unwrap();
        let Field::Value(meta) = f.metadata.0 else {
            panic!("metadata not decoded")
        };
        assert_eq!(meta.name, Field::Value("a".to_string()));
        assert_eq!(meta.resource_version, Field::Value("5".to_string()));
        assert!(meta.uid.is_invalid());
        assert!(f.involved_object.0.is_invalid());
        assert!(f.reason.is_invalid());
        assert!(f.count.is_invalid());
        assert!(f.message.is_invalid());
        assert_eq!(f.type_, Field::Null);
        assert!(f.first_timestamp.is_invalid());
    }

    #[test]
    fn an_unusable_object_keeps_its_identity() {
        let ev: LeanEvent<CoreV1> = serde_json::from_str(
            r#"{"metadata":{"name":"a","namespace":"n","resourceVersion":"5","uid":"u-1"},"count":"three"}"#,
        )
        .unwrap();
        assert_eq!(ev.key(), "u-1");
        assert_eq!(ev.resource_version(), Some("5"));
        let invalid = ev.into_record().unwrap_err();
        assert_eq!(
            (invalid.reason, invalid.field),
            ("missing_field", "involvedObject")
        );
        let ev: LeanEvent<CoreV1> =
            serde_json::from_str(r#"{"metadata":{"name":"a","namespace":"n","uid":5}}"#).unwrap();
        assert_eq!(ev.key(), "n/a", "no usable UID: namespace/name");
        assert_eq!(ev.resource_version(), None);
    }

    #[test]
    fn label_like_fields_are_shared_and_cut_as_the_record_needs() {
        let long = "R".repeat(Interner::MAX_BYTES + 10);
        let json = |reason: &str| {
            format!(
                r#"{{"metadata":{{"name":"a","namespace":"n"}},"involvedObject":{{"kind":"Pod"}},"reason":"{reason}","type":"Warning"}}"#
            )
        };
        let a: EventFields = serde_json::from_str(&json("BackOff")).unwrap();
        let b: EventFields = serde_json::from_str(&json("BackOff")).unwrap();
        let (Field::Value(ra), Field::Value(rb)) = (&a.reason, &b.reason) else {
            panic!("reason not decoded")
        };
        assert_eq!(&**ra, "BackOff");
        assert!(
            std::sync::Arc::ptr_eq(ra, rb),
            "one allocation per distinct value"
        );
        let c: EventFields = serde_json::from_str(&json(&long)).unwrap();
        assert_eq!(
            c.reason,
            Field::Value(Sym::from(&long[..Interner::MAX_BYTES]))
        );
    }

    #[test]
    fn a_list_with_one_bad_object_still_decodes() {
        let list: kube::core::ObjectList<LeanEvent<CoreV1>> = serde_json::from_str(
            r#"{"apiVersion":"v1","kind":"EventList","metadata":{"resourceVersion":"9"},"items":[
                {"metadata":{"name":"good","namespace":"n"},"involvedObject":{"kind":"Pod"},"reason":"Started","count":2},
                {"metadata":{"name":"bad","namespace":"n"},"involvedObject":[1,2],"count":{"x":[]}}]}"#,
        )
        .unwrap();
        let mut items = list.items.into_iter().map(LeanEvent::into_record);
        let good = items.next().unwrap().unwrap();
        assert_eq!(good.log_entry().unwrap().event.count, 2);
        let bad = items.next().unwrap().unwrap_err();
        assert_eq!((bad.field, &*bad.name), ("involvedObject", "bad"));
    }

    #[test]
    fn events_v1_names_decode_into_the_same_fields() {
        let f: EventFields = serde_json::from_str(
            r#"{"metadata":{"name":"a","namespace":"n"},"regarding":{"kind":"Pod","name":"p"},
                "note":"hello","reportingController":"kubelet","deprecatedCount":4,
                "deprecatedSource":{"component":"kubelet","host":"node-1"},
                "eventTime":"2021-12-28T09:31:27.123456Z","series":{"count":7,"lastObservedTime":"2021-12-28T09:40:00.000001Z"}}"#,
        )
        .unwrap();
        let regarding = match f.involved_object.0 {
            Field::Value(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(regarding.kind, Field::Value("Pod".into()));
        assert_eq!(f.message, Field::Value("hello".into()));
        assert_eq!(f.reporting_component, Field::Value("kubelet".into()));
        assert_eq!(f.count, Field::Value(4));
        assert!(matches!(f.event_time, Field::Value(_)));
        assert!(matches!(
            f.series.0,
            Field::Value(LeanSeries {
                count: Field::Value(7),
                ..
            })
        ));
    }
}
