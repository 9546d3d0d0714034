//! Events decode, normalise and account as the API server meant them.
//!
//! Two layers: the project's own fixtures in `tests/fixtures/` (written in the exact shapes real API servers
//! return: `managedFields`, `eventTime: null`, old-style Events without reporting fields, scheduler Events with
//! `eventTime` only, events.k8s.io/v1 objects) always run; the real objects from real clusters in
//! `../shared/fixtures/` run as an extra layer when present (a visible skip without them, a failure under CI).
//! Expected values are written out here from the objects, never computed by herald's code.

use crate::common;

use common::fixtures::project_fixture;
use common::{fixture_objects, fixtures};

use herald::config::StartupPolicy;
use herald::record::{EventApi, EventRecord};
use herald::source::accounting::Accounting;
use herald::source::decode::{CoreV1, EventsV1, LeanEvent};

fn record(value: serde_json::Value) -> EventRecord {
    let api_version = value["apiVersion"].as_str().unwrap_or("v1").to_string();
    let result = if api_version == "events.k8s.io/v1" {
        let ev: LeanEvent<EventsV1> = serde_json::from_value(value).unwrap();
        ev.into_record()
    } else {
        let ev: LeanEvent<CoreV1> = serde_json::from_value(value).unwrap();
        ev.into_record()
    };
    let record = result.unwrap_or_else(|e| panic!("fixture object rejected: {e}"));
    record.log_entry().expect("an Event record").event.clone()
}

fn load_project(file: &str) -> Vec<EventRecord> {
    fixture_objects(&project_fixture(file))
        .into_iter()
        .map(record)
        .collect()
}

/// `(objects, occurrences, warning occurrences)` of a watch stream, accounted line by line.
fn account_stream(text: &str) -> (u64, u64, u64) {
    let mut acc = Accounting::new(StartupPolicy::SkipExisting, 1000);
    let (mut occurrences, mut objects, mut warnings) = (0u64, 0u64, 0u64);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let ev: serde_json::Value = serde_json::from_str(line).unwrap();
        if ev["type"] == "BOOKMARK" {
            continue;
        }
        let r = record(ev["object"].clone());
        let o = acc.observe(&r.uid, r.count);
        occurrences += u64::from(o.delta);
        objects += u64::from(o.new_object);
        if &*r.type_ == "Warning" {
            warnings += u64::from(o.delta);
        }
    }
    (objects, occurrences, warnings)
}

#[test]
fn every_project_fixture_event_normalises() {
    let dir = project_fixture("events");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.extension().is_some_and(|e| e == "json" || e == "yaml") {
            continue;
        }
        for obj in fixture_objects(&path) {
            let r = record(obj);
            assert!(!r.name.is_empty(), "{}", path.display());
            assert!(r.count >= 1, "{}", path.display());
            n += 1;
        }
    }
    assert!(
        n >= 9,
        "only {n} fixture objects found in {}",
        dir.display()
    );
}

#[test]
fn old_style_kubelet_event_with_count_and_managed_fields() {
    let r = &load_project("events/kubelet-backoff-count7-managedfields.json")[0];
    assert_eq!((&*r.reason, &*r.type_, r.count), ("BackOff", "Warning", 7));
    assert_eq!((&*r.component, &*r.host), ("kubelet", "node-a-1"));
    assert_eq!(&*r.regarding.kind, "Pod");
    assert!(r.event_time.is_none(), "eventTime: null");
    assert_eq!(
        r.timestamp(),
        Some("2025-06-03T09:20:47Z".parse().unwrap()),
        "lastTimestamp is the timestamp when eventTime is null"
    );
}

#[test]
fn event_without_reporting_fields_or_involved_api_version() {
    let r = &load_project("events/old-style-node-controller-no-reporting-fields.json")[0];
    assert_eq!((&*r.reason, r.count), ("RegisteredNode", 1));
    assert_eq!(&*r.component, "node-controller");
    assert_eq!(&*r.host, "", "no source.host");
    assert_eq!(
        (&*r.regarding.kind, &*r.regarding.name),
        ("Node", "node-b-2")
    );
}

#[test]
fn kubectl_list_with_a_scheduler_event_that_has_only_event_time() {
    let list = load_project("events/kubectl-get-events-o-yaml-scheduler.yaml");
    let reasons: Vec<(&str, u32)> = list.iter().map(|r| (&*r.reason, r.count)).collect();
    assert_eq!(
        reasons,
        [
            ("Scheduled", 1),
            ("Pulling", 1),
            ("Failed", 3),
            ("Failed", 2),
            ("BackOff", 4)
        ]
    );
    let scheduled = &list[0];
    assert_eq!(&*scheduled.action, "Binding");
    assert!(scheduled.first_timestamp.is_none() && scheduled.last_timestamp.is_none());
    assert_eq!(
        scheduled.timestamp(),
        Some("2025-06-03T09:30:00.125431Z".parse().unwrap()),
        "eventTime is the timestamp"
    );
}

#[test]
fn events_v1_legacy_view_uses_the_deprecated_fields() {
    let r = &load_project("events/events-v1-legacy-view-deprecated-fields.json")[0];
    assert_eq!(r.api, EventApi::EventsV1);
    assert_eq!((&*r.reason, r.count), ("Scheduled", 1));
    assert!(r.event_time.is_none());
    assert_eq!(
        r.timestamp(),
        Some("2025-06-03T09:40:12Z".parse().unwrap()),
        "deprecatedLastTimestamp fills in"
    );
    assert_eq!(&*r.component, "default-scheduler");
}

