//! KubeVirt lifecycle transitions, derived from the last known state of each object and its new state.
//!
//! Pure logic, no I/O: the KubeVirt source feeds it list and watch steps. Because a transition is a difference
//! between two states (not a watch event), a relist or a reconnect that delivers the same state again derives
//! nothing, and one that skipped intermediate states still derives what changed. Objects seen in the initial
//! list are the baseline: their current state is recorded, no transition is derived.
//!
//! What is derived from which field (phase strings are KubeVirt's own, see `kubevirt.io/api/core/v1/types.go`):
//!
//! | transition | resource | when |
//! | --- | --- | --- |
//! | `created` | VirtualMachine | a VM appears after the baseline |
//! | `deleted` | VirtualMachine | a VM is deleted (or gone at a relist) |
//! | `stopped` | VirtualMachine | `status.printableStatus` becomes `Stopped` from Running, Paused, Migrating or Stopping |
//! | `paused` / `unpaused` | VirtualMachine | `printableStatus` enters / leaves `Paused` |
//! | `error` | VirtualMachine | `printableStatus` enters an error status (CrashLoopBackOff, ErrorUnschedulable, ErrImagePull, ImagePullBackOff, ErrorPvcNotFound, DataVolumeError) |
//! | `started` | VirtualMachineInstance | `status.phase` becomes `Running` (start duration: `phaseTransitionTimestamps` Pending, else creation, → Running) |
//! | `failed` | VirtualMachineInstance | `status.phase` becomes `Failed` |
//! | `node_changed` | VirtualMachineInstance | `status.nodeName` changes from one node to another |
//! | `migration_started` | VirtualMachineInstanceMigration | a migration appears after the baseline |
//! | `migration_rejected` | VirtualMachineInstanceMigration | condition `migrationRejectedByResourceQuota` becomes `True` |
//! | `migration_succeeded` / `migration_failed` | VirtualMachineInstanceMigration | `status.phase` becomes `Succeeded` / `Failed` |
//!
//! A migration's start and end are real timestamps or nothing: the migration's own `status.migrationState`
//! (KubeVirt 1.x), else its VMI's `status.migrationState` (every version). A migration that only has
//! `status.phase` (KubeVirt 0.5x, or first seen finished after a relist) has no duration: its creation time is
//! not when it started, and "now" is not when it ended.

use jiff::Timestamp;
use serde_json::Value;

/// Which KubeVirt resource an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmResource {
    Vm,
    Vmi,
    Vmim,
}

impl VmResource {
    pub const ALL: [VmResource; 3] = [VmResource::Vm, VmResource::Vmi, VmResource::Vmim];

    pub fn kind(self) -> &'static str {
        match self {
            VmResource::Vm => "VirtualMachine",
            VmResource::Vmi => "VirtualMachineInstance",
            VmResource::Vmim => "VirtualMachineInstanceMigration",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            VmResource::Vm => "virtualmachines",
            VmResource::Vmi => "virtualmachineinstances",
            VmResource::Vmim => "virtualmachineinstancemigrations",
        }
    }
}

/// What herald keeps of one KubeVirt object: only what transitions need.
///
/// Kept in checkpoints: fields added later default when an older checkpoint is read.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct VmState {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// VM: `status.printableStatus`; VMI and VMIM: `status.phase`.
    pub status: String,
    /// VMI: `status.nodeName`.
    pub node: String,
    pub created: Option<Timestamp>,
    /// VMI: when it entered Pending and Running (`status.phaseTransitionTimestamps`).
    pub pending_at: Option<Timestamp>,
    pub running_at: Option<Timestamp>,
    /// VMI `status.migrationState`, VMIM `status.migrationState` (newer KubeVirt).
    pub migration: Option<Migration>,
    /// VMIM: `spec.vmiName`.
    pub vmi_name: String,
    /// VM: its own uid; VMI: its VirtualMachine owner's uid (empty for a VMI without a VM).
    pub vm_uid: String,
    /// VMIM: condition `migrationRejectedByResourceQuota` is `True` (the target pod was refused by a
    /// ResourceQuota; KubeVirt keeps the migration Pending and retries).
    pub rejected_by_quota: bool,
}

