//! Wiring: builds what the agent runs from one [`Config`]: the parts every task shares ([`Core`]), the ingest
//! ring, the Event checkpoints, and the sinks with their queues and supervised tasks ([`Sinks`]).
//!
//! It decides nothing per deployment mode (that is [`super::modes`]) and waits on nothing but the checkpoint
//! it reads at start; stopping what it built is [`super::running`]'s job.

use std::sync::Arc;

use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::Error;
use super::modes::Leadership;
use crate::checkpoint::{Acks, ConfigMapStore, EVENTS_FILE, EventsFile, Store};
use crate::config::{Config, EventSourceConfig};
use crate::health::Health;
use crate::pipeline::Pipeline;
use crate::ring::Ring;
use crate::self_events::{self, PodRef, SelfEvents};
use crate::sink::kafka::{self, KafkaSink};
use crate::sink::metrics_sink::{MetricsSink, Persist};
use crate::sink::otlp::{self, OtlpSink};
use crate::sink::shape::Identity;
use crate::sink::webhook::{self, WebhookSink};
use crate::sink::{Shared, SinkQueue, json::JsonSink};
use crate::source::events;
use crate::tasks::{Need, Supervisor, Task};
use crate::telemetry::{self, Telemetry};

/// What every part of the agent is built with.
pub(super) struct Core {
    pub identity: Identity,
    pub telemetry: Arc<Telemetry>,
    pub health: Health,
    /// Cancelled at shutdown: sources stop, and from then on a task that ends is expected to.
    pub stop_sources: CancellationToken,
    pub sup: Supervisor,
    pub self_events: SelfEvents,
}

impl Core {
    /// The shared parts, and the task that records herald's own Kubernetes Events (if it records them).
    pub fn new(config: &Config, client: &Client, node_name: String) -> (Core, Option<Task>) {
        let identity = Identity {
            cluster_name: config.sinks.otlp.cluster_name.clone().unwrap_or_default(),
            agent_node: node_name,
        };
        let telemetry = Arc::new(Telemetry::new(&config.metrics));
        let health = Health::default();
        health.beat();
        let stop_sources = CancellationToken::new();
        let sup = Supervisor::new(health.clone(), stop_sources.clone());
        let (self_events, task) = SelfEvents::start(
            client.clone(),
            PodRef::from_env(),
            &config.self_events,
            &telemetry,
        );
        let task = task.map(|t| sup.watch("self events", Need::Auxiliary, t));
        self_events::observe_sinks(&health, &self_events);
        let core = Core {
            identity,
            telemetry,
            health,
            stop_sources,
            sup,
            self_events,
        };
        (core, task)
    }

    /// A task that keeps the metric catalogue tidy every 5 s.
    pub fn upkeep(&self) -> Task {
        let telemetry = self.telemetry.clone();
        self.sup.spawn("upkeep", Need::Auxiliary, async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                telemetry.run_upkeep();
            }
        })
    }
}

/// The ring the sources fill and the pipeline drains, with its capacity published.
fn ingest(config: &Config, telemetry: &Telemetry) -> Arc<Ring<Shared>> {
    let ingest = Arc::new(Ring::new("ingest", config.pipeline.ingest_capacity));
    telemetry
        .gauge(telemetry::QUEUE_CAPACITY, &[("queue", "ingest")])
        .set(ingest.capacity() as f64);
    ingest
}

/// Publish the configuration's hash (`herald_config_hash`) and return it, for the start-up log line.
pub(super) fn config_hash(config: &Config, telemetry: &Telemetry) -> String {
    let hash = crate::reload::config_hash(config);
    telemetry
        .gauge(telemetry::CONFIG_HASH, &[])
        .set(crate::reload::hash_value(&hash));
    hash
}

/// The Event checkpoints, split between the sources (where to resume) and the metrics sink (which writes
/// them, with its counters).
pub(super) struct Checkpoints {
    pub sources: events::Checkpoints,
    /// The shared store a leader reads anew at the start of each term (daemonset mode).
    pub term_store: Option<ConfigMapStore>,
    pub persist: Option<Persist>,
}

