//! The `herald` binary: flags, configuration, logging, signals. Everything else lives in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use herald::agent::Agent;
use herald::config::{self, Config, ConfigError, LogFormat};
use tokio_util::sync::CancellationToken;

/// A lean Kubernetes-aware observability agent: Kubernetes Events and KubeVirt VM lifecycles to Prometheus
/// metrics (/metrics), OTLP logs and spans, JSON lines and webhooks.
/// The closing lines of `herald --help`; `demo` only where this build has it.
#[cfg(feature = "demo")]
const MAIN_HELP: &str = "Flags before a subcommand apply to `run` and `demo` (`herald --listen 127.0.0.1:0 demo`).\n\
                         Configuration reference: `herald config default` prints every key with its default and comment.";
#[cfg(not(feature = "demo"))]
const MAIN_HELP: &str = "Flags before a subcommand apply to `run` (`herald --listen 127.0.0.1:0 run`).\n\
                         Configuration reference: `herald config default` prints every key with its default and comment.";

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about,
    after_help = MAIN_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
// Parsed once at start-up; boxing `run`'s flags would only make clap's derive harder to read.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Watch the cluster of the kubeconfig (or the in-cluster service account). The default command.
    #[command(after_help = SINKS_HELP)]
    Run(RunArgs),
    /// Start the built-in simulated cluster and the agent against it, so herald runs anywhere: a guided tour
    /// that prints where to look next.
    #[cfg(feature = "demo")]
    #[command(after_help = SINKS_HELP)]
    Demo(DemoArgs),
    /// Serve the protocol-faithful local Kubernetes API server on its own (kubectl works against it); the same
    /// as the `herald-sim` program.
    #[cfg(feature = "demo")]
    Sim(herald_sim::SimArgs),
    /// Print or check configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the full default configuration, with comments.
    Default,
    /// Validate a configuration file; exit status 2 and `key: reason` when it is invalid.
    Check {
        /// The YAML configuration file to check (the same file `--config` takes).
        file: PathBuf,
    },
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
    /// Write one JSON line per Event on stdout: true or false [config: sinks.json.enabled; `herald demo`:
    /// false unless set].
    #[arg(long, env = "HERALD_JSON_SINK")]
    json_sink: Option<bool>,
}

/// Where the other outputs are configured, for the help of `run` and `demo`.
const SINKS_HELP: &str = "Outputs: /metrics is always on; JSON lines on stdout (sinks.json, --json-sink); OTLP logs and \
spans to an OpenTelemetry collector when an endpoint is set (sinks.otlp.endpoint, or the standard \
OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_PROTOCOL / OTEL_EXPORTER_OTLP_HEADERS variables); webhooks \
(sinks.webhooks). Every configuration key: `herald config default`.";

impl RunArgs {
    /// Each flag given after the subcommand, else the one given before it.
    fn or(self, outer: RunArgs) -> RunArgs {
        RunArgs {
            config: self.config.or(outer.config),
            listen: self.listen.or(outer.listen),
            kubeconfig: self.kubeconfig.or(outer.kubeconfig),
            state_dir: self.state_dir.or(outer.state_dir),
            mode: self.mode.or(outer.mode),
            events_api: self.events_api.or(outer.events_api),
            scope: self.scope.or(outer.scope),
            namespaces: self.namespaces.or(outer.namespaces),
            startup: self.startup.or(outer.startup),
            log_level: self.log_level.or(outer.log_level),
            log_format: self.log_format.or(outer.log_format),
            json_sink: self.json_sink.or(outer.json_sink),
        }
    }
}

/// Without the `demo` feature there is no demo: `run` is only ever called without one.
#[cfg(not(feature = "demo"))]
#[derive(Clone)]
enum DemoArgs {}

