//! A seeded KubeVirt scenario: VirtualMachines that are created, start (VMI Pending → Scheduling → Scheduled →
//! Running), migrate (VMIM Pending → Scheduling → Scheduled → PreparingTarget → TargetReady → Running →
//! Succeeded or Failed, with the VMI's `migrationState` and a node change, and at the end the same
//! `migrationState` on the migration, as KubeVirt 1.x writes it), pause, stop, fail to start, get deleted, plus
//! quota-exceeded Events. Some migrations are first refused by a ResourceQuota: the VMIM stays Pending with the
//! condition `migrationRejectedByResourceQuota` and a `FailedCreate` Event, and goes on (the condition removed)
//! at the next step. Object shapes follow real KubeVirt objects (see the fixtures).
//!
//! Each step is one write, like a controller's. The generator also keeps the ground truth of the transitions a
//! correct observer derives, by namespace and transition, served at `/sim/truth` as `vm_transitions`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::store::Store;

#[derive(Debug, Clone)]
pub struct VmScenarioOptions {
    /// Writes per second.
    pub rate: f64,
    pub namespaces: usize,
    pub nodes: usize,
    /// Stop after this many writes.
    pub max_steps: Option<u64>,
    pub start_after: Duration,
}

impl Default for VmScenarioOptions {
    fn default() -> Self {
        VmScenarioOptions {
            rate: 5.0,
            namespaces: 2,
            nodes: 3,
            max_steps: None,
            start_after: Duration::ZERO,
        }
    }
}

/// Transitions by (namespace, transition), and quota-exceeded Events by (namespace, resource).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VmTruth {
    pub transitions: BTreeMap<String, BTreeMap<String, u64>>,
    pub quota_exceeded: BTreeMap<String, BTreeMap<String, u64>>,
    pub steps: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    /// VM exists, stopped.
    Stopped,
    /// VM asked to run: next writes create and advance its VMI.
    VmiPhase(usize),
    Running,
    Paused,
    /// Migration step n (VMIM phases; 0: refused by a ResourceQuota, still Pending), `fail` decided at creation.
    Migrating(usize, bool),
    Failing,
    Gone,
}

const VMI_PHASES: [&str; 4] = ["Pending", "Scheduling", "Scheduled", "Running"];
const VMIM_PHASES: [&str; 6] = [
    "Pending",
    "Scheduling",
    "Scheduled",
    "PreparingTarget",
    "TargetReady",
    "Running",
];

struct Vm {
    ns: String,
    name: String,
    uid: String,
    stage: Stage,
    node: String,
    vmi_uid: String,
    vmi_created: String,
    phase_times: Vec<(String, String)>,
    migration: u64,
}

pub struct VmScenario {
    opts: VmScenarioOptions,
    rng: fastrand::Rng,
    vms: Vec<Vm>,
    next_id: u64,
    truth: Arc<Mutex<VmTruth>>,
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

impl VmScenario {
    pub fn new(seed: u64, opts: VmScenarioOptions, truth: Arc<Mutex<VmTruth>>) -> VmScenario {
        VmScenario {
            opts,
            rng: fastrand::Rng::with_seed(seed ^ 0x7f4a_7c15),
            vms: Vec::new(),
            next_id: 0,
            truth,
        }
    }

    fn count(&self, ns: &str, transition: &str) {
        let mut t = self.truth.lock().unwrap_or_else(|p| p.into_inner());
        *t.transitions
            .entry(ns.to_string())
            .or_default()
            .entry(transition.to_string())
            .or_default() += 1;
    }

    /// Run until `stop` or `max_steps`. `stores` are VM, VMI, VMIM; `events` the Event store.
    pub async fn run(
        mut self,
        stores: [Arc<Store>; 3],
        events: Arc<Store>,
        stop: CancellationToken,
    ) {
        tokio::select! {
            _ = tokio::time::sleep(self.opts.start_after) => {}
            _ = stop.cancelled() => return,
        }
        let period = Duration::from_secs_f64(1.0 / self.opts.rate.max(0.001));
        let mut tick = tokio::time::interval(period);
        let mut steps = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            if self.opts.max_steps.is_some_and(|m| steps >= m) {
                return;
            }
            self.step(&stores, &events);
            steps += 1;
            self.truth.lock().unwrap_or_else(|p| p.into_inner()).steps = steps;
        }
    }

