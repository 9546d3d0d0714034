//! `meta.k8s.io/v1` Tables, what kubectl asks for (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`) and
//! prints: the API server's own columns for Events (the wide ones carry priority 1, so kubectl shows them only
//! with `-o wide`), and KubeVirt's additional printer columns from its CRDs for VMs, VMIs and migrations.
//! Rows carry the object as `includeObject` asks (`Metadata` by default; `Object` for `--sort-by`, which
//! sorts on fields of the object; `None`), and watch events carry one-row Tables whose first one alone has
//! the column definitions, as the API server saves bandwidth on watches.

use serde_json::{Value, json};

use super::convert;
use super::http::VmKind;

/// What a Table row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    /// The `includeObject` query parameter; an unknown value is refused as the API server does.
    pub fn parse(param: Option<&str>) -> Result<Include, String> {
        match param {
            None | Some("") | Some("Metadata") => Ok(Include::Metadata),
            Some("Object") => Ok(Include::Object),
            Some("None") => Ok(Include::None),
            Some(other) => Err(format!(
                "includeObject: Unsupported value: \"{other}\": supported values: \"Metadata\", \"None\", \"Object\""
            )),
        }
    }
}

/// Which printer a resource uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Printer {
    Event,
    Kubevirt(VmKind),
}

/// One column: header, type, priority (1: `-o wide` only), and how a cell is read from the object.
struct Column {
    name: &'static str,
    type_: &'static str,
    format: &'static str,
    priority: u8,
    description: &'static str,
    cell: fn(&Value, jiff::Timestamp) -> Value,
}

