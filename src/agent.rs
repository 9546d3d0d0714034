//! Wiring: builds the sources, the pipeline, the sinks and the HTTP server from one [`Config`], runs them
//! under supervision ([`crate::tasks`]: a task herald cannot run without that dies stops the agent with an
//! error), and shuts them down in order (sources stop, the pipeline drains, sinks flush) within the deadline,
//! naming the queues still draining when it passes.

use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Mode, Scope, SourceConfig};
use crate::health::Health;
use crate::leader::{Elector, LeaderSettings};
use crate::pipeline::{self, Pipeline};
use crate::ring::Ring;
use crate::self_events::{self, PodRef, SelfEvents};
use crate::sink::otlp::{self, OtlpSink};
use crate::sink::shape::Identity;
use crate::sink::webhook::{self, WebhookSink};
use crate::sink::{SinkQueue, json::JsonSink, metrics_sink::MetricsSink};
use crate::source::events::{self, SourceContext};
use crate::source::kubevirt;
use crate::source::vm_lifecycle::VmResource;
use crate::tasks::{Need, Supervisor, Task};
use crate::telemetry::{self, Telemetry};

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot build the pipeline: {0}")]
    Pipeline(#[from] pipeline::Error),
    #[error("cannot set up the OTLP sink: {0}")]
    Otlp(#[from] otlp::transport::Error),
    #[error("cannot set up a webhook sink: {0}")]
    Webhook(#[from] webhook::Error),
    #[error("cannot set up the Kafka sink: {0}")]
    Kafka(#[from] crate::sink::kafka::Error),
    /// A task herald cannot run without panicked or returned; the process should exit non-zero so the
    /// kubelet restarts it.
    #[error("stopped because task {0}")]
    TaskFailed(String),
}

/// What the agent runs with, beyond its configuration.
pub struct Agent {
    pub config: Config,
    pub client: Client,
    /// herald's own namespace, for `scope: own`.
    pub own_namespace: String,
    pub listener: crate::server::Listener,
    /// The OTLP sink's settings, resolved with the environment; `None`: no endpoint, sink off.
    pub otlp: Option<otlp::Settings>,
    /// The node herald runs on (`NODE_NAME`), written on every log record.
    pub node_name: String,
    /// herald's own diagnostics for OTLP (`log.otlp`), forwarded when the OTLP sink is configured.
    pub diagnostics: Option<otlp::diagnostics::DiagnosticsQueue>,
    /// Where the configuration came from, to reload it (SIGHUP, file changes); `None`: no reloads.
    pub reload: Option<crate::reload::ConfigSource>,
}

impl Agent {
    /// Run until `shutdown` is cancelled, then drain within `config.shutdown_timeout`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Agent {
            config,
            client,
            own_namespace,
            listener,
            otlp,
            node_name,
            diagnostics,
            reload,
        } = self;
        let identity = Identity {
            cluster_name: config.sinks.otlp.cluster_name.clone(),
            agent_node: node_name,
        };
        let telemetry = Arc::new(Telemetry::new(&config.metrics));
        let health = Health::default();
        health.beat();
        // Cancelled at shutdown: sources stop, and from then on a task that ends is expected to.
        let stop_sources = CancellationToken::new();
        let sup = Supervisor::new(health.clone(), stop_sources.clone());
        let (self_events, self_events_task) = SelfEvents::start(
            client.clone(),
            PodRef::from_env(),
            &config.self_events,
            &telemetry,
        );
        let self_events_task =
            self_events_task.map(|t| sup.watch("self events", Need::Auxiliary, t));
        self_events::observe_sinks(&health, &self_events);

        let ingest = Arc::new(Ring::new("ingest", config.pipeline.ingest_capacity));
        telemetry
            .gauge(telemetry::QUEUE_CAPACITY, &[("queue", "ingest")])
            .set(ingest.capacity() as f64);

        let (config_tx, config_rx) = watch::channel(Arc::new(config.clone()));
        let config_hash = crate::reload::config_hash(&config);
        telemetry
            .gauge(telemetry::CONFIG_HASH, &[])
            .set(crate::reload::hash_value(&config_hash));

        let state_dir =
            (!config.state_dir.is_empty()).then(|| std::path::PathBuf::from(&config.state_dir));
        let event_watches = match config.mode {
            Mode::Sidecar => {
                let mut cfg = config.source.events.clone();
                cfg.scope = Scope::Own;
                cfg
            }
            _ => config.source.events.clone(),
        };
        // Event checkpoints need the metrics sink (it writes them, with its counters): a file of this agent's
        // own, or in daemonset mode a ConfigMap all agents share, so a new leader continues the counting.
        let writer = pod_name();
        let (leading_tx, leading_rx) = watch::channel(false);
        let held_until = crate::leader::HeldUntil::default();
        let event_store = state_dir
            .as_ref()
            .filter(|_| config.sinks.metrics.enabled)
            .map(|dir| match config.mode {
                Mode::Daemonset => crate::checkpoint::Store::ConfigMap(Box::new(
                    crate::checkpoint::ConfigMapStore::new(
                        Api::namespaced(client.clone(), &own_namespace),
                        format!("{}-state", config.leader_election.lease_name),
                        leading_rx.clone(),
                    )
                    .with_held_until(held_until.clone()),
                )),
                _ => crate::checkpoint::Store::File(dir.join(crate::checkpoint::EVENTS_FILE)),
            });
        let keys = events::watch_keys(&event_watches, &own_namespace);
        let acks = Arc::new(crate::checkpoint::Acks::new(keys.len()));
        let restored = match &event_store {
            Some(store) => store.load().await.unwrap_or_else(|error| {
                tracing::warn!(%error, "Event checkpoint ignored; counting starts afresh");
                None
            }),
            None => None,
        };
        let event_checkpoints = events::Checkpoints {
            every: event_store
                .is_some()
                .then_some(config.checkpoint_interval.0),
            // A leader reads the shared checkpoint anew at the start of each term (see lead_terms).
            restored: match config.mode {
                Mode::Daemonset => Vec::new(),
                _ => restored
                    .iter()
                    .flat_map(|f| f.watches.iter().map(|w| w.watch.clone()))
                    .collect(),
            },
            acks: acks.clone(),
        };
        let term_store = match &event_store {
            Some(crate::checkpoint::Store::ConfigMap(c)) => Some((**c).clone()),
            _ => None,
        };
        let persist = event_store.map(|store| crate::sink::metrics_sink::Persist {
            store,
            keys,
            // In daemonset mode counters continue only from a checkpoint this agent wrote itself.
            restored: restored.filter(|f| config.mode != Mode::Daemonset || f.writer == writer),
            writer,
            acks,
        });

        let mut queues = Vec::new();
        let mut sink_tasks: Vec<(Task, Arc<Ring<crate::sink::Shared>>)> = Vec::new();
        if config.sinks.metrics.enabled {
            let q = SinkQueue::new(
                "metrics",
                config.sinks.metrics.queue_capacity,
                true,
                &telemetry,
            )
            .taking_checkpoints();
            let mut sink =
                MetricsSink::new(telemetry.clone(), config.metrics.max_series_per_metric);
            if let Some(persist) = persist {
                sink = sink.with_checkpoints(persist);
            }
            sink_tasks.push(sink_task(&sup, &q, sink.run(q.ring.clone())));
            queues.push(q);
        }
        if config.sinks.json.enabled {
            let q = SinkQueue::new("json", config.sinks.json.queue_capacity, false, &telemetry);
            let sink = JsonSink::new(
                tokio::io::stdout(),
                identity.clone(),
                &telemetry,
                health.sink("json"),
            );
            sink_tasks.push(sink_task(&sup, &q, sink.run(q.ring.clone())));
            queues.push(q);
        }
        if let Some(mut settings) = otlp {
            settings.identity = identity.clone();
            if let Some(queue) = diagnostics {
                sup.spawn(
                    "diagnostics",
                    Need::Auxiliary,
                    queue.run(settings.clone(), telemetry.clone()),
                );
            }
            let q = SinkQueue::new("otlp", settings.queue_capacity, false, &telemetry);
            let sink = OtlpSink::new(settings, &telemetry, health.sink("otlp"))?;
            sink_tasks.push(sink_task(&sup, &q, sink.run(q.ring.clone())));
            queues.push(q);
        }
        for (i, settings) in config.sinks.webhooks.iter().enumerate() {
            let name = webhook::sink_name(i);
            let q = SinkQueue::new(name, settings.queue_capacity, false, &telemetry);
            let sink = WebhookSink::new(
                i,
                name,
                settings.clone(),
                identity.clone(),
                &telemetry,
                health.sink(name),
            )?
            .with_reload(config_rx.clone());
            sink_tasks.push(sink_task(&sup, &q, sink.run(q.ring.clone())));
            queues.push(q);
        }
        if config.sinks.kafka.enabled() {
            use crate::sink::kafka::{self, KafkaSink};
            let settings = config.sinks.kafka.clone();
            let q = SinkQueue::new(kafka::NAME, settings.queue_capacity, false, &telemetry);
            let sink = KafkaSink::new(
                settings,
                identity.clone(),
                &telemetry,
                health.sink(kafka::NAME),
            )?;
            sink_tasks.push(sink_task(&sup, &q, sink.run(q.ring.clone())));
            queues.push(q);
        }
        let drops = sup.watch(
            "drop reports",
            Need::Auxiliary,
            self_events::watch_drops(
                queues.iter().map(|q| q.ring.clone()).collect(),
                self_events.clone(),
                health.clone(),
                std::time::Duration::from_secs(1),
            ),
        );
        let pipeline = Pipeline::new(&config, queues, &telemetry)?.with_reload(config_rx);
        let mut pipeline_task = sup.spawn(
            "pipeline",
            Need::Essential,
            pipeline.run(ingest.clone(), health.clone()),
        );

        let ctx = SourceContext {
            client,
            ingest: ingest.clone(),
            telemetry: telemetry.clone(),
            health: health.clone(),
            shutdown: stop_sources.clone(),
        };
        let leader_gauge = telemetry.gauge(telemetry::LEADER, &[]);
        let started: String;
        let lease = &config.leader_election.lease_name;
        let sources = match config.mode {
            Mode::Single => {
                leader_gauge.set(1.0);
                health.set_role("single");
                started = "single mode: watches the cluster's Events".into();
                let mut tasks = watch_events(
                    &sup,
                    "",
                    events::spawn(&event_watches, &own_namespace, &ctx, &event_checkpoints),
                );
                tasks.extend(
                    kubevirt::spawn(
                        &config.source.kubevirt,
                        kubevirt::Scope {
                            state_dir: state_dir.clone(),
                            ..kubevirt::Scope::all()
                        },
                        &ctx,
                    )
                    .map(|t| sup.watch("source kubevirt", Need::Essential, t)),
                );
                tasks
            }
            Mode::Sidecar => {
                leader_gauge.set(1.0);
                health.set_role("sidecar");
                started = format!("sidecar mode: watches namespace {own_namespace}");
                let mut tasks = watch_events(
                    &sup,
                    "",
                    events::spawn(&event_watches, &own_namespace, &ctx, &event_checkpoints),
                );
                tasks.extend(
                    kubevirt::spawn(
                        &config.source.kubevirt,
                        kubevirt::Scope {
                            namespace: Some(own_namespace.clone()),
                            state_dir: state_dir.clone(),
                            ..kubevirt::Scope::all()
                        },
                        &ctx,
                    )
                    .map(|t| sup.watch("source kubevirt", Need::Essential, t)),
                );
                tasks
            }
            Mode::Daemonset => {
                health.set_role("follower");
                leader_gauge.set(0.0);
                started = format!(
                    "daemonset mode, follower: campaigning for Lease {own_namespace}/{lease}"
                );
                let (tx, rx) = (leading_tx, leading_rx);
                let leadership = sup.spawn(
                    "leadership events",
                    Need::Auxiliary,
                    self_events::record_leadership(
                        rx.clone(),
                        self_events.clone(),
                        format!("{own_namespace}/{lease}"),
                        stop_sources.clone(),
                    ),
                );
                let api: Api<Lease> = Api::namespaced(ctx.client.clone(), &own_namespace);
                let settings = LeaderSettings {
                    lease_name: config.leader_election.lease_name.clone(),
                    identity: identity_for_lease(),
                    lease_duration: config.leader_election.lease_duration.0,
                    renew_interval: config.leader_election.renew_interval.0,
                    renew_deadline: config.leader_election.effective_renew_deadline(),
                };
                let elector = Elector::new(api, settings).with_held_until(held_until.clone());
                // Every agent watches the VMIs of its own node; the leader the cluster-wide rest.
                let node = (!identity.agent_node.is_empty()).then(|| identity.agent_node.clone());
                if node.is_none() {
                    tracing::warn!(
                        "NODE_NAME is not set: the leader watches every VMI instead of each agent its node's"
                    );
                }
                let node_vmis = node.as_ref().and_then(|node| {
                    kubevirt::spawn(
                        &config.source.kubevirt,
                        kubevirt::Scope {
                            resources: vec![VmResource::Vmi],
                            namespace: None,
                            node: Some(node.clone()),
                            state_dir: state_dir.clone(),
                        },
                        &ctx,
                    )
                    .map(|t| sup.watch("source kubevirt (node)", Need::Essential, t))
                });
                let leader_vm_resources = if node.is_some() {
                    vec![VmResource::Vm, VmResource::Vmim]
                } else {
                    VmResource::ALL.to_vec()
                };
                let campaign = sup.spawn(
                    "leader election",
                    Need::Essential,
                    elector.run(tx, leader_gauge, stop_sources.clone()),
                );
                let terms = sup.spawn(
                    "leadership terms",
                    Need::Essential,
                    lead_terms(
                        rx,
                        config.source.clone(),
                        leader_vm_resources,
                        own_namespace.clone(),
                        ctx.clone(),
                        term_store.map(|store| (store, event_checkpoints.clone())),
                        sup.clone(),
                    ),
                );
                let mut tasks = vec![campaign, terms, leadership];
                tasks.extend(node_vmis);
                tasks
            }
        };
        self_events.normal(
            "Started",
            "Start",
            format!("herald {} started in {started}", env!("CARGO_PKG_VERSION")),
        );

        let stop_server = CancellationToken::new();
        let mut server = sup.spawn(
            "server",
            Need::Essential,
            crate::server::serve(
                listener,
                telemetry.clone(),
                health.clone(),
                stop_server.clone(),
            ),
        );
        let upkeep = {
            let telemetry = telemetry.clone();
            sup.spawn("upkeep", Need::Auxiliary, async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    telemetry.run_upkeep();
                }
            })
        };
        tracing::info!(version = env!("CARGO_PKG_VERSION"), %config_hash, "herald started");
        let reloader = reload.filter(|_| config.reload.enabled).map(|source| {
            sup.spawn(
                "reload",
                Need::Auxiliary,
                crate::reload::run(
                    source,
                    config_tx,
                    config.reload.poll_interval.0,
                    self_events.clone(),
                    telemetry.clone(),
                    stop_server.clone(),
                ),
            )
        });

        let failed = tokio::select! {
            _ = shutdown.cancelled() => None,
            failed = sup.failed() => Some(failed),
        };
        tracing::info!(deadline = %config.shutdown_timeout, "shutting down: stopping sources, draining queues");
        stop_sources.cancel();
        let mut sources = sources;
        let drain = async {
            for s in sources.iter_mut() {
                s.join().await;
            }
            ingest.close();
            pipeline_task.join().await;
            // The pipeline closes them when it ends; if it died, this lets the sinks drain and end.
            for (_, ring) in sink_tasks.iter() {
                ring.close();
            }
            for (s, _) in sink_tasks.iter_mut() {
                s.join().await;
            }
        };
        if tokio::time::timeout(config.shutdown_timeout.0, drain)
            .await
            .is_err()
        {
            tracing::warn!(
                still_draining = %still_draining(&sources, &ingest, &pipeline_task, &sink_tasks),
                "shutdown deadline passed before every queue drained; what they hold is dropped"
            );
        } else {
            tracing::info!("drained");
        }
        // Whatever did not finish by the deadline stops here (a sink blocked on its output, a source).
        for t in sources
            .iter()
            .chain([&pipeline_task])
            .chain(sink_tasks.iter().map(|(t, _)| t))
        {
            t.abort();
        }
        stop_server.cancel();
        upkeep.abort();
        drops.abort();
        if let Some(t) = reloader {
            t.abort();
        }
        if let Some(t) = self_events_task {
            t.abort();
        }
        // The server closes its listener at once; a connection that lingers is not waited for long.
        if tokio::time::timeout(std::time::Duration::from_secs(1), server.join())
            .await
            .is_err()
        {
            server.abort();
        }
        match failed {
            Some(task) => Err(Error::TaskFailed(task)),
            None => Ok(()),
        }
    }
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

