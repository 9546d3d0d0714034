//! What differs per deployment `mode`, and only that: which Events and VMs the sources watch, whether a
//! leader is elected, and the role `/readyz` and the `Started` Event name.
//!
//! `single` and `sidecar` lead alone and watch from the start (a sidecar only its own namespace).
//! `daemonset` campaigns for the Lease: every agent watches the VMIs of its own node, and the leader, for
//! as long as it leads, the cluster-wide rest ([`Terms`]). Building the sinks and stopping tasks is not
//! decided here.

use std::path::PathBuf;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::sync::watch;

use super::wiring::{self, Core};
use crate::checkpoint::ConfigMapStore;
use crate::config::{Config, LeaderElectionConfig, Mode, Scope, SourceConfig};
use crate::leader::{Elector, HeldUntil, LeaderSettings};
use crate::self_events;
use crate::source::events::{self, SourceContext};
use crate::source::kubevirt;
use crate::source::vm_lifecycle::VmResource;
use crate::tasks::{Need, Supervisor, Task};
use crate::telemetry;

/// Whether this agent leads now, and until when its Lease is certainly held: shared by the elector and the
/// checkpoint store that only a leader may write.
pub(super) struct Leadership {
    pub tx: watch::Sender<bool>,
    pub rx: watch::Receiver<bool>,
    pub held_until: HeldUntil,
}

/// The leadership of a mode that elects a leader (daemonset); the others lead alone.
pub(super) fn leadership(mode: Mode) -> Option<Leadership> {
    (mode == Mode::Daemonset).then(|| {
        let (tx, rx) = watch::channel(false);
        Leadership {
            tx,
            rx,
            held_until: HeldUntil::default(),
        }
    })
}

/// The sources' configuration in this mode: a sidecar watches the Events of its own namespace only.
pub(super) fn source_config(config: &Config) -> SourceConfig {
    let mut cfg = config.source.clone();
    if config.mode == Mode::Sidecar {
        cfg.events.scope = Scope::Own;
    }
    cfg
}

/// What the sources start with.
pub(super) struct Sources<'a> {
    pub config: &'a Config,
    /// [`source_config`].
    pub watches: SourceConfig,
    pub own_namespace: &'a str,
    pub ctx: SourceContext,
    pub checkpoints: events::Checkpoints,
    /// The shared checkpoint each leadership term reads anew.
    pub term_store: Option<ConfigMapStore>,
}

impl Sources<'_> {
    fn state_dir(&self) -> Option<PathBuf> {
        self.config.state_dir.clone()
    }
}

/// Start the sources of the mode: their tasks, and how the `Started` Event describes the mode.
pub(super) fn start(
    core: &Core,
    sources: Sources<'_>,
    leadership: Option<Leadership>,
) -> (Vec<Task>, String) {
    match leadership {
        Some(leadership) => campaign(core, sources, leadership),
        None => lead_alone(core, sources),
    }
}

/// `single` or `sidecar`: this agent is the only one, so it leads and watches from the start.
fn lead_alone(core: &Core, s: Sources<'_>) -> (Vec<Task>, String) {
    let (role, namespace, started) = match s.config.mode {
        Mode::Sidecar => (
            "sidecar",
            Some(s.own_namespace.to_string()),
            format!("sidecar mode: watches namespace {}", s.own_namespace),
        ),
        _ => (
            "single",
            None,
            "single mode: watches the cluster's Events".to_string(),
        ),
    };
    core.telemetry.gauge(telemetry::LEADER, &[]).set(1.0);
    core.health.set_role(role);
    let scope = kubevirt::Scope {
        namespace,
        state_dir: s.state_dir(),
        ..kubevirt::Scope::all()
    };
    let tasks = spawn_watches(
        &core.sup,
        "",
        &s.watches,
        s.own_namespace,
        &s.ctx,
        &s.checkpoints,
        scope,
    );
    (tasks, started)
}

