//! The configuration described by its own types: a JSON Schema derived (schemars) from the settings structs,
//! with every key's doc comment as its `description` and, as `x-reload: applied`, the keys a reload applies.
//! A mark holds for everything below it (a struct marked applied is applied wherever it is used); an unmarked
//! key inherits its parent's, and the top level needs a restart. So a new setting is restart-needed until its
//! struct says otherwise, never silently "applied".
//!
//! This module only reads the schema; it must not decide anything about a component (the components say it by
//! their marks).

use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::Config;

/// The mark of a key a reload applies.
pub const APPLIED: &str = "applied";

/// The schema of [`Config`], every struct inlined where it is used, as a plain JSON value.
pub fn root() -> &'static Value {
    static ROOT: OnceLock<Value> = OnceLock::new();
    ROOT.get_or_init(|| {
        schemars::generate::SchemaSettings::draft2020_12()
            .with(|s| s.inline_subschemas = true)
            .into_generator()
            .into_root_schema_for::<Config>()
            .to_value()
    })
}

/// The settings of a node (its `properties`), looking through `Option` (`anyOf` with `null`).
pub fn properties(schema: &Value) -> Option<&Map<String, Value>> {
    if let Some(p) = schema.get("properties").and_then(Value::as_object) {
        return Some(p);
    }
    branches(schema).find_map(properties)
}

/// The schema of a list's entries when they are settings of their own (`redact.rules`, `sinks.webhooks`).
pub fn entry_settings(schema: &Value) -> Option<&Value> {
    let items = schema
        .get("items")
        .or_else(|| branches(schema).find_map(|b| b.get("items")))?;
    properties(items).map(|_| items)
}

/// Whether a reload applies this node: `Some` when the node carries a mark, `None` when it inherits.
pub fn applied_mark(schema: &Value) -> Option<bool> {
    schema
        .get("x-reload")
        .and_then(Value::as_str)
        .map(|m| m == APPLIED)
}

fn branches(schema: &Value) -> impl Iterator<Item = &Value> {
    ["anyOf", "oneOf", "allOf"]
        .into_iter()
        .filter_map(|k| schema.get(k).and_then(Value::as_array))
        .flatten()
}

/// The keys that differ between `old` and `new` and that a reload does not apply, in the file's words
/// (`state_dir`, `sinks.otlp.endpoint`, `sinks.webhooks[0].url`, `sinks.webhooks (number of entries)`).
pub fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    match (serde_json::to_value(old), serde_json::to_value(new)) {
        (Ok(old), Ok(new)) => restart_needed_values(&old, &new),
        // Not reachable with string-keyed maps; if it were, claiming nothing applied is the safe answer.
        _ => vec!["(the whole configuration)".to_string()],
    }
}

/// [`restart_needed`] on configurations already in their serialized form.
pub fn restart_needed_values(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(root(), old, new, "", false, &mut out);
    out
}

fn walk(
    schema: &Value,
    old: &Value,
    new: &Value,
    path: &str,
    applied: bool,
    out: &mut Vec<String>,
) {
    if old == new {
        return;
    }
    let applied = applied_mark(schema).unwrap_or(applied);
    let child = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    if let (Some(props), Value::Object(o), Value::Object(n)) = (properties(schema), old, new) {
        for (key, s) in props {
            let null = Value::Null;
            let (a, b) = (o.get(key).unwrap_or(&null), n.get(key).unwrap_or(&null));
            walk(s, a, b, &child(key), applied, out);
        }
        return;
    }
    if let (Some(entry), Value::Array(o), Value::Array(n)) = (entry_settings(schema), old, new) {
        if o.len() != n.len() && !applied {
            out.push(format!("{path} (number of entries)"));
        }
        for (i, (a, b)) in o.iter().zip(n).enumerate() {
            walk(entry, a, b, &format!("{path}[{i}]"), applied, out);
        }
        return;
    }
    if !applied {
        out.push(path.to_string());
    }
}