#[cfg(feature = "demo")]
#[derive(Args, Clone)]
struct DemoArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Address of the simulated API server.
    #[arg(long, default_value = "127.0.0.1:0")]
    sim_listen: std::net::SocketAddr,
    /// Simulated Events per second (max: as fast as herald takes them).
    #[arg(long, default_value = "20", value_parser = herald_sim::parse_rate)]
    rate: f64,
    /// Seed of the simulated scenario.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Send OTLP to a built-in receiver that prints every log record and span on stdout, one line each (what a
    /// collector would receive), instead of to OTEL_EXPORTER_OTLP_ENDPOINT.
    #[arg(long)]
    otlp_console: bool,
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // Flags before a subcommand belong to `run` and `demo`; anywhere else they would be silently ignored.
    let run_flags = RunArgs::augment_args(clap::Command::new("run"));
    let outer_flags: Vec<String> = run_flags
        .get_arguments()
        .filter(|a| matches.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    let takes_run_flags = match &cli.command {
        None | Some(Command::Run(_)) => true,
        #[cfg(feature = "demo")]
        Some(Command::Demo(_)) => true,
        _ => false,
    };
    if !outer_flags.is_empty() && !takes_run_flags {
        eprintln!(
            "herald: flags before the subcommand ({}) apply only to `herald run` and `herald demo`; give \
             the subcommand's own flags after its name (see `herald help`)",
            outer_flags.join(", ")
        );
        return ExitCode::from(2);
    }
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
        #[cfg(feature = "demo")]
        Some(Command::Sim(args)) => {
            init_logging("info", LogFormat::Text, false);
            runtime_then(|| async {
                herald_sim::run(args).await?;
                Ok(())
            })
        }
        Some(Command::Run(args)) => run(args.or(cli.run), None),
        #[cfg(feature = "demo")]
        Some(Command::Demo(mut demo)) => {
            demo.run = demo.run.or(cli.run);
            run(demo.run.clone(), Some(demo))
        }
        None => run(cli.run, None),
    }
}