/// The VMIM condition KubeVirt sets while a ResourceQuota refuses the migration's target pod.
pub const REJECTED_BY_QUOTA: &str = "migrationRejectedByResourceQuota";

/// `status.phase` values of a VirtualMachineInstance (KubeVirt's `VirtualMachineInstancePhase`); the empty
/// phase (`VmPhaseUnset`) is reported as `Unset`.
pub const VMI_PHASES: [&str; 8] = [
    "Pending",
    "Scheduling",
    "Scheduled",
    "Running",
    "Succeeded",
    "Failed",
    "WaitingForSync",
    "Unknown",
];

/// The `phase` label of a VMI: one of [`VMI_PHASES`], `Unset` for none, `other` for anything else (a newer
/// KubeVirt's phase, or garbage), so a label value never comes from an unbounded string.
pub fn vmi_phase_label(phase: &str) -> &'static str {
    if phase.is_empty() {
        return "Unset";
    }
    VMI_PHASES
        .iter()
        .find(|p| **p == phase)
        .copied()
        .unwrap_or("other")
}

impl VmState {
    /// A migration that has not left `Pending` yet (an unset phase is KubeVirt's "just created").
    pub fn migration_pending(&self) -> bool {
        matches!(self.status.as_str(), "" | "Pending")
    }

    /// A migration in a final phase.
    pub fn migration_finished(&self) -> bool {
        matches!(self.status.as_str(), "Succeeded" | "Failed")
    }
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Migration {
    pub uid: String,
    pub source_node: String,
    pub target_node: String,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    pub failed: bool,
}

/// Why an object could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {namespace}/{name}: {reason}")]
pub struct Invalid {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub reason: &'static str,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_str().unwrap_or_default()
}

fn time_at(v: &Value, path: &[&str]) -> Option<Timestamp> {
    str_at(v, path).parse().ok()
}

/// Read the fields herald needs from an object (the whole JSON, metadata included). Missing optional fields
/// are empty; a missing name or uid, or a status of the wrong type, makes the object invalid.
pub fn read(resource: VmResource, obj: &Value) -> Result<VmState, Invalid> {
    let namespace = str_at(obj, &["metadata", "namespace"]).to_string();
    let name = str_at(obj, &["metadata", "name"]).to_string();
    let uid = str_at(obj, &["metadata", "uid"]).to_string();
    let invalid = |reason| Invalid {
        kind: resource.kind(),
        namespace: namespace.clone(),
        name: name.clone(),
        reason,
    };
    if name.is_empty() || uid.is_empty() {
        return Err(invalid("missing_field"));
    }
    let status = &obj["status"];
    if !(status.is_null() || status.is_object()) {
        return Err(invalid("wrong_type"));
    }
    let mut state = VmState {
        created: time_at(obj, &["metadata", "creationTimestamp"]),
        ..VmState::default()
    };
    // The migration's own state carries its uid only on the VMI; on the VMIM it is the object's uid.
    let own_uid = uid.clone();
    match resource {
        VmResource::Vm => {
            state.status = str_at(status, &["printableStatus"]).to_string();
            state.vm_uid = uid.clone();
        }
        VmResource::Vmi => {
            state.status = str_at(status, &["phase"]).to_string();
            state.node = str_at(status, &["nodeName"]).to_string();
            if let Some(list) = status["phaseTransitionTimestamps"].as_array() {
                for t in list {
                    let at = time_at(t, &["phaseTransitionTimestamp"]);
                    match str_at(t, &["phase"]) {
                        "Pending" => state.pending_at = state.pending_at.or(at),
                        "Running" => state.running_at = at,
                        _ => {}
                    }
                }
            }
            state.migration = migration(&status["migrationState"]);
            if let Some(owners) = obj["metadata"]["ownerReferences"].as_array() {
                state.vm_uid = owners
                    .iter()
                    .find(|o| o["kind"] == "VirtualMachine")
                    .map(|o| str_at(o, &["uid"]).to_string())
                    .unwrap_or_default();
            }
        }
        VmResource::Vmim => {
            state.status = str_at(status, &["phase"]).to_string();
            state.vmi_name = str_at(obj, &["spec", "vmiName"]).to_string();
            state.migration = migration(&status["migrationState"]).map(|mut m| {
                if m.uid.is_empty() {
                    m.uid = own_uid;
                }
                m
            });
            if let Some(conditions) = status["conditions"].as_array() {
                state.rejected_by_quota = conditions.iter().any(|c| {
                    str_at(c, &["type"]) == REJECTED_BY_QUOTA && str_at(c, &["status"]) == "True"
                });
            }
        }
    }
    state.namespace = namespace;
    state.name = name;
    state.uid = uid;
    Ok(state)
}

fn migration(m: &Value) -> Option<Migration> {
    if !m.is_object() {
        return None;
    }
    Some(Migration {
        uid: str_at(m, &["migrationUid"]).to_string(),
        source_node: str_at(m, &["sourceNode"]).to_string(),
        target_node: str_at(m, &["targetNode"]).to_string(),
        start: time_at(m, &["startTimestamp"]),
        end: time_at(m, &["endTimestamp"]),
        failed: m["failed"].as_bool().unwrap_or(false),
    })
}

/// One derived transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub resource: VmResource,
    pub name: &'static str,
    pub namespace: String,
    /// The object's own name (the VM's, the VMI's, the migration's): `k8s.object.name`.
    pub object: String,
    /// The VM's name (a VMI is named like its VM; a migration names its VMI in `spec.vmiName`).
    pub vm: String,
    /// The object's own uid.
    pub uid: String,
    /// The VM's uid where known (all of a VM's spans share a trace derived from it).
    pub vm_uid: String,
    pub node: String,
    pub source_node: String,
    pub target_node: String,
    pub before: String,
    pub after: String,
    /// A lifecycle with a duration (start, migration): its start and end, and whether it failed.
    pub span: Option<(Timestamp, Timestamp, bool)>,
}