/// What had not drained when the shutdown deadline passed: the sources still running, the ingest queue
/// (with the pipeline), and each sink's queue whose task had not finished, with the records they hold.
fn still_draining<T>(
    sources: &[Task],
    ingest: &Ring<T>,
    pipeline: &Task,
    sinks: &[(Task, Arc<Ring<crate::sink::Shared>>)],
) -> String {
    let mut parts = Vec::new();
    let running: Vec<&str> = sources
        .iter()
        .filter(|t| !t.is_finished())
        .map(|t| t.name.as_str())
        .collect();
    if !running.is_empty() {
        parts.push(format!("sources still stopping ({})", running.join(", ")));
    }
    if !pipeline.is_finished() {
        parts.push(format!("queue ingest ({} records)", ingest.len()));
    }
    for (task, ring) in sinks {
        if !task.is_finished() {
            parts.push(format!(
                "queue {} ({} records waiting, its sink still busy)",
                ring.name(),
                ring.len()
            ));
        }
    }
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join(", ")
    }
}

/// A sink's task, supervised, with its ring (to name it when it is still draining at the deadline).
fn sink_task<F>(sup: &Supervisor, q: &SinkQueue, run: F) -> (Task, Arc<Ring<crate::sink::Shared>>)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    (
        sup.spawn(format!("sink {}", q.name), Need::Essential, run),
        q.ring.clone(),
    )
}