/// Where `herald demo` serves /metrics unless `--listen` says otherwise; a free port when it is taken.
const DEMO_LISTEN: &str = "127.0.0.1:9477";

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
        config::set_key(&mut value, "listen", DEMO_LISTEN.into())?;
    }
    // The demo's console is for the tour (banner, next steps, a summary line); JSON lines on request.
    if demo && args.json_sink.is_none() && args.config.is_none() {
        config::set_key(&mut value, "sinks.json.enabled", false.into())?;
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
    #[cfg_attr(not(feature = "demo"), allow(unused_mut))]
    let mut config = match load_config(&args, demo.is_some()) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    // `demo --otlp-console`: the OTLP sink sends to the simulator's console receiver on a free port.
    #[cfg(feature = "demo")]
    let console = match demo.as_ref().filter(|d| d.otlp_console) {
        Some(_) => match std::net::TcpListener::bind("127.0.0.1:0") {
            Ok(l) => {
                if let Ok(addr) = l.local_addr() {
                    config.sinks.otlp.endpoint = Some(format!("http://{addr}"));
                    config.sinks.otlp.protocol = Some(config::OtlpProtocol::HttpProtobuf);
                    config.sinks.otlp.batch_interval =
                        config::Duration(std::time::Duration::from_millis(200));
                }
                Some(l)
            }
            Err(e) => {
                eprintln!("herald demo: cannot listen for the OTLP console: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
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
        let listener = match herald::server::bind(config.listen, &config.listen_tls, &config.server)
            .await
        {
            Ok(l) => l,
            // The demo is a first contact: a second one on the machine takes a free port instead of failing.
            Err(e) if demo.is_some() && args.listen.is_none() && e.is_address_in_use() => {
                eprintln!(
                    "herald demo: {DEMO_LISTEN} is in use; taking a free port (choose one with --listen)"
                );
                let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
                herald::server::bind(any, &config.listen_tls, &config.server).await?
            }
            Err(e) if e.is_address_in_use() => anyhow::bail!(
                "{e}: another program (another herald?) listens there; choose another address with --listen \
                 (or `listen:` in the configuration), e.g. --listen 127.0.0.1:0 for any free port"
            ),
            Err(e) => return Err(e.into()),
        };
        let shutdown = CancellationToken::new();
        spawn_signal_handler(shutdown.clone(), config.shutdown_timeout.0);
        #[cfg(feature = "demo")]
        if let Some(console) = console {
            console.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(console)?;
            herald_sim::otlp_console::serve(listener, |line| println!("{line}"), shutdown.clone())
                .await?;
        }
        log_outputs(&config, otlp.as_ref(), &listener)?;
        #[cfg(feature = "demo")]
        let mut running_sim = None;
        let (client, own_namespace) = match demo {
            #[cfg(feature = "demo")]
            Some(demo) => {
                let opts = herald_sim::SimOptions::demo(demo.seed, demo.rate);
                let sim = herald_sim::RunningSim::start(opts, demo.sim_listen).await?;
                let client = kube::Client::try_from(kube::Config::new(sim.url().parse()?))?;
                let metrics = format!("{}://{}", listener.scheme(), listener.local_addr()?);
                print_demo_tour(
                    &sim,
                    &demo,
                    &metrics,
                    otlp.is_some(),
                    config.sinks.json.enabled,
                )?;
                if listener.scheme() == "http" {
                    tokio::spawn(demo_summary(listener.local_addr()?, shutdown.clone()));
                }
                running_sim = Some(sim);
                (client, "default".to_string())
            }
            #[cfg(not(feature = "demo"))]
            Some(never) => match never {},
            None => {
                let kube_config = kube_config(args.kubeconfig.as_deref()).await?;
                let own = own_namespace(&kube_config.default_namespace);
                // Shown as sink URLs are: a kubeconfig's server URL may carry credentials too.
                let shown = herald::sink::url::shown(&kube_config.cluster_url.to_string());
                tracing::info!(api_server = %shown, "connecting");
                (kube::Client::try_from(kube_config)?, own)
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
        #[cfg(feature = "demo")]
        if let Some(sim) = running_sim {
            sim.shutdown().await;
        }
        Ok(())
    })
}

/// One start-up line per output, with its destination, so an operator sees at once what herald will send where.
fn log_outputs(
    config: &Config,
    otlp: Option<&herald::sink::otlp::Settings>,
    listener: &herald::server::Listener,
) -> anyhow::Result<()> {
    tracing::info!(
        url = %format!("{}://{}/metrics", listener.scheme(), listener.local_addr()?),
        "output metrics: Prometheus scrape endpoint (probes at /healthz and /readyz)"
    );
    if config.sinks.json.enabled {
        tracing::info!("output json: one JSON line per record on stdout");
    }
    match otlp {
        Some(s) => tracing::info!(
            endpoint = %without_secrets(&s.endpoint),
            protocol = ?s.protocol,
            "output otlp: logs and spans to an OpenTelemetry collector"
        ),
        None => tracing::info!(
            "output otlp: off (set sinks.otlp.endpoint or OTEL_EXPORTER_OTLP_ENDPOINT to send logs and spans)"
        ),
    }
    for (i, w) in config.sinks.webhooks.iter().enumerate() {
        tracing::info!(index = i, url = %without_secrets(&w.url), "output webhook: JSON batches");
    }
    Ok(())
}

/// A URL fit for a log line: no `user:password@`, no query string (where tokens and API keys travel).
fn without_secrets(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if scheme.is_empty() {
        format!("{host}{path}")
    } else {
        format!("{scheme}://{host}{path}")
    }
}

/// The demo's banner: what runs where, and the next things to try, with real addresses.
#[cfg(feature = "demo")]
fn print_demo_tour(
    sim: &herald_sim::RunningSim,
    demo: &DemoArgs,
    metrics: &str,
    otlp: bool,
    json: bool,
) -> anyhow::Result<()> {
    let kubeconfig =
        std::env::temp_dir().join(format!("herald-demo-{}.kubeconfig", std::process::id()));
    std::fs::write(&kubeconfig, sim.kubeconfig_yaml())
        .with_context(|| format!("cannot write {}", kubeconfig.display()))?;
    let rate = if demo.rate.is_infinite() {
        "as many Events per second as herald takes".to_string()
    } else {
        format!("{} Events/s", demo.rate)
    };
    let kc = kubeconfig.display();
    let otlp_line = if demo.otlp_console {
        "OTLP logs and spans: printed on stdout by the built-in console, one line each (`otlp log`, `otlp span`)"
    } else if otlp {
        "OTLP logs and spans go to the endpoint of OTEL_EXPORTER_OTLP_ENDPOINT / sinks.otlp"
    } else {
        "see the OTLP logs and spans herald sends: `herald demo --otlp-console` prints them on stdout; or\n    \
         OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 herald demo sends them to your collector"
    };
    let json_line = if json {
        "JSON lines: on, on stdout"
    } else {
        "JSON lines: off in the demo; turn them on with `herald demo --json-sink true`"
    };
    eprintln!(
        "herald demo: a simulated cluster ({rate}, with KubeVirt VMs) and herald watching it.\n\
         \n  metrics      {metrics}/metrics   (health: {metrics}/healthz, {metrics}/readyz)\n  \
         API server   {api}   (kubeconfig: {kc})\n\
         \nNext steps:\n  \
         curl -s {metrics}/metrics | grep -E '^herald_(event_occurrences|vm_transitions)_total'\n  \
         kubectl --kubeconfig {kc} get events -A\n  \
         kubectl --kubeconfig {kc} get vm,vmi,vmim -A\n  \
         {otlp_line}\n  \
         {json_line}\n\
         \nA summary line follows every 10 s; Ctrl-C stops.\n",
        api = sim.url(),
    );
    Ok(())
}

/// Every 10 s, one line on stderr from herald's own /metrics: what arrived, what was counted, what was lost.
#[cfg(feature = "demo")]
async fn demo_summary(addr: std::net::SocketAddr, shutdown: CancellationToken) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);
    let mut last_records = 0.0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
        let Some(text) = scrape(addr).await else {
            continue;
        };
        let sum = |name: &str| -> f64 {
            text.lines()
                .filter(|l| {
                    l.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let records = sum("herald_pipeline_received_total");
        eprintln!(
            "herald demo: {:.1} records/s; in total {} Events, {} occurrences, {} VM transitions, {} dropped",
            (records - last_records) / EVERY.as_secs_f64(),
            sum("herald_events_total"),
            sum("herald_event_occurrences_total"),
            sum("herald_vm_transitions_total"),
            sum("herald_queue_dropped_total"),
        );
        last_records = records;
    }
}

/// herald's own /metrics over plain HTTP/1.0 (the demo's summary reads what a scrape would).
#[cfg(feature = "demo")]
async fn scrape(addr: std::net::SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: herald\r\n\r\n")
        .await
        .ok()?;
    let mut body = Vec::new();
    conn.take(64 << 20).read_to_end(&mut body).await.ok()?;
    let text = String::from_utf8(body).ok()?;
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
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
    // One thread runs every task; blocking work (the /metrics rendering, checkpoint writes, stdout) goes to
    // tokio's blocking pool. Why not two workers: a watch delivers one line per HTTP chunk, hyper
    // hands each chunk from its connection task to the source task, and the source hands each record to
    // the pipeline task. With two workers nearly every hand-off woke the other worker (an eventfd write,
    // epoll, a context switch: 1.25 context switches per Event in a 200k watch burst, the largest share of
    // the agent's CPU there); on one thread a hand-off is a push on the local run queue. In the agent
    // harness two workers used 62-87 % of a core (medians), and one thread is faster on the list and the
    // watch burst alike. BENCHMARKS.md, "Wake-ups on the watch path".
    //
    // While a watch trickles, the thread wakes at most once per `wakes::INTERVAL` (see `herald::wakes`).
    let built = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(herald::wakes::park)
        .on_thread_unpark(herald::wakes::unpark)
        .build();
    let runtime = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(f());
    // A task blocked in a blocking write (stdout that nobody reads) would hold a plain drop forever, with the
    // signal handler already gone; give the runtime a moment and leave the rest to the process exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
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

/// Past the shutdown deadline, how long the agent may take to stop its server and return before the process
/// exits anyway.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// First SIGTERM/SIGINT: graceful shutdown, which must end within `deadline` (plus [`SHUTDOWN_GRACE`]) whatever
/// a sink or source does, else the process exits with status 1. Second signal: exit at once (128 + signal).
fn spawn_signal_handler(shutdown: CancellationToken, deadline: std::time::Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => (term, int),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM and SIGINT");
                return;
            }
        };
        let mut next = async || -> (i32, &'static str) {
            tokio::select! {
                _ = term.recv() => (15, "SIGTERM"),
                _ = int.recv() => (2, "SIGINT"),
            }
        };
        next().await;
        shutdown.cancel();
        tokio::select! {
            (number, name) = next() => {
                eprintln!("herald: second signal ({name}), exiting now");
                std::process::exit(128 + number);
            }
            _ = tokio::time::sleep(deadline + SHUTDOWN_GRACE) => {
                eprintln!(
                    "herald: shutdown still not done {}s past its deadline, exiting now",
                    SHUTDOWN_GRACE.as_secs()
                );
                std::process::exit(1);
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
    // The Kafka client warns at each connection attempt of its own retries; the Kafka sink reports an
    // outage once and its recovery, so the client's lines show from error up unless a filter names it.
    let asked = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string());
    let filter = match "rskafka=error".parse() {
        Ok(quiet) if !asked.contains("rskafka") => filter.add_directive(quiet),
        _ => filter,
    };
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