const EVENT_COLUMNS: &[Column] = &[
    Column {
        name: "Last Seen",
        type_: "string",
        format: "",
        priority: 0,
        description: "The time at which the most recent occurrence of this event was recorded.",
        cell: |o, now| last_seen(o, now).into(),
    },
    Column {
        name: "Type",
        type_: "string",
        format: "",
        priority: 0,
        description: "Type of this event (Normal, Warning), new types could be added in the future",
        cell: |o, _| o["type"].as_str().unwrap_or_default().into(),
    },
    Column {
        name: "Reason",
        type_: "string",
        format: "",
        priority: 0,
        description: "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
        cell: |o, _| o["reason"].as_str().unwrap_or_default().into(),
    },
    Column {
        name: "Object",
        type_: "string",
        format: "",
        priority: 0,
        description: "The object that this event is about.",
        cell: |o, _| {
            let kind = o["involvedObject"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_lowercase();
            match o["involvedObject"]["name"]
                .as_str()
                .filter(|n| !n.is_empty())
            {
                Some(name) => format!("{kind}/{name}").into(),
                None => kind.into(),
            }
        },
    },
    Column {
        name: "Subobject",
        type_: "string",
        format: "",
        priority: 1,
        description: "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement.",
        cell: |o, _| {
            o["involvedObject"]["fieldPath"]
                .as_str()
                .unwrap_or_default()
                .into()
        },
    },
    Column {
        name: "Source",
        type_: "string",
        format: "",
        priority: 1,
        description: "The component reporting this event. Should be a short machine understandable string.",
        cell: |o, _| {
            let first = |a: &Value, b: &Value| {
                a.as_str()
                    .filter(|s| !s.is_empty())
                    .or(b.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let component = first(&o["source"]["component"], &o["reportingComponent"]);
            let instance = first(&o["source"]["host"], &o["reportingInstance"]);
            if instance.is_empty() {
                component.into()
            } else {
                format!("{component}, {instance}").into()
            }
        },
    },
    Column {
        name: "Message",
        type_: "string",
        format: "",
        priority: 0,
        description: "A human-readable description of the status of this operation.",
        cell: |o, _| o["message"].as_str().unwrap_or_default().trim().into(),
    },
    Column {
        name: "First Seen",
        type_: "string",
        format: "",
        priority: 1,
        description: "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
        cell: |o, now| first_seen(o, now).into(),
    },
    Column {
        name: "Count",
        type_: "string",
        format: "",
        priority: 1,
        description: "The number of times this event has occurred.",
        cell: |o, _| {
            let positive = |v: &Value| v.as_i64().filter(|c| *c > 0);
            let count = if o["series"].is_object() {
                o["series"]["count"].as_i64().unwrap_or(0)
            } else {
                positive(&o["count"]).unwrap_or(1)
            };
            count.into()
        },
    },
    Column {
        name: "Name",
        type_: "string",
        format: "name",
        priority: 1,
        description: "Name must be unique within a namespace.",
        cell: |o, _| o["metadata"]["name"].as_str().unwrap_or_default().into(),
    },
];

/// Every CRD table starts with the name; KubeVirt's columns follow (from its CRDs' additionalPrinterColumns).
const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    priority: 0,
    description: "Name must be unique within a namespace.",
    cell: |o, _| o["metadata"]["name"].as_str().unwrap_or_default().into(),
};

const AGE: Column = Column {
    name: "Age",
    type_: "date",
    format: "",
    priority: 0,
    description: "",
    cell: |o, now| match timestamp(&o["metadata"]["creationTimestamp"]) {
        Some(t) => human_duration(now, t).into(),
        None => Value::Null,
    },
};

/// The `status` of the condition of type `kind` (`.status.conditions[?(@.type=='Ready')].status`).
fn condition(o: &Value, kind: &str) -> Value {
    o["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .map(|c| c["status"].clone())
        .filter(|s| !s.is_null())
        .unwrap_or(Value::Null)
}

/// A string cell at a path; absent is null (kubectl prints `<none>`), as for a CRD column.
fn string_at(o: &Value, path: &[&str]) -> Value {
    let mut v = o;
    for p in path {
        v = &v[*p];
    }
    match v {
        Value::Null => Value::Null,
        Value::String(s) => s.clone().into(),
        other => other.to_string().into(),
    }
}

const VM_COLUMNS: &[Column] = &[
    NAME,
    AGE,
    Column {
        name: "Status",
        type_: "string",
        format: "",
        priority: 0,
        description: "Human Readable Status",
        cell: |o, _| string_at(o, &["status", "printableStatus"]),
    },
    Column {
        name: "Ready",
        type_: "string",
        format: "",
        priority: 0,
        description: "Ready",
        cell: |o, _| condition(o, "Ready"),
    },
];

const VMI_COLUMNS: &[Column] = &[
    NAME,
    AGE,
    Column {
        name: "Phase",
        type_: "string",
        format: "",
        priority: 0,
        description: "",
        cell: |o, _| string_at(o, &["status", "phase"]),
    },
    Column {
        name: "IP",
        type_: "string",
        format: "",
        priority: 0,
        description: "",
        cell: |o, _| match &o["status"]["interfaces"][0]["ipAddress"] {
            Value::String(s) => s.clone().into(),
            _ => Value::Null,
        },
    },
    Column {
        name: "NodeName",
        type_: "string",
        format: "",
        priority: 0,
        description: "",
        cell: |o, _| string_at(o, &["status", "nodeName"]),
    },
    Column {
        name: "Ready",
        type_: "string",
        format: "",
        priority: 0,
        description: "",
        cell: |o, _| condition(o, "Ready"),
    },
    Column {
        name: "Live-Migratable",
        type_: "string",
        format: "",
        priority: 1,
        description: "",
        cell: |o, _| condition(o, "LiveMigratable"),
    },
    Column {
        name: "Paused",
        type_: "string",
        format: "",
        priority: 1,
        description: "",
        cell: |o, _| condition(o, "Paused"),
    },
];

const VMIM_COLUMNS: &[Column] = &[
    NAME,
    Column {
        name: "Phase",
        type_: "string",
        format: "",
        priority: 0,
        description: "The current phase of VM instance migration",
        cell: |o, _| string_at(o, &["status", "phase"]),
    },
    Column {
        name: "VMI",
        type_: "string",
        format: "",
        priority: 0,
        description: "The name of the VMI to perform the migration on",
        cell: |o, _| string_at(o, &["spec", "vmiName"]),
    },
];

impl Printer {
    fn columns(self) -> &'static [Column] {
        match self {
            Printer::Event => EVENT_COLUMNS,
            Printer::Kubevirt(VmKind::Vm) => VM_COLUMNS,
            Printer::Kubevirt(VmKind::Vmi) => VMI_COLUMNS,
            Printer::Kubevirt(VmKind::Vmim) => VMIM_COLUMNS,
        }
    }
}

fn definitions(columns: &[Column]) -> Vec<Value> {
    columns
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.type_, "format": c.format,
                   "description": c.description, "priority": c.priority})
        })
        .collect()
}

