//! The agent: what it runs with ([`Agent`]) and its life, in order: wire the parts from the configuration
//! ([`wiring`]), start the sources the deployment mode calls for ([`modes`]), serve, wait for shutdown or
//! for a task herald cannot run without to die ([`crate::tasks`]), then stop in order within the deadline
//! ([`running`]).

mod modes;
mod running;
mod wiring;

use std::sync::Arc;

use kube::Client;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::pipeline;
use crate::sink::otlp;
use crate::sink::webhook;
use crate::source::events::SourceContext;
use crate::tasks::{Need, Task};
use running::Running;
use wiring::Core;

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
        let deadline = self.config.shutdown_timeout;
        let (core, running) = self.start().await?;
        let failed = tokio::select! {
            _ = shutdown.cancelled() => None,
            failed = core.sup.failed() => Some(failed),
        };
        tracing::info!(%deadline, "shutting down: stopping sources, draining queues");
        core.stop_sources.cancel();
        running.stop(deadline.0).await;
        match failed {
            Some(task) => Err(Error::TaskFailed(task)),
            None => Ok(()),
        }
    }

    /// Build and start everything: the sinks and the pipeline, the sources of the mode, the server.
    async fn start(self) -> Result<(Core, Running), Error> {
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
        let (core, self_events_task) = Core::new(&config, &client, node_name);
        let (config_tx, config_rx) = watch::channel(Arc::new(config.clone()));
        let config_hash = wiring::config_hash(&config, &core.telemetry);
        let leadership = modes::leadership(config.mode);
        let watches = modes::source_config(&config);
        let checkpoints = wiring::checkpoints(
            &config,
            &client,
            &own_namespace,
            &watches.events,
            leadership.as_ref(),
        )
        .await;
        let outputs = wiring::Outputs { otlp, diagnostics };
        let data = wiring::data_path(&core, &config, outputs, config_rx, checkpoints.persist)?;
        let sources = modes::Sources {
            config: &config,
            watches,
            own_namespace: &own_namespace,
            ctx: SourceContext {
                client,
                ingest: data.ingest.clone(),
                telemetry: core.telemetry.clone(),
                health: core.health.clone(),
                shutdown: core.stop_sources.clone(),
            },
            checkpoints: checkpoints.sources,
            term_store: checkpoints.term_store,
        };
        let (sources, started) = modes::start(&core, sources, leadership);
        let started = format!("herald {} started in {started}", env!("CARGO_PKG_VERSION"));
        core.self_events.normal("Started", "Start", started);

        let (server, stop_server, mut housekeeping) =
            serve(&core, &config, listener, reload, config_tx, &config_hash);
        housekeeping.extend(self_events_task);
        housekeeping.push(data.drop_reports);
        let running = Running {
            sources,
            ingest: data.ingest,
            pipeline: data.pipeline,
            sinks: data.sinks,
            server,
            stop_server,
            housekeeping,
        };
        Ok((core, running))
    }
}

/// The HTTP server (with the token that stops it), then the housekeeping: metric upkeep, and configuration
/// reloads when enabled.
fn serve(
    core: &Core,
    config: &Config,
    listener: crate::server::Listener,
    reload: Option<crate::reload::ConfigSource>,
    config_tx: watch::Sender<Arc<Config>>,
    config_hash: &str,
) -> (Task, CancellationToken, Vec<Task>) {
    let stop_server = CancellationToken::new();
    let server = crate::server::serve(
        listener,
        core.telemetry.clone(),
        core.health.clone(),
        stop_server.clone(),
    );
    let server = core.sup.spawn("server", Need::Essential, server);
    let mut housekeeping = vec![core.upkeep()];
    tracing::info!(version = env!("CARGO_PKG_VERSION"), %config_hash, "herald started");
    if let Some(source) = reload.filter(|_| config.reload.enabled) {
        let reload = crate::reload::run(
            source,
            config_tx,
            config.reload.poll_interval.0,
            core.self_events.clone(),
            core.telemetry.clone(),
            stop_server.clone(),
        );
        housekeeping.push(core.sup.spawn("reload", Need::Auxiliary, reload));
    }
    (server, stop_server, housekeeping)
}
