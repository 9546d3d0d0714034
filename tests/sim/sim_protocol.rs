//! The simulator speaks the API as real clients expect: kube's own client and watcher, and kubectl.

use crate::common;

use std::time::Duration;

use common::*;
use futures::{StreamExt, TryStreamExt};
use herald_sim::{FaultSpec, RunningSim, SimOptions};
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

#[tokio::test]
async fn a_continue_token_the_server_never_wrote_is_400_bad_request() {
    let sim = quiet_sim().await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    let err = api
        .list(&ListParams::default().limit(1).continue_token("garbage"))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
            assert!(
                s.message.starts_with("continue key is not valid"),
                "{}",
                s.message
            );
        }
        other => panic!("{other}"),
    }
    sim.shutdown().await;
}

/// Occurrences a captured stream stands for, folded from its lines as an API server would have stored them:
/// an ADDED Event counts its count (series count, else count, else 1), a MODIFIED one what its count rose by.
fn occurrences_of(lines: &[serde_json::Value]) -> u64 {
    let count = |o: &serde_json::Value| {
        o["series"]["count"]
            .as_u64()
            .or(o["count"].as_u64())
            .unwrap_or(1)
    };
    let mut last = std::collections::HashMap::new();
    let mut total = 0;
    for l in lines {
        let o = &l["object"];
        let key = (
            o["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string(),
            o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        match l["type"].as_str() {
            Some("ADDED") => {
                total += count(o);
                last.insert(key, count(o));
            }
            Some("MODIFIED") => {
                let before = last.get(&key).copied().unwrap_or(0);
                total += count(o).saturating_sub(before);
                last.insert(key, count(o));
            }
            _ => {}
        }
    }
    total
}

/// A real captured Events watch (ADDED and MODIFIED lines) with a real BOOKMARK and a real `ERROR 410` line
/// spliced in, replayed to a real herald process: the ERROR ends herald's watch as an API server does, herald
/// relists once (counted as expired), and its occurrences equal both the simulator's truth and the
/// occurrences folded from the captured lines.
#[test]
fn a_captured_stream_with_a_410_replays_with_one_relist_and_exact_totals() {
    let Some(dir) = fixtures() else {
        return;
    };
    let read = |name: &str| -> Vec<String> {
        std::fs::read_to_string(dir.join("watch").join(name))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut lines = read("minikube-2019-curl-api-v1-watch-events.jsonl");
    assert!(
        lines.len() >= 12,
        "the capture has its ADDED and MODIFIED lines"
    );
    let bookmark = read("real-BOOKMARK-lines.jsonl").remove(0);
    let gone = read("real-ERROR-410-lines.jsonl").remove(0);
    assert!(gone.contains("\"code\":410"));
    lines.insert(6, bookmark);
    lines.insert(9, gone);
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: std::collections::BTreeSet<&str> =
        parsed.iter().filter_map(|l| l["type"].as_str()).collect();
    assert_eq!(
        kinds,
        ["ADDED", "BOOKMARK", "ERROR", "MODIFIED"]
            .into_iter()
            .collect()
    );
    let want = occurrences_of(&parsed);
    let tmp = tempfile::tempdir().unwrap();
    let stream = tmp.path().join("stream.ndjson");
    std::fs::write(&stream, lines.join("\n") + "\n").unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt
        .block_on(RunningSim::start(
            SimOptions {
                replay: vec![stream],
                replay_rate: 10.0,
                // herald lists and watches first; then the capture plays.
                replay_start_after: Duration::from_secs(4),
                ..SimOptions::quiet()
            },
            "127.0.0.1:0".parse().unwrap(),
        ))
        .unwrap();
    let herald = start_herald(
        &sim.url(),
        "sinks:\n  json:\n    enabled: false\n",
        std::process::Stdio::null(),
        &[],
    );
    herald.wait_ready();
    assert_eq!(
        herald.metric(common::truth::OCC, &[]) + 0.0,
        0.0,
        "nothing before the replay"
    );
    herald.wait_metric(common::truth::OCC, &[], want as f64);
    herald.wait_metric("herald_watch_restarts_total", &[("reason", "expired")], 1.0);
    assert_eq!(sim.truth().occurrences_total, want);
    // Nothing more arrives: the relist counted nothing twice.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(herald.metric(common::truth::OCC, &[]), want as f64);
    assert_eq!(
        herald.metric("herald_watch_restarts_total", &[("reason", "expired")]),
        1.0
    );
    eprintln!(
        "replayed {} captured lines: {want} occurrences over {} objects, one relist",
        lines.len(),
        sim.truth().objects
    );
    rt.block_on(sim.shutdown());
}

/// A replayed BOOKMARK reaches a watch that allows bookmarks (at the watch's resourceVersion), and a replayed
/// ERROR is sent as captured and ends the stream; a watch resumed from before a replayed 410 gets 410 too.
#[tokio::test]
async fn replayed_bookmark_and_error_lines_reach_open_watches_as_captured() {
    let tmp = tempfile::tempdir().unwrap();
    let stream = tmp.path().join("stream.ndjson");
    let lines = [
        r#"{"type":"ADDED","object":{"kind":"Event","apiVersion":"v1","metadata":{"name":"a","namespace":"default"},"involvedObject":{"kind":"Pod","name":"web"},"reason":"Pulled","type":"Normal","count":2}}"#,
        r#"{"type":"BOOKMARK","object":{"kind":"Event","apiVersion":"v1","metadata":{"resourceVersion":"680400"}}}"#,
        r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 657887 (680402)","reason":"Expired","code":410}}"#,
    ];
    std::fs::write(&stream, lines.join("\n")).unwrap();
    let sim = sim_with(SimOptions {
        replay: vec![stream],
        replay_rate: 20.0,
        replay_start_after: Duration::from_millis(500),
        bookmark_interval: Duration::from_secs(3600),
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
    let got: Vec<WatchEvent<Event>> = tokio::time::timeout(
        Duration::from_secs(10),
        api.watch(&WatchParams::default(), &rv)
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>(),
    )
    .await
    .expect("the ERROR line ends the stream");
    assert_eq!(got.len(), 3, "{got:?}");
    let added_rv = match &got[0] {
        WatchEvent::Added(e) => {
            assert_eq!(e.metadata.name.as_deref(), Some("a"));
            e.metadata.resource_version.clone().unwrap()
        }
        other => panic!("{other:?}"),
    };
    match &got[1] {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, added_rv),
        other => panic!("{other:?}"),
    }
    match &got[2] {
        WatchEvent::Error(s) => assert_eq!(
            (s.code, s.reason.as_str(), s.message.as_str()),
            (410, "Expired", "too old resource version: 657887 (680402)")
        ),
        other => panic!("{other:?}"),
    }
    let mut resumed = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match resumed.try_next().await.unwrap() {
        Some(WatchEvent::Error(s)) => assert_eq!(s.code, 410),
        other => panic!("{other:?}"),
    }
    sim.shutdown().await;
}

/// `herald sim` as a user runs it: lines of a capture it cannot use are named once with their line number,
/// and a file of a kind it does not serve is refused, naming the kind.
#[test]
fn herald_sim_names_what_it_cannot_replay_or_load() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let stream = tmp.path().join("stream.ndjson");
    std::fs::write(
        &stream,
        [
            r#"{"type":"ADDED","object":{"kind":"Event","apiVersion":"v1","metadata":{"name":"a"},"involvedObject":{"kind":"Pod"}}}"#,
            r#"{"object":{"kind":"Event","metadata":{"name":"b"}}}"#,
            r#"{"type":"ADDED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"web"}}}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let mut child = std::process::Command::new(herald_bin())
        .args(["sim", "--listen", "127.0.0.1:0", "--rate", "0", "--replay"])
        .arg(&stream)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = Vec::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        let serving = line.contains("Kubernetes API at");
        said.push(line);
        if serving {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let skipped: Vec<&String> = said
        .iter()
        .filter(|l| l.contains("replay: skipping"))
        .collect();
    assert_eq!(skipped.len(), 2, "{said:#?}");
    assert!(skipped[0].contains("line 2: no \"type\""), "{said:#?}");
    assert!(
        skipped[1].contains("line 3: kind Pod (v1) is not served"),
        "{said:#?}"
    );

    let pods = tmp.path().join("pods.yaml");
    std::fs::write(&pods, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n").unwrap();
    let out = std::process::Command::new(herald_bin())
        .args(["sim", "--listen", "127.0.0.1:0", "--load"])
        .arg(&pods)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pods.yaml: object 1: kind Pod (v1) is not served by herald sim"),
        "{err}"
    );
}

/// deletecollection, which discovery lists for Events, deletes exactly what the selector matches.
#[tokio::test]
async fn delete_collection_removes_what_the_selector_matches() {
    let sim = quiet_sim().await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    for (name, team) in [("a", "x"), ("b", "y"), ("c", "x")] {
        let mut e = event(name, 1);
        e.metadata.labels = Some([("team".to_string(), team.to_string())].into());
        api.create(&PostParams::default(), &e).await.unwrap();
    }
    let gone = api
        .delete_collection(
            &kube::api::DeleteParams::default(),
            &ListParams::default().labels("team=x"),
        )
        .await
        .unwrap();
    let names: Vec<String> = gone
        .left()
        .expect("the deleted objects")
        .items
        .into_iter()
        .map(|e| e.metadata.name.unwrap())
        .collect();
    assert_eq!(names, ["a", "c"]);
    let left: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.metadata.name.unwrap())
        .collect();
    assert_eq!(left, ["b"]);
    sim.shutdown().await;
}
