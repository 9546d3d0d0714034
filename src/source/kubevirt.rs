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
use crate::record::{
    Change, EventApi, EventRecord, ObjectRef, Record, Severity, VmDetails, VmTransition,
};
use crate::sink::metrics_sink::OTHER;
use crate::telemetry::{self, Telemetry};

/// `k8s.event.reporting_controller` of VM lifecycle records.
pub const COMPONENT: &str = "herald-kubevirt";

/// One KubeVirt metric under the cardinality guard (`metrics.max_series_per_metric`, the same limit as the
/// Event metrics): at most `max` label sets; past it, updates go to the label set whose namespace is
/// `__other__` (the other label keeps its value: it comes from a small fixed set) and are counted in
/// `herald_metric_series_overflow_total{metric}`. 20k namespaces cannot make 20k series; totals stay exact.
struct Guarded<L, H> {
    max: usize,
    series: ahash::HashMap<(String, L), H>,
    overflow: Counter,
}

impl<L: Copy + Eq + std::hash::Hash, H> Guarded<L, H> {
    fn new(telemetry: &Telemetry, metric: &'static str, max: usize) -> Guarded<L, H> {
        Guarded {
            max,
            series: Default::default(),
            overflow: telemetry.counter(telemetry::SERIES_OVERFLOW, &[("metric", metric)]),
        }
    }

    /// The handle of (namespace, label), created with `make` on first use. A label set that did not get a
    /// series never gets one later (series are never removed), so a gauge's +1 and -1 land on the same series.
    fn get(&mut self, namespace: &str, label: L, make: impl FnOnce(&str, L) -> H) -> &mut H {
        let key = (namespace.to_string(), label);
        if !self.series.contains_key(&key) && self.series.len() >= self.max {
            self.overflow.increment(1);
            return self
                .series
                .entry((OTHER.to_string(), label))
                .or_insert_with(|| make(OTHER, label));
        }
        self.series
            .entry(key)
            .or_insert_with(|| make(namespace, label))
    }
}

/// Migration uids whose duration was observed, oldest first: a migration's end can be seen on its VMI and on
/// its VMIM, and counts once. Bounded: the oldest uid is forgotten first (by then both ends have long arrived).
#[derive(Default)]
struct Observed {
    order: std::collections::VecDeque<String>,
    uids: HashSet<String>,
}

impl Observed {
    /// Remember `uid`; false when it was already there. An empty uid (unknown migration) is never a repeat.
    fn first(&mut self, uid: &str) -> bool {
        if uid.is_empty() {
            return true;
        }
        if self.uids.contains(uid) {
            return false;
        }
        if self.order.len() >= MAX_MIGRATIONS
            && let Some(oldest) = self.order.pop_front()
        {
            self.uids.remove(&oldest);
        }
        self.order.push_back(uid.to_string());
        self.uids.insert(uid.to_string());
        true
    }
}

/// Metric handles, resolved once per label set, every one under the cardinality guard.
struct VmMetrics {
    telemetry: Arc<Telemetry>,
    transitions: Guarded<&'static str, Counter>,
    migrations: Guarded<&'static str, Counter>,
    start: Guarded<(), Histogram>,
    migration_duration: Guarded<&'static str, Histogram>,
    /// VMIs by (namespace, phase); the gauge is set from this count, never incremented blindly.
    vmis: Guarded<&'static str, (i64, Gauge)>,
    /// Pending migrations by (namespace, blocked), counted like `vmis`.
    pending: Guarded<&'static str, (i64, Gauge)>,
    /// Migration states seen on VMIs, by migration uid (= the VMIM's uid), so the migration's transition
    /// record can carry its real start and end. Bounded: cleared when it grows past `MAX_MIGRATIONS`.
    migration_states: ahash::HashMap<String, vm_lifecycle::Migration>,
    /// VM uids by (namespace, name), learnt from VMs and VMIs, for migrations (which name only their VMI).
    vm_uids: ahash::HashMap<(String, String), String>,
    /// Migrations whose duration is already in the histogram.
    observed: Observed,
    /// Whether the migration watch may observe durations: only when the same metrics also see every VMI. In
    /// DaemonSet mode the VMIs are split between the agents, and the agent of the node where a migration
    /// ended observes it from the VMI; the leader's migration watch would count it a second time.
    durations_from_migrations: bool,
}