/// One row for an object as the request serves it (events.k8s.io/v1 objects are printed from their core
/// fields, as the API server prints both APIs with one printer).
fn row(printer: Printer, served: &Value, include: Include, now: jiff::Timestamp) -> Value {
    let core;
    let fields = if printer == Printer::Event && served["apiVersion"] == "events.k8s.io/v1" {
        core = convert::to_core(served);
        &core
    } else {
        served
    };
    let cells: Vec<Value> = printer
        .columns()
        .iter()
        .map(|c| (c.cell)(fields, now))
        .collect();
    let mut row = json!({"cells": cells});
    match include {
        Include::None => {}
        Include::Metadata => {
            row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                   "metadata": served["metadata"]})
        }
        Include::Object => row["object"] = served.clone(),
    }
    row
}

/// A Table of `items` (a list page, or the one object of a watch event). `columns: false` leaves the column
/// definitions out, as on every watch event after the first.
pub fn table(
    printer: Printer,
    items: &[&Value],
    include: Include,
    metadata: Value,
    columns: bool,
) -> Value {
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| row(printer, o, include, now))
        .collect();
    let defs = if columns {
        definitions(printer.columns())
    } else {
        Vec::new()
    };
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
           "columnDefinitions": defs, "rows": rows})
}

fn timestamp(v: &Value) -> Option<jiff::Timestamp> {
    v.as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok())
}

/// `firstTimestamp`, else `eventTime`, as the API server's printer reads them.
fn first_seen(o: &Value, now: jiff::Timestamp) -> String {
    timestamp(&o["firstTimestamp"])
        .or_else(|| timestamp(&o["eventTime"]))
        .map_or_else(|| "<unknown>".into(), |t| human_duration(now, t))
}

/// `series.lastObservedTime` for a series, else `lastTimestamp`, else the first seen time.
fn last_seen(o: &Value, now: jiff::Timestamp) -> String {
    if o["series"].is_object() {
        return timestamp(&o["series"]["lastObservedTime"])
            .map_or_else(|| "<unknown>".into(), |t| human_duration(now, t));
    }
    match timestamp(&o["lastTimestamp"]) {
        Some(t) => human_duration(now, t),
        None => first_seen(o, now),
    }
}

/// The API server's human-readable age (`5s`, `3m20s`, `4h10m`, `2d3h`, `1y20d`).
pub fn human_duration(now: jiff::Timestamp, then: jiff::Timestamp) -> String {
    let secs = now.duration_since(then).as_secs();
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        return if d == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{d}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ago(now: jiff::Timestamp, secs: i64) -> String {
        human_duration(now, now - jiff::SignedDuration::from_secs(secs))
    }

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        let now = jiff::Timestamp::now();
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (200, "3m20s"),
            (240, "4m"),
            (3000, "50m"),
            (15_000, "4h10m"),
            (36_000, "10h"),
            (183_600, "2d3h"),
            (864_000, "10d"),
            (365 * 86_400 * 3 + 20 * 86_400, "3y20d"),
            (-5, "<invalid>"),
        ];
        for (secs, want) in cases {
            assert_eq!(ago(now, secs), want, "{secs}s");
        }
    }

    #[test]
    fn event_rows_have_the_wide_cells_and_the_object_asked_for() {
        let ev = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
            "reason": "BackOff", "type": "Warning", "message": " Back-off \n", "count": 7,
            "source": {"component": "kubelet", "host": "node-1"}});
        let t = table(Printer::Event, &[&ev], Include::Object, json!({}), true);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[1], "Warning");
        assert_eq!(cells[3], "pod/web");
        assert_eq!(cells[4], "spec.containers{app}");
        assert_eq!(cells[5], "kubelet, node-1");
        assert_eq!(cells[6], "Back-off");
        assert_eq!(cells[0], "<unknown>");
        assert_eq!(cells[8], 7);
        assert_eq!(cells[9], "web.1");
        assert_eq!(t["rows"][0]["object"]["reason"], "BackOff");
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 10);
        let watch = table(Printer::Event, &[&ev], Include::Metadata, json!({}), false);
        assert_eq!(watch["columnDefinitions"], json!([]));
        assert_eq!(watch["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }

    #[test]
    fn vmi_cells_follow_the_crd_columns() {
        let vmi = json!({"metadata": {"name": "vm1"}, "status": {"phase": "Running", "nodeName": "n1",
            "interfaces": [{"ipAddress": "10.0.0.5"}], "conditions": [{"type": "Ready", "status": "True"}]}});
        let t = table(
            Printer::Kubevirt(VmKind::Vmi),
            &[&vmi],
            Include::None,
            json!({}),
            true,
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["vm1", null, "Running", "10.0.0.5", "n1", "True", null, null])
        );
        assert!(t["rows"][0].get("object").is_none());
        assert!(Include::parse(Some("Everything")).is_err());
    }
}