/// `daemonset`: campaign for the Lease, watch this node's VMIs, and run the cluster-wide watches in each
/// leadership term.
fn campaign(core: &Core, s: Sources<'_>, leadership: Leadership) -> (Vec<Task>, String) {
    let own = s.own_namespace;
    let election = &s.config.leader_election;
    let lease = &election.lease_name;
    core.health.set_role("follower");
    let gauge = core.telemetry.gauge(telemetry::LEADER, &[]);
    gauge.set(0.0);
    let started = format!("daemonset mode, follower: campaigning for Lease {own}/{lease}");
    let Leadership { tx, rx, held_until } = leadership;
    let announce = core.sup.spawn(
        "leadership events",
        Need::Auxiliary,
        self_events::record_leadership(
            rx.clone(),
            core.self_events.clone(),
            format!("{own}/{lease}"),
            core.stop_sources.clone(),
        ),
    );
    let api: Api<Lease> = Api::namespaced(s.ctx.client.clone(), own);
    let elector = Elector::new(api, lease_settings(election)).with_held_until(held_until);
    let (node_vmis, vm_resources) = node_vmis(core, &s);
    let campaign = core.sup.spawn(
        "leader election",
        Need::Essential,
        elector.run(tx, gauge, core.stop_sources.clone()),
    );
    let terms = Terms {
        checkpoints: s.term_store.map(|store| (store, s.checkpoints)),
        watches: s.watches,
        vm_resources,
        own_namespace: own.to_string(),
        ctx: s.ctx,
        sup: core.sup.clone(),
    };
    let terms = core
        .sup
        .spawn("leadership terms", Need::Essential, terms.run(rx));
    let mut tasks = vec![campaign, terms, announce];
    tasks.extend(node_vmis);
    (tasks, started)
}

fn lease_settings(election: &LeaderElectionConfig) -> LeaderSettings {
    LeaderSettings {
        lease_name: election.lease_name.clone(),
        identity: identity_for_lease(),
        lease_duration: election.lease_duration.0,
        renew_interval: election.renew_interval.0,
        renew_deadline: election.effective_renew_deadline(),
    }
}

/// Every agent watches the VMIs of its own node (when it knows its node); the leader then watches the other
/// KubeVirt resources, else all of them. Returns the node's watch and the leader's resources.
fn node_vmis(core: &Core, s: &Sources<'_>) -> (Option<Task>, Vec<VmResource>) {
    let node = &core.identity.agent_node;
    if node.is_empty() {
        tracing::warn!(
            "NODE_NAME is not set: the leader watches every VMI instead of each agent its node's"
        );
        return (None, VmResource::ALL.to_vec());
    }
    let scope = kubevirt::Scope {
        resources: vec![VmResource::Vmi],
        namespace: None,
        node: Some(node.clone()),
        state_dir: s.state_dir(),
    };
    let task = spawn_kubevirt(&core.sup, " (node)", &s.watches, &s.ctx, scope);
    (task, vec![VmResource::Vm, VmResource::Vmim])
}

/// This agent's name in the Lease: the pod name and the process, else a random one.
fn identity_for_lease() -> String {
    match wiring::pod_name() {
        pod if !pod.is_empty() => format!("{pod}-{}", std::process::id()),
        _ => format!("herald-{}", fastrand::u64(..)),
    }
}

/// The Event watches and the KubeVirt watch of `scope`, supervised, their task names ending in `suffix`.
fn spawn_watches(
    sup: &Supervisor,
    suffix: &str,
    cfg: &SourceConfig,
    own_namespace: &str,
    ctx: &SourceContext,
    checkpoints: &events::Checkpoints,
    scope: kubevirt::Scope,
) -> Vec<Task> {
    let handles = events::spawn(&cfg.events, own_namespace, ctx, checkpoints);
    let mut tasks = watch_events(sup, suffix, handles);
    tasks.extend(spawn_kubevirt(sup, suffix, cfg, ctx, scope));
    tasks
}