const MAX_MIGRATIONS: usize = 10_000;

impl VmMetrics {
    fn new(telemetry: Arc<Telemetry>, durations_from_migrations: bool) -> VmMetrics {
        let max = telemetry.max_series_per_metric();
        let t = &*telemetry;
        VmMetrics {
            transitions: Guarded::new(t, telemetry::VM_TRANSITIONS, max),
            migrations: Guarded::new(t, telemetry::VM_MIGRATIONS, max),
            start: Guarded::new(t, telemetry::VM_START_DURATION, max),
            migration_duration: Guarded::new(t, telemetry::VM_MIGRATION_DURATION, max),
            vmis: Guarded::new(t, telemetry::VMIS, max),
            pending: Guarded::new(t, telemetry::VM_MIGRATIONS_PENDING, max),
            migration_states: Default::default(),
            vm_uids: Default::default(),
            observed: Observed::default(),
            durations_from_migrations,
            telemetry,
        }
    }

    fn transition(&mut self, namespace: &str, name: &'static str) {
        let t = &self.telemetry;
        self.transitions
            .get(namespace, name, |ns, name| {
                t.counter(
                    telemetry::VM_TRANSITIONS,
                    &[("namespace", ns), ("transition", name)],
                )
            })
            .increment(1);
    }

    fn migration(&mut self, namespace: &str, outcome: &'static str) {
        let t = &self.telemetry;
        self.migrations
            .get(namespace, outcome, |ns, outcome| {
                t.counter(
                    telemetry::VM_MIGRATIONS,
                    &[("namespace", ns), ("outcome", outcome)],
                )
            })
            .increment(1);
    }

    fn start_duration(&mut self, namespace: &str, seconds: f64) {
        let t = &self.telemetry;
        self.start
            .get(namespace, (), |ns, ()| {
                t.histogram(telemetry::VM_START_DURATION, &[("namespace", ns)])
            })
            .record(seconds);
    }

    /// Observe a finished migration's duration, once per migration uid whichever object shows it first.
    fn migration_duration(&mut self, end: &vm_lifecycle::MigrationEnd) {
        if !self.observed.first(&end.uid) {
            return;
        }
        let outcome = if end.failed { "failed" } else { "succeeded" };
        let t = &self.telemetry;
        self.migration_duration
            .get(&end.namespace, outcome, |ns, outcome| {
                t.histogram(
                    telemetry::VM_MIGRATION_DURATION,
                    &[("namespace", ns), ("outcome", outcome)],
                )
            })
            .record(end.seconds);
    }

    fn vmi_phase(&mut self, namespace: &str, phase: &str, delta: i64) {
        let t = &self.telemetry;
        let entry = self.vmis.get(
            namespace,
            vm_lifecycle::vmi_phase_label(phase),
            |ns, phase| {
                (
                    0,
                    t.gauge(telemetry::VMIS, &[("namespace", ns), ("phase", phase)]),
                )
            },
        );
        entry.0 += delta;
        entry.1.set(entry.0 as f64);
    }

    /// Count a migration in (or out of, `delta` -1) the pending gauge, if it is pending.
    fn pending_migration(&mut self, state: &VmState, delta: i64) {
        if !state.migration_pending() {
            return;
        }
        let blocked = if state.rejected_by_quota {
            "resource_quota"
        } else {
            "none"
        };
        let t = &self.telemetry;
        let entry = self.pending.get(&state.namespace, blocked, |ns, blocked| {
            (
                0,
                t.gauge(
                    telemetry::VM_MIGRATIONS_PENDING,
                    &[("namespace", ns), ("blocked", blocked)],
                ),
            )
        });
        entry.0 += delta;
        entry.1.set(entry.0 as f64);
    }

