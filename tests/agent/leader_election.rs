//! DaemonSet mode: several agents against one simulator, one Lease. Exactly one emits; when it dies another
//! takes over within the lease duration, and the totals across agents stay exact.

use crate::common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};

const CONFIG: &str = "mode: daemonset\nleader_election:\n  lease_duration: 3s\n  renew_interval: 300ms\nsinks:\n  json:\n    enabled: false\n";
const OCC: &str = "herald_event_occurrences_total";

fn event(name: &str) -> Event {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": name, "namespace": "default"},
        "reason": "BackOff", "message": "m", "type": "Warning", "count": 2,
        "lastTimestamp": jiff::Timestamp::now().to_string(),
    }))
    .unwrap()
}

fn leaders(agents: &[&Herald]) -> Vec<usize> {
    agents
        .iter()
        .enumerate()
        .filter(|(_, h)| h.metric("herald_leader", &[]) == 1.0)
        .map(|(i, _)| i)
        .collect()
}

/// Wait until exactly one of `agents` leads and has its watch open; its index.
fn one_leader(agents: &[&Herald], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let l = leaders(agents);
        if l.len() == 1 {
            let leader = agents[l[0]];
            if let Some((200, body)) = leader.get("/readyz")
                && body.contains("role: leader")
                && body.contains("source events")
            {
                return l[0];
            }
        }
        assert!(Instant::now() < deadline, "no single ready leader: {l:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn total(agents: &[&Herald]) -> f64 {
    agents.iter().map(|h| h.metric(OCC, &[])).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_emits_and_a_successor_takes_over() {
    let sim = quiet_sim().await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    let pp = PostParams::default();
    let mut agents: Vec<Herald> = (0..3)
        .map(|i| {
            start_herald_with(
                &sim.url(),
                CONFIG,
                Stdio::null(),
                &[],
                &[("POD_NAME", &format!("herald-{i}"))],
            )
        })
        .collect();
    for a in &agents {
        a.wait_ready(); // followers are ready too
    }
    let refs: Vec<&Herald> = agents.iter().collect();
    let first = one_leader(&refs, Duration::from_secs(10));

    for i in 0..5 {
        api.create(&pp, &event(&format!("a{i}"))).await.unwrap();
    }
    wait_until(Duration::from_secs(10), "10 occurrences", || {
        total(&refs) == 10.0
    });
    for (i, a) in refs.iter().enumerate() {
        if i != first {
            assert_eq!(a.metric(OCC, &[]), 0.0, "a follower emitted");
        }
    }

    // The leader dies without releasing the Lease: a successor takes over within the lease duration.
    let counted_by_first = refs[first].metric(OCC, &[]);
    let dead = agents.remove(first);
    let died = Instant::now();
    drop(dead); // SIGKILL
    let refs: Vec<&Herald> = agents.iter().collect();
    let second = one_leader(&refs, Duration::from_secs(10));
    assert!(
        died.elapsed() < Duration::from_secs(3 + 3),
        "takeover took {:?}",
        died.elapsed()
    );

    for i in 0..4 {
        api.create(&pp, &event(&format!("b{i}"))).await.unwrap();
    }
    wait_until(Duration::from_secs(10), "8 more occurrences", || {
        counted_by_first + total(&refs) == sim.truth().occurrences_total as f64
    });
    assert_eq!(counted_by_first + total(&refs), 18.0);

    // A graceful stop releases the Lease: the last agent leads quickly.
    let mut leaving = agents.remove(second);
    let counted_by_second = leaving.metric(OCC, &[]);
    let stopped = Instant::now();
    assert!(leaving.terminate(Duration::from_secs(10)).success());
    let refs: Vec<&Herald> = agents.iter().collect();
    one_leader(&refs, Duration::from_secs(5));
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "released Lease took {:?}",
        stopped.elapsed()
    );
    api.create(&pp, &event("c0")).await.unwrap();
    wait_until(Duration::from_secs(10), "2 more occurrences", || {
        counted_by_first + counted_by_second + total(&refs) == 20.0
    });
    sim.shutdown().await;
}

/// Fail-overs without loss or double counting: the leader saves its Event checkpoint in a ConfigMap, and a
/// successor continues the counting from it. The leader is killed (SIGKILL) mid-scenario, then its successor
/// is stopped (SIGTERM); the total over all agents (each agent's last saved and shown value) must equal the
/// simulator's truth minus the baseline that existed before the first leader listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_overs_continue_the_counting_from_the_shared_checkpoint() {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let rate = 250.0;
    let max_events = 4_500;
    let start_after = Duration::from_secs(4);
    let sim = common::truth::scenario_sim(21, rate, max_events, start_after, dir.path(), 100).await;
    let started = Instant::now();
    let baseline = sim.truth();
    let version = common::truth::version;
    let v0 = version(&sim);

    // Every checkpoint the leaders write, as the last total each writer saved (what it showed last).
    let saved: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let (leading, _) = tokio::sync::watch::channel(true);
    let store = herald::checkpoint::ConfigMapStore::new(
        Api::namespaced(client(&sim), "default"),
        "herald-leader-state".into(),
        leading.subscribe(),
    );
    let poller = {
        let saved = saved.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(Some(file)) = store.load().await {
                    let total: u64 = file
                        .watches
                        .iter()
                        .flat_map(|w| &w.counters)
                        .filter(|c| c.metric == OCC)
                        .map(|c| c.value)
                        .sum();
                    let mut saved = saved.lock().unwrap();
                    let last = saved.entry(file.writer).or_default();
                    *last = (*last).max(total);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let config = |i: usize| {
        format!(
            "{CONFIG}state_dir: {}\ncheckpoint_interval: 300ms\n",
            dir.path().join(format!("state-{i}")).display()
        )
    };
    let mut agents: Vec<(String, Herald)> = (0..3)
        .map(|i| {
            let pod = format!("herald-{i}");
            let h = start_herald_with(
                &sim.url(),
                &config(i),
                Stdio::null(),
                &[],
                &[("POD_NAME", &pod)],
            );
            (pod, h)
        })
        .collect();
    tokio::task::block_in_place(|| {
        for (_, a) in &agents {
            a.wait_ready();
        }
        let refs: Vec<&Herald> = agents.iter().map(|(_, h)| h).collect();
        let first = one_leader(&refs, Duration::from_secs(10));
        assert_eq!(
            sim.truth().occurrences_total,
            baseline.occurrences_total,
            "the first leader must list before the generator starts"
        );
        wait_until(Duration::from_secs(60), "a third of the scenario", || {
            version(&sim) >= v0 + max_events / 3
        });
        let (killed, dead) = agents.remove(first);
        drop(dead); // SIGKILL, the Lease is not released

        let refs: Vec<&Herald> = agents.iter().map(|(_, h)| h).collect();
        let second = one_leader(&refs, Duration::from_secs(10));
        wait_until(
            Duration::from_secs(60),
            "two thirds of the scenario",
            || version(&sim) >= v0 + 2 * max_events / 3,
        );
        let (stopped, mut leaving) = agents.remove(second);
        assert!(leaving.terminate(Duration::from_secs(10)).success());

        let refs: Vec<&Herald> = agents.iter().map(|(_, h)| h).collect();
        one_leader(&refs, Duration::from_secs(10));
        tokio::runtime::Handle::current().block_on(async {
            let generating = Duration::from_secs_f64(max_events as f64 / rate) + start_after;
            common::truth::wait_generator_done(&sim, started, generating).await;
        });
        let want = sim.truth().occurrences_total - baseline.occurrences_total;
        let (last, survivor) = &agents[0];
        let mut seen = (0, 0);
        // The total over the three leaders, waited for while it still moves (the last leader relists and
        // catches up); see `common::wait_count`. The assertion below says what it ended at.
        let _ = wait_count(
            want as f64,
            common::truth::TRUTH_STALLED,
            COUNT_CEILING,
            || {
                let saved = saved.lock().unwrap().clone();
                let before = saved.get(&killed).copied().unwrap_or(0)
                    + saved.get(&stopped).copied().unwrap_or(0);
                seen = (before, survivor.metric(OCC, &[]) as u64);
                (seen.0 + seen.1) as f64
            },
        );
        eprintln!(
            "{killed} and {stopped} saved {}, {last} counted {}; truth {want}; checkpoints {:?}",
            seen.0,
            seen.1,
            saved.lock().unwrap()
        );
        assert!(seen.0 > 0, "the first two leaders counted nothing");
        assert_eq!(seen.0 + seen.1, want, "total over the three leaders");
    });
    poller.abort();
    sim.shutdown().await;
}

/// The leader's Lease renewals stop being answered (the simulator's `lease-stall` fault: its writes hang,
/// everything else, its watches included, still works) while another agent campaigns. The leader must stop
/// leading within its renew deadline, before the follower may take over (the Lease must first go
/// `lease_duration` unchanged): at no sample do both report `herald_leader 1`, the cut-off agent counts
/// nothing after stepping down although its API connection still works, and the totals equal the truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_renewals_hang_steps_down_before_a_follower_takes_over() {
    const STALL_CONFIG: &str = "mode: daemonset\nleader_election:\n  lease_duration: 3s\n  renew_interval: 300ms\n  renew_deadline: 2s\nsinks:\n  json:\n    enabled: false\n";
    let sim = quiet_sim().await;
    let kube = client(&sim);
    let api: Api<Event> = Api::namespaced(kube.clone(), "default");
    let pp = PostParams::default();
    let agents: Vec<Herald> = (0..2)
        .map(|i| {
            start_herald_with(
                &sim.url(),
                STALL_CONFIG,
                Stdio::null(),
                &[],
                &[("POD_NAME", &format!("herald-{i}"))],
            )
        })
        .collect();
    let refs: Vec<&Herald> = agents.iter().collect();
    tokio::task::block_in_place(|| {
        for a in &refs {
            a.wait_ready();
        }
    });
    let first = tokio::task::block_in_place(|| one_leader(&refs, Duration::from_secs(10)));
    let other = 1 - first;
    for i in 0..5 {
        api.create(&pp, &event(&format!("a{i}"))).await.unwrap();
    }
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(10), "10 occurrences", || {
            total(&refs) == 10.0
        })
    });

    // Through the simulator's fault endpoint: the leader's renewals (its identity is `<pod>-<pid>`) hang.
    let identity = format!("herald-{first}-{}", agents[first].child.id());
    let request = http::Request::put("/sim/faults")
        .body(format!("lease-stall={identity}").into_bytes())
        .unwrap();
    let answer = kube.request_text(request).await.unwrap();
    assert_eq!(answer.trim(), format!("lease-stall={identity}"));
    let cut = Instant::now();

    // Sample both agents until the follower leads and is ready; never may both report 1.
    let (mut stepped_down, mut took_over) = (None, None);
    tokio::task::block_in_place(|| {
        let deadline = cut + Duration::from_secs(15);
        while took_over.is_none() {
            assert!(Instant::now() < deadline, "no hand-over within 15s");
            let a = refs[first].metric("herald_leader", &[]);
            let b = refs[other].metric("herald_leader", &[]);
            assert!(
                !(a == 1.0 && b == 1.0),
                "two leaders at once, {:?} after the cut",
                cut.elapsed()
            );
            if a == 0.0 && stepped_down.is_none() {
                stepped_down = Some(cut.elapsed());
            }
            if b == 1.0 {
                assert!(stepped_down.is_some(), "the follower led first");
                took_over = Some(cut.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let (stepped_down, took_over) = (stepped_down.unwrap(), took_over.unwrap());
    eprintln!(
        "leader stepped down {stepped_down:?} after its renewals hung; follower led after {took_over:?}"
    );
    // Its last renewal was sent before the cut: it must have stopped before the 3s Lease could expire.
    assert!(
        stepped_down < Duration::from_secs(3),
        "stepped down after {stepped_down:?}, renew deadline 2s, lease 3s"
    );
    assert!(sim.truth().faults_injected["lease_stall"] > 0);
    let counted_by_first = refs[first].metric(OCC, &[]);
    assert_eq!(counted_by_first, 10.0);
    tokio::task::block_in_place(|| {
        one_leader(&refs, Duration::from_secs(10));
    });
    assert_eq!(leaders(&refs), [other]);

    // The new leader counts what follows; the agent that was cut off, its watch connection still working,
    // counts nothing more.
    for i in 0..4 {
        api.create(&pp, &event(&format!("b{i}"))).await.unwrap();
    }
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(10), "8 more occurrences", || {
            total(&refs) == sim.truth().occurrences_total as f64
        });
        std::thread::sleep(Duration::from_millis(500));
    });
    assert_eq!(refs[first].metric(OCC, &[]), counted_by_first);
    assert_eq!(total(&refs), 18.0);
    assert_eq!(sim.truth().occurrences_total, 18);
    assert_eq!(
        leaders(&refs),
        [other],
        "the cut-off agent came back as leader"
    );
    drop(agents);
    sim.shutdown().await;
}

/// The same cut-off as above in the middle of a generated scenario, with the shared checkpoint: Events keep
/// coming through the hand-over, and the two agents' totals (each shows what it saved) add up to the truth
/// exactly: the cut-off leader stopped saving when it stepped down, its successor continued from its last
/// checkpoint, and nothing was counted twice or lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_after_hung_renewals_counts_every_occurrence_once() {
    let dir = tempfile::tempdir().unwrap();
    let (rate, max_events, start_after) = (150.0, 2_400, Duration::from_secs(4));
    let sim = common::truth::scenario_sim(22, rate, max_events, start_after, dir.path(), 100).await;
    let started = Instant::now();
    let baseline = sim.truth();
    let v0 = common::truth::version(&sim);
    let config = |i: usize| {
        format!(
            "mode: daemonset\nleader_election:\n  lease_duration: 3s\n  renew_interval: 300ms\n  renew_deadline: 2s\nsinks:\n  json:\n    enabled: false\nstate_dir: {}\ncheckpoint_interval: 300ms\n",
            dir.path().join(format!("state-{i}")).display()
        )
    };
    let agents: Vec<Herald> = (0..2)
        .map(|i| {
            start_herald_with(
                &sim.url(),
                &config(i),
                Stdio::null(),
                &[],
                &[("POD_NAME", &format!("herald-{i}"))],
            )
        })
        .collect();
    let refs: Vec<&Herald> = agents.iter().collect();
    let first = tokio::task::block_in_place(|| {
        for a in &refs {
            a.wait_ready();
        }
        let first = one_leader(&refs, Duration::from_secs(10));
        assert_eq!(
            sim.truth().occurrences_total,
            baseline.occurrences_total,
            "the first leader must list before the generator starts"
        );
        wait_until(Duration::from_secs(60), "a third of the scenario", || {
            common::truth::version(&sim) >= v0 + max_events / 3
        });
        first
    });
    let identity = format!("herald-{first}-{}", agents[first].child.id());
    sim.set_faults(format!("lease-stall={identity}").parse().unwrap());
    tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let l = leaders(&refs);
            assert!(l.len() < 2, "two leaders at once");
            if l == [1 - first] {
                break;
            }
            assert!(Instant::now() < deadline, "no hand-over");
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    assert!(
        common::truth::version(&sim) < v0 + max_events,
        "the hand-over must happen while Events keep coming"
    );
    let generating = Duration::from_secs_f64(max_events as f64 / rate) + start_after;
    common::truth::wait_generator_done(&sim, started, generating).await;
    let want = (sim.truth().occurrences_total - baseline.occurrences_total) as f64;
    let mut seen = (0.0, 0.0);
    tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            seen = (
                refs[first].metric(OCC, &[]),
                refs[1 - first].metric(OCC, &[]),
            );
            if seen.0 + seen.1 == want {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    eprintln!(
        "cut-off leader counted {}, its successor {}; truth {want}",
        seen.0, seen.1
    );
    assert!(seen.0 > 0.0 && seen.1 > 0.0, "both must have counted");
    assert_eq!(seen.0 + seen.1, want, "total over the hand-over");
    assert_eq!(leaders(&refs), [1 - first]);
    drop(agents);
    sim.shutdown().await;
}
