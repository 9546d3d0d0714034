//! Bad input, end to end: malformed and truncated lines in the watch stream, Events missing required fields
//! or with wrong types, a huge message, non-ASCII text and an unknown Event type. Each bad thing is counted in
//! `herald_invalid_objects_total{resource,reason}` and skipped (or, when valid, passed through), the watch is
//! never restarted, and the totals of the valid Events stay exact.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const OCC: &str = "herald_event_occurrences_total";
const INVALID: &str = "herald_invalid_objects_total";

fn event(name: &str, reason: &str, type_: &str, message: &str, count: i64) -> Value {
    json!({
        "metadata": {"name": name},
        "involvedObject": {"kind": "Pod", "name": format!("pod-{name}"), "namespace": "default", "apiVersion": "v1"},
        "reason": reason, "type": type_, "message": message, "count": count,
        "source": {"component": "kubelet", "host": "node-1"},
    })
}

/// Read herald's stdout (JSON lines) on a thread.
fn collect_lines(herald: &mut Herald) -> Arc<Mutex<Vec<Value>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stdout = herald.child.stdout.take().unwrap();
    let out = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v: Value = serde_json::from_str(&line).expect("herald writes valid JSON lines");
            out.lock().unwrap().push(v);
        }
    });
    lines
}

fn line_for(lines: &Mutex<Vec<Value>>, name: &str) -> Value {
    let mut found = None;
    wait_until(Duration::from_secs(10), name, || {
        found = lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l["k8s.event.name"] == name)
            .cloned();
        found.is_some()
    });
    found.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_and_objects_are_counted_and_skipped_and_totals_stay_exact() {
    let sim = quiet_sim().await;
    // A malformed line after every second event: truncated JSON, not JSON, an unknown watch event type,
    // an object that is not an object, in turn.
    sim.set_faults("garbage-every=2".parse().unwrap());
    let config = "dedup:\n  enabled: false\n";
    let mut herald = start_herald(&sim.url(), config, Stdio::piped(), &[]);
    let lines = collect_lines(&mut herald);
    herald.wait_ready();
    let store = sim.store();
    let put = |v: Value| store.create("default", v).unwrap();

    // Valid, and counted: plain, non-ASCII, huge, an unknown Event type.
    put(event(
        "plain",
        "Started",
        "Normal",
        "Started container app",
        2,
    ));
    let unicode = "Zugriff verweigert: Größe überschritten — 日本語のメッセージ 🚀 ünïcödé";
    put(event("unicode", "Failed", "Warning", unicode, 1));
    // 1 + 2 × 5000 bytes: the 4096-byte limit falls inside a 2-byte character.
    let huge = format!("x{}", "é".repeat(5000));
    put(event("huge", "BackOff", "Warning", &huge, 3));
    put(event(
        "odd-type",
        "Custom",
        "Bizarre",
        "a type herald does not know",
        1,
    ));
    // Malformed: skipped and counted.
    let mut missing = event("no-involved-object", "Started", "Normal", "m", 5);
    missing.as_object_mut().unwrap().remove("involvedObject");
    put(missing);
    put(event("count-is-text", "Started", "Normal", "m", 1));
    store
        .patch("default", "count-is-text", &json!({"count": "three"}))
        .unwrap();
    let mut wrong = event("involved-is-text", "Started", "Normal", "m", 1);
    wrong["involvedObject"] = json!("Pod");
    put(wrong);
    let mut wrong = event("reason-is-number", "Started", "Normal", "m", 1);
    wrong["reason"] = json!(42);
    put(wrong);
    let mut wrong = event("message-is-object", "Started", "Normal", "m", 1);
    wrong["message"] = json!({"text": "m"});
    put(wrong);
    // And a valid increase after all of that: +4.
    store
        .patch("default", "plain", &json!({"count": 6}))
        .unwrap();

    // 10 ADDED + 2 MODIFIED delivered; count-is-text was valid when added (counted once) and malformed after.
    herald.wait_metric("herald_watch_events_total", &[("type", "ADDED")], 9.0);
    herald.wait_metric("herald_watch_events_total", &[("type", "MODIFIED")], 2.0);
    let garbage = sim.truth().faults_injected["garbage"];
    assert_eq!(garbage, 5, "one malformed line after every second event");
    herald.wait_metric(INVALID, &[("reason", "undecodable")], garbage as f64);
    assert_eq!(herald.metric(INVALID, &[("reason", "missing_field")]), 1.0);
    assert_eq!(herald.metric(INVALID, &[("reason", "wrong_type")]), 4.0);
    let valid = 6 + 1 + 3 + 1 + 1; // plain (2, then 6), unicode, huge, odd-type, count-is-text (before)
    herald.wait_metric(OCC, &[], valid as f64);
    assert_eq!(
        herald.metric(OCC, &[("reason", "Custom"), ("type", "Bizarre")]),
        1.0,
        "an unknown Event type passes through"
    );
    assert_eq!(
        herald.metric("herald_watch_restarts_total", &[])
            + herald.metric("herald_watch_errors_total", &[]),
        0.0,
        "bad input never restarts the watch"
    );
    assert_eq!(herald.metric("herald_messages_truncated_total", &[]), 1.0);

    let l = line_for(&lines, "unicode");
    assert_eq!(l["body"], unicode, "non-ASCII text unchanged");
    assert!(l.get("herald.truncated").is_none());
    let l = line_for(&lines, "huge");
    let body = l["body"].as_str().unwrap();
    assert_eq!(
        body.len(),
        4095,
        "cut before the character that crosses 4096 bytes"
    );
    assert!(body.ends_with('é'));
    assert_eq!(l["herald.truncated"], true);
    let l = line_for(&lines, "odd-type");
    // An unknown type has no severity (as the collector's receiver); the type itself stays under herald's key.
    assert!(l.get("severity_text").is_none());
    assert_eq!(l["herald.event.type"], "Bizarre");
    for bad in [
        "no-involved-object",
        "involved-is-text",
        "reason-is-number",
        "message-is-object",
    ] {
        assert!(
            !lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l["k8s.event.name"] == bad),
            "{bad} was written"
        );
    }
    assert!(matches!(herald.get("/readyz"), Some((200, _))));
    sim.shutdown().await;
}

/// A malformed object in the initial list (where a page is decoded at once) is skipped alone; the list and
/// the watch go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_object_in_a_list_is_skipped_alone() {
    let sim = quiet_sim().await;
    let store = sim.store();
    store
        .create("default", event("good", "Started", "Normal", "m", 3))
        .unwrap();
    let mut bad = event("bad", "Started", "Normal", "m", 1);
    bad["count"] = json!([1, 2]);
    bad["firstTimestamp"] = json!("yesterday");
    store.create("default", bad).unwrap();
    let config = "sinks:\n  json:\n    enabled: false\n";
    let herald = start_herald(&sim.url(), config, Stdio::null(), &["--startup", "replay"]);
    herald.wait_ready();
    herald.wait_metric(OCC, &[], 3.0);
    assert_eq!(herald.metric(INVALID, &[("reason", "wrong_type")]), 1.0);
    store
        .create("default", event("later", "Pulled", "Normal", "m", 2))
        .unwrap();
    herald.wait_metric(OCC, &[], 5.0);
    sim.shutdown().await;
}
