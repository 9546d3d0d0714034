//! The KubeVirt source: watches VirtualMachines, VirtualMachineInstances and migrations (`kubevirt.io/v1`),
//! derives lifecycle transitions ([`vm_lifecycle`]), keeps the VM metrics and sends one log record per
//! transition through the pipeline to the log sinks.
//!
//! When KubeVirt is not installed (discovery does not serve `kubevirt.io/v1`), it says so once, reports it in
//! `/readyz` (without failing readiness) and in `herald_source_up{source="kubevirt"}`, and checks again every
//! `discovery_interval`. Objects are read as untyped JSON and only the needed fields are taken, so unknown or
//! missing fields never break decoding; an object without a name or uid is counted in
//! `herald_invalid_objects_total` and skipped.

use std::collections::HashSet;
use std::sync::Arc;

use kube::api::{Api, ApiResource, DynamicObject};
use metrics::{Counter, Gauge, Histogram};

use super::events::SourceContext;
use super::vm_lifecycle::{self, Transition, VmResource, VmState};
use super::watch::{Step, WatchSettings, Watcher};
use crate::config::KubevirtSourceConfig;
use crate::record::{Change, EventApi, EventRecord, ObjectRef, Severity, VmDetails};
use crate::telemetry::{self, Telemetry};

/// `k8s.event.reporting_controller` of VM lifecycle records.
pub const COMPONENT: &str = "herald-kubevirt";

