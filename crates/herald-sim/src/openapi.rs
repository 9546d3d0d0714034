//! A minimal but correct OpenAPI v3 description of what the simulator serves (`/openapi/v3` and one document
//! per group-version), so kubectl's `create -f` and `apply -f` work with validation on, as against a real
//! cluster: kubectl reads the PATCH operation of the object's kind, finds the `fieldValidation` parameter,
//! and leaves validation to the server (`?fieldValidation=Strict`), which then refuses unknown fields with
//! the API server's `strict decoding error`. The same schemas describe the types and drive that check.

use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use super::http::VmKind;
use super::table::Printer;

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const OWNER: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference";
const REF: &str = "io.k8s.api.core.v1.ObjectReference";
const CORE_EVENT: &str = "io.k8s.api.core.v1.Event";
const V1_EVENT: &str = "io.k8s.api.events.v1.Event";
const CONFIG_MAP: &str = "io.k8s.api.core.v1.ConfigMap";
const LEASE: &str = "io.k8s.api.coordination.v1.Lease";

fn string() -> Value {
    json!({"type": "string"})
}
fn integer() -> Value {
    json!({"type": "integer", "format": "int32"})
}
fn time() -> Value {
    json!({"type": "string", "format": "date-time"})
}
fn reference(name: &str) -> Value {
    json!({"allOf": [{"$ref": format!("#/components/schemas/{name}")}], "default": {}})
}
fn string_map() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string", "default": ""}})
}
/// An object whose fields the simulator does not describe (a CRD's spec and status as stored).
fn open_object() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

fn object(props: &[(&str, Value)], required: &[&str]) -> Value {
    let mut properties = Map::new();
    for (k, v) in props {
        properties.insert((*k).to_string(), v.clone());
    }
    let mut o = json!({"type": "object", "properties": properties});
    if !required.is_empty() {
        o["required"] = json!(required);
    }
    o
}

fn kind_schema(group: &str, kind: &str, props: &[(&str, Value)], required: &[&str]) -> Value {
    let mut all = vec![
        ("apiVersion", string()),
        ("kind", string()),
        ("metadata", reference(META)),
    ];
    all.extend(props.iter().cloned());
    let mut o = object(&all, required);
    o["x-kubernetes-group-version-kind"] = json!([{"group": group, "kind": kind, "version": "v1"}]);
    o
}

/// The shared types: ObjectMeta, OwnerReference, ObjectReference.
fn common_schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            META,
            object(
                &[
                    ("annotations", string_map()),
                    ("creationTimestamp", time()),
                    (
                        "deletionGracePeriodSeconds",
                        json!({"type": "integer", "format": "int64"}),
                    ),
                    ("deletionTimestamp", time()),
                    ("finalizers", json!({"type": "array", "items": string()})),
                    ("generateName", string()),
                    ("generation", json!({"type": "integer", "format": "int64"})),
                    ("labels", string_map()),
                    (
                        "managedFields",
                        json!({"type": "array", "items": open_object()}),
                    ),
                    ("name", string()),
                    ("namespace", string()),
                    (
                        "ownerReferences",
                        json!({"type": "array", "items": reference(OWNER)}),
                    ),
                    ("resourceVersion", string()),
                    ("selfLink", string()),
                    ("uid", string()),
                ],
                &[],
            ),
        ),
        (
            OWNER,
            object(
                &[
                    ("apiVersion", string()),
                    ("blockOwnerDeletion", json!({"type": "boolean"})),
                    ("controller", json!({"type": "boolean"})),
                    ("kind", string()),
                    ("name", string()),
                    ("uid", string()),
                ],
                &["apiVersion", "kind", "name", "uid"],
            ),
        ),
        (
            REF,
            object(
                &[
                    ("apiVersion", string()),
                    ("fieldPath", string()),
                    ("kind", string()),
                    ("name", string()),
                    ("namespace", string()),
                    ("resourceVersion", string()),
                    ("uid", string()),
                ],
                &[],
            ),
        ),
    ]
}

/// A served resource: path prefix, plural, kind, group and schema name.
struct Resource {
    prefix: &'static str,
    plural: &'static str,
    kind: &'static str,
    group: &'static str,
    schema: &'static str,
}