    fn node(&mut self) -> String {
        format!("node-{}", self.rng.usize(..self.opts.nodes.max(1)))
    }

    /// One write.
    pub fn step(&mut self, stores: &[Arc<Store>; 3], events: &Store) {
        let [vms, vmis, vmims] = stores;
        self.vms.retain(|v| v.stage != Stage::Gone);
        let roll = self.rng.f64();
        if self.vms.is_empty() || (roll < 0.12 && self.vms.len() < 20) {
            self.create_vm(vms);
            return;
        }
        if roll < 0.15 {
            self.quota_event(events);
            return;
        }
        let i = self.rng.usize(..self.vms.len());
        let node = self.node();
        let fail_start = self.rng.f64() < 0.15;
        let choice = self.rng.f64();
        let mut vm = std::mem::replace(&mut self.vms[i], placeholder());
        match vm.stage {
            Stage::Stopped => {
                if choice < 0.2 {
                    let _ = vms.delete(&vm.ns, &vm.name);
                    self.count(&vm.ns, "deleted");
                    vm.stage = Stage::Gone;
                } else {
                    self.set_vm_status(vms, &vm, "Starting", true);
                    vm.vmi_uid = format!("{}-vmi-{}", vm.uid, self.next_id);
                    self.next_id += 1;
                    vm.vmi_created = now();
                    vm.phase_times.clear();
                    vm.node = node;
                    vm.stage = if fail_start {
                        Stage::Failing
                    } else {
                        Stage::VmiPhase(0)
                    };
                }
            }
            Stage::Failing if vm.phase_times.len() >= 2 => {
                // Scheduling never succeeds: the VMI fails and the VM reports it.
                vm.phase_times.push(("Failed".into(), now()));
                self.put_vmi(vmis, &vm, "Failed", None);
                self.count(&vm.ns, "failed");
                self.set_vm_status(vms, &vm, "ErrorUnschedulable", false);
                self.count(&vm.ns, "error");
                let _ = vmis.delete(&vm.ns, &vm.name);
                // Back to Stopped without a counted stop: it never ran.
                self.set_vm_status(vms, &vm, "Stopped", false);
                vm.stage = Stage::Stopped;
            }
            Stage::Failing => {
                let phase = VMI_PHASES[vm.phase_times.len()];
                vm.phase_times.push((phase.into(), now()));
                self.put_vmi(vmis, &vm, phase, None);
            }
            Stage::VmiPhase(p) if p < 3 => {
                let phase = VMI_PHASES[p];
                vm.phase_times.push((phase.into(), now()));
                self.put_vmi(vmis, &vm, phase, None);
                vm.stage = Stage::VmiPhase(p + 1);
            }
            Stage::VmiPhase(_) => {
                vm.phase_times.push(("Running".into(), now()));
                self.put_vmi(vmis, &vm, "Running", None);
                self.count(&vm.ns, "started");
                self.set_vm_status(vms, &vm, "Running", true);
                vm.stage = Stage::Running;
            }
            Stage::Running => {
                if choice < 0.35 {
                    vm.migration += 1;
                    let fail = self.rng.f64() < 0.25;
                    let refused = self.rng.f64() < 0.2;
                    self.put_vmim(vmims, &vm, "Pending", json!({}));
                    self.count(&vm.ns, "migration_started");
                    vm.stage = Stage::Migrating(if refused { 0 } else { 1 }, fail);
                } else if choice < 0.5 {
                    self.set_vm_status(vms, &vm, "Paused", true);
                    self.count(&vm.ns, "paused");
                    vm.stage = Stage::Paused;
                } else if choice < 0.8 {
                    // Stop: the VMI goes away and the VM reports Stopped.
                    let _ = vmis.delete(&vm.ns, &vm.name);
                    self.set_vm_status(vms, &vm, "Stopped", false);
                    self.count(&vm.ns, "stopped");
                    vm.stage = Stage::Stopped;
                }
            }
            Stage::Paused => {
                self.set_vm_status(vms, &vm, "Running", true);
                self.count(&vm.ns, "unpaused");
                vm.stage = Stage::Running;
            }
            Stage::Migrating(step, fail) => {
                // Another node of the cluster (with one node, the same: a migration in place).
                let target = if node == vm.node {
                    let n = self.opts.nodes.max(1);
                    let i: usize = vm.node.trim_start_matches("node-").parse().unwrap_or(0);
                    format!("node-{}", (i + 1) % n)
                } else {
                    node
                };
                if step == 0 {
                    // The target pod is refused: KubeVirt records the condition and an Event, and retries.
                    let condition = json!({"conditions": [{"type": "migrationRejectedByResourceQuota",
                        "status": "True", "lastProbeTime": now(), "lastTransitionTime": null}]});
                    self.put_vmim(vmims, &vm, "Pending", condition);
                    self.count(&vm.ns, "migration_rejected");
                    self.migration_quota_event(events, &vm);
                    vm.stage = Stage::Migrating(1, fail);
                } else if step < VMIM_PHASES.len() {
                    self.put_vmim(vmims, &vm, VMIM_PHASES[step], json!({}));
                    if VMIM_PHASES[step] == "Running" {
                        let state = json!({"sourceNode": vm.node, "targetNode": target,
                            "startTimestamp": now(), "migrationUid": format!("{}-m{}", vm.uid, vm.migration),
                            "mode": "PreCopy"});
                        self.put_vmi(vmis, &vm, "Running", Some(state));
                    }
                    vm.stage = Stage::Migrating(step + 1, fail);
                } else {
                    // End: the VMI's migrationState first, then the VMIM's final phase.
                    let mut state = vmis
                        .get(&vm.ns, &vm.name)
                        .and_then(|v| v["status"].get("migrationState").cloned())
                        .unwrap_or_else(|| json!({}));
                    state["endTimestamp"] = json!(now());
                    state["completed"] = json!(!fail);
                    state["failed"] = json!(fail);
                    let target = state["targetNode"].as_str().unwrap_or(&vm.node).to_string();
                    if !fail && target != vm.node {
                        vm.node = target;
                        self.count(&vm.ns, "node_changed");
                    }
                    self.put_vmi(vmis, &vm, "Running", Some(state.clone()));
                    let phase = if fail { "Failed" } else { "Succeeded" };
                    self.put_vmim(vmims, &vm, phase, json!({"migrationState": state}));
                    self.count(
                        &vm.ns,
                        if fail {
                            "migration_failed"
                        } else {
                            "migration_succeeded"
                        },
                    );
                    vm.stage = Stage::Running;
                }
            }
            Stage::Gone => {}
        }
        self.vms[i] = vm;
    }