/// Metric handles, resolved once per label set.
struct VmMetrics {
    telemetry: Arc<Telemetry>,
    transitions: ahash::HashMap<(String, &'static str), Counter>,
    migrations: ahash::HashMap<(String, &'static str), Counter>,
    start: ahash::HashMap<String, Histogram>,
    migration_duration: ahash::HashMap<(String, &'static str), Histogram>,
    /// VMIs by (namespace, phase); the gauge is set from this count, never incremented blindly.
    vmis: ahash::HashMap<(String, String), (i64, Gauge)>,
    /// Migration states seen on VMIs, by migration uid (= the VMIM's uid), so the migration's transition
    /// record can carry its real start and end. Bounded: cleared when it grows past `MAX_MIGRATIONS`.
    migration_states: ahash::HashMap<String, vm_lifecycle::Migration>,
    /// VM uids by (namespace, name), learnt from VMs and VMIs, for migrations (which name only their VMI).
    vm_uids: ahash::HashMap<(String, String), String>,
}

const MAX_MIGRATIONS: usize = 10_000;

impl VmMetrics {
    fn new(telemetry: Arc<Telemetry>) -> VmMetrics {
        VmMetrics {
            telemetry,
            transitions: Default::default(),
            migrations: Default::default(),
            start: Default::default(),
            migration_duration: Default::default(),
            vmis: Default::default(),
            migration_states: Default::default(),
            vm_uids: Default::default(),
        }
    }

    fn transition(&mut self, namespace: &str, name: &'static str) {
        let t = &self.telemetry;
        self.transitions
            .entry((namespace.to_string(), name))
            .or_insert_with(|| {
                t.counter(
                    telemetry::VM_TRANSITIONS,
                    &[("namespace", namespace), ("transition", name)],
                )
            })
            .increment(1);
    }

    fn migration(&mut self, namespace: &str, outcome: &'static str) {
        let t = &self.telemetry;
        self.migrations
            .entry((namespace.to_string(), outcome))
            .or_insert_with(|| {
                t.counter(
                    telemetry::VM_MIGRATIONS,
                    &[("namespace", namespace), ("outcome", outcome)],
                )
            })
            .increment(1);
    }

    fn start_duration(&mut self, namespace: &str, seconds: f64) {
        let t = &self.telemetry;
        self.start
            .entry(namespace.to_string())
            .or_insert_with(|| {
                t.histogram(telemetry::VM_START_DURATION, &[("namespace", namespace)])
            })
            .record(seconds);
    }

    fn migration_duration(&mut self, namespace: &str, outcome: &'static str, seconds: f64) {
        let t = &self.telemetry;
        self.migration_duration
            .entry((namespace.to_string(), outcome))
            .or_insert_with(|| {
                t.histogram(
                    telemetry::VM_MIGRATION_DURATION,
                    &[("namespace", namespace), ("outcome", outcome)],
                )
            })
            .record(seconds);
    }

    fn vmi_phase(&mut self, namespace: &str, phase: &str, delta: i64) {
        let t = &self.telemetry;
        let entry = self
            .vmis
            .entry((namespace.to_string(), phase.to_string()))
            .or_insert_with(|| {
                (
                    0,
                    t.gauge(
                        telemetry::VMIS,
                        &[("namespace", namespace), ("phase", phase)],
                    ),
                )
            });
        entry.0 += delta;
        entry.1.set(entry.0 as f64);
    }
}

/// Which objects one instance of the source watches.
#[derive(Debug, Clone)]
pub struct Scope {
    pub resources: Vec<VmResource>,
    /// Only this namespace (sidecar), else cluster-wide.
    pub namespace: Option<String>,
    /// Only the VMIs on this node (label `kubevirt.io/nodeName`, DaemonSet mode), else all.
    pub node: Option<String>,
    /// Where to keep checkpoints (`state_dir`), if anywhere.
    pub state_dir: Option<std::path::PathBuf>,
}

impl Scope {
    pub fn all() -> Scope {
        Scope {
            resources: VmResource::ALL.to_vec(),
            namespace: None,
            node: None,
            state_dir: None,
        }
    }

    /// The checkpoint file of one resource watched with this scope.
    fn checkpoint_path(&self, resource: VmResource) -> Option<std::path::PathBuf> {
        let dir = self.state_dir.as_ref()?;
        let mut name = format!("kubevirt-{}", resource.plural());
        if let Some(ns) = &self.namespace {
            name.push_str(&format!("-ns-{ns}"));
        }
        if let Some(node) = &self.node {
            name.push_str(&format!("-node-{node}"));
        }
        Some(dir.join(format!("{name}.json")))
    }
}

/// What a restarted agent needs to resume a KubeVirt watch: where it was, and what it knew.
#[derive(serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    resource_version: String,
    states: Vec<VmState>,
}

/// How often a checkpoint is written while watching (and always on shutdown).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

fn load_checkpoint(path: &std::path::Path) -> Option<Checkpoint> {
    match crate::checkpoint::load::<Checkpoint>(path) {
        Ok(c) => c.filter(|c| !c.resource_version.is_empty()),
        Err(error) => {
            tracing::warn!(%error, "checkpoint ignored; starting from a new list");
            None
        }
    }
}

/// Start the KubeVirt source: discovery, then one watch per resource of `scope`, until the context's shutdown.
pub fn spawn(
    cfg: &KubevirtSourceConfig,
    scope: Scope,
    ctx: &SourceContext,
) -> Option<tokio::task::JoinHandle<()>> {
    if !cfg.enabled || scope.resources.is_empty() {
        return None;
    }
    Some(tokio::spawn(supervise(cfg.clone(), scope, ctx.clone())))
}

async fn supervise(cfg: KubevirtSourceConfig, scope: Scope, ctx: SourceContext) {
    let up = ctx
        .telemetry
        .gauge(telemetry::SOURCE_UP, &[("source", "kubevirt")]);
    let mut said = false;
    loop {
        match ctx.client.list_api_group_resources("kubevirt.io/v1").await {
            Ok(_) => break,
            Err(error) => {
                up.set(0.0);
                ctx.health.set_note(
                    "kubevirt",
                    format!(
                        "not installed (kubevirt.io/v1 not served), checking again every {}",
                        cfg.discovery_interval
                    ),
                );
                if !said {
                    tracing::info!(%error, "KubeVirt is not installed: no VM signals until it is (checked every {})", cfg.discovery_interval);
                    said = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(cfg.discovery_interval.0) => {}
                    _ = ctx.shutdown.cancelled() => return,
                }
            }
        }
    }
    up.set(1.0);
    ctx.health
        .set_note("kubevirt", "installed, watching".into());
    if said {
        tracing::info!("KubeVirt found: watching VMs, VMIs and migrations");
    }
    let metrics = Arc::new(tokio::sync::Mutex::new(VmMetrics::new(
        ctx.telemetry.clone(),
    )));
    let watches: Vec<_> = scope
        .resources
        .iter()
        .map(|r| {
            tokio::spawn(watch(
                *r,
                cfg.clone(),
                scope.clone(),
                ctx.clone(),
                metrics.clone(),
            ))
        })
        .collect();
    for w in watches {
        let _ = w.await;
    }
}

/// The `resource` label of a KubeVirt watch.
fn label(resource: VmResource) -> &'static str {
    match resource {
        VmResource::Vm => "virtualmachines.kubevirt.io",
        VmResource::Vmi => "virtualmachineinstances.kubevirt.io",
        VmResource::Vmim => "virtualmachineinstancemigrations.kubevirt.io",
    }
}

async fn watch(
    resource: VmResource,
    cfg: KubevirtSourceConfig,
    scope: Scope,
    ctx: SourceContext,
    metrics: Arc<tokio::sync::Mutex<VmMetrics>>,
) {
    let ar = ApiResource {
        group: "kubevirt.io".into(),
        version: "v1".into(),
        api_version: "kubevirt.io/v1".into(),
        kind: resource.kind().into(),
        plural: resource.plural().into(),
    };
    let api: Api<DynamicObject> = match &scope.namespace {
        Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &ar),
        None => Api::all_with(ctx.client.clone(), &ar),
    };
    let node_local = resource == VmResource::Vmi && scope.node.is_some();
    let settings = WatchSettings {
        page_size: cfg.page_size,
        label_selector: match (&scope.node, resource) {
            (Some(node), VmResource::Vmi) => format!("kubevirt.io/nodeName={node}"),
            _ => String::new(),
        },
        ..WatchSettings::default()
    };
    let health = ctx.health.source(label(resource).to_string());
    let checkpoint_path = scope.checkpoint_path(resource);
    let resumed = checkpoint_path.as_deref().and_then(load_checkpoint);
    let mut watcher = Watcher::new(
        api,
        settings,
        label(resource),
        &ctx.telemetry,
        health,
        ctx.shutdown.clone(),
    );
    let invalid = |reason| {
        ctx.telemetry.counter(
            telemetry::INVALID_OBJECTS,
            &[("resource", label(resource)), ("reason", reason)],
        )
    };
    let (missing_field, wrong_type) = (invalid("missing_field"), invalid("wrong_type"));
    let mut logged_invalid = false;