/// Named schemas, as `components.schemas` holds them.
type Schemas = Vec<(&'static str, Value)>;

/// The schemas and resources of one group-version (`api/v1`, `apis/kubevirt.io/v1`, ...).
fn group_version(gv: &str) -> Option<(Schemas, Vec<Resource>)> {
    let mut schemas = common_schemas();
    let resources = match gv {
        "api/v1" => {
            schemas.push((
                CORE_EVENT,
                kind_schema(
                    "",
                    "Event",
                    &[
                        ("action", string()),
                        ("count", integer()),
                        (
                            "eventTime",
                            json!({"type": "string", "format": "date-time"}),
                        ),
                        ("firstTimestamp", time()),
                        ("involvedObject", reference(REF)),
                        ("lastTimestamp", time()),
                        ("message", string()),
                        ("reason", string()),
                        ("related", reference(REF)),
                        ("reportingComponent", string()),
                        ("reportingInstance", string()),
                        (
                            "series",
                            object(&[("count", integer()), ("lastObservedTime", time())], &[]),
                        ),
                        (
                            "source",
                            object(&[("component", string()), ("host", string())], &[]),
                        ),
                        ("type", string()),
                    ],
                    &["metadata", "involvedObject"],
                ),
            ));
            schemas.push((
                CONFIG_MAP,
                kind_schema(
                    "",
                    "ConfigMap",
                    &[
                        (
                            "binaryData",
                            json!({"type": "object", "additionalProperties": {"type": "string", "format": "byte"}}),
                        ),
                        ("data", string_map()),
                        ("immutable", json!({"type": "boolean"})),
                    ],
                    &[],
                ),
            ));
            vec![
                Resource {
                    prefix: "/api/v1",
                    plural: "events",
                    kind: "Event",
                    group: "",
                    schema: CORE_EVENT,
                },
                Resource {
                    prefix: "/api/v1",
                    plural: "configmaps",
                    kind: "ConfigMap",
                    group: "",
                    schema: CONFIG_MAP,
                },
            ]
        }
        "apis/events.k8s.io/v1" => {
            schemas.push((
                V1_EVENT,
                kind_schema(
                    "events.k8s.io",
                    "Event",
                    &[
                        ("action", string()),
                        ("deprecatedCount", integer()),
                        ("deprecatedFirstTimestamp", time()),
                        ("deprecatedLastTimestamp", time()),
                        (
                            "deprecatedSource",
                            object(&[("component", string()), ("host", string())], &[]),
                        ),
                        (
                            "eventTime",
                            json!({"type": "string", "format": "date-time"}),
                        ),
                        ("note", string()),
                        ("reason", string()),
                        ("regarding", reference(REF)),
                        ("related", reference(REF)),
                        ("reportingController", string()),
                        ("reportingInstance", string()),
                        (
                            "series",
                            object(
                                &[("count", integer()), ("lastObservedTime", time())],
                                &["count", "lastObservedTime"],
                            ),
                        ),
                        ("type", string()),
                    ],
                    &["eventTime"],
                ),
            ));
            vec![Resource {
                prefix: "/apis/events.k8s.io/v1",
                plural: "events",
                kind: "Event",
                group: "events.k8s.io",
                schema: V1_EVENT,
            }]
        }
        "apis/coordination.k8s.io/v1" => {
            schemas.push((
                LEASE,
                kind_schema(
                    "coordination.k8s.io",
                    "Lease",
                    &[(
                        "spec",
                        object(
                            &[
                                ("acquireTime", time()),
                                ("holderIdentity", string()),
                                ("leaseDurationSeconds", integer()),
                                ("leaseTransitions", integer()),
                                ("preferredHolder", string()),
                                ("renewTime", time()),
                                ("strategy", string()),
                            ],
                            &[],
                        ),
                    )],
                    &[],
                ),
            ));
            vec![Resource {
                prefix: "/apis/coordination.k8s.io/v1",
                plural: "leases",
                kind: "Lease",
                group: "coordination.k8s.io",
                schema: LEASE,
            }]
        }
        "apis/kubevirt.io/v1" => VmKind::ALL
            .into_iter()
            .map(|k| {
                let schema = kubevirt_schema(k);
                schemas.push((
                    schema,
                    kind_schema(
                        "kubevirt.io",
                        k.kind(),
                        &[("spec", open_object()), ("status", open_object())],
                        &[],
                    ),
                ));
                Resource {
                    prefix: "/apis/kubevirt.io/v1",
                    plural: k.plural(),
                    kind: k.kind(),
                    group: "kubevirt.io",
                    schema,
                }
            })
            .collect(),
        _ => return None,
    };
    Some((schemas, resources))
}

fn kubevirt_schema(k: VmKind) -> &'static str {
    match k {
        VmKind::Vm => "io.kubevirt.v1.VirtualMachine",
        VmKind::Vmi => "io.kubevirt.v1.VirtualMachineInstance",
        VmKind::Vmim => "io.kubevirt.v1.VirtualMachineInstanceMigration",
    }
}