/// Read the last Event checkpoint, if any. They need `state_dir` and the metrics sink: a file of this agent's
/// own, or, when `shared` (daemonset mode), a ConfigMap all agents share, so a new leader continues the
/// counting; then the sources start without one (each term reads it) and counters continue only from a
/// checkpoint this agent wrote itself.
pub(super) async fn checkpoints(
    config: &Config,
    client: &Client,
    own_namespace: &str,
    watches: &EventSourceConfig,
    shared: Option<&Leadership>,
) -> Checkpoints {
    let state_dir = config
        .state_dir
        .as_deref()
        .filter(|_| config.sinks.metrics.enabled);
    let store = state_dir.map(|state_dir| match shared {
        Some(leadership) => Store::ConfigMap(Box::new(
            ConfigMapStore::new(
                Api::namespaced(client.clone(), own_namespace),
                format!("{}-state", config.leader_election.lease_name),
                leadership.rx.clone(),
            )
            .with_held_until(leadership.held_until.clone()),
        )),
        None => Store::File(state_dir.join(EVENTS_FILE)),
    });
    let keys = events::watch_keys(watches, own_namespace);
    let acks = Arc::new(Acks::new(keys.len()));
    let restored = match &store {
        Some(store) => store.load().await.unwrap_or_else(|error| {
            tracing::warn!(%error, "Event checkpoint ignored; counting starts afresh");
            None
        }),
        None => None,
    };
    let writer = pod_name();
    let sources = events::Checkpoints {
        every: store.is_some().then_some(config.checkpoint_interval.0),
        restored: match shared {
            Some(_) => Vec::new(),
            None => resume_points(restored.as_ref()),
        },
        acks: acks.clone(),
    };
    let term_store = match &store {
        Some(Store::ConfigMap(c)) => Some((**c).clone()),
        _ => None,
    };
    let persist = store.map(|store| Persist {
        store,
        keys,
        restored: restored.filter(|f| shared.is_none() || f.writer == writer),
        writer,
        acks,
    });
    Checkpoints {
        sources,
        term_store,
        persist,
    }
}

/// Where each Event watch of a checkpoint resumes.
pub(super) fn resume_points(file: Option<&EventsFile>) -> Vec<Arc<crate::checkpoint::EventWatch>> {
    file.iter()
        .flat_map(|f| f.watches.iter().map(|w| w.watch.clone()))
        .collect()
}

/// The sinks: the queues the pipeline fans out to, and the tasks that drain them.
struct Sinks {
    queues: Vec<SinkQueue>,
    /// Each sink's task with its ring (to name it when it is still draining at the deadline).
    tasks: Vec<(Task, Arc<Ring<Shared>>)>,
}

impl Sinks {
    /// Add one sink: `queue` goes to the pipeline, `run` drains its ring on a supervised task.
    fn add<F>(
        &mut self,
        sup: &Supervisor,
        queue: SinkQueue,
        run: impl FnOnce(Arc<Ring<Shared>>) -> F,
    ) where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let ring = queue.ring.clone();
        let task = sup.spawn(
            format!("sink {}", queue.name),
            Need::Essential,
            run(ring.clone()),
        );
        self.tasks.push((task, ring));
        self.queues.push(queue);
    }

    /// A task that records `EventsDropped` when a sink queue starts dropping.
    fn drop_reports(&self, core: &Core) -> Task {
        core.sup.watch(
            "drop reports",
            Need::Auxiliary,
            self_events::watch_drops(
                self.queues.iter().map(|q| q.ring.clone()).collect(),
                core.self_events.clone(),
                core.health.clone(),
                std::time::Duration::from_secs(1),
            ),
        )
    }
}

/// The sinks' settings that do not come from the configuration file.
pub(super) struct Outputs {
    /// The OTLP sink's settings, resolved with the environment; `None`: sink off.
    pub otlp: Option<otlp::Settings>,
    /// herald's own diagnostics for OTLP, forwarded when the OTLP sink is configured.
    pub diagnostics: Option<otlp::diagnostics::DiagnosticsQueue>,
}

