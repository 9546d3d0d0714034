//! Real Events from real clusters (`../shared/fixtures/`) decode, normalise and account as expected.
//! The fixtures are read at run time (override the folder with `HERALD_FIXTURES`); without them these tests
//! say they were skipped and pass.

mod common;

use common::{fixture_objects, fixtures};

use herald::config::StartupPolicy;
use herald::record::{EventApi, EventRecord, Interner};
use herald::source::accounting::Accounting;
use herald::source::decode::{CoreV1, EventsV1, LeanEvent};
use herald::source::events::normalise;

fn record(value: serde_json::Value) -> EventRecord {
    let mut interner = Interner::new(100);
    let api_version = value["apiVersion"].as_str().unwrap_or("v1").to_string();
    let result = if api_version == "events.k8s.io/v1" {
        let ev: LeanEvent<EventsV1> = serde_json::from_value(value).unwrap();
        normalise(ev, EventApi::EventsV1, &mut interner)
    } else {
        let ev: LeanEvent<CoreV1> = serde_json::from_value(value).unwrap();
        normalise(ev, EventApi::CoreV1, &mut interner)
    };
    result.unwrap_or_else(|e| panic!("fixture object rejected: {e}"))
}

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
    let mut acc = Accounting::new(StartupPolicy::SkipExisting, 1000);
    let (mut occurrences, mut objects, mut warnings) = (0u64, 0u64, 0u64);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let ev: serde_json::Value = serde_json::from_str(line).unwrap();
        let r = record(ev["object"].clone());
        let o = acc.observe(&r.uid, r.count);
        occurrences += u64::from(o.delta);
        objects += u64::from(o.new_object);
        if &*r.type_ == "Warning" {
            warnings += u64::from(o.delta);
        }
    }
    assert_eq!((objects, occurrences, warnings), (12, 18, 8));
}