/// The group-versions described, as `/openapi/v3` lists them.
fn served(kubevirt: bool) -> Vec<&'static str> {
    let mut gvs = vec![
        "api/v1",
        "apis/events.k8s.io/v1",
        "apis/coordination.k8s.io/v1",
    ];
    if kubevirt {
        gvs.push("apis/kubevirt.io/v1");
    }
    gvs
}

fn operation(r: &Resource, action: &str, body_params: bool) -> Value {
    let mut params = vec![
        json!({"name": "pretty", "in": "query", "schema": {"type": "string", "uniqueItems": true}}),
    ];
    if body_params {
        for name in ["dryRun", "fieldManager", "fieldValidation"] {
            params.push(json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}}));
        }
    }
    json!({
        "operationId": format!("{action}{}", r.kind),
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", r.schema)}}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": "v1", "kind": r.kind},
    })
}

/// The document of one group-version (`gv` as in `/openapi/v3/<gv>`), or None if it is not served.
pub fn document(gv: &str, kubevirt: bool) -> Option<Value> {
    if !served(kubevirt).contains(&gv) {
        return None;
    }
    let (schemas, resources) = group_version(gv)?;
    let mut paths = Map::new();
    for r in &resources {
        let ns = json!({"name": "namespace", "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}});
        let name = json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}});
        paths.insert(
            format!("{}/namespaces/{{namespace}}/{}", r.prefix, r.plural),
            json!({"get": operation(r, "list", false), "post": operation(r, "post", true), "parameters": [ns.clone()]}),
        );
        paths.insert(
            format!(
                "{}/namespaces/{{namespace}}/{}/{{name}}",
                r.prefix, r.plural
            ),
            json!({"get": operation(r, "get", false), "put": operation(r, "put", true),
                   "patch": operation(r, "patch", true), "delete": operation(r, "delete", false),
                   "parameters": [name, ns]}),
        );
    }
    let mut components = Map::new();
    for (k, v) in schemas {
        components.insert(k.to_string(), v);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": components},
    }))
}

/// `/openapi/v3`: where each group-version's document is, with a hash that changes with its content.
pub fn root(kubevirt: bool) -> Value {
    let mut paths = Map::new();
    for gv in served(kubevirt) {
        let doc = document(gv, kubevirt).unwrap_or_default();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        doc.to_string().hash(&mut h);
        paths.insert(
            gv.to_string(),
            json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={:016X}", h.finish())}),
        );
    }
    json!({"paths": paths})
}

/// 400 for a `fieldValidation` value the API server does not know.
pub fn field_validation(param: Option<&str>) -> Option<String> {
    match param {
        None | Some("" | "Ignore" | "Warn" | "Strict") => None,
        Some(other) => Some(format!(
            "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
        )),
    }
}

/// The schema name and group-version document of what a printer's resource is written as.
fn schema_of(printer: Printer, api_version: &str) -> (&'static str, &'static str) {
    match printer {
        Printer::Event if api_version == "events.k8s.io/v1" => (V1_EVENT, "apis/events.k8s.io/v1"),
        Printer::Event => (CORE_EVENT, "api/v1"),
        Printer::Kubevirt(k) => (kubevirt_schema(k), "apis/kubevirt.io/v1"),
    }
}

