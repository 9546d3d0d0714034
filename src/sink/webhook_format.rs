//! Webhook bodies: what one POST carries, in the shape its receiver takes.
//!
//! - `records`: `{"records": [...]}`, each record the JSON line object (the default; any receiver of ours).
//! - `slack`: a Slack incoming-webhook message, `text` (the notification fallback) and Block Kit `blocks`.
//! - `teams`: a `message` with one Adaptive Card attachment, as Teams workflows and incoming webhooks take it.
//! - `alertmanager`: the array of alerts Alertmanager's `POST /api/v2/alerts` takes, one per record, so an
//!   Event becomes an alert that routes, groups, silences and resolves like any other.
//! - `template`: the user's own body, a Jinja template rendered once per batch (`records`) or once per record
//!   (`record`, one POST each) with the JSON line objects as data.
//!
//! Bodies are built from the record only; signing and the bearer token happen after, on the exact bytes, so
//! every format is signed the same way.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::Shared;
use super::json::write_object;
use super::shape::{self, Identity};
use crate::config::{TemplatePer, WebhookFormat};
use crate::record::{EventRecord, LogEntry};

/// Slack refuses a message with more than 50 blocks: a header, at most this many records, a closing note.
const SLACK_MAX_RECORDS: usize = 45;
/// Slack's limits: 3000 characters of section text, 150 of header text.
const SLACK_SECTION_MAX: usize = 2900;
const SLACK_HEADER_MAX: usize = 150;
/// Teams refuses messages above about 28 KB: an Adaptive Card lists at most this many records, and stops
/// earlier when the next one would take the card past [`TEAMS_BUDGET`] bytes.
const TEAMS_MAX_RECORDS: usize = 15;
const TEAMS_BUDGET: usize = 24 * 1024;
/// A message in a chat card is cut here; the whole record stays in the other sinks.
const CHAT_MESSAGE_MAX: usize = 1000;
/// Template work limit (minijinja fuel: roughly instructions). Keeps a runaway loop in a user template from
/// stalling the webhook; the render fails instead, counted like any other render error.
const TEMPLATE_FUEL: u64 = 5_000_000;
/// The template's name inside the engine (shown in its error messages).
const TEMPLATE_NAME: &str = "template";

/// Why a body could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user template did not compile (configuration validation normally catches this first).
    #[error("the webhook template does not compile: {0}")]
    Compile(String),
    /// The user template failed on this data (an undefined filter, a type error, out of fuel...).
    #[error("the webhook template failed to render: {0}")]
    Render(String),
}

/// One body to POST and how many records it stands for (counted as sent or failed together).
pub struct Body {
    pub bytes: Vec<u8>,
    pub records: u64,
}

/// Check a template for `template` bodies; the error is the engine's message (line and what it expected).
pub fn check_template(source: &str) -> Result<(), String> {
    match environment(source) {
        Ok(_) => Ok(()),
        Err(Error::Compile(e) | Error::Render(e)) => Err(e),
    }
}

/// A sandboxed environment holding only `source`: no `include`/`import` (built without them), no filesystem, a fuel limit, no auto-escaping (the body is JSON: use `| tojson`).
fn environment(source: &str) -> Result<minijinja::Environment<'static>, Error> {
    let mut env = minijinja::Environment::new();
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_template_owned(TEMPLATE_NAME, source.to_string())
        .map_err(|e| Error::Compile(detailed(&e)))?;
    Ok(env)
}

/// minijinja's error with its cause chain, on one line.
fn detailed(e: &minijinja::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let _ = write!(out, ": {s}");
        source = s.source();
    }
    out
}

/// Builds the bodies of one webhook; made once from its settings (and again on a reload).
pub struct Formatter {
    format: WebhookFormat,
    template: Option<(minijinja::Environment<'static>, TemplatePer)>,
    alert_resolve_after: std::time::Duration,
}

impl Formatter {
    pub fn new(
        format: WebhookFormat,
        template: Option<&str>,
        per: TemplatePer,
        alert_resolve_after: std::time::Duration,
    ) -> Result<Formatter, Error> {
        let template = match (format, template) {
            (WebhookFormat::Template, Some(source)) => Some((environment(source)?, per)),
            (WebhookFormat::Template, None) => {
                return Err(Error::Compile("no template is set".into()));
            }
            _ => None,
        };
        Ok(Formatter {
            format,
            template,
            alert_resolve_after,
        })
    }

