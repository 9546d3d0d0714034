//! The `herald` binary: flags, configuration, logging, signals. Everything else lives in the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use herald::agent::Agent;
use herald::config::{self, Config, ConfigError, LogFormat};
use tokio_util::sync::CancellationToken;

/// A lean Kubernetes-aware observability agent: Kubernetes Events to Prometheus metrics and JSON logs.
#[derive(Parser)]
#[command(name = "herald", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Watch the cluster of the kubeconfig (or the in-cluster service account). The default command.
    Run(RunArgs),
    /// Start the built-in simulated cluster and the agent against it, so herald runs anywhere.
    Demo(DemoArgs),
    /// Serve the protocol-faithful local Kubernetes API server on its own (kubectl works against it).
    Sim(herald::sim::SimArgs),
    /// Print or check configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Measure herald: the load harness (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Run the simulator and the agent as separate processes, stream Events, report throughput, CPU, memory,
    /// delays and drops.
    Load(herald::bench::LoadArgs),
    /// Run the simulator and the agent for a long time with watch faults; sample RSS, CPU, counters and the
    /// ground truth to a CSV and a PNG plot; report RSS flatness and whether every occurrence was counted once.
    Soak(herald::bench::SoakArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the full default configuration, with comments.
    Default,
    /// Validate a configuration file; exit status 2 and `key: reason` when it is invalid.
    Check { file: PathBuf },
}

/// Flags and variables that override the configuration file (flags win over variables, both over the file).
#[derive(Args, Clone, Default)]
struct RunArgs {
    /// YAML configuration file.
    #[arg(long, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    /// Address for /metrics, /healthz and /readyz [config: listen].
    #[arg(long, env = "HERALD_LISTEN")]
    listen: Option<String>,
    /// kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then the in-cluster service account).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Checkpoint directory [config: state_dir].
    #[arg(long, env = "HERALD_STATE_DIR")]
    state_dir: Option<String>,
    /// single, daemonset or sidecar [config: mode].
    #[arg(long, env = "HERALD_MODE")]
    mode: Option<String>,
    /// Events API: core/v1 or events.k8s.io/v1 [config: source.events.api].
    #[arg(long, env = "HERALD_EVENTS_API")]
    events_api: Option<String>,
    /// all, namespaces or own [config: source.events.scope].
    #[arg(long, env = "HERALD_SCOPE")]
    scope: Option<String>,
    /// Comma-separated namespaces for scope "namespaces" [config: source.events.namespaces].
    #[arg(long, env = "HERALD_NAMESPACES", value_delimiter = ',')]
    namespaces: Option<Vec<String>>,
    /// skip-existing or replay [config: source.events.startup].
    #[arg(long, env = "HERALD_STARTUP")]
    startup: Option<String>,
    /// Diagnostics filter, e.g. info or herald=debug [config: log.level].
    #[arg(long, env = "HERALD_LOG_LEVEL")]
    log_level: Option<String>,
    /// Diagnostics format: text or json [config: log.format].
    #[arg(long, env = "HERALD_LOG_FORMAT")]
    log_format: Option<String>,
    /// Write one JSON line per Event on stdout: true or false [config: sinks.json.enabled].
    #[arg(long, env = "HERALD_JSON_SINK")]
    json_sink: Option<bool>,
}

#[derive(Args, Clone)]
struct DemoArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Address of the simulated API server.
    #[arg(long, default_value = "127.0.0.1:0")]
    sim_listen: SocketAddr,
    /// Simulated Events per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Seed of the simulated scenario.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Config(ConfigCommand::Default)) => {
            print!("{}", config::DEFAULT_CONFIG_YAML);
            ExitCode::SUCCESS
        }
        Some(Command::Config(ConfigCommand::Check { file })) => {
            match Config::load(&file).and_then(|c| otlp_settings(&c)) {
                Ok(_) => {
                    println!("{}: ok", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => config_error(&e),
            }
        }
        Some(Command::Sim(args)) => {
            init_logging("info", LogFormat::Text, false);
            runtime_then(|| async {
                herald::sim::run(args).await?;
                Ok(())
            })
        }
        Some(Command::Bench(BenchCommand::Load(args))) => herald::bench::run_load(args),
        Some(Command::Bench(BenchCommand::Soak(args))) => herald::bench::run_soak(args),
        Some(Command::Run(args)) => run(args, None),
        Some(Command::Demo(demo)) => run(demo.run.clone(), Some(demo)),
        None => run(cli.run, None),
    }
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("herald: invalid configuration: {e}");
    ExitCode::from(2)
}

/// Configuration file, then variables and flags on top, checked as one.
fn load_config(args: &RunArgs, demo: bool) -> Result<Config, ConfigError> {
    let (mut value, origin) = match &args.config {
        Some(path) => {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                key: origin.clone(),
                reason: format!("cannot read: {e}"),
            })?;
            (config::yaml_value(&text, &origin)?, origin)
        }
        None => (serde_json::json!({}), "configuration".to_string()),
    };
    if demo && args.listen.is_none() {
        config::set_key(&mut value, "listen", "127.0.0.1:9477".into())?;
    }
    let s = |v: &Option<String>| v.clone().map(serde_json::Value::String);
    let overrides = [
        ("listen", s(&args.listen)),
        ("mode", s(&args.mode)),
        ("state_dir", s(&args.state_dir)),
        ("source.events.api", s(&args.events_api)),
        ("source.events.scope", s(&args.scope)),
        ("source.events.startup", s(&args.startup)),
        ("log.level", s(&args.log_level)),
        ("log.format", s(&args.log_format)),
        (
            "source.events.namespaces",
            args.namespaces
                .clone()
                .map(|n| n.into_iter().map(serde_json::Value::String).collect()),
        ),
        ("sinks.json.enabled", args.json_sink.map(Into::into)),
    ];
    for (key, v) in overrides {
        if let Some(v) = v {
            config::set_key(&mut value, key, v)?;
        }
    }
    Config::from_value(value, &origin)
}