/// A migration that ended, for the duration histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationEnd {
    pub namespace: String,
    /// The migration's uid (the VMIM's; a VMI names it in `migrationState.migrationUid`), empty if unknown.
    pub uid: String,
    pub seconds: f64,
    pub failed: bool,
}

const ERROR_STATUSES: [&str; 6] = [
    "CrashLoopBackOff",
    "ErrorUnschedulable",
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrorPvcNotFound",
    "DataVolumeError",
];

fn transition(
    resource: VmResource,
    name: &'static str,
    old: Option<&VmState>,
    new: &VmState,
) -> Transition {
    Transition {
        resource,
        name,
        namespace: new.namespace.clone(),
        object: new.name.clone(),
        vm: if resource == VmResource::Vmim {
            new.vmi_name.clone()
        } else {
            new.name.clone()
        },
        uid: new.uid.clone(),
        vm_uid: new.vm_uid.clone(),
        node: new.node.clone(),
        source_node: String::new(),
        target_node: String::new(),
        before: old.map(|o| o.status.clone()).unwrap_or_default(),
        after: new.status.clone(),
        span: None,
    }
}

/// Transitions from `old` (None: not seen before, after the baseline) to `new`.
pub fn derive(resource: VmResource, old: Option<&VmState>, new: &VmState) -> Vec<Transition> {
    let mut out = Vec::new();
    let status_changed = old.is_none_or(|o| o.status != new.status);
    match resource {
        VmResource::Vm => {
            if old.is_none() {
                out.push(transition(resource, "created", old, new));
            }
            if status_changed {
                let before = old.map(|o| o.status.as_str()).unwrap_or_default();
                let name = match new.status.as_str() {
                    "Stopped"
                        if matches!(before, "Running" | "Paused" | "Migrating" | "Stopping") =>
                    {
                        Some("stopped")
                    }
                    "Paused" => Some("paused"),
                    _ if before == "Paused" && new.status != "Stopped" => Some("unpaused"),
                    s if ERROR_STATUSES.contains(&s) && !ERROR_STATUSES.contains(&before) => {
                        Some("error")
                    }
                    _ => None,
                };
                if let Some(name) = name {
                    out.push(transition(resource, name, old, new));
                }
            }
        }
        VmResource::Vmi => {
            if status_changed {
                match new.status.as_str() {
                    "Running" => {
                        let mut t = transition(resource, "started", old, new);
                        if let (Some(from), Some(to)) =
                            (new.pending_at.or(new.created), new.running_at)
                        {
                            t.span = Some((from, to, false));
                        }
                        out.push(t);
                    }
                    "Failed" => {
                        let mut t = transition(resource, "failed", old, new);
                        if let Some(from) = new.pending_at.or(new.created) {
                            t.span = Some((from, Timestamp::now().max(from), true));
                        }
                        out.push(t);
                    }
                    _ => {}
                }
            }
            if let Some(o) = old
                && !o.node.is_empty()
                && !new.node.is_empty()
                && o.node != new.node
            {
                let mut t = transition(resource, "node_changed", old, new);
                t.source_node = o.node.clone();
                t.target_node = new.node.clone();
                out.push(t);
            }
        }
        VmResource::Vmim => {
            if old.is_none() {
                out.push(transition(resource, "migration_started", old, new));
            }
            if new.rejected_by_quota && !old.is_some_and(|o| o.rejected_by_quota) {
                out.push(transition(resource, "migration_rejected", old, new));
            }
            if status_changed {
                let name = match new.status.as_str() {
                    "Succeeded" => Some("migration_succeeded"),
                    "Failed" => Some("migration_failed"),
                    _ => None,
                };
                if let Some(name) = name {
                    let mut t = transition(resource, name, old, new);
                    let failed = name == "migration_failed";
                    if let Some(m) = &new.migration {
                        t.source_node = m.source_node.clone();
                        t.target_node = m.target_node.clone();
                        if let (Some(s), Some(e)) = (m.start, m.end) {
                            t.span = Some((s, e, failed));
                        }
                    }
                    // Older KubeVirt keeps the times on the VMI only; the source fills them in when it has
                    // seen them. Without real times there is no span: a creation time is not a start.
                    out.push(t);
                }
            }
        }
    }
    out
}