    /// The bodies for `batch`: one, except for a per-record template. A record that cannot be written at
    /// all (never expected) is left out, as the JSON line sink does.
    pub fn bodies(&self, batch: &[Shared], id: &Identity) -> Vec<Result<Body, Error>> {
        let n = batch.len() as u64;
        let one = |bytes: Vec<u8>| vec![Ok(Body { bytes, records: n })];
        match self.format {
            WebhookFormat::Records => one(records(batch, id)),
            WebhookFormat::Slack => one(to_bytes(&slack(batch, id))),
            WebhookFormat::Teams => one(to_bytes(&teams(batch, id))),
            WebhookFormat::Alertmanager => {
                one(to_bytes(&alertmanager(batch, id, self.alert_resolve_after)))
            }
            WebhookFormat::Template => {
                let Some((env, per)) = &self.template else {
                    return vec![Err(Error::Compile("no template is set".into()))];
                };
                let objects: Vec<Value> = entries(batch).filter_map(|r| object(r, id)).collect();
                match per {
                    TemplatePer::Batch => vec![
                        render(
                            env,
                            minijinja::context! { records => minijinja::value::Serde(&objects) },
                        )
                        .map(|bytes| Body { bytes, records: n }),
                    ],
                    TemplatePer::Record => objects
                        .into_iter()
                        .map(|o| {
                            render(
                                env,
                                minijinja::context! { record => minijinja::value::Serde(&o) },
                            )
                            .map(|bytes| Body { bytes, records: 1 })
                        })
                        .collect(),
                }
            }
        }
    }
}

fn to_bytes(v: &Value) -> Vec<u8> {
    // A `Value` always serialises.
    serde_json::to_vec(v).unwrap_or_default()
}

fn render(env: &minijinja::Environment<'static>, ctx: minijinja::Value) -> Result<Vec<u8>, Error> {
    let t = env
        .get_template(TEMPLATE_NAME)
        .map_err(|e| Error::Compile(detailed(&e)))?;
    t.render(ctx)
        .map(String::into_bytes)
        .map_err(|e| Error::Render(detailed(&e)))
}

/// The JSON line object of one record, as a value the template engine reads.
fn object(r: LogEntry<'_>, id: &Identity) -> Option<Value> {
    let mut out = Vec::with_capacity(512);
    write_object(&mut out, r, id);
    serde_json::from_slice(&out).ok()
}

/// The body: `{"records":[<record>,...]}`.
pub fn records(batch: &[Shared], id: &Identity) -> Vec<u8> {
    let mut out = Vec::with_capacity(512 * batch.len() + 16);
    out.extend_from_slice(b"{\"records\":[");
    let mut first = true;
    for r in entries(batch) {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        write_object(&mut out, r, id);
    }
    out.extend_from_slice(b"]}");
    out
}

/// What the batch's records write (checkpoint barriers never reach a webhook, [`super::SinkQueue::offer`]).
fn entries(batch: &[Shared]) -> impl Iterator<Item = LogEntry<'_>> {
    batch.iter().filter_map(|r| r.log_entry())
}

/// The Events (and transition reports) of a batch, for the chat and alert formats.
fn events(batch: &[Shared]) -> impl Iterator<Item = &EventRecord> {
    entries(batch).map(|e| e.event)
}

/// `Pod default/web-1` (`Node node-1` for cluster-scoped objects).
fn object_ref(r: &EventRecord) -> String {
    let ns = if r.regarding.namespace.is_empty() {
        &*r.namespace
    } else {
        &*r.regarding.namespace
    };
    if ns.is_empty() {
        format!("{} {}", r.regarding.kind, r.regarding.name)
    } else {
        format!("{} {}/{}", r.regarding.kind, ns, r.regarding.name)
    }
}