    let mut states: ahash::HashMap<String, VmState> = Default::default();
    // UIDs listed by the list in progress; None while watching.
    let mut listing: Option<HashSet<String>> = None;
    let mut baseline_done = false;
    // Resuming: what the last run knew is the baseline, and the watch replays what happened since.
    if let Some(c) = resumed {
        tracing::info!(
            resource = label(resource),
            objects = c.states.len(),
            "resuming from the checkpoint"
        );
        let mut m = metrics.lock().await;
        for s in c.states {
            if resource == VmResource::Vmi {
                m.vmi_phase(&s.namespace, phase_label(&s.status), 1);
            }
            states.insert(s.uid.clone(), s);
        }
        drop(m);
        baseline_done = true;
        watcher = watcher.resume_from(c.resource_version);
    }
    if checkpoint_path.is_some() {
        watcher = watcher.with_tick(CHECKPOINT_EVERY);
    }
    let mut last_checkpoint = std::time::Instant::now();
    let save = |watcher: &Watcher<DynamicObject>, states: &ahash::HashMap<String, VmState>| {
        let (Some(path), Some(rv)) = (checkpoint_path.as_deref(), watcher.checkpoint()) else {
            return;
        };
        let c = Checkpoint {
            resource_version: rv.to_string(),
            states: states.values().cloned().collect(),
        };
        if let Err(error) = crate::checkpoint::save(path, &c) {
            tracing::warn!(%error, "cannot write the checkpoint");
        }
    };