/// The OTLP sink's settings: `sinks.otlp` with the `OTEL_EXPORTER_OTLP_*` variables.
fn otlp_settings(config: &Config) -> Result<Option<herald::sink::otlp::Settings>, ConfigError> {
    herald::sink::otlp::Settings::resolve(&config.sinks.otlp, |k| std::env::var(k).ok())
}

fn run(args: RunArgs, demo: Option<DemoArgs>) -> ExitCode {
    let config = match load_config(&args, demo.is_some()) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    let otlp = match otlp_settings(&config) {
        Ok(s) => s,
        Err(e) => return config_error(&e),
    };
    let diagnostics = init_logging(&config.log.level, config.log.format, config.log.otlp);
    if config.log.otlp && otlp.is_none() {
        tracing::warn!(
            "log.otlp is on but no OTLP endpoint is configured: diagnostics stay on stderr only"
        );
    }
    let reload = {
        let (args, demo) = (args.clone(), demo.is_some());
        herald::reload::ConfigSource {
            path: args.config.clone(),
            load: std::sync::Arc::new(move || {
                let c = load_config(&args, demo)?;
                otlp_settings(&c)?;
                Ok(c)
            }),
        }
    };
    runtime_then(|| async move {
        let listener = herald::server::bind(config.listen, &config.listen_tls).await?;
        let shutdown = CancellationToken::new();
        spawn_signal_handler(shutdown.clone());
        let (client, own_namespace, sim) = match demo {
            Some(demo) => {
                let opts = herald::sim::SimOptions::demo(demo.seed, demo.rate);
                let sim = herald::sim::RunningSim::start(opts, demo.sim_listen).await?;
                let client = kube::Client::try_from(kube::Config::new(sim.url().parse()?))?;
                eprintln!(
                    "herald demo: simulated API server at {} ({} Events/s); metrics at {}://{}/metrics, health at /healthz and /readyz",
                    sim.url(),
                    demo.rate,
                    listener.scheme(),
                    listener.local_addr()?
                );
                (client, "default".to_string(), Some(sim))
            }
            None => {
                let kube_config = kube_config(args.kubeconfig.as_deref()).await?;
                let own = own_namespace(&kube_config.default_namespace);
                // Shown as sink URLs are: a kubeconfig's server URL may carry credentials too.
                let shown = herald::sink::url::shown(&kube_config.cluster_url.to_string());
                tracing::info!(api_server = %shown, "connecting");
                (kube::Client::try_from(kube_config)?, own, None)
            }
        };
        let agent = Agent {
            config,
            client,
            own_namespace,
            listener,
            otlp,
            node_name: std::env::var("NODE_NAME").unwrap_or_default(),
            diagnostics,
            reload: Some(reload),
        };
        agent.run(shutdown).await?;
        if let Some(sim) = sim {
            sim.shutdown().await;
        }
        Ok(())
    })
}

async fn kube_config(path: Option<&Path>) -> anyhow::Result<kube::Config> {
    match path {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("invalid kubeconfig {}", path.display()))
        }
        None => kube::Config::infer()
            .await
            .context("no cluster found: set --kubeconfig or KUBECONFIG, or run in a pod (or try `herald demo`)"),
    }
}

/// `POD_NAMESPACE` (downward API), else the service account's namespace, else the kubeconfig's.
fn own_namespace(kubeconfig_default: &str) -> String {
    if let Ok(ns) = std::env::var("POD_NAMESPACE")
        && !ns.is_empty()
    {
        return ns;
    }
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| kubeconfig_default.to_string())
}

fn runtime_then<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(f()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes in one line, leaving out a cause the message above it already quotes (herald's
/// errors name their cause in their message and keep it as `source` too).
fn error_chain(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line = format!("{line}: {cause}");
        }
    }
    line
}

/// First SIGTERM/SIGINT: graceful shutdown. Second: exit at once.
fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        for n in 0.. {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            if n == 0 {
                shutdown.cancel();
            } else {
                eprintln!("herald: second signal, exiting now");
                std::process::exit(130);
            }
        }
    });
}

/// Diagnostics on stderr (filtered by `level` or `RUST_LOG`); with `otlp`, also herald's own events to the
/// returned queue, which the agent forwards to the collector.
fn init_logging(
    level: &str,
    format: LogFormat,
    otlp: bool,
) -> Option<herald::sink::otlp::diagnostics::DiagnosticsQueue> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let stderr = tracing_subscriber::fmt::layer();
    let stderr = match format {
        LogFormat::Json => stderr
            .with_writer(std::io::stderr)
            .json()
            .with_filter(filter)
            .boxed(),
        // Names and messages from the API server must not break a text line (forged log lines).
        LogFormat::Text => stderr
            .with_ansi(false)
            .with_writer(|| herald::telemetry::OneLine(std::io::stderr()))
            .with_filter(filter)
            .boxed(),
    };
    let (diagnostics, queue) = match otlp {
        true => {
            let (layer, queue) = herald::sink::otlp::diagnostics::layer(tracing::Level::INFO);
            (Some(layer), Some(queue))
        }
        false => (None, None),
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(diagnostics)
        .init();
    queue
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