#[test]
fn events_v1_series_counts_and_wins_the_timestamp() {
    let r = &load_project("events/events-v1-series-new-style.json")[0];
    assert_eq!(r.api, EventApi::EventsV1);
    assert_eq!((&*r.reason, r.count), ("FailedAttachVolume", 6));
    assert_eq!(r.series_count, Some(6));
    assert_eq!(
        r.timestamp(),
        Some("2025-06-03T09:56:40.118762Z".parse().unwrap()),
        "series.lastObservedTime is newer than eventTime"
    );
}

/// The project's watch stream: 4 new Events (one without `count`), increases 1→3→5 and 2→2→4, a BOOKMARK and a
/// DELETE that add nothing: 11 occurrences, 9 of them Warnings.
#[test]
fn project_watch_stream_accounts_exactly() {
    let text =
        std::fs::read_to_string(project_fixture("watch/core-v1-watch-stream.jsonl")).unwrap();
    assert_eq!(account_stream(&text), (4, 11, 9));
}

// Real objects from real clusters: an extra layer over the project's fixtures.

fn load(dir: &std::path::Path, file: &str) -> Vec<EventRecord> {
    fixture_objects(&dir.join(file))
        .into_iter()
        .map(record)
        .collect()
}

#[test]
fn every_fixture_event_normalises() {
    let Some(dir) = fixtures() else { return };
    let mut n = 0;
    for sub in ["events", "events-v1"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            for obj in fixture_objects(&path) {
                let r = record(obj);
                assert!(!r.name.is_empty(), "{}", path.display());
                assert!(r.count >= 1, "{}", path.display());
                n += 1;
            }
        }
    }
    assert!(n >= 12, "only {n} fixture objects found");
}

#[test]
fn kubelet_warning_with_count() {
    let Some(dir) = fixtures() else { return };
    let r = &load(
        &dir,
        "events/aks-2024-FailedToRetrieveImagePullSecret-count5.json",
    )[0];
    assert_eq!(&*r.reason, "FailedToRetrieveImagePullSecret");
    assert_eq!(&*r.type_, "Warning");
    assert_eq!(r.count, 5);
    assert_eq!(&*r.component, "kubelet");
    assert_eq!(&*r.host, "aks-workflows-32391530-vmss00001y");
    assert_eq!(&*r.regarding.kind, "Pod");

    let r = &load(
        &dir,
        "events/cilium-lab-2026-BackOff-count10-kubectl-events.json",
    )[0];
    assert_eq!((&*r.reason, r.count), ("BackOff", 10));
    assert_eq!(&*r.host, "k8scilium1");
}

#[test]
fn kubectl_list_with_new_style_scheduler_event() {
    let Some(dir) = fixtures() else { return };
    let list = load(&dir, "events/minikube-2026-kubectl-get-events-o-yaml.yaml");
    let reasons: Vec<&str> = list.iter().map(|r| &*r.reason).collect();
    assert_eq!(
        reasons,
        ["Scheduled", "Pulling", "Pulled", "Created", "Started"]
    );
    let scheduled = &list[0];
    assert_eq!(scheduled.count, 1, "no count: happened once");
    assert_eq!(&*scheduled.action, "Binding");
    assert!(scheduled.first_timestamp.is_none() && scheduled.last_timestamp.is_none());
    assert_eq!(
        scheduled.timestamp(),
        Some("2026-03-17T08:45:27.742811Z".parse().unwrap()),
        "eventTime is the timestamp"
    );
}

#[test]
fn fuzz_objects_with_odd_values_are_accepted() {
    let Some(dir) = fixtures() else { return };
    let r = &load(&dir, "events/k8s.core.v1.Event.roundtrip-fuzz.json")[0];
    // count is negative there; the series count (positive) wins.
    assert_eq!(r.count, 1_266_076_158);
    let r = &load(
        &dir,
        "events-v1/k8s.events.k8s.io.v1.Event.roundtrip-fuzz.json",
    )[0];
    assert_eq!(r.api, EventApi::EventsV1);
    assert!(r.series_count.is_some());
}

#[test]
fn events_v1_view_of_a_legacy_event_uses_deprecated_fields() {
    let Some(dir) = fixtures() else { return };
    let r = &load(
        &dir,
        "events-v1/k8s-openapi-test-2023-Scheduled-eventTime-null.json",
    )[0];
    assert_eq!(&*r.reason, "Scheduled");
    assert!(r.event_time.is_none());
    assert!(
        r.timestamp().is_some(),
        "deprecatedLastTimestamp/FirstTimestamp fill in"
    );
    assert_eq!(&*r.regarding.kind, "Pod");
}

/// A real watch stream, accounted: the sum equals the final counts (12 new Events, 4 count increases).
#[test]
fn real_watch_stream_accounts_exactly() {
    let Some(dir) = fixtures() else { return };
    let text =
        std::fs::read_to_string(dir.join("watch/minikube-2019-curl-api-v1-watch-events.jsonl"))
            .unwrap();
    assert_eq!(account_stream(&text), (12, 18, 8));
}