/// Whether a VMI's node is the target of a finished, successful migration (it arrived here by migrating).
pub fn migrated_here(vmi: &VmState) -> bool {
    vmi.migration.as_ref().is_some_and(|m| {
        m.end.is_some()
            && !m.failed
            && !m.source_node.is_empty()
            && m.source_node != m.target_node
            && m.target_node == vmi.node
    })
}

/// Whether a VMI is on the node where its last migration left it: the target after success, the source after
/// failure. With one agent per node, that agent reports the migration's end.
pub fn migration_ended_here(vmi: &VmState) -> bool {
    vmi.migration.as_ref().is_some_and(|m| {
        let expected = if m.failed {
            &m.source_node
        } else {
            &m.target_node
        };
        *expected == vmi.node
    })
}

/// The transition of a VMI that arrived on this node by migration: `node_changed` from its source.
pub fn arrival(vmi: &VmState) -> Option<Transition> {
    let m = vmi.migration.as_ref()?;
    let mut t = transition(VmResource::Vmi, "node_changed", None, vmi);
    t.before = vmi.status.clone();
    t.source_node = m.source_node.clone();
    t.target_node = m.target_node.clone();
    Some(t)
}

/// The start and end of a finished migration (VMIM) from its own `status.migrationState`, when it has both.
pub fn migration_times(vmim: &VmState) -> Option<(Timestamp, Timestamp)> {
    let m = vmim.migration.as_ref()?;
    Some((m.start?, m.end?))
}

/// Whether a migration (VMIM) became finished-with-timestamps between `old` and `new`: the moment its duration
/// is known. `times` reads a state's timestamps (its own, or its VMI's as the source last saw them).
pub fn migration_timed_end(
    old: Option<&VmState>,
    new: &VmState,
    times: impl Fn(&VmState) -> Option<(Timestamp, Timestamp)>,
) -> Option<MigrationEnd> {
    let timed = |s: &VmState| s.migration_finished() && times(s).is_some();
    if !timed(new) || old.is_some_and(timed) {
        return None;
    }
    let (start, end) = times(new)?;
    Some(MigrationEnd {
        namespace: new.namespace.clone(),
        uid: new.uid.clone(),
        seconds: end.duration_since(start).as_secs_f64().max(0.0),
        failed: new.status == "Failed",
    })
}

