//! KubeVirt end to end: the simulator's seeded VM scenario (and real KubeVirt objects from the fixtures) against
//! herald as a child process. Counters, histogram counts and gauges must equal the simulator's ground truth,
//! also when watches are cut and relisted along the way, and a restart must not count anything twice.

use crate::common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::fixtures::shared_fixtures;
use common::otlp::Receiver;
use common::*;
use herald::source::vm_lifecycle::{self, VmResource};
use herald_sim::vm_scenario::VmScenarioOptions;
use herald_sim::{RunningSim, SimOptions};

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

/// The simulator's Pending migrations by namespace and whether a ResourceQuota blocks them.
async fn pending_migrations(sim: &RunningSim) -> BTreeMap<Vec<String>, f64> {
    let list: serde_json::Value = reqwest_like(&format!(
        "{}/apis/kubevirt.io/v1/virtualmachineinstancemigrations",
        sim.url()
    ))
    .await;
    let mut out = BTreeMap::new();
    for item in list["items"].as_array().unwrap() {
        if item["status"]["phase"] != "Pending" {
            continue;
        }
        let ns = item["metadata"]["namespace"].as_str().unwrap().to_string();
        let blocked = item["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "migrationRejectedByResourceQuota" && c["status"] == "True");
        let label = if blocked { "resource_quota" } else { "none" };
        *out.entry(vec![ns, label.to_string()]).or_default() += 1.0;
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
    wait_until(Duration::from_secs(30), "migration durations", || {
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
    let pending: BTreeMap<_, _> = samples(
        &text,
        "herald_vm_migrations_pending",
        &["namespace", "blocked"],
    )
    .into_iter()
    .filter(|(_, v)| *v != 0.0)
    .collect();
    assert_eq!(pending, pending_migrations(&sim).await);
    assert!(
        total("migration_rejected") > 0.0,
        "some migrations were refused by a quota: {want:?}"
    );

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
    wait_until(Duration::from_secs(30), "VMI gauge after restart", || {
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
    wait_until(Duration::from_secs(30), "kubevirt note", || {
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

/// The project's KubeVirt fixtures (`tests/fixtures/kubevirt`, see its README for what each holds).
fn project_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kubevirt")
}

/// The one object of a fixture file (a `List` of one item).
fn fixture(name: &str) -> serde_json::Value {
    let mut items = fixture_objects(&project_fixtures().join(name));
    assert_eq!(items.len(), 1, "{name}");
    items.remove(0)
}

fn resource_of(obj: &serde_json::Value) -> VmResource {
    match obj["kind"].as_str().unwrap() {
        "VirtualMachine" => VmResource::Vm,
        "VirtualMachineInstance" => VmResource::Vmi,
        "VirtualMachineInstanceMigration" => VmResource::Vmim,
        other => panic!("not a KubeVirt kind: {other}"),
    }
}

/// Real-shaped objects decode, and each migration shape (0.5x phase only with the times on the VMI, 1.x with
/// its own `migrationState`, quota-rejected) yields the transitions and durations written in the fixtures'
/// README. The shared fixtures (real Harvester dumps and upstream round-trip objects) are an extra layer.
#[test]
fn real_kubevirt_objects_decode_and_derive() {
    let mut decoded = 0;
    for entry in std::fs::read_dir(project_fixtures()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        for obj in fixture_objects(&path) {
            if obj["apiVersion"] == "kubevirt.io/v1" {
                vm_lifecycle::read(resource_of(&obj), &obj)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                decoded += 1;
            }
        }
    }
    assert_eq!(decoded, 5, "every KubeVirt fixture object decoded");

    // KubeVirt 0.54: the VMI keeps the migration's times; the migration only its phase.
    let vmi = vm_lifecycle::read(
        VmResource::Vmi,
        &fixture("v0.54-vmi-list-after-migration.yaml"),
    )
    .unwrap();
    assert_eq!(
        (vmi.status.as_str(), vmi.node.as_str()),
        ("Running", "worker-2")
    );
    let mut before = vmi.clone();
    before.node = "worker-1".into();
    before.migration = None;
    let t = vm_lifecycle::derive(VmResource::Vmi, Some(&before), &vmi);
    assert_eq!(
        t.iter().map(|t| t.name).collect::<Vec<_>>(),
        ["node_changed"]
    );
    assert_eq!(
        (t[0].source_node.as_str(), t[0].target_node.as_str()),
        ("worker-1", "worker-2")
    );
    let end = vm_lifecycle::migration_end(Some(&before), &vmi).unwrap();
    assert_eq!(
        (end.seconds, end.failed, end.uid.as_str()),
        (6.0, false, "3e2d1c0b-9a8f-4e7d-b6c5-4a3b2c1d0e9f")
    );
    let vmim = vm_lifecycle::read(
        VmResource::Vmim,
        &fixture("v0.54-vmim-list-succeeded-phase-only.yaml"),
    )
    .unwrap();
    assert_eq!(vmim.uid, end.uid, "the VMI names its migration by uid");
    let mut running = vmim.clone();
    running.status = "Running".into();
    let t = vm_lifecycle::derive(VmResource::Vmim, Some(&running), &vmim);
    assert_eq!(
        (t[0].name, t[0].object.as_str(), t[0].vm.as_str()),
        ("migration_succeeded", "web-1-5xq2n", "web-1")
    );
    assert_eq!(t[0].span, None, "phase only: no times, no span");
    // First seen finished (a relist): started and succeeded, still without a duration.
    let t = vm_lifecycle::derive(VmResource::Vmim, None, &vmim);
    assert_eq!(
        t.iter().map(|t| (t.name, t.span)).collect::<Vec<_>>(),
        [("migration_started", None), ("migration_succeeded", None)]
    );

    // KubeVirt 1.x: the migration carries its own migrationState (9 s).
    let evacuation = vm_lifecycle::read(
        VmResource::Vmim,
        &fixture("v1.3-vmim-evacuation-succeeded.yaml"),
    )
    .unwrap();
    let mut pending = evacuation.clone();
    pending.status = "Pending".into();
    pending.migration = None;
    let t = vm_lifecycle::derive(VmResource::Vmim, Some(&pending), &evacuation);
    assert_eq!(
        (t[0].name, t[0].object.as_str(), t[0].vm.as_str()),
        ("migration_succeeded", "kubevirt-evacuation-wgk69", "db-0")
    );
    assert_eq!(
        (t[0].source_node.as_str(), t[0].target_node.as_str()),
        ("worker-3", "worker-1")
    );
    let (from, to, failed) = t[0].span.unwrap();
    assert_eq!((to.duration_since(from).as_secs(), failed), (9, false));
    let end = vm_lifecycle::migration_timed_end(
        Some(&pending),
        &evacuation,
        vm_lifecycle::migration_times,
    )
    .unwrap();
    assert_eq!(end.seconds, 9.0);

    // A ResourceQuota refuses the target pod: Pending, with the condition.
    let rejected = vm_lifecycle::read(
        VmResource::Vmim,
        &fixture("v1.3-vmim-pending-rejected-by-quota.yaml"),
    )
    .unwrap();
    assert!(rejected.migration_pending() && rejected.rejected_by_quota);
    let mut fresh = rejected.clone();
    fresh.rejected_by_quota = false;
    let t = vm_lifecycle::derive(VmResource::Vmim, Some(&fresh), &rejected);
    assert_eq!(
        (t.len(), t[0].name, t[0].object.as_str()),
        (1, "migration_rejected", "app-2-migration")
    );

    let Some(shared) = shared_fixtures().map(|d| d.join("kubevirt")) else {
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
        for obj in fixture_objects(&shared.join(file)) {
            vm_lifecycle::read(resource, &obj).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
    let vmi = vm_lifecycle::read(
        VmResource::Vmi,
        &fixture_objects(&shared.join("harvester-v1.2.1-vmi-list-after-migration.yaml"))[0],
    )
    .unwrap();
    assert_eq!(
        (vmi.status.as_str(), vmi.node.as_str()),
        ("Running", "harv41")
    );
    let mut before = vmi.clone();
    before.node = "harv2".into();
    before.migration = None;
    let end = vm_lifecycle::migration_end(Some(&before), &vmi).unwrap();
    assert_eq!((end.seconds, end.failed), (5.0, false));
    // Pending (12:37:23) to Running (12:37:45): a 22 s start.
    let mut scheduled = vmi.clone();
    scheduled.status = "Scheduled".into();
    let t = vm_lifecycle::derive(VmResource::Vmi, Some(&scheduled), &vmi);
    let (from, to, _) = t[0].span.unwrap();
    assert_eq!(
        (t[0].name, to.duration_since(from).as_secs()),
        ("started", 22)
    );
    let vmim = vm_lifecycle::read(
        VmResource::Vmim,
        &fixture_objects(&shared.join("harvester-v1.2.1-vmim-list-succeeded.yaml"))[0],
    )
    .unwrap();
    let mut running = vmim.clone();
    running.status = "Running".into();
    let t = vm_lifecycle::derive(VmResource::Vmim, Some(&running), &vmim);
    assert_eq!(
        (t[0].name, t[0].object.as_str(), t[0].vm.as_str(), t[0].span),
        ("migration_succeeded", "vm1-9rdqx", "vm1", None)
    );
}

/// Real-shaped objects loaded into the simulator are herald's baseline: the gauges show them, nothing is a
/// transition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_objects_in_the_cluster_are_the_baseline() {
    let dir = project_fixtures();
    let mut load: Vec<PathBuf> = [
        "v0.54-vm-list.yaml",
        "v0.54-vmi-list-after-migration.yaml",
        "v0.54-vmim-list-succeeded-phase-only.yaml",
        "v1.3-vmim-evacuation-succeeded.yaml",
        "v1.3-vmim-pending-rejected-by-quota.yaml",
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect();
    // The real Harvester dump, when the shared fixtures are there.
    let shared = shared_fixtures().map(|d| d.join("kubevirt"));
    if let Some(shared) = &shared {
        for f in [
            "harvester-v1.2.1-vm-list-after-migration.yaml",
            "harvester-v1.2.1-vmi-list-after-migration.yaml",
            "harvester-v1.2.1-vmim-list-succeeded.yaml",
        ] {
            load.push(shared.join(f));
        }
    }
    let sim = RunningSim::start(
        SimOptions {
            kubevirt: true,
            load,
            ..SimOptions::quiet()
        },
        any_addr(),
    )
    .await
    .unwrap();
    let herald = start_herald(&sim.url(), QUIET, Stdio::null(), &[]);
    herald.wait_ready();
    let mut want_vmis =
        BTreeMap::from([(vec!["tenant-a".to_string(), "Running".to_string()], 1.0)]);
    if shared.is_some() {
        want_vmis.insert(vec!["test-migration".into(), "Running".into()], 1.0);
    }
    wait_until(Duration::from_secs(30), "gauges of the baseline", || {
        let text = herald.metrics();
        samples(&text, "herald_vmis", &["namespace", "phase"]) == want_vmis
            && samples(
                &text,
                "herald_vm_migrations_pending",
                &["namespace", "blocked"],
            ) == BTreeMap::from([(vec!["tenant-b".into(), "resource_quota".into()], 1.0)])
    });
    let text = herald.metrics();
    assert_eq!(metric_sum(&text, "herald_vm_transitions_total", &[]), 0.0);
    assert_eq!(
        metric_sum(&text, "herald_vm_migration_duration_seconds_count", &[]),
        0.0
    );
    sim.shutdown().await;
}

/// POST or PUT a JSON object to the simulator's API with herald's own client.
async fn write(client: &kube::Client, method: http::Method, path: &str, obj: &serde_json::Value) {
    let mut obj = obj.clone();
    if let Some(meta) = obj["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&obj).unwrap())
        .unwrap();
    client
        .request::<serde_json::Value>(req)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
}

async fn create(client: &kube::Client, obj: &serde_json::Value) {
    let ns = obj["metadata"]["namespace"].as_str().unwrap();
    let path = match obj["kind"].as_str().unwrap() {
        "Event" => format!("/api/v1/namespaces/{ns}/events"),
        _ => format!(
            "/apis/kubevirt.io/v1/namespaces/{ns}/{}",
            resource_of(obj).plural()
        ),
    };
    write(client, http::Method::POST, &path, obj).await;
    write_status(
        client,
        &format!("{path}/{}", obj["metadata"]["name"].as_str().unwrap()),
        obj,
    )
    .await;
}

/// VirtualMachines and migrations have a status subresource (as their CRDs say): a create or update of the
/// object leaves their status alone, so a controller writes it through `/status`, as this does.
async fn write_status(client: &kube::Client, object_path: &str, obj: &serde_json::Value) {
    let has_subresource = matches!(
        obj["kind"].as_str(),
        Some("VirtualMachine" | "VirtualMachineInstanceMigration")
    );
    if has_subresource && obj.get("status").is_some() {
        write(
            client,
            http::Method::PUT,
            &format!("{object_path}/status"),
            obj,
        )
        .await;
    }
}

async fn replace(client: &kube::Client, obj: &serde_json::Value) {
    let meta = &obj["metadata"];
    let path = format!(
        "/apis/kubevirt.io/v1/namespaces/{}/{}/{}",
        meta["namespace"].as_str().unwrap(),
        resource_of(obj).plural(),
        meta["name"].as_str().unwrap()
    );
    write(client, http::Method::PUT, &path, obj).await;
    write_status(client, &path, obj).await;
}

/// Migrations as KubeVirt reports them, driven through the real agent: a 0.5x migration with only its phase
/// (times on the VMI), the same shape first seen finished, a 1.x evacuation with its own `migrationState`,
/// and a migration a ResourceQuota keeps Pending. The truth is written here from the fixtures' README.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_as_kubevirt_reports_them() {
    let sim = RunningSim::start(
        SimOptions {
            kubevirt: true,
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
    wait_until(Duration::from_secs(30), "KubeVirt watches open", || {
        herald.get("/readyz").is_some_and(|(_, body)| {
            body.contains("virtualmachineinstances.kubevirt.io: ok")
                && body.contains("virtualmachineinstancemigrations.kubevirt.io: ok")
        })
    });
    let client = client(&sim);
    let transitions = |h: &Herald| {
        samples(
            &h.metrics(),
            "herald_vm_transitions_total",
            &["namespace", "transition"],
        )
    };
    let seen = |ns: &str, t: &str| {
        transitions(&herald)
            .get(&vec![ns.to_string(), t.to_string()])
            .copied()
            .unwrap_or(0.0)
    };

    // 1. KubeVirt 0.54: VM and VMI on worker-1, a migration with only a phase, the VMI's migrationState
    //    (6 s), then the migration's Succeeded.
    let vm = fixture("v0.54-vm-list.yaml");
    let vmi_after = fixture("v0.54-vmi-list-after-migration.yaml");
    let mut vmi_before = vmi_after.clone();
    vmi_before["status"]
        .as_object_mut()
        .unwrap()
        .remove("migrationState");
    vmi_before["status"]["nodeName"] = "worker-1".into();
    vmi_before["metadata"]["labels"]["kubevirt.io/nodeName"] = "worker-1".into();
    let vmim_done = fixture("v0.54-vmim-list-succeeded-phase-only.yaml");
    let mut vmim_running = vmim_done.clone();
    vmim_running["status"]["phase"] = "Running".into();
    create(&client, &vm).await;
    create(&client, &vmi_before).await;
    create(&client, &vmim_running).await;
    wait_until(Duration::from_secs(30), "0.54 migration started", || {
        seen("tenant-a", "migration_started") == 1.0
    });
    replace(&client, &vmi_after).await;
    wait_until(Duration::from_secs(30), "0.54 VMI moved", || {
        seen("tenant-a", "node_changed") == 1.0
    });
    replace(&client, &vmim_done).await;

    // 2. The same shape first seen already finished (as after a relist): no times anywhere.
    let mut vmim_late = vmim_done.clone();
    vmim_late["metadata"]["name"] = "web-1-r8d2k".into();
    vmim_late["metadata"]["uid"] = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a".into();
    create(&client, &vmim_late).await;

    // 3. KubeVirt 1.x: an evacuation, Pending, then Succeeded with its own migrationState (9 s).
    let evacuation = fixture("v1.3-vmim-evacuation-succeeded.yaml");
    let mut evacuation_pending = evacuation.clone();
    evacuation_pending["status"] = serde_json::json!({"phase": "Pending"});
    create(&client, &evacuation_pending).await;
    wait_until(Duration::from_secs(30), "evacuation started", || {
        seen("prod", "migration_started") == 1.0
    });
    replace(&client, &evacuation).await;

    // 4. A migration a ResourceQuota refuses: Pending, then the condition, and KubeVirt's Event.
    let rejected = fixture("v1.3-vmim-pending-rejected-by-quota.yaml");
    let mut fresh = rejected.clone();
    fresh["status"]
        .as_object_mut()
        .unwrap()
        .remove("conditions");
    create(&client, &fresh).await;
    wait_until(Duration::from_secs(30), "quota migration started", || {
        seen("tenant-b", "migration_started") == 1.0
    });
    replace(&client, &rejected).await;
    create(
        &client,
        &fixture("v1.3-event-migration-target-pod-exceeded-quota.yaml"),
    )
    .await;

    // The truth, from the fixtures: per namespace and transition.
    let key = |ns: &str, t: &str| vec![ns.to_string(), t.to_string()];
    let want = BTreeMap::from([
        (key("tenant-a", "created"), 1.0),
        (key("tenant-a", "started"), 1.0),
        (key("tenant-a", "node_changed"), 1.0),
        (key("tenant-a", "migration_started"), 2.0),
        (key("tenant-a", "migration_succeeded"), 2.0),
        (key("prod", "migration_started"), 1.0),
        (key("prod", "migration_succeeded"), 1.0),
        (key("tenant-b", "migration_started"), 1.0),
        (key("tenant-b", "migration_rejected"), 1.0),
    ]);
    let mut got = BTreeMap::new();
    wait_until(Duration::from_secs(30), "transitions as written", || {
        got = transitions(&herald);
        got == want
    });

    // One observation per finished migration with real times: the 0.54 one (6 s, from its VMI) and the
    // evacuation (9 s, from itself); none for the phase-only one nobody has times for.
    let mut text = String::new();
    wait_until(
        Duration::from_secs(10),
        "quota Event and gauges counted",
        || {
            text = herald.metrics();
            metric_sum(&text, "herald_quota_exceeded_total", &[]) == 2.0
        },
    );
    let durations = samples(
        &text,
        "herald_vm_migration_duration_seconds_count",
        &["namespace", "outcome"],
    );
    assert_eq!(
        durations,
        BTreeMap::from([
            (key("prod", "succeeded"), 1.0),
            (key("tenant-a", "succeeded"), 1.0),
        ])
    );
    assert_eq!(
        samples(
            &text,
            "herald_vm_migration_duration_seconds_sum",
            &["namespace"]
        ),
        BTreeMap::from([(vec!["prod".into()], 9.0), (vec!["tenant-a".into()], 6.0)])
    );
    assert_eq!(
        metric_sum(
            &text,
            "herald_vm_migrations_total",
            &[("outcome", "succeeded")]
        ),
        3.0
    );
    let pending: BTreeMap<_, _> = samples(
        &text,
        "herald_vm_migrations_pending",
        &["namespace", "blocked"],
    )
    .into_iter()
    .filter(|(_, v)| *v != 0.0)
    .collect();
    assert_eq!(
        pending,
        BTreeMap::from([(key("tenant-b", "resource_quota"), 1.0)])
    );
    assert_eq!(
        samples(
            &text,
            "herald_quota_exceeded_total",
            &["namespace", "resource"]
        ),
        BTreeMap::from([
            (key("tenant-b", "limits.cpu"), 1.0),
            (key("tenant-b", "limits.memory"), 1.0),
        ])
    );

    // The log records describe the migration itself; its VMI is in kubevirt.vm.name.
    let all: f64 = want.values().sum();
    wait_until(Duration::from_secs(30), "one record per transition", || {
        rx.records()
            .iter()
            .filter(|r| r.attr("kubevirt.transition").is_some())
            .count() as f64
            == all
    });
    let mut migrations: Vec<(String, String, String, Option<i64>)> = rx
        .records()
        .iter()
        .filter(|r| {
            r.attr("kubevirt.transition").is_some()
                && r.str("k8s.object.kind") == "VirtualMachineInstanceMigration"
        })
        .map(|r| {
            let ms = match r.attr("kubevirt.duration_ms") {
                Some(common::otlp::Attr::Int(ms)) => Some(*ms),
                _ => None,
            };
            (
                r.str("k8s.object.name").to_string(),
                r.str("kubevirt.transition").to_string(),
                r.str("kubevirt.vm.name").to_string(),
                ms,
            )
        })
        .collect();
    migrations.sort();
    let m = |object: &str, t: &str, vmi: &str, ms: Option<i64>| {
        (object.to_string(), t.to_string(), vmi.to_string(), ms)
    };
    assert_eq!(
        migrations,
        [
            m("app-2-migration", "migration_rejected", "app-2", None),
            m("app-2-migration", "migration_started", "app-2", None),
            m(
                "kubevirt-evacuation-wgk69",
                "migration_started",
                "db-0",
                None
            ),
            m(
                "kubevirt-evacuation-wgk69",
                "migration_succeeded",
                "db-0",
                Some(9000)
            ),
            m("web-1-5xq2n", "migration_started", "web-1", None),
            m("web-1-5xq2n", "migration_succeeded", "web-1", Some(6000)),
            m("web-1-r8d2k", "migration_started", "web-1", None),
            m("web-1-r8d2k", "migration_succeeded", "web-1", None),
        ]
    );
    let rejection = rx
        .records()
        .into_iter()
        .find(|r| {
            r.attr("kubevirt.transition")
                == Some(&common::otlp::Attr::Str("migration_rejected".into()))
        })
        .unwrap();
    assert_eq!(rejection.str("k8s.event.reason"), "migration_rejected");
    assert!(
        rejection.body().contains("ResourceQuota"),
        "{}",
        rejection.body()
    );

    // Spans only with real times: the two migrations that have them, with those durations.
    let migration_spans = || {
        let mut spans: Vec<u64> = rx
            .spans()
            .iter()
            .filter(|s| s.name == "vm.migration")
            .map(|s| (s.end_time_unix_nano - s.start_time_unix_nano) / 1_000_000_000)
            .collect();
        spans.sort();
        spans
    };
    // Spans are exported next to the log records, not necessarily in the same request.
    wait_until(Duration::from_secs(30), "two migration spans", || {
        migration_spans().len() >= 2
    });
    assert_eq!(migration_spans(), [6, 9]);
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
    wait_until(Duration::from_secs(30), "VMIs by phase", || {
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
    // Waited for while the number reported still grows (see `common::wait_count`); then compared per key.
    let _ = wait_count(want.values().sum(), COUNT_STALLED, COUNT_CEILING, || {
        reported().values().sum()
    });
    assert_eq!(reported(), want, "transitions reported over both runs");
    let vmis = vmis_by_phase(&sim).await;
    let gauge: BTreeMap<_, _> = samples(&second.metrics(), "herald_vmis", &["namespace", "phase"])
        .into_iter()
        .filter(|(_, v)| *v != 0.0)
        .collect();
    assert_eq!(gauge, vmis);
    sim.shutdown().await;
}

/// Thousands of VMIs in as many namespaces stay under `metrics.max_series_per_metric`: the first namespaces
/// get their series, the rest fold into `__other__` (counted as overflow), and the total stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmis_in_many_namespaces_stay_under_the_cardinality_guard() {
    const VMIS: usize = 2_000;
    const MAX_SERIES: usize = 100;
    let template = fixture("v0.54-vmi-list-after-migration.yaml");
    let items: Vec<serde_json::Value> = (0..VMIS)
        .map(|i| {
            let mut vmi = template.clone();
            vmi["metadata"]["namespace"] = format!("tenant-{i:05}").into();
            vmi["metadata"]["uid"] = format!("00000000-0000-4000-9000-{i:012x}").into();
            vmi
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vmis.json");
    std::fs::write(
        &file,
        serde_json::to_vec(
            &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}),
        )
        .unwrap(),
    )
    .unwrap();
    let sim = RunningSim::start(
        SimOptions {
            kubevirt: true,
            load: vec![file],
            ..SimOptions::quiet()
        },
        any_addr(),
    )
    .await
    .unwrap();
    let config = format!("{QUIET}metrics:\n  max_series_per_metric: {MAX_SERIES}\n");
    let herald = start_herald(&sim.url(), &config, Stdio::null(), &[]);
    herald.wait_ready();
    let mut vmis = BTreeMap::new();
    wait_until(Duration::from_secs(20), "every VMI in the gauge", || {
        vmis = samples(&herald.metrics(), "herald_vmis", &["namespace", "phase"]);
        vmis.values().sum::<f64>() == VMIS as f64
    });
    assert_eq!(
        vmis.len(),
        MAX_SERIES + 1,
        "{MAX_SERIES} namespaces and __other__"
    );
    assert_eq!(
        vmis[&vec!["__other__".to_string(), "Running".to_string()]],
        (VMIS - MAX_SERIES) as f64
    );
    assert_eq!(
        herald.metric(
            "herald_metric_series_overflow_total",
            &[("metric", "herald_vmis")]
        ),
        (VMIS - MAX_SERIES) as f64
    );
    sim.shutdown().await;
}