    fn create_vm(&mut self, vms: &Store) {
        let id = self.next_id;
        self.next_id += 1;
        let ns = format!("vms-{}", id as usize % self.opts.namespaces.max(1));
        let name = format!("vm-{id}");
        let uid = format!("00000000-0000-4000-8000-{id:012x}");
        let vm = json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": ns, "uid": uid, "creationTimestamp": now()},
            "spec": {"runStrategy": "Manual", "template": {"spec": {"domain": {"devices": {}}}}},
            "status": {"printableStatus": "Stopped", "ready": false}
        });
        let _ = vms.create(&ns, vm);
        self.count(&ns, "created");
        self.vms.push(Vm {
            ns,
            name,
            uid,
            stage: Stage::Stopped,
            node: String::new(),
            vmi_uid: String::new(),
            vmi_created: String::new(),
            phase_times: Vec::new(),
            migration: 0,
        });
    }

    fn set_vm_status(&self, vms: &Store, vm: &Vm, status: &str, ready: bool) {
        let patch = json!({"status": {"printableStatus": status, "ready": ready}});
        let _ = vms.patch(&vm.ns, &vm.name, &patch);
    }

    fn put_vmi(&self, vmis: &Store, vm: &Vm, phase: &str, migration: Option<Value>) {
        let times: Vec<Value> = vm
            .phase_times
            .iter()
            .map(|(p, t)| json!({"phase": p, "phaseTransitionTimestamp": t}))
            .collect();
        let mut status = json!({"phase": phase, "phaseTransitionTimestamps": times});
        if phase != "Pending" && phase != "Scheduling" {
            status["nodeName"] = json!(vm.node);
        }
        if let Some(m) = migration {
            status["migrationState"] = m;
        }
        let obj = json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": vm.name, "namespace": vm.ns, "uid": vm.vmi_uid,
                "creationTimestamp": vm.vmi_created,
                "labels": {"kubevirt.io/nodeName": vm.node},
                "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": vm.name, "uid": vm.uid, "controller": true}]},
            "spec": {"domain": {"devices": {}}},
            "status": status
        });
        match vmis.get(&vm.ns, &vm.name) {
            Some(_) => {
                let _ = vmis.update(&vm.ns, &vm.name, obj, None);
            }
            None => {
                let _ = vmis.create(&vm.ns, obj);
            }
        }
    }

    /// Write the VMI's migration in `phase`, with `status` fields added (conditions, migrationState).
    fn put_vmim(&self, vmims: &Store, vm: &Vm, phase: &str, mut status: Value) {
        let name = vmim_name(vm);
        status["phase"] = json!(phase);
        let obj = json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
            "metadata": {"name": name, "namespace": vm.ns, "uid": format!("{}-m{}", vm.uid, vm.migration),
                "labels": {"kubevirt.io/vmi-name": vm.name}, "creationTimestamp": now()},
            "spec": {"vmiName": vm.name},
            "status": status
        });
        match vmims.get(&vm.ns, &name) {
            Some(_) => {
                let _ = vmims.update(&vm.ns, &name, obj, None);
            }
            None => {
                let _ = vmims.create(&vm.ns, obj);
            }
        }
    }

    /// The Event KubeVirt's migration controller records about the VMI when a ResourceQuota refuses the
    /// migration's target pod.
    fn migration_quota_event(&mut self, events: &Store, vm: &Vm) {
        let id = self.next_id;
        self.next_id += 1;
        let ns = vm.ns.clone();
        let ev = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{}.{id:x}", vm.name), "namespace": ns},
            "involvedObject": {"kind": "VirtualMachineInstance", "name": vm.name, "namespace": ns,
                "apiVersion": "kubevirt.io/v1", "uid": vm.vmi_uid},
            "reason": "FailedCreate", "type": "Warning", "count": 1,
            "message": format!("Error creating pod: pods \"virt-launcher-{}-x{id:x}\" is forbidden: exceeded quota: {ns}-quota, requested: limits.memory=4Gi,requests.memory=2730Mi, used: limits.memory=8Gi,requests.memory=5460Mi, limited: limits.memory=10Gi,requests.memory=8Gi", vm.name),
            "source": {"component": "virtualmachine-migration"},
            "firstTimestamp": now(), "lastTimestamp": now(),
        });
        if events.create(&ns, ev).is_ok() {
            let mut t = self.truth.lock().unwrap_or_else(|p| p.into_inner());
            for r in ["limits.memory", "requests.memory"] {
                *t.quota_exceeded
                    .entry(ns.clone())
                    .or_default()
                    .entry(r.into())
                    .or_default() += 1;
            }
        }
    }

    fn quota_event(&mut self, events: &Store) {
        let id = self.next_id;
        self.next_id += 1;
        let ns = format!("vms-{}", id as usize % self.opts.namespaces.max(1));
        let ev = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("vm-{id}.quota"), "namespace": ns},
            "involvedObject": {"kind": "VirtualMachineInstance", "name": format!("vm-{id}"), "namespace": ns, "apiVersion": "kubevirt.io/v1"},
            "reason": "FailedCreate", "type": "Warning", "count": 1,
            "message": format!("Error creating pod: pods \"virt-launcher-vm-{id}-abcde\" is forbidden: exceeded quota: {ns}-quota, requested: limits.memory=2Gi,requests.cpu=1, used: limits.memory=8Gi,requests.cpu=4, limited: limits.memory=8Gi,requests.cpu=4"),
            "source": {"component": "virtualmachine-controller"},
            "firstTimestamp": now(), "lastTimestamp": now(),
        });
        if events.create(&ns, ev).is_ok() {
            let mut t = self.truth.lock().unwrap_or_else(|p| p.into_inner());
            for r in ["limits.memory", "requests.cpu"] {
                *t.quota_exceeded
                    .entry(ns.clone())
                    .or_default()
                    .entry(r.into())
                    .or_default() += 1;
            }
        }
    }
}

fn vmim_name(vm: &Vm) -> String {
    format!("{}-migration-{}", vm.name, vm.migration)
}

fn placeholder() -> Vm {
    Vm {
        ns: String::new(),
        name: String::new(),
        uid: String::new(),
        stage: Stage::Gone,
        node: String::new(),
        vmi_uid: String::new(),
        vmi_created: String::new(),
        phase_times: Vec::new(),
        migration: 0,
    }
}