    loop {
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY && watcher.checkpoint().is_some() {
            save(&watcher, &states);
            last_checkpoint = std::time::Instant::now();
        }
        let Some(step) = watcher.next().await else {
            // Shutdown: everything handed out was processed; remember where we are.
            save(&watcher, &states);
            return;
        };
        let (object, listed) = match step {
            // The checkpoint above also runs on a quiet stream.
            Step::Tick => continue,
            Step::ListStart => {
                listing = Some(HashSet::new());
                continue;
            }
            Step::ListDone => {
                let seen = listing.take().unwrap_or_default();
                let gone: Vec<String> = states
                    .keys()
                    .filter(|u| !seen.contains(*u))
                    .cloned()
                    .collect();
                let mut m = metrics.lock().await;
                for uid in gone {
                    if let Some(old) = states.remove(&uid) {
                        deleted(resource, &old, &mut m, &ctx).await;
                    }
                }
                baseline_done = true;
                continue;
            }
            Step::Listed(o) => (o, true),
            Step::Added(o) | Step::Modified(o) => (o, false),
            Step::Deleted(o) => {
                let uid = o.metadata.uid.clone().unwrap_or_default();
                if let Some(old) = states.remove(&uid) {
                    let mut m = metrics.lock().await;
                    deleted(resource, &old, &mut m, &ctx).await;
                }
                continue;
            }
        };
        let json = match serde_json::to_value(&object) {
            Ok(v) => v,
            Err(_) => continue,
        };
        let new = match vm_lifecycle::read(resource, &json) {
            Ok(s) => s,
            Err(e) => {
                match e.reason {
                    "missing_field" => missing_field.increment(1),
                    _ => wrong_type.increment(1),
                }
                if !logged_invalid {
                    tracing::warn!(error = %e, "skipping malformed KubeVirt object (counted in herald_invalid_objects_total; logged once per resource)");
                    logged_invalid = true;
                }
                continue;
            }
        };
        if let Some(seen) = listing.as_mut() {
            seen.insert(new.uid.clone());
        }
        let old = states.get(&new.uid);
        if old.is_none() && states.len() >= cfg.max_tracked_objects {
            continue;
        }
        let mut m = metrics.lock().await;
        if !new.vm_uid.is_empty() {
            if m.vm_uids.len() >= cfg.max_tracked_objects {
                m.vm_uids.clear();
            }
            m.vm_uids.insert(
                (new.namespace.clone(), new.name.clone()),
                new.vm_uid.clone(),
            );
        }
        if resource == VmResource::Vmi
            && let Some(mig) = new.migration.as_ref().filter(|mig| !mig.uid.is_empty())
        {
            if m.migration_states.len() >= MAX_MIGRATIONS {
                m.migration_states.clear();
            }
            m.migration_states.insert(mig.uid.clone(), mig.clone());
        }
        if resource == VmResource::Vmi {
            if let Some(o) = old {
                m.vmi_phase(&o.namespace, phase_label(&o.status), -1);
            }
            m.vmi_phase(&new.namespace, phase_label(&new.status), 1);
        }
        // The initial list is the baseline; later lists and watch events are compared with what was known.
        if baseline_done || !listed {
            let transitions = match (node_local, old) {
                // A VMI that arrives on this node by a finished migration moved here; it did not start.
                (true, None) if vm_lifecycle::migrated_here(&new) => {
                    vm_lifecycle::arrival(&new).into_iter().collect()
                }
                _ => vm_lifecycle::derive(resource, old, &new),
            };
            for t in transitions {
                emit(t, &mut m, &ctx).await;
            }
            if resource == VmResource::Vmi
                && let Some(end) = vm_lifecycle::migration_end(old, &new)
                // With one agent per node, the agent of the VMI's node after the migration counts it once.
                && (!node_local || vm_lifecycle::migration_ended_here(&new))
            {
                let outcome = if end.failed { "failed" } else { "succeeded" };
                m.migration_duration(&end.namespace, outcome, end.seconds);
            }
        }
        drop(m);
        states.insert(new.uid.clone(), new);
    }
}

fn phase_label(phase: &str) -> &str {
    if phase.is_empty() { "Unset" } else { phase }
}