/// This agent's pod name (downward API `POD_NAME`), else the host name, else empty.
fn pod_name() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default()
}

/// This agent's name in the Lease: the pod name and the process, else a random one.
fn identity_for_lease() -> String {
    match pod_name() {
        pod if !pod.is_empty() => format!("{pod}-{}", std::process::id()),
        _ => format!("herald-{}", fastrand::u64(..)),
    }
}

/// Run the cluster-wide Event watches for each leadership term: start them when this agent becomes the
/// leader, stop them the moment it is not, until the context's shutdown.
///
/// With a shared checkpoint, each term's Event watches continue from what the last leader saved (this agent
/// or another), so a fail-over counts what happened since, once.
async fn lead_terms(
    mut leading: watch::Receiver<bool>,
    cfg: SourceConfig,
    vm_resources: Vec<VmResource>,
    own_namespace: String,
    ctx: events::SourceContext,
    checkpoints: Option<(crate::checkpoint::ConfigMapStore, events::Checkpoints)>,
    sup: Supervisor,
) {
    loop {
        if leading.wait_for(|l| *l).await.is_err() || ctx.shutdown.is_cancelled() {
            return;
        }
        ctx.health.set_role("leader");
        let term = ctx.shutdown.child_token();
        let term_ctx = events::SourceContext {
            shutdown: term.clone(),
            ..ctx.clone()
        };
        let term_checkpoints = match &checkpoints {
            Some((store, template)) => {
                let saved = store.load().await.unwrap_or_else(|error| {
                    tracing::warn!(%error, "cannot read the last leader's Event checkpoint; this term starts from the startup policy");
                    None
                });
                events::Checkpoints {
                    restored: saved
                        .iter()
                        .flat_map(|f| f.watches.iter().map(|w| w.watch.clone()))
                        .collect(),
                    ..template.clone()
                }
            }
            None => events::Checkpoints::default(),
        };
        // A watch of this term ends as expected when the term does.
        let term_sup = sup.until(term.clone());
        let mut watches = watch_events(
            &term_sup,
            " (leader)",
            events::spawn(&cfg.events, &own_namespace, &term_ctx, &term_checkpoints),
        );
        watches.extend(
            kubevirt::spawn(
                &cfg.kubevirt,
                kubevirt::Scope {
                    resources: vm_resources.clone(),
                    ..kubevirt::Scope::all()
                },
                &term_ctx,
            )
            .map(|t| term_sup.watch("source kubevirt (leader)", Need::Essential, t)),
        );
        let ended = leading.wait_for(|l| !*l).await.is_err();
        term.cancel();
        for w in watches.iter_mut() {
            w.join().await;
        }
        ctx.health.set_role("follower");
        if ended {
            return;
        }
    }
}
