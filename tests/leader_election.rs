//! DaemonSet mode: several agents against one simulator, one Lease. Exactly one emits; when it dies another
//! takes over within the lease duration, and the totals across agents stay exact.

mod common;

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