async fn deleted(resource: VmResource, old: &VmState, m: &mut VmMetrics, ctx: &SourceContext) {
    if resource == VmResource::Vmi {
        m.vmi_phase(&old.namespace, phase_label(&old.status), -1);
    }
    if resource == VmResource::Vm {
        let mut gone = old.clone();
        gone.status = "Deleted".into();
        let t = Transition {
            resource,
            name: "deleted",
            namespace: old.namespace.clone(),
            vm: old.name.clone(),
            uid: old.uid.clone(),
            vm_uid: old.vm_uid.clone(),
            node: String::new(),
            source_node: String::new(),
            target_node: String::new(),
            before: old.status.clone(),
            after: "Deleted".into(),
            span: None,
        };
        emit(t, m, ctx).await;
    }
}

/// Count a transition and send its log record through the pipeline.
async fn emit(mut t: Transition, m: &mut VmMetrics, ctx: &SourceContext) {
    if t.vm_uid.is_empty()
        && let Some(uid) = m.vm_uids.get(&(t.namespace.clone(), t.vm.clone()))
    {
        t.vm_uid = uid.clone();
    }
    if t.resource == VmResource::Vmim
        && let Some(mig) = m.migration_states.get(&t.uid)
    {
        if let (Some(start), Some(end)) = (mig.start, mig.end) {
            t.span = Some((start, end, t.name == "migration_failed"));
        }
        if t.source_node.is_empty() {
            t.source_node = mig.source_node.clone();
            t.target_node = mig.target_node.clone();
        }
    }
    m.transition(&t.namespace, t.name);
    match t.name {
        "started" => {
            if let Some((from, to, _)) = t.span {
                m.start_duration(&t.namespace, to.duration_since(from).as_secs_f64().max(0.0));
            }
        }
        "migration_succeeded" => m.migration(&t.namespace, "succeeded"),
        "migration_failed" => m.migration(&t.namespace, "failed"),
        _ => {}
    }
    let _ = ctx.ingest.push(Arc::new(record(t))).await;
}

fn warning(name: &str) -> bool {
    matches!(name, "failed" | "error" | "migration_failed")
}

/// The log record of a transition: an Event-shaped record about the KubeVirt object, plus VM details.
pub fn record(t: Transition) -> EventRecord {
    let now = jiff::Timestamp::now();
    let type_ = if warning(t.name) { "Warning" } else { "Normal" };
    let message = match t.name {
        "node_changed" | "migration_succeeded" | "migration_failed"
            if !t.target_node.is_empty() =>
        {
            format!(
                "{} {}/{} {}: {} -> {}",
                t.resource.kind(),
                t.namespace,
                t.vm,
                t.name.replace('_', " "),
                t.source_node,
                t.target_node
            )
        }
        _ => format!(
            "{} {}/{} {} ({} -> {})",
            t.resource.kind(),
            t.namespace,
            t.vm,
            t.name.replace('_', " "),
            if t.before.is_empty() {
                "none"
            } else {
                &t.before
            },
            t.after
        ),
    };
    let mut r = EventRecord::blank();
    r.api = EventApi::CoreV1;
    r.change = Change::Added;
    r.name = format!("{}.{}", t.vm, t.name).into();
    r.namespace = t.namespace.as_str().into();
    r.resource_version = "1".into();
    r.reason = t.name.into();
    r.type_ = type_.into();
    r.regarding = ObjectRef {
        kind: t.resource.kind().into(),
        api_version: "kubevirt.io/v1".into(),
        namespace: t.namespace.as_str().into(),
        name: t.vm.clone().into(),
        uid: t.uid.clone().into(),
        ..ObjectRef::default()
    };
    // Not `herald` (herald's own Events, which the pipeline may exclude): these describe the cluster.
    r.component = COMPONENT.into();
    r.host = t.node.clone().into();
    r.message = message;
    r.count = 1;
    r.delta = 1;
    r.event_time = Some(now);
    r.severity = if warning(t.name) {
        Severity::Medium
    } else {
        Severity::Info
    };
    r.vm = Some(Box::new(VmDetails {
        transition: t.name,
        vm: t.vm,
        vm_uid: t.vm_uid,
        node: t.node,
        source_node: t.source_node,
        target_node: t.target_node,
        before: t.before,
        after: t.after,
        span: t.span,
    }));
    r
}