/// A VMI migration that ended between `old` and `new` (an end appears for a migration uid).
pub fn migration_end(old: Option<&VmState>, new: &VmState) -> Option<MigrationEnd> {
    let m = new.migration.as_ref()?;
    let end = m.end?;
    let seen = old
        .and_then(|o| o.migration.as_ref())
        .is_some_and(|om| om.uid == m.uid && om.end.is_some());
    if seen {
        return None;
    }
    let start = m.start?;
    let seconds = end.duration_since(start).as_secs_f64().max(0.0);
    Some(MigrationEnd {
        namespace: new.namespace.clone(),
        uid: m.uid.clone(),
        seconds,
        failed: m.failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vmi(phase: &str, node: &str) -> VmState {
        read(
            VmResource::Vmi,
            &json!({"metadata": {"name": "vm1", "namespace": "ns", "uid": "u1", "creationTimestamp": "2024-01-01T00:00:00Z"},
                    "status": {"phase": phase, "nodeName": node,
                               "phaseTransitionTimestamps": [{"phase": "Pending", "phaseTransitionTimestamp": "2024-01-01T00:00:01Z"},
                                                             {"phase": "Running", "phaseTransitionTimestamp": "2024-01-01T00:00:21Z"}]}}),
        )
        .unwrap()
    }

    fn names(ts: &[Transition]) -> Vec<&str> {
        ts.iter().map(|t| t.name).collect()
    }

    #[test]
    fn vmi_start_and_node_change() {
        let pending = vmi("Pending", "");
        let running = vmi("Running", "a");
        let t = derive(VmResource::Vmi, Some(&pending), &running);
        assert_eq!(names(&t), ["started"]);
        let (from, to, failed) = t[0].span.unwrap();
        assert_eq!(to.duration_since(from).as_secs(), 20);
        assert!(!failed);
        // The same state again (a relist) derives nothing.
        assert!(derive(VmResource::Vmi, Some(&running), &running).is_empty());
        let moved = vmi("Running", "b");
        let t = derive(VmResource::Vmi, Some(&running), &moved);
        assert_eq!(names(&t), ["node_changed"]);
        assert_eq!(
            (t[0].source_node.as_str(), t[0].target_node.as_str()),
            ("a", "b")
        );
    }

    #[test]
    fn vm_printable_status_transitions() {
        let vm = |s: &str| VmState {
            status: s.into(),
            ..VmState::default()
        };
        let d = |a: &str, b: &str| names(&derive(VmResource::Vm, Some(&vm(a)), &vm(b))).join(",");
        assert_eq!(d("Running", "Stopped"), "stopped");
        assert_eq!(d("ErrorUnschedulable", "Stopped"), "");
        assert_eq!(d("Running", "Paused"), "paused");
        assert_eq!(d("Paused", "Running"), "unpaused");
        assert_eq!(d("Starting", "ErrorUnschedulable"), "error");
        assert_eq!(d("ErrorUnschedulable", "CrashLoopBackOff"), "");
        assert_eq!(
            names(&derive(VmResource::Vm, None, &vm("Stopped"))),
            ["created"]
        );
    }

    fn vmim(status: serde_json::Value) -> VmState {
        read(
            VmResource::Vmim,
            &json!({"metadata": {"name": "kubevirt-evacuation-wgk69", "namespace": "ns", "uid": "m1",
                                 "creationTimestamp": "2024-01-01T00:00:00Z"},
                    "spec": {"vmiName": "vm1"}, "status": status}),
        )
        .unwrap()
    }

    #[test]
    fn a_migration_is_named_by_itself_and_its_vmi() {
        let t = derive(VmResource::Vmim, None, &vmim(json!({"phase": "Pending"})));
        assert_eq!(names(&t), ["migration_started"]);
        assert_eq!(
            (t[0].object.as_str(), t[0].vm.as_str(), t[0].uid.as_str()),
            ("kubevirt-evacuation-wgk69", "vm1", "m1")
        );
    }

    #[test]
    fn a_phase_only_migration_has_no_duration() {
        // KubeVirt 0.5x, or first seen finished after a relist: only status.phase.
        let done = vmim(json!({"phase": "Succeeded"}));
        let t = derive(VmResource::Vmim, None, &done);
        assert_eq!(names(&t), ["migration_started", "migration_succeeded"]);
        assert!(t.iter().all(|t| t.span.is_none()), "{t:?}");
        assert_eq!(migration_times(&done), None);
        assert_eq!(migration_timed_end(None, &done, migration_times), None);
    }

    #[test]
    fn a_migration_with_its_own_migration_state_has_its_real_duration() {
        // KubeVirt 1.x: the VMIM carries the migrationState (without migrationUid: it is the VMIM's own).
        let running = vmim(json!({"phase": "Running"}));
        let done = vmim(json!({"phase": "Succeeded", "migrationState": {
            "sourceNode": "a", "targetNode": "b", "completed": true,
            "startTimestamp": "2024-01-01T00:01:00Z", "endTimestamp": "2024-01-01T00:01:09Z"}}));
        assert_eq!(done.migration.as_ref().unwrap().uid, "m1");
        let t = derive(VmResource::Vmim, Some(&running), &done);
        assert_eq!(names(&t), ["migration_succeeded"]);
        let (from, to, failed) = t[0].span.unwrap();
        assert_eq!((to.duration_since(from).as_secs(), failed), (9, false));
        let end = migration_timed_end(Some(&running), &done, migration_times).unwrap();
        assert_eq!(
            (end.uid.as_str(), end.seconds, end.failed),
            ("m1", 9.0, false)
        );
        // Seen again (a relist): already known finished with times, nothing new.
        assert_eq!(
            migration_timed_end(Some(&done), &done, migration_times),
            None
        );
    }

    #[test]
    fn a_quota_rejection_is_a_transition_once() {
        let pending = vmim(json!({"phase": "Pending"}));
        let rejected = vmim(json!({"phase": "Pending", "conditions": [
            {"type": "migrationRejectedByResourceQuota", "status": "True",
             "lastProbeTime": "2024-01-01T00:00:05Z", "lastTransitionTime": null}]}));
        assert!(rejected.rejected_by_quota && rejected.migration_pending());
        let t = derive(VmResource::Vmim, Some(&pending), &rejected);
        assert_eq!(names(&t), ["migration_rejected"]);
        assert_eq!(t[0].after, "Pending");
        assert!(derive(VmResource::Vmim, Some(&rejected), &rejected).is_empty());
        // First seen already rejected (after the baseline): started and rejected.
        assert_eq!(
            names(&derive(VmResource::Vmim, None, &rejected)),
            ["migration_started", "migration_rejected"]
        );
        let other = vmim(json!({"phase": "Pending", "conditions": [
            {"type": "migrationRejectedByResourceQuota", "status": "False"}]}));
        assert!(!other.rejected_by_quota);
    }

    #[test]
    fn vmi_phase_labels_are_bounded() {
        for p in VMI_PHASES {
            assert_eq!(vmi_phase_label(p), p);
        }
        assert_eq!(vmi_phase_label(""), "Unset");
        assert_eq!(vmi_phase_label("NotAPhase-4711"), "other");
        assert_eq!(vmi_phase_label("running"), "other");
    }

    #[test]
    fn wrong_shapes_are_invalid_not_panics() {
        let e = read(VmResource::Vm, &json!({"metadata": {"name": "x"}})).unwrap_err();
        assert_eq!(e.reason, "missing_field");
        let e = read(
            VmResource::Vmi,
            &json!({"metadata": {"name": "x", "uid": "u"}, "status": "Running"}),
        )
        .unwrap_err();
        assert_eq!(e.reason, "wrong_type");
    }
}