/// The namespace of the object the Event is about, else the Event's own.
fn namespace(r: &EventRecord) -> &str {
    if r.regarding.namespace.is_empty() {
        &r.namespace
    } else {
        &r.regarding.namespace
    }
}

/// At most `max` characters of `s`, with `…` when cut.
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max.saturating_sub(1)) {
        Some((i, _)) if s.len() > i + 1 && s.chars().count() > max => format!("{}…", &s[..i]),
        _ => s.to_string(),
    }
}

/// Slack's three control characters in message text.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `"3 Kubernetes Events"` and, when set, the cluster: `"3 Kubernetes Events in prod"`.
fn title(n: usize, id: &Identity) -> String {
    let what = if n == 1 {
        "1 Kubernetes Event".to_string()
    } else {
        format!("{n} Kubernetes Events")
    };
    if id.cluster_name.is_empty() {
        what
    } else {
        format!("{what} in {}", id.cluster_name)
    }
}

/// One line about a record for chat: `Warning BackOff on Pod default/web-1 (×3)`.
fn headline(r: &EventRecord) -> String {
    let mut s = format!("{} {} on {}", r.type_, r.reason, object_ref(r));
    if r.count > 1 {
        let _ = write!(s, " (×{})", r.count);
    }
    s
}

/// A Slack incoming-webhook message: a header, one mrkdwn section per record, a context line for what did
/// not fit; `text` is the fallback notifications show.
pub fn slack(batch: &[Shared], id: &Identity) -> Value {
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": cut(&title(batch.len(), id), SLACK_HEADER_MAX)},
    })];
    for r in events(batch).take(SLACK_MAX_RECORDS) {
        let text = format!(
            "*{}* `{}` on {}{}\n{}",
            slack_escape(&r.type_),
            slack_escape(&r.reason),
            slack_escape(&object_ref(r)),
            if r.count > 1 {
                format!(" (×{})", r.count)
            } else {
                String::new()
            },
            slack_escape(&cut(&r.message, CHAT_MESSAGE_MAX)),
        );
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": cut(&text, SLACK_SECTION_MAX)},
        }));
    }
    if batch.len() > SLACK_MAX_RECORDS {
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!("and {} more", batch.len() - SLACK_MAX_RECORDS)}],
        }));
    }
    let fallback = match (batch.len(), events(batch).next()) {
        (1, Some(one)) => format!("{}: {}", headline(one), cut(&one.message, CHAT_MESSAGE_MAX)),
        _ => title(batch.len(), id),
    };
    json!({"text": slack_escape(&fallback), "blocks": blocks})
}

/// A Teams message with one Adaptive Card (schema 1.2, which Teams renders on every client): a title, then
/// per record a headline, the message and a fact set.
pub fn teams(batch: &[Shared], id: &Identity) -> Value {
    let mut body = vec![json!({
        "type": "TextBlock", "text": title(batch.len(), id), "size": "Medium", "weight": "Bolder", "wrap": true,
    })];
    let mut size = 1024;
    let mut shown = 0;
    for r in events(batch).take(TEAMS_MAX_RECORDS) {
        let color = match r.type_.to_ascii_lowercase().as_str() {
            "normal" => "Default",
            "warning" => "Warning",
            _ => "Attention",
        };
        let container = json!({
            "type": "Container",
            "separator": true,
            "items": [
                {"type": "TextBlock", "text": headline(r), "weight": "Bolder", "color": color, "wrap": true},
                {"type": "TextBlock", "text": cut(&r.message, CHAT_MESSAGE_MAX), "wrap": true},
                {"type": "FactSet", "facts": [
                    {"title": "Namespace", "value": namespace(r)},
                    {"title": "Object", "value": format!("{} {}", r.regarding.kind, r.regarding.name)},
                    {"title": "Reason", "value": &*r.reason},
                    {"title": "Severity", "value": r.severity.as_str()},
                    {"title": "Count", "value": r.count.to_string()},
                ]},
            ],
        });
        size += to_bytes(&container).len();
        if shown > 0 && size > TEAMS_BUDGET {
            break;
        }
        body.push(container);
        shown += 1;
    }
    if batch.len() > shown {
        body.push(json!({
            "type": "TextBlock", "text": format!("and {} more", batch.len() - shown),
            "isSubtle": true, "wrap": true,
        }));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.2",
                "body": body,
            },
        }],
    })
}

