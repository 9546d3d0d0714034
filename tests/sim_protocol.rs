//! The simulator speaks the API as real clients expect: kube's own client and watcher, and kubectl.

mod common;

use std::time::Duration;

use common::*;
use futures::{StreamExt, TryStreamExt};
use herald::sim::{FaultSpec, RunningSim, SimOptions};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::api::events::v1::Event as EventV1;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;

fn event(name: &str, count: i32) -> Event {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
        "reason": "BackOff", "type": "Warning", "message": "Back-off restarting failed container", "count": count
    }))
    .unwrap()
}

async fn sim_with(opts: SimOptions) -> RunningSim {
    RunningSim::start(opts, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

async fn create_n(api: &Api<Event>, n: usize) {
    create_named(api, "e", n).await
}

async fn create_named(api: &Api<Event>, prefix: &str, n: usize) {
    for i in 0..n {
        api.create(
            &PostParams::default(),
            &event(&format!("{prefix}{i:03}"), 1),
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn paged_list_returns_every_object_once() {
    let sim = quiet_sim().await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    create_n(&api, 25).await;
    let first = api.list(&ListParams::default().limit(10)).await.unwrap();
    assert_eq!(first.items.len(), 10);
    assert_eq!(first.metadata.remaining_item_count, Some(15));
    // A write between pages does not change the paged result (it comes from the first page's snapshot).
    api.create(&PostParams::default(), &event("zzz-late", 1))
        .await
        .unwrap();
    let mut names: Vec<String> = first
        .items
        .iter()
        .map(|e| e.metadata.name.clone().unwrap())
        .collect();
    let mut token = first.metadata.continue_;
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = api
            .list(&ListParams::default().limit(10).continue_token(&t))
            .await
            .unwrap();
        names.extend(page.items.iter().map(|e| e.metadata.name.clone().unwrap()));
        token = page.metadata.continue_;
    }
    assert_eq!(names.len(), 25);
    names.dedup();
    assert_eq!(names.len(), 25);
    assert_eq!(names[0], "e000");
    sim.shutdown().await;
}

#[tokio::test]
async fn an_unknown_continue_token_is_410_expired() {
    let sim = quiet_sim().await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    let err = api
        .list(&ListParams::default().limit(1).continue_token("999-1"))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        other => panic!("{other}"),
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn watch_from_a_resource_version_replays_exactly_what_followed() {
    let sim = quiet_sim().await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    create_n(&api, 2).await;
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.create(&PostParams::default(), &event("c", 1))
        .await
        .unwrap();
    api.patch(
        "e000",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"count": 4})),
    )
    .await
    .unwrap();
    api.delete("e001", &Default::default()).await.unwrap();
    let stream = api
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await
        .unwrap();
    let got: Vec<(String, String, Option<i32>)> = stream
        .take(3)
        .map(|e| match e.unwrap() {
            WatchEvent::Added(o) => ("ADDED".into(), o.metadata.name.unwrap(), o.count),
            WatchEvent::Modified(o) => ("MODIFIED".into(), o.metadata.name.unwrap(), o.count),
            WatchEvent::Deleted(o) => ("DELETED".into(), o.metadata.name.unwrap(), o.count),
            other => panic!("{other:?}"),
        })
        .collect()
        .await;
    assert_eq!(
        got,
        [
            ("ADDED".to_string(), "c".to_string(), Some(1)),
            ("MODIFIED".into(), "e000".into(), Some(4)),
            ("DELETED".into(), "e001".into(), Some(1)),
        ]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_too_old_resource_version_gets_410_inside_the_stream() {
    let sim = sim_with(SimOptions {
        history: 3,
        ..SimOptions::quiet()
    })
    .await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    create_n(&api, 1).await;
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    create_named(&api, "later", 6).await;
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(s)) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        other => panic!("{other:?}"),
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn bookmarks_arrive_on_a_quiet_watch() {
    let sim = sim_with(SimOptions {
        bookmark_interval: Duration::from_millis(100),
        ..SimOptions::quiet()
    })
    .await;
    let api: Api<Event> = Api::all(client(&sim));
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .unwrap();
    match first.unwrap() {
        Some(WatchEvent::Bookmark(b)) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("{other:?}"),
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn both_event_apis_serve_the_same_objects() {
    let sim = quiet_sim().await;
    let core: Api<Event> = Api::namespaced(client(&sim), "default");
    core.create(&PostParams::default(), &event("a", 3))
        .await
        .unwrap();
    let v1: Api<EventV1> = Api::namespaced(client(&sim), "default");
    let seen = v1.get("a").await.unwrap();
    assert_eq!(
        seen.note.as_deref(),
        Some("Back-off restarting failed container")
    );
    assert_eq!(seen.deprecated_count, Some(3));
    assert_eq!(seen.regarding.unwrap().kind.as_deref(), Some("Pod"));
    // A count increase written through events.k8s.io/v1 is the same object's count, and ground truth.
    v1.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"deprecatedCount": 5})),
    )
    .await
    .unwrap();
    assert_eq!(core.get("a").await.unwrap().count, Some(5));
    assert_eq!(sim.truth().occurrences_total, 5);
    sim.shutdown().await;
}

/// kube's own watcher over a faulty simulator still ends with exactly the stored object set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_watcher_survives_injected_faults() {
    let sim = sim_with(SimOptions {
        faults: "disconnect-every=5,error-rate=0.2,error-status=429,retry-after=1"
            .parse::<FaultSpec>()
            .unwrap(),
        ..SimOptions::quiet()
    })
    .await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    let writer = api.clone();
    let writes = tokio::spawn(async move {
        for i in 0..40 {
            // The writer also meets injected errors on list/watch only; writes are not faulted.
            writer
                .create(&PostParams::default(), &event(&format!("w{i:02}"), 1))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let mut names = std::collections::BTreeSet::new();
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while names.len() < 40 {
        let step = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("watcher made no progress");
        match step {
            Some(Ok(watcher::Event::Apply(e) | watcher::Event::InitApply(e))) => {
                names.insert(e.metadata.name.unwrap());
            }
            Some(_) => {}
            None => break,
        }
    }
    writes.await.unwrap();
    assert_eq!(names.len(), 40);
    sim.shutdown().await;
}

#[test]
fn kubectl_lists_events_from_the_simulator() {
    let Some(_) = common::fixtures::tool(&["kubectl"], "kubernetes-client") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(quiet_sim());
    let api: Api<Event> = rt.block_on(async { Api::namespaced(client(&sim), "default") });
    rt.block_on(create_n(&api, 3));
    let out = std::process::Command::new("kubectl")
        .args(["--server", &sim.url(), "get", "events", "-A"])
        .env("KUBECONFIG", "/dev/null")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].contains("NAMESPACE") && lines[0].contains("REASON"),
        "{stdout}"
    );
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines[1].contains("BackOff") && lines[1].contains("pod/web"),
        "{stdout}"
    );
    rt.block_on(sim.shutdown());
}
