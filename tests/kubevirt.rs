//! KubeVirt end to end: the simulator's seeded VM scenario (and real KubeVirt objects from the fixtures) against
//! herald as a child process. Counters, histogram counts and gauges must equal the simulator's ground truth,
//! also when watches are cut and relisted along the way, and a restart must not count anything twice.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::otlp::Receiver;
use common::*;
use herald::sim::vm_scenario::VmScenarioOptions;
use herald::sim::{RunningSim, SimOptions};
use herald::source::vm_lifecycle::{self, VmResource};

const QUIET: &str = "sinks:\n  json:\n    enabled: false\n";

fn any_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// `{labels...} value` samples of `name`, keyed by the values of `keys`.
fn samples(text: &str, name: &str, keys: &[&str]) -> BTreeMap<Vec<String>, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(&format!("{name}{{"))) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let labels = &series[name.len() + 1..series.len() - 1];
        let get = |k: &str| {
            labels
                .split("\",")
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let key: Vec<String> = keys.iter().map(|k| get(k)).collect();
        *out.entry(key).or_default() += value.parse::<f64>().unwrap();
    }
    out
}

fn truth_transitions(sim: &RunningSim) -> BTreeMap<Vec<String>, f64> {
    let mut out = BTreeMap::new();
    for (ns, by) in sim.vm_truth().transitions {
        for (t, n) in by {
            out.insert(vec![ns.clone(), t], n as f64);
        }
    }
    out
}

async fn vmis_by_phase(sim: &RunningSim) -> BTreeMap<Vec<String>, f64> {
    let list: serde_json::Value = reqwest_like(&format!(
        "{}/apis/kubevirt.io/v1/virtualmachineinstances",
        sim.url()
    ))
    .await;
    let mut out = BTreeMap::new();
    for item in list["items"].as_array().unwrap() {
        let ns = item["metadata"]["namespace"].as_str().unwrap().to_string();
        let phase = item["status"]["phase"]
            .as_str()
            .unwrap_or("Unset")
            .to_string();
        *out.entry(vec![ns, phase]).or_default() += 1.0;
    }
    out
}