    /// The watches stopped (shutdown, or the end of a leadership term in DaemonSet mode): the gauges no longer
    /// describe anything this agent watches. Zero them, or a former leader would go on exporting its last count
    /// of pending migrations next to the new leader's, and a sum over the agents would count them twice.
    fn forget_gauges(&mut self) {
        for (count, gauge) in self
            .vmis
            .series
            .values_mut()
            .chain(self.pending.series.values_mut())
        {
            *count = 0;
            gauge.set(0.0);
        }
    }

    /// A migration's start and end: its own `migrationState`, else its VMI's as last seen.
    fn migration_times(&self, vmim: &VmState) -> Option<(jiff::Timestamp, jiff::Timestamp)> {
        vm_lifecycle::migration_times(vmim).or_else(|| {
            let m = self.migration_states.get(&vmim.uid)?;
            Some((m.start?, m.end?))
        })
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
    let sees_every_vmi = scope.resources.contains(&VmResource::Vmi) && scope.node.is_none();
    let metrics = Arc::new(tokio::sync::Mutex::new(VmMetrics::new(
        ctx.telemetry.clone(),
        sees_every_vmi,
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
    metrics.lock().await.forget_gauges();
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
            (Some(node), VmResource::Vmi) => Some(format!("kubevirt.io/nodeName={node}")),
            _ => None,
        },
        ..WatchSettings::default()
    };
    let health = ctx.health.source(label(resource).to_string());
    let checkpoint_path = scope.checkpoint_path(resource);
    let resumed = checkpoint_path.as_deref().and_then(load_checkpoint);
    let mut watcher = Watcher::new(
        api.clone().into_client(),
        api.resource_url().to_string(),
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
            match resource {
                VmResource::Vmi => m.vmi_phase(&s.namespace, &s.status, 1),
                VmResource::Vmim => m.pending_migration(&s, 1),
                VmResource::Vm => {}
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
            Step::ListStart { .. } => {
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
        match resource {
            VmResource::Vmi => {
                if let Some(o) = old {
                    m.vmi_phase(&o.namespace, &o.status, -1);
                }
                m.vmi_phase(&new.namespace, &new.status, 1);
            }
            VmResource::Vmim => {
                if let Some(o) = old {
                    m.pending_migration(o, -1);
                }
                m.pending_migration(&new, 1);
            }
            VmResource::Vm => {}
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
                m.migration_duration(&end);
            }
            // KubeVirt 1.x also keeps the times on the migration itself: a migration whose VMI end this agent
            // never saw (a relist, a VMI already gone) is observed from there.
            if resource == VmResource::Vmim
                && m.durations_from_migrations
                && let Some(end) =
                    vm_lifecycle::migration_timed_end(old, &new, |s| m.migration_times(s))
            {
                m.migration_duration(&end);
            }
        }
        drop(m);
        states.insert(new.uid.clone(), new);
    }
}

async fn deleted(resource: VmResource, old: &VmState, m: &mut VmMetrics, ctx: &SourceContext) {
    match resource {
        VmResource::Vmi => m.vmi_phase(&old.namespace, &old.status, -1),
        VmResource::Vmim => m.pending_migration(old, -1),
        VmResource::Vm => {}
    }
    if resource == VmResource::Vm {
        let mut gone = old.clone();
        gone.status = "Deleted".into();
        let t = Transition {
            resource,
            name: "deleted",
            namespace: old.namespace.clone(),
            object: old.name.clone(),
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
    let finished = matches!(t.name, "migration_succeeded" | "migration_failed");
    if t.resource == VmResource::Vmim
        && let Some(mig) = m.migration_states.get(&t.uid)
    {
        if finished
            && t.span.is_none()
            && let (Some(start), Some(end)) = (mig.start, mig.end)
        {
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
    matches!(
        name,
        "failed" | "error" | "migration_failed" | "migration_rejected"
    )
}

/// The log record of a transition: an Event-shaped record about the KubeVirt object, plus VM details.
///
/// The object attributes (`k8s.object.*`) describe the one object whose change this is, the migration's own
/// name included; the VM (or, for a migration, its VMI) is named in the `kubevirt.*` attributes.
pub fn record(t: Transition) -> Record {
    let now = jiff::Timestamp::now();
    let type_ = if warning(t.name) { "Warning" } else { "Normal" };
    // A migration is named by itself and its VMI: `ns/kubevirt-evacuation-wgk69 (VMI vm1)`.
    let subject = if t.resource == VmResource::Vmim {
        format!("{}/{} (VMI {})", t.namespace, t.object, t.vm)
    } else {
        format!("{}/{}", t.namespace, t.object)
    };
    let message = match t.name {
        "migration_rejected" => format!(
            "{} {subject} migration rejected by a ResourceQuota: the target pod cannot be created; the migration stays {} until the quota allows it",
            t.resource.kind(),
            if t.after.is_empty() {
                "Pending"
            } else {
                &t.after
            },
        ),
        "node_changed" | "migration_succeeded" | "migration_failed"
            if !t.target_node.is_empty() =>
        {
            format!(
                "{} {subject} {}: {} -> {}",
                t.resource.kind(),
                t.name.replace('_', " "),
                t.source_node,
                t.target_node
            )
        }
        _ => format!(
            "{} {subject} {} ({} -> {})",
            t.resource.kind(),
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
    r.name = format!("{}.{}", t.object, t.name).into();
    r.namespace = t.namespace.as_str().into();
    r.resource_version = "1".into();
    r.reason = t.name.into();
    r.type_ = type_.into();
    r.regarding = ObjectRef {
        kind: t.resource.kind().into(),
        api_version: "kubevirt.io/v1".into(),
        namespace: t.namespace.as_str().into(),
        name: t.object.as_str().into(),
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
    Record::Vm(VmTransition {
        report: r,
        details: Box::new(VmDetails {
            transition: t.name,
            vm: t.vm,
            vm_uid: t.vm_uid,
            node: t.node,
            source_node: t.source_node,
            target_node: t.target_node,
            before: t.before,
            after: t.after,
            span: t.span,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MetricsConfig;

    fn telemetry(max: usize) -> Arc<Telemetry> {
        Arc::new(Telemetry::new(&MetricsConfig {
            max_series_per_metric: max,
            ..MetricsConfig::default()
        }))
    }

    #[test]
    fn every_vm_metric_is_under_the_cardinality_guard() {
        let t = telemetry(2);
        let mut m = VmMetrics::new(t.clone(), true);
        for i in 0..5 {
            let ns = format!("ns-{i}");
            m.vmi_phase(&ns, "Running", 1);
            m.transition(&ns, "started");
        }
        // A VMI leaves: the -1 lands on the series its +1 went to.
        m.vmi_phase("ns-4", "Running", -1);
        let text = t.render();
        let line = |s: &str| text.lines().any(|l| l == s);
        assert!(
            line(r#"herald_vmis{namespace="ns-0",phase="Running"} 1"#),
            "{text}"
        );
        assert!(
            line(r#"herald_vmis{namespace="__other__",phase="Running"} 2"#),
            "{text}"
        );
        assert!(!text.contains(r#"namespace="ns-3""#), "{text}");
        assert!(
            line(r#"herald_vm_transitions_total{namespace="__other__",transition="started"} 3"#),
            "{text}"
        );
        assert!(
            line(r#"herald_metric_series_overflow_total{metric="herald_vmis"} 4"#),
            "{text}"
        );
    }

    #[test]
    fn gauges_are_zeroed_when_the_watches_stop() {
        let t = telemetry(100);
        let mut m = VmMetrics::new(t.clone(), false);
        let rejected = VmState {
            namespace: "ns".into(),
            status: "Pending".into(),
            rejected_by_quota: true,
            ..VmState::default()
        };
        m.pending_migration(&rejected, 1);
        m.vmi_phase("ns", "Running", 1);
        let gauge = |t: &Telemetry, name: &str| {
            herald_test_support::probe::Scrape::parse(&t.render()).sum(name, &[])
        };
        assert_eq!(gauge(&t, telemetry::VM_MIGRATIONS_PENDING), 1.0);
        m.forget_gauges();
        assert_eq!(gauge(&t, telemetry::VM_MIGRATIONS_PENDING), 0.0);
        assert_eq!(gauge(&t, telemetry::VMIS), 0.0);
        // A new term counts from zero on the same series.
        let mut next = VmMetrics::new(t.clone(), false);
        next.pending_migration(&rejected, 1);
        assert_eq!(gauge(&t, telemetry::VM_MIGRATIONS_PENDING), 1.0);
    }

    #[test]
    fn a_migration_seen_on_its_vmi_and_on_itself_is_observed_once() {
        let t = telemetry(100);
        let mut m = VmMetrics::new(t.clone(), true);
        let end = |uid: &str| vm_lifecycle::MigrationEnd {
            namespace: "ns".into(),
            uid: uid.into(),
            seconds: 9.0,
            failed: false,
        };
        m.migration_duration(&end("m1"));
        m.migration_duration(&end("m1"));
        m.migration_duration(&end("m2"));
        // Without a uid nothing can be matched: each is its own.
        m.migration_duration(&end(""));
        let count = herald_test_support::probe::Scrape::parse(&t.render())
            .sum("herald_vm_migration_duration_seconds_count", &[]);
        assert_eq!(count, 3.0);
    }

    #[test]
    fn observed_migrations_are_bounded_oldest_first() {
        let mut o = Observed::default();
        for i in 0..=MAX_MIGRATIONS {
            assert!(o.first(&format!("m{i}")));
        }
        assert_eq!(
            (o.order.len(), o.uids.len()),
            (MAX_MIGRATIONS, MAX_MIGRATIONS)
        );
        assert!(o.first("m0"), "the oldest was forgotten");
        assert!(
            !o.first(&format!("m{MAX_MIGRATIONS}")),
            "the newest is kept"
        );
    }

    #[test]
    fn a_checkpoint_of_an_earlier_version_still_loads() {
        // Written before VmState knew `rejected_by_quota`.
        let old = r#"{"resource_version":"7","states":[{"namespace":"ns","name":"m","uid":"u",
            "status":"Pending","node":"","created":null,"pending_at":null,"running_at":null,
            "migration":null,"vmi_name":"vm1","vm_uid":""}]}"#;
        let c: Checkpoint = serde_json::from_str(old).unwrap();
        assert!(c.states[0].migration_pending() && !c.states[0].rejected_by_quota);
    }

    #[test]
    fn a_migration_record_describes_the_migration() {
        let t = Transition {
            resource: VmResource::Vmim,
            name: "migration_rejected",
            namespace: "ns".into(),
            object: "kubevirt-evacuation-wgk69".into(),
            vm: "vm1".into(),
            uid: "m1".into(),
            vm_uid: String::new(),
            node: String::new(),
            source_node: String::new(),
            target_node: String::new(),
            before: String::new(),
            after: "Pending".into(),
            span: None,
        };
        let Record::Vm(VmTransition { report: r, details }) = record(t) else {
            panic!("a transition's record is a VM transition")
        };
        assert_eq!(&*r.regarding.name, "kubevirt-evacuation-wgk69");
        assert_eq!(&*r.regarding.kind, "VirtualMachineInstanceMigration");
        assert_eq!(details.vm, "vm1");
        assert_eq!(&*r.type_, "Warning");
        assert!(
            r.message.contains("ns/kubevirt-evacuation-wgk69 (VMI vm1)"),
            "{}",
            r.message
        );
    }
}