/// Alertmanager's `POST /api/v2/alerts` body: one alert per record. Labels identify the alert (Alertmanager
/// folds alerts with equal labels into one), so they are the bounded facts: `alertname` (the reason),
/// `namespace`, `kind`, `name`, `severity` (herald's class), `type`, and `cluster` when set. The message goes
/// into annotations. `startsAt` is when the Event began; `endsAt` is `resolve_after` past its last
/// occurrence, so a repeating Event keeps its alert firing and a quiet one resolves by itself.
pub fn alertmanager(batch: &[Shared], id: &Identity, resolve_after: std::time::Duration) -> Value {
    let alerts: Vec<Value> = events(batch)
        .map(|r| {
            let mut labels = serde_json::Map::new();
            let mut put = |k: &str, v: &str| {
                // An empty label value is no label in Alertmanager's data model.
                if !v.is_empty() {
                    labels.insert(k.to_string(), Value::from(v));
                }
            };
            put(
                "alertname",
                if r.reason.is_empty() {
                    "KubernetesEvent"
                } else {
                    &r.reason
                },
            );
            put("namespace", namespace(r));
            put("kind", &r.regarding.kind);
            put("name", &r.regarding.name);
            put("severity", r.severity.as_str());
            put("type", &r.type_);
            put("cluster", &id.cluster_name);
            let last = shape::record_time(r).unwrap_or(r.observed);
            let first = r
                .first_timestamp
                .or(r.event_time)
                .filter(|t| *t <= last)
                .unwrap_or(last);
            let ends = last
                .checked_add(jiff::SignedDuration::try_from(resolve_after).unwrap_or_default())
                .unwrap_or(last);
            // An Event replayed long after it ended still arrives resolved, not firing.
            let ends = if ends < first { first } else { ends };
            let mut annotations = serde_json::Map::new();
            annotations.insert("summary".into(), Value::from(headline(r)));
            annotations.insert("description".into(), Value::from(r.message.as_str()));
            if !r.component.is_empty() {
                annotations.insert("component".into(), Value::from(&*r.component));
            }
            annotations.insert("count".into(), Value::from(r.count.to_string()));
            json!({
                "labels": labels,
                "annotations": annotations,
                "startsAt": first.to_string(),
                "endsAt": ends.to_string(),
            })
        })
        .collect();
    Value::Array(alerts)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn rec(name: &str, reason: &str, type_: &str, message: &str) -> Shared {
        let mut r = EventRecord::for_test("shop", "Pod", name, reason, type_);
        r.message = message.into();
        r.count = 3;
        r.first_timestamp = Some("2026-01-02T03:04:00Z".parse().unwrap());
        r.last_timestamp = Some("2026-01-02T03:05:00Z".parse().unwrap());
        Arc::new(r.into())
    }

    #[test]
    fn slack_escapes_and_bounds_its_blocks() {
        let batch: Vec<Shared> = (0..60)
            .map(|i| rec(&format!("p{i}"), "BackOff", "Warning", "a <b> & c"))
            .collect();
        let v = slack(&batch, &Identity::default());
        let blocks = v["blocks"].as_array().unwrap();
        assert!(blocks.len() <= 50, "Slack takes at most 50 blocks");
        assert_eq!(
            blocks[1]["text"]["text"],
            "*Warning* `BackOff` on Pod shop/p0 (×3)\na &lt;b&gt; &amp; c"
        );
        assert_eq!(blocks.last().unwrap()["elements"][0]["text"], "and 15 more");
        assert_eq!(v["text"], "60 Kubernetes Events");
    }

    #[test]
    fn the_readme_template_example_renders_valid_json() {
        let f = Formatter::new(
            WebhookFormat::Template,
            Some(
                r#"{"text": {{ (record["k8s.event.reason"] ~ " on " ~ record["k8s.object.name"] ~ ": " ~ record.body) | tojson }}}"#,
            ),
            TemplatePer::Record,
            Default::default(),
        )
        .unwrap();
        let bodies = f.bodies(
            &[rec("web", "BackOff", "Warning", "say \"hi\"")],
            &Identity::default(),
        );
        let v: Value = serde_json::from_slice(&bodies[0].as_ref().unwrap().bytes).unwrap();
        assert_eq!(v, json!({"text": "BackOff on web: say \"hi\""}));
    }

    #[test]
    fn chat_bodies_stay_within_the_receivers_size_limits() {
        let long = "é".repeat(5000);
        let batch: Vec<Shared> = (0..500)
            .map(|i| rec(&format!("pod-{i:0>40}"), &"R".repeat(100), "Warning", &long))
            .collect();
        let id = Identity {
            cluster_name: "c".repeat(200),
            ..Identity::default()
        };
        let teams = to_bytes(&teams(&batch, &id));
        assert!(teams.len() < 28 * 1024, "Teams: {} bytes", teams.len());
        let slack = slack(&batch, &id);
        assert!(slack["blocks"].as_array().unwrap().len() <= 50);
        assert!(
            slack["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .chars()
                .count()
                <= 150
        );
        for b in slack["blocks"].as_array().unwrap() {
            if let Some(t) = b["text"]["text"].as_str() {
                assert!(t.chars().count() <= 3000);
            }
        }
    }

    #[test]
    fn cut_counts_characters_not_bytes() {
        assert_eq!(cut("ééé", 3), "ééé");
        assert_eq!(cut("éééé", 3), "éé…");
        assert_eq!(cut("", 3), "");
    }

    #[test]
    fn alerts_end_after_the_last_occurrence() {
        let v = alertmanager(
            &[rec("p", "BackOff", "Warning", "m")],
            &Identity::default(),
            std::time::Duration::from_secs(300),
        );
        assert_eq!(v[0]["startsAt"], "2026-01-02T03:04:00Z");
        assert_eq!(v[0]["endsAt"], "2026-01-02T03:10:00Z");
        assert_eq!(v[0]["labels"]["alertname"], "BackOff");
        assert!(v[0]["labels"].get("cluster").is_none(), "no empty labels");
    }

    #[test]
    fn templates_render_per_batch_or_per_record_and_fail_without_fuel() {
        let batch = [
            rec("a", "X", "Normal", "one"),
            rec("b", "Y", "Normal", "two"),
        ];
        let f = Formatter::new(
            WebhookFormat::Template,
            Some(r#"{"n": {{ records | length }}, "m": {{ records | map(attribute="body") | list | tojson }}}"#),
            TemplatePer::Batch,
            Default::default(),
        )
        .unwrap();
        let bodies = f.bodies(&batch, &Identity::default());
        let b = bodies[0].as_ref().unwrap();
        assert_eq!(b.records, 2);
        let v: Value = serde_json::from_slice(&b.bytes).unwrap();
        assert_eq!(v, json!({"n": 2, "m": ["one", "two"]}));

        let f = Formatter::new(
            WebhookFormat::Template,
            Some(r#"{{ record["k8s.object.name"] }}"#),
            TemplatePer::Record,
            Default::default(),
        )
        .unwrap();
        let bodies: Vec<Vec<u8>> = f
            .bodies(&batch, &Identity::default())
            .into_iter()
            .map(|b| b.unwrap().bytes)
            .collect();
        assert_eq!(bodies, [b"a".to_vec(), b"b".to_vec()]);

        let f = Formatter::new(
            WebhookFormat::Template,
            Some(
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            ),
            TemplatePer::Batch,
            Default::default(),
        )
        .unwrap();
        let bodies = f.bodies(&batch, &Identity::default());
        assert!(matches!(bodies[0], Err(Error::Render(_))));
        assert!(check_template("{% for %}").is_err());
        assert!(
            check_template("{% include 'x' %}").is_err(),
            "one template, nothing to include"
        );
    }
}
