//! The configuration reference, generated from the settings' doc comments and defaults: the commented default
//! file (`src/default-config.yaml`, printed by `herald config default`) and the README's key table. Tests
//! compare both files with what is generated here, so neither can drift from the types; after changing a
//! setting, `HERALD_BLESS=1 cargo test --lib config::` writes them again.
//!
//! Test-only: the agent prints the checked-in file and never generates anything at run time.

use serde_json::Value;

use super::Config;
use super::schema::{self, applied_mark, entry_settings, properties};

/// Width of a generated comment line.
const WIDTH: usize = 110;

const HEADER: &str = "\
# herald configuration. Every key is optional: a missing key takes the value shown here. A setting that can be
# off or unset is written null (\"\" means the same, as it always did).
# Flags and HERALD_* environment variables override the file (see `herald run --help`).
# This file is generated from the settings' documentation; `herald config check FILE` checks a copy.
";

/// A doc comment as one line of prose: whitespace runs (the source's line breaks) become single spaces.
pub fn prose(schema: &Value) -> String {
    let title = schema.get("title").and_then(Value::as_str);
    let description = schema.get("description").and_then(Value::as_str);
    let text = match (title, description) {
        (Some(t), Some(d)) => format!("{t} {d}"),
        (Some(t), None) => t.to_string(),
        (None, Some(d)) => d.to_string(),
        (None, None) => String::new(),
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` as `# ` comment lines at `indent`, wrapped at [`WIDTH`].
fn comment(text: &str, indent: usize, out: &mut String) {
    hanging(text, indent, 0, 0, out)
}

/// Like [`comment`], with the first line indented `first` more and the others `hang` more (a list's keys).
fn hanging(text: &str, indent: usize, first: usize, hang: usize, out: &mut String) {
    let base = format!("{}# ", " ".repeat(indent));
    let mut line = format!("{base}{}", " ".repeat(first));
    let mut empty = true;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if !empty && line.len() + 1 + word.len() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = format!("{base}{}", " ".repeat(hang));
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    if !empty {
        out.push_str(&line);
        out.push('\n');
    }
}

/// The commented default configuration: the defaults as serde-saphyr writes them (in the structs' field
/// order), each key preceded by its doc comment; lists of plain values on one line.
pub fn default_yaml() -> String {
    // Long strings (the redaction patterns) stay on one line rather than folded, so they read as written.
    let mut options = serde_saphyr::SerializerOptions::default();
    options.prefer_block_scalars = false;
    let plain =
        serde_saphyr::to_string_with_options(&Config::default(), options).unwrap_or_default();
    let lines: Vec<&str> = plain.lines().collect();
    let mut out = String::from(HEADER);
    // The schema of each open mapping, by indentation.
    let mut stack: Vec<(usize, &Value)> = vec![(0, schema::root())];
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let indent = line.len() - line.trim_start().len();
        let text = line.trim_start();
        if text.starts_with("- ") || text == "-" {
            // Inside a list of settings: documented once, above the list.
            out.push_str(line);
            out.push('\n');
            continue;
        }
        while stack.len() > 1 && stack.last().is_some_and(|(d, _)| *d > indent) {
            stack.pop();
        }
        let Some((key, value)) = text.split_once(':') else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let parent = stack.last().map(|(_, s)| *s).unwrap_or(schema::root());
        let Some(node) = properties(parent).and_then(|p| p.get(key)) else {
            // A list entry's key (its indentation is past the `- `): already documented above the list.
            out.push_str(line);
            out.push('\n');
            continue;
        };
        if indent == 0 {
            out.push('\n');
        }
        comment(&prose(node), indent, &mut out);
        if let Some(entry) = entry_settings(node) {
            comment("Each entry:", indent, &mut out);
            if let Some(props) = properties(entry) {
                for (k, s) in props {
                    hanging(&format!("{k}: {}", prose(s)), indent, 2, 4, &mut out);
                }
            }
        }
        if value.trim().is_empty() {
            // A list of plain values (`- a` lines at this indentation) is written on one line.
            let mut items = Vec::new();
            let mut j = i;
            while j < lines.len() {
                let l = lines[j];
                let ind = l.len() - l.trim_start().len();
                match l.trim_start().strip_prefix("- ") {
                    Some(v)
                        if ind == indent
                            && !v.contains(':')
                            && v.chars()
                                .all(|c| c.is_alphanumeric() || "_.-/+".contains(c)) =>
                    {
                        items.push(v);
                        j += 1;
                    }
                    _ => break,
                }
            }
            let next_is_item = lines.get(j).is_some_and(|l| {
                l.len() - l.trim_start().len() == indent && l.trim_start().starts_with('-')
            });
            if !items.is_empty() && !next_is_item {
                out.push_str(&format!(
                    "{}{key}: [{}]\n",
                    " ".repeat(indent),
                    items.join(", ")
                ));
                i = j;
                continue;
            }
            stack.push((indent + 1, node));
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A key as the walk below meets it.
struct Key<'a> {
    /// Dotted path; a list's entry keys as `list[].key`.
    path: String,
    schema: &'a Value,
    /// Whether a reload applies it, and whether it applies the key above it.
    applied: bool,
    parent_applied: bool,
}

/// Every key below `schema`, parents before children (alphabetical among siblings).
fn each_key<'a>(schema: &'a Value, path: &str, applied: bool, f: &mut impl FnMut(Key<'a>)) {
    let Some(props) = properties(schema) else {
        return;
    };
    for (key, node) in props {
        let key_path = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let here = applied_mark(node).unwrap_or(applied);
        f(Key {
            path: key_path.clone(),
            schema: node,
            applied: here,
            parent_applied: applied,
        });
        each_key(node, &key_path, here, f);
        if let Some(entry) = entry_settings(node) {
            each_key(entry, &format!("{key_path}[]"), here, f);
        }
    }
}

/// One row per key (a list's entry keys as `list[].key`): key, default, what a reload does, meaning.
pub fn readme_table() -> String {
    let defaults = serde_json::to_value(Config::default()).unwrap_or_default();
    let mut out =
        String::from("| key | default | on reload | meaning |\n| --- | --- | --- | --- |\n");
    each_key(schema::root(), "", false, &mut |key| {
        // An entry key's default is its struct's; every other key's is the default configuration's.
        let value = if key.path.contains("[]") {
            key.schema.get("default")
        } else {
            defaults.pointer(&format!("/{}", key.path.replace('.', "/")))
        };
        let shown = match value {
            _ if properties(key.schema).is_some() => String::new(),
            None => "required".to_string(),
            Some(Value::Null) => "unset".to_string(),
            // Text that can be unset defaults to null; an empty default is no default at all (a webhook's url).
            Some(Value::String(s)) if s.is_empty() => "required".to_string(),
            Some(Value::Array(a)) if entry_settings(key.schema).is_some() => match a.len() {
                0 => "none".to_string(),
                n => format!("{n} entries (`herald config default`)"),
            },
            Some(Value::String(s)) => format!("`{s}`"),
            Some(v) => format!("`{v}`"),
        };
        let reload = if key.applied { "applied" } else { "restart" };
        let meaning = prose(key.schema).replace('|', "\\|");
        out.push_str(&format!(
            "| `{}` | {shown} | {reload} | {meaning} |\n",
            key.path
        ));
    });
    out
}

/// The keys a reload applies, as the README's "Reloading the configuration" lists them: the top-most applied
/// key of each subtree.
pub fn applied_keys() -> Vec<String> {
    let mut out = Vec::new();
    each_key(schema::root(), "", false, &mut |key| {
        if key.applied && !key.parent_applied {
            out.push(key.path);
        }
    });
    out
}