/// `fieldValidation=Strict`: every field of `obj` must be in its kind's schema, else the API server's
/// `strict decoding error` naming each unknown field by its path.
pub fn strict(printer: Printer, obj: &Value) -> Result<(), String> {
    let api_version = obj["apiVersion"].as_str().unwrap_or("v1");
    let (schema, gv) = schema_of(printer, api_version);
    let Some((schemas, _)) = group_version(gv) else {
        return Ok(());
    };
    let find = |name: &str| schemas.iter().find(|(n, _)| *n == name).map(|(_, s)| s);
    let mut unknown = Vec::new();
    if let Some(s) = find(schema) {
        walk(obj, s, "", &find, &mut unknown);
    }
    if unknown.is_empty() {
        return Ok(());
    }
    let kind = obj["kind"].as_str().unwrap_or_default();
    let fields: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    Err(format!(
        "{kind} in version \"{}\" cannot be handled as a {kind}: strict decoding error: {}",
        api_version.rsplit('/').next().unwrap_or("v1"),
        fields.join(", ")
    ))
}

fn walk<'a>(
    v: &Value,
    schema: &'a Value,
    path: &str,
    find: &dyn Fn(&str) -> Option<&'a Value>,
    unknown: &mut Vec<String>,
) {
    if let Some(r) = schema["allOf"][0]["$ref"].as_str()
        && let Some(s) = r.strip_prefix("#/components/schemas/").and_then(find)
    {
        return walk(v, s, path, find, unknown);
    }
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        return;
    }
    match v {
        Value::Object(map) => {
            if let Some(items) = schema.get("additionalProperties") {
                for (k, x) in map {
                    walk(x, items, &join(path, k), find, unknown);
                }
                return;
            }
            let Some(props) = schema["properties"].as_object() else {
                return;
            };
            for (k, x) in map {
                match props.get(k) {
                    Some(s) => walk(x, s, &join(path, k), find, unknown),
                    None => unknown.push(join(path, k)),
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, x) in items.iter().enumerate() {
                    walk(x, s, &format!("{path}[{i}]"), find, unknown);
                }
            }
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_kind_has_a_patch_operation_with_field_validation() {
        let index = root(true);
        for (gv, entry) in index["paths"].as_object().unwrap() {
            assert!(
                entry["serverRelativeURL"]
                    .as_str()
                    .unwrap()
                    .starts_with("/openapi/v3/")
            );
            let doc = document(gv, true).unwrap();
            let patches: Vec<&Value> = doc["paths"]
                .as_object()
                .unwrap()
                .values()
                .filter_map(|p| p.get("patch"))
                .collect();
            assert!(!patches.is_empty(), "{gv}");
            for p in patches {
                assert!(p["x-kubernetes-group-version-kind"]["kind"].is_string());
                assert!(
                    p["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|x| x["name"] == "fieldValidation" && x["in"] == "query")
                );
                let schema = p["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("#/components/schemas/");
                assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
            }
        }
        assert!(document("apis/kubevirt.io/v1", false).is_none());
        assert!(root(false)["paths"].get("apis/kubevirt.io/v1").is_none());
    }

    #[test]
    fn strict_names_every_unknown_field_by_path() {
        let ok = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "a", "labels": {"x": "y"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u"}]},
            "involvedObject": {"kind": "Pod"}, "source": {"component": "kubelet"}, "count": 2});
        assert_eq!(strict(Printer::Event, &ok), Ok(()));
        let bad = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "a", "nmae": "b",
            "ownerReferences": [{"uid": "u", "colour": 1}]}, "involvedObject": {"kind": "Pod", "nmae": "p"}, "foo": 1});
        let e = strict(Printer::Event, &bad).unwrap_err();
        assert!(
            e.starts_with(
                "Event in version \"v1\" cannot be handled as a Event: strict decoding error: "
            ),
            "{e}"
        );
        for f in [
            "foo",
            "metadata.nmae",
            "involvedObject.nmae",
            "metadata.ownerReferences[0].colour",
        ] {
            assert!(e.contains(&format!("unknown field \"{f}\"")), "{f}: {e}");
        }
        let v1 =
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "note": "n", "message": "m"});
        assert!(
            strict(Printer::Event, &v1)
                .unwrap_err()
                .contains("unknown field \"message\"")
        );
        let vm = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "spec": {"anything": 1}});
        assert_eq!(strict(Printer::Kubevirt(VmKind::Vm), &vm), Ok(()));
        assert!(field_validation(Some("Loose")).is_some());
        assert!(field_validation(Some("Strict")).is_none());
    }
}