/// The KubeVirt watch of `scope` (none when KubeVirt is off), supervised as `source kubevirt<suffix>`.
fn spawn_kubevirt(
    sup: &Supervisor,
    suffix: &str,
    cfg: &SourceConfig,
    ctx: &SourceContext,
    scope: kubevirt::Scope,
) -> Option<Task> {
    kubevirt::spawn(&cfg.kubevirt, scope, ctx)
        .map(|t| sup.watch(format!("source kubevirt{suffix}"), Need::Essential, t))
}

/// The Event watches of `events::spawn`, supervised, named `source events` (numbered when there are several).
fn watch_events(
    sup: &Supervisor,
    suffix: &str,
    handles: Vec<tokio::task::JoinHandle<()>>,
) -> Vec<Task> {
    let several = handles.len() > 1;
    handles
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            let name = match several {
                true => format!("source events {}{suffix}", i + 1),
                false => format!("source events{suffix}"),
            };
            sup.watch(name, Need::Essential, h)
        })
        .collect()
}

/// The leader's cluster-wide watches, one set per leadership term.
struct Terms {
    watches: SourceConfig,
    /// The KubeVirt resources the leader watches (not the VMIs each agent watches on its node).
    vm_resources: Vec<VmResource>,
    own_namespace: String,
    ctx: SourceContext,
    /// The shared checkpoint and the checkpoint settings of the Event watches.
    checkpoints: Option<(ConfigMapStore, events::Checkpoints)>,
    sup: Supervisor,
}

impl Terms {
    /// Start the watches when this agent becomes the leader, stop them the moment it is not, until the
    /// context's shutdown.
    async fn run(self, mut leading: watch::Receiver<bool>) {
        loop {
            if leading.wait_for(|l| *l).await.is_err() || self.ctx.shutdown.is_cancelled() {
                return;
            }
            self.ctx.health.set_role("leader");
            let term = self.ctx.shutdown.child_token();
            let mut watches = self.start(term.clone()).await;
            let ended = leading.wait_for(|l| !*l).await.is_err();
            term.cancel();
            for w in watches.iter_mut() {
                w.join().await;
            }
            self.ctx.health.set_role("follower");
            if ended {
                return;
            }
        }
    }

    /// One term's watches, ending as expected when `term` is cancelled.
    async fn start(&self, term: tokio_util::sync::CancellationToken) -> Vec<Task> {
        let ctx = SourceContext {
            shutdown: term.clone(),
            ..self.ctx.clone()
        };
        let scope = kubevirt::Scope {
            resources: self.vm_resources.clone(),
            ..kubevirt::Scope::all()
        };
        spawn_watches(
            &self.sup.until(term),
            " (leader)",
            &self.watches,
            &self.own_namespace,
            &ctx,
            &self.checkpoints().await,
            scope,
        )
    }

    /// With a shared checkpoint, each term's Event watches continue from what the last leader saved (this
    /// agent or another), so a fail-over counts what happened since, once.
    async fn checkpoints(&self) -> events::Checkpoints {
        let Some((store, template)) = &self.checkpoints else {
            return events::Checkpoints::default();
        };
        let saved = store.load().await.unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot read the last leader's Event checkpoint; this term starts from the startup policy");
            None
        });
        events::Checkpoints {
            restored: wiring::resume_points(saved.as_ref()),
            ..template.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_sidecar_narrows_its_event_watches_and_only_a_daemonset_elects() {
        for (mode, scope, elects) in [
            (Mode::Single, Config::default().source.events.scope, false),
            (Mode::Sidecar, Scope::Own, false),
            (Mode::Daemonset, Config::default().source.events.scope, true),
        ] {
            let config = Config {
                mode,
                ..Config::default()
            };
            assert_eq!(source_config(&config).events.scope, scope, "{mode:?}");
            assert_eq!(leadership(mode).is_some(), elects, "{mode:?}");
        }
    }
}