/// Records from the sources to the sinks, running: the ingest ring, the pipeline and the sinks.
pub(super) struct DataPath {
    pub ingest: Arc<Ring<Shared>>,
    pub pipeline: Task,
    pub sinks: Vec<(Task, Arc<Ring<Shared>>)>,
    /// Records `EventsDropped` when a sink queue starts dropping.
    pub drop_reports: Task,
}

/// Start the sinks, then the pipeline that feeds them from the ingest ring; configuration reloads reach
/// both through `reload`.
pub(super) fn data_path(
    core: &Core,
    config: &Config,
    outputs: Outputs,
    reload: tokio::sync::watch::Receiver<Arc<Config>>,
    persist: Option<Persist>,
) -> Result<DataPath, Error> {
    let ingest = ingest(config, &core.telemetry);
    let sinks = sinks(core, config, outputs, &reload, persist)?;
    let drop_reports = sinks.drop_reports(core);
    let pipeline = Pipeline::new(config, sinks.queues, &core.telemetry)?.with_reload(reload);
    let pipeline = pipeline.run(ingest.clone(), core.health.clone());
    Ok(DataPath {
        pipeline: core.sup.spawn("pipeline", Need::Essential, pipeline),
        ingest,
        sinks: sinks.tasks,
        drop_reports,
    })
}

/// Every configured sink, each on its own queue and task, in a fixed order (metrics, JSON, OTLP, webhooks, Kafka).
/// A new kind of sink is one more block: its queue, its sink, `sinks.add`.
fn sinks(
    core: &Core,
    config: &Config,
    outputs: Outputs,
    reload: &tokio::sync::watch::Receiver<Arc<Config>>,
    persist: Option<Persist>,
) -> Result<Sinks, Error> {
    let Outputs { otlp, diagnostics } = outputs;
    let (sup, t) = (&core.sup, &core.telemetry);
    let mut sinks = Sinks {
        queues: Vec::new(),
        tasks: Vec::new(),
    };
    let metrics = &config.sinks.metrics;
    if metrics.enabled {
        let queue = SinkQueue::new("metrics", metrics.queue_capacity, true, t)
            .taking_checkpoints()
            .lossless()
            .without_messages();
        let mut sink = MetricsSink::new(t.clone(), config.metrics.max_series_per_metric);
        if let Some(persist) = persist {
            sink = sink.with_checkpoints(persist);
        }
        sinks.add(sup, queue, |ring| sink.run(ring));
    }
    let json = &config.sinks.json;
    if json.enabled {
        let queue = SinkQueue::new("json", json.queue_capacity, false, t);
        let out = tokio::io::stdout();
        let sink = JsonSink::new(out, core.identity.clone(), t, core.health.sink("json"));
        sinks.add(sup, queue, |ring| sink.run(ring));
    }
    if let Some(mut settings) = otlp {
        settings.identity = core.identity.clone();
        if let Some(queue) = diagnostics {
            let run = queue.run(settings.clone(), t.clone());
            sup.spawn("diagnostics", Need::Auxiliary, run);
        }
        let queue = SinkQueue::new("otlp", settings.queue_capacity, false, t);
        let sink = OtlpSink::new(settings, t, core.health.sink("otlp"))?;
        sinks.add(sup, queue, |ring| sink.run(ring));
    }
    for (i, settings) in config.sinks.webhooks.iter().enumerate() {
        let name = webhook::sink_name(i);
        let queue = SinkQueue::new(name, settings.queue_capacity, false, t);
        let id = core.identity.clone();
        let sink = WebhookSink::new(i, name, settings.clone(), id, t, core.health.sink(name))?
            .with_reload(reload.clone());
        sinks.add(sup, queue, |ring| sink.run(ring));
    }
    let kafka = &config.sinks.kafka;
    if kafka.enabled() {
        let queue = SinkQueue::new(kafka::NAME, kafka.queue_capacity, false, t);
        let id = core.identity.clone();
        let sink = KafkaSink::new(kafka.clone(), id, t, core.health.sink(kafka::NAME))?;
        sinks.add(sup, queue, |ring| sink.run(ring));
    }
    Ok(sinks)
}

/// This agent's pod name (downward API `POD_NAME`), else the host name, else empty.
pub(super) fn pod_name() -> String {
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