/// GET a JSON document from the simulator with the same kube client herald uses.
async fn reqwest_like(url: &str) -> serde_json::Value {
    let (base, path) = url.split_at(url.find("/apis").unwrap());
    let client = kube::Client::try_from(kube::Config::new(base.parse().unwrap())).unwrap();
    client
        .request::<serde_json::Value>(http::Request::get(path).body(Vec::new()).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_scenario_matches_ground_truth_across_relists_and_restarts() {
    const STEPS: u64 = 400;
    let sim = RunningSim::start(
        SimOptions {
            kubevirt: true,
            vm_scenario: Some(VmScenarioOptions {
                rate: 200.0,
                max_steps: Some(STEPS),
                start_after: Duration::from_secs(2),
                ..VmScenarioOptions::default()
            }),
            // Cut watches and force relists (410) all along.
            faults: "disconnect-every=9,gone-every=23".parse().unwrap(),
            ..SimOptions::quiet()
        },
        any_addr(),
    )
    .await
    .unwrap();
    let rx = Receiver::start(true, any_addr()).await;
    let config = format!(
        "{QUIET}  otlp:\n    endpoint: {}\n    protocol: grpc\n    batch_interval: 100ms\n",
        rx.url()
    );
    let herald = start_herald(&sim.url(), &config, Stdio::null(), &[]);
    herald.wait_ready();
    assert_eq!(
        sim.vm_truth().steps,
        0,
        "herald must be ready before the scenario starts"
    );

    wait_until(Duration::from_secs(30), "scenario done", || {
        sim.vm_truth().steps == STEPS
    });
    let want = truth_transitions(&sim);
    let mut got = BTreeMap::new();
    wait_until(
        Duration::from_secs(20),
        "transitions equal to the truth",
        || {
            got = samples(
                &herald.metrics(),
                "herald_vm_transitions_total",
                &["namespace", "transition"],
            );
            got == want
        },
    );
    let total = |name: &str| {
        want.iter()
            .filter(|(k, _)| k[1] == name)
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    assert!(
        total("started") > 5.0 && total("migration_succeeded") > 0.0,
        "a meaningful scenario: {want:?}"
    );

    // The VMI, VM and migration watches are separate streams: let the slowest catch up.
    wait_until(Duration::from_secs(10), "migration durations", || {
        metric_sum(
            &herald.metrics(),
            "herald_vm_migration_duration_seconds_count",
            &[],
        ) == total("migration_succeeded") + total("migration_failed")
    });
    let text = herald.metrics();
    assert_eq!(
        metric_sum(&text, "herald_vm_start_duration_seconds_count", &[]),
        total("started")
    );
    assert_eq!(
        metric_sum(&text, "herald_vm_migration_duration_seconds_count", &[]),
        total("migration_succeeded") + total("migration_failed")
    );
    assert_eq!(
        metric_sum(
            &text,
            "herald_vm_migrations_total",
            &[("outcome", "failed")]
        ),
        total("migration_failed")
    );
    assert_eq!(
        metric_sum(&text, "herald_source_up", &[("source", "kubevirt")]),
        1.0
    );

    // The VMI gauge equals the simulator's VMIs by phase (zeros for phases nobody is in any more).
    let gauge: BTreeMap<_, _> = samples(&text, "herald_vmis", &["namespace", "phase"])
        .into_iter()
        .filter(|(_, v)| *v != 0.0)
        .collect();
    assert_eq!(gauge, vmis_by_phase(&sim).await);

    // Quota-exceeded Events, per namespace and resource.
    let mut want_quota = BTreeMap::new();
    for (ns, by) in sim.vm_truth().quota_exceeded {
        for (r, n) in by {
            want_quota.insert(vec![ns.clone(), r], n as f64);
        }
    }
    assert_eq!(
        samples(
            &text,
            "herald_quota_exceeded_total",
            &["namespace", "resource"]
        ),
        want_quota
    );

    // One log record per transition reached the OTLP receiver.
    let all: f64 = want.values().sum();
    wait_until(
        Duration::from_secs(10),
        "one OTLP record per transition",
        || {
            rx.records()
                .iter()
                .filter(|r| r.attr("kubevirt.transition").is_some())
                .count() as f64
                == all
        },
    );

    // One span per VM start (or failed start) and per migration, in the VM's trace, with real times.
    let spans = rx.spans();
    let count = |name: &str| spans.iter().filter(|s| s.name == name).count() as f64;
    assert_eq!(count("vm.start"), total("started") + total("failed"));
    assert_eq!(
        count("vm.migration"),
        total("migration_succeeded") + total("migration_failed")
    );
    let errors = spans
        .iter()
        .filter(|s| s.status.as_ref().is_some_and(|st| st.code == 2))
        .count() as f64;
    assert_eq!(errors, total("failed") + total("migration_failed"));
    for s in &spans {
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano && s.start_time_unix_nano > 0);
        let uid = s
            .attributes
            .iter()
            .find(|kv| kv.key == "kubevirt.vm.uid")
            .and_then(|kv| kv.value.as_ref()?.value.clone());
        let Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(uid)) = uid
        else {
            panic!("span without kubevirt.vm.uid: {s:?}");
        };
        let hex: String = uid.chars().filter(|c| *c != '-').collect();
        let trace: String = s.trace_id.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(trace, hex, "{} of {uid}", s.name);
    }

    // A restart takes the current state as its baseline: nothing is counted again.
    drop(herald);
    let again = start_herald(&sim.url(), QUIET, Stdio::null(), &[]);
    again.wait_ready();
    wait_until(Duration::from_secs(10), "VMI gauge after restart", || {
        metric_sum(&again.metrics(), "herald_vmis", &[]) == gauge.values().sum::<f64>()
    });
    assert_eq!(again.metric("herald_vm_transitions_total", &[]), 0.0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_kubevirt_is_reported_not_fatal() {
    let sim = quiet_sim().await;
    let herald = start_herald(&sim.url(), QUIET, Stdio::null(), &[]);
    herald.wait_ready();
    wait_until(Duration::from_secs(10), "kubevirt note", || {
        herald
            .get("/readyz")
            .is_some_and(|(code, body)| code == 200 && body.contains("kubevirt: not installed"))
    });
    assert_eq!(
        herald.metric("herald_source_up", &[("source", "kubevirt")]),
        0.0
    );
    sim.shutdown().await;
}

/// Real objects decode, and the Harvester migration yields the expected transitions and duration.
#[test]
fn real_kubevirt_objects_decode_and_derive() {
    let Some(dir) = fixtures().map(|d| d.join("kubevirt")) else {
        return;
    };
    for (file, resource) in [
        (
            "harvester-v1.2.1-vm-list-after-migration.yaml",
            VmResource::Vm,
        ),
        (
            "harvester-v1.2.1-vmi-list-after-migration.yaml",
            VmResource::Vmi,
        ),
        (
            "harvester-v1.2.1-vmim-list-succeeded.yaml",
            VmResource::Vmim,
        ),
        (
            "kubevirt.io.v1.VirtualMachine.roundtrip-fuzz.json",
            VmResource::Vm,
        ),
        (
            "kubevirt.io.v1.VirtualMachineInstance.roundtrip-fuzz.json",
            VmResource::Vmi,
        ),
    ] {
        for obj in fixture_objects(&dir.join(file)) {
            vm_lifecycle::read(resource, &obj).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
    let vmi = vm_lifecycle::read(
        VmResource::Vmi,
        &fixture_objects(&dir.join("harvester-v1.2.1-vmi-list-after-migration.yaml"))[0],
    )
    .unwrap();
    assert_eq!(
        (vmi.status.as_str(), vmi.node.as_str()),
        ("Running", "harv41")
    );
    // The same VMI before the migration: on harv2, no migration state.
    let mut before = vmi.clone();
    before.node = "harv2".into();
    before.migration = None;
    let t = vm_lifecycle::derive(VmResource::Vmi, Some(&before), &vmi);
    assert_eq!(
        t.iter().map(|t| t.name).collect::<Vec<_>>(),
        ["node_changed"]
    );
    assert_eq!(
        (t[0].source_node.as_str(), t[0].target_node.as_str()),
        ("harv2", "harv41")
    );
    let end = vm_lifecycle::migration_end(Some(&before), &vmi).unwrap();
    assert_eq!((end.seconds, end.failed), (5.0, false));
    // Pending (12:37:23) to Running (12:37:45): a 22 s start.
    let mut pending = vmi.clone();
    pending.status = "Scheduled".into();
    let t = vm_lifecycle::derive(VmResource::Vmi, Some(&pending), &vmi);
    let (from, to, _) = t[0].span.unwrap();
    assert_eq!(
        (t[0].name, to.duration_since(from).as_secs()),
        ("started", 22)
    );

    let vmim = vm_lifecycle::read(
        VmResource::Vmim,
        &fixture_objects(&dir.join("harvester-v1.2.1-vmim-list-succeeded.yaml"))[0],
    )
    .unwrap();
    let mut running = vmim.clone();
    running.status = "Running".into();
    let t = vm_lifecycle::derive(VmResource::Vmim, Some(&running), &vmim);
    assert_eq!(
        (t[0].name, t[0].vm.as_str()),
        ("migration_succeeded", "vm1")
    );
}

/// Real objects loaded into the simulator are herald's baseline: the gauge shows them, nothing is a transition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_objects_in_the_cluster_are_the_baseline() {
    let Some(dir) = fixtures().map(|d| d.join("kubevirt")) else {
        return;
    };
    let sim = RunningSim::start(
        SimOptions {
            kubevirt: true,
            load: vec![
                dir.join("harvester-v1.2.1-vm-list-after-migration.yaml"),
                dir.join("harvester-v1.2.1-vmi-list-after-migration.yaml"),
                dir.join("harvester-v1.2.1-vmim-list-succeeded.yaml"),
            ],
            ..SimOptions::quiet()
        },
        any_addr(),
    )
    .await
    .unwrap();
    let herald = start_herald(&sim.url(), QUIET, Stdio::null(), &[]);
    herald.wait_ready();
    wait_until(Duration::from_secs(10), "VMI gauge", || {
        herald.metric(
            "herald_vmis",
            &[("namespace", "test-migration"), ("phase", "Running")],
        ) == 1.0
    });
    assert_eq!(herald.metric("herald_vm_transitions_total", &[]), 0.0);
    sim.shutdown().await;
}

/// DaemonSet mode: each agent watches the VMIs of its own node (migrations move them between agents), the
/// leader the VMs and migrations; summed over the agents, every signal equals the truth exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_agents_split_vmis_by_node_and_count_once() {
    const STEPS: u64 = 300;
    let sim = RunningSim::start(
        SimOptions {
            kubevirt: true,
            vm_scenario: Some(VmScenarioOptions {
                rate: 150.0,
                nodes: 3,
                max_steps: Some(STEPS),
                start_after: Duration::from_secs(3),
                ..VmScenarioOptions::default()
            }),
            ..SimOptions::quiet()
        },
        any_addr(),
    )
    .await
    .unwrap();
    let config = format!(
        "{QUIET}mode: daemonset\nleader_election:\n  lease_duration: 3s\n  renew_interval: 300ms\n"
    );
    let agents: Vec<Herald> = (0..3)
        .map(|i| {
            start_herald_with(
                &sim.url(),
                &config,
                Stdio::null(),
                &[],
                &[
                    ("NODE_NAME", &format!("node-{i}")),
                    ("POD_NAME", &format!("herald-{i}")),
                ],
            )
        })
        .collect();
    wait_until(
        Duration::from_secs(10),
        "a leader with its watches open",
        || {
            agents.iter().any(|a| {
                a.get("/readyz").is_some_and(|(code, body)| {
                    code == 200
                        && body.contains("role: leader")
                        && body.contains("virtualmachines.kubevirt.io: ok")
                })
            })
        },
    );
    for a in &agents {
        a.wait_ready();
    }
    assert_eq!(
        sim.vm_truth().steps,
        0,
        "the agents must be ready before the scenario starts"
    );

    wait_until(Duration::from_secs(30), "scenario done", || {
        sim.vm_truth().steps == STEPS
    });
    let want = truth_transitions(&sim);
    let summed = |name: &str, keys: &[&str]| {
        let mut out: BTreeMap<Vec<String>, f64> = BTreeMap::new();
        for a in &agents {
            for (k, v) in samples(&a.metrics(), name, keys) {
                *out.entry(k).or_default() += v;
            }
        }
        out.retain(|_, v| *v != 0.0);
        out
    };
    let mut got = BTreeMap::new();
    wait_until(
        Duration::from_secs(20),
        "summed transitions equal to the truth",
        || {
            got = summed("herald_vm_transitions_total", &["namespace", "transition"]);
            got == want
        },
    );
    let total = |name: &str| {
        want.iter()
            .filter(|(k, _)| k[1] == name)
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    assert!(
        total("node_changed") > 0.0,
        "migrations moved VMIs between agents: {want:?}"
    );
    let vmis = vmis_by_phase(&sim).await;
    wait_until(Duration::from_secs(10), "VMIs by phase", || {
        summed("herald_vmis", &["namespace", "phase"]) == vmis
    });
    wait_until(
        Duration::from_secs(10),
        "migration durations counted once",
        || {
            let n: f64 = agents
                .iter()
                .map(|a| {
                    metric_sum(
                        &a.metrics(),
                        "herald_vm_migration_duration_seconds_count",
                        &[],
                    )
                })
                .sum();
            n == total("migration_succeeded") + total("migration_failed")
        },
    );
    sim.shutdown().await;
}

/// With `state_dir`, an agent stopped mid-scenario and started again resumes its watches from the checkpoint:
/// every transition, including those that happened while no agent ran, is reported exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_scenario_resumes_from_the_checkpoint() {
    const STEPS: u64 = 400;
    let sim = RunningSim::start(
        SimOptions {
            kubevirt: true,
            vm_scenario: Some(VmScenarioOptions {
                rate: 100.0,
                max_steps: Some(STEPS),
                start_after: Duration::from_secs(5),
                ..VmScenarioOptions::default()
            }),
            history: 1_000_000,
            ..SimOptions::quiet()
        },
        any_addr(),
    )
    .await
    .unwrap();
    let rx = Receiver::start(true, any_addr()).await;
    let state = tempfile::tempdir().unwrap();
    let config = format!(
        "{QUIET}  otlp:\n    endpoint: {}\n    protocol: grpc\n    batch_interval: 100ms\nstate_dir: {}\n",
        rx.url(),
        state.path().display()
    );
    let mut first = start_herald(&sim.url(), &config, Stdio::null(), &[]);
    first.wait_ready();
    assert_eq!(
        sim.vm_truth().steps,
        0,
        "herald must be ready before the scenario starts"
    );

    wait_until(Duration::from_secs(20), "a third of the scenario", || {
        sim.vm_truth().steps >= STEPS / 3
    });
    assert!(first.terminate(Duration::from_secs(15)).success());
    let stopped_at = sim.vm_truth().steps;
    // The scenario goes on while no agent runs.
    wait_until(
        Duration::from_secs(20),
        "more steps while herald is down",
        || sim.vm_truth().steps >= stopped_at + 60,
    );
    let second = start_herald(&sim.url(), &config, Stdio::null(), &[]);
    second.wait_ready();
    wait_until(Duration::from_secs(30), "scenario done", || {
        sim.vm_truth().steps == STEPS
    });

    let want = truth_transitions(&sim);
    let reported = || {
        let mut out: BTreeMap<Vec<String>, f64> = BTreeMap::new();
        for r in rx.records() {
            if r.attr("kubevirt.transition").is_some() {
                let key = vec![
                    r.str("herald.event.namespace").to_string(),
                    r.str("kubevirt.transition").to_string(),
                ];
                *out.entry(key).or_default() += 1.0;
            }
        }
        out
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while reported() != want && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(reported(), want, "transitions reported over both runs");
    let vmis = vmis_by_phase(&sim).await;
    let gauge: BTreeMap<_, _> = samples(&second.metrics(), "herald_vmis", &["namespace", "phase"])
        .into_iter()
        .filter(|(_, v)| *v != 0.0)
        .collect();
    assert_eq!(gauge, vmis);
    sim.shutdown().await;
}
