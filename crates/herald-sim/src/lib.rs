//! A protocol-faithful local Kubernetes API server for Events: what `herald demo`, the tests and the
//! benchmarks run against, through the normal kube client, exactly as herald reaches a real cluster.
//!
//! It speaks discovery, list (limit/continue, resourceVersion, selectors, Tables with the API server's and
//! KubeVirt's columns for kubectl), chunked watch streams (bookmarks, timeoutSeconds, 410 Gone for versions
//! older than its history window) and writes validated against its OpenAPI v3 document, for core/v1 and
//! events.k8s.io/v1 Events, which are two views of one store as on a real API server, and for KubeVirt's VMs,
//! VMIs and migrations. It loads real objects and replays captured watch streams line by line. It keeps
//! the ground truth of every occurrence it created (`GET /sim/truth`) and injects faults on demand
//! (`--faults`, `PUT /sim/faults`). It must never be needed by the agent: herald's data path knows nothing of it,
//! and only `herald demo` and `herald sim` (the agent's optional feature `demo`) and the tests link it.

// A harness, not the agent: a broken invariant here fails a test or a measurement, loudly, which is what a panic does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod convert;
pub mod faults;
pub mod http;
pub mod load;
pub mod objects;
pub mod openapi;
pub mod otlp_console;
pub mod otlp_receiver;
pub mod scenario;
pub mod select;
pub mod serve;
pub mod store;
pub mod table;
pub mod vm_scenario;

pub use faults::FaultSpec;
pub use scenario::ScenarioOptions;
pub use store::{Truth, TruthRow};

/// Errors starting or running the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Faults(#[from] faults::FaultSpecError),
    #[error(transparent)]
    Load(#[from] load::LoadError),
    #[error("cannot write the kubeconfig to {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `herald sim` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to serve the API on.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub listen: SocketAddr,
    /// Seed of the generated scenario.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Generated operations per second (0: no generator; max: as fast as the watchers take them).
    #[arg(long, default_value = "20", value_parser = parse_rate)]
    pub rate: f64,
    /// How many namespaces the generator spreads Events over (`herald run --namespaces` is a list of names).
    #[arg(long = "namespace-count", default_value_t = 5)]
    pub namespaces: usize,
    /// Stop generating after this many operations.
    #[arg(long)]
    pub max_events: Option<u64>,
    /// Percentage (0 to 30) of generated operations that delete a random live Event (the rest create or raise counts).
    #[arg(long, default_value_t = 5)]
    pub delete_percent: u32,
    /// Generated Events are deleted this long after their last write, like the API server's --event-ttl.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub event_ttl: Duration,
    /// Create this many Events at once when the generator starts, before --start-after (live objects).
    #[arg(long, default_value_t = 0)]
    pub preload: u64,
    /// Wait this long before the first generated operation or replayed line (e.g. 10s).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub start_after: Duration,
    /// Faults, e.g. disconnect-every=100,gone-every=500,error-rate=0.05,error-status=429,retry-after=1,slow=10ms,stall-after=200,garbage-every=50.
    /// Counts of injected faults are in /sim/truth; change them live with PUT /sim/faults.
    #[arg(long, default_value = "")]
    pub faults: String,
    /// Load objects from a YAML or JSON file (one object, a List as `kubectl get -o yaml` prints it, or several
    /// documents): Events of both APIs and KubeVirt's VMs, VMIs and migrations; another kind is refused by
    /// name. Repeatable.
    #[arg(long)]
    pub load: Vec<PathBuf>,
    /// Replay a captured NDJSON watch stream (`kubectl get --raw '/api/v1/events?watch=1'`) at --rate, line by
    /// line: ADDED/MODIFIED/DELETED are written, BOOKMARK and ERROR lines go to the open watches as captured
    /// (an ERROR ends them; 410 also expires older resourceVersions). Lines it cannot use are reported once,
    /// with their line number. Nothing is generated while replaying. Repeatable.
    #[arg(long)]
    pub replay: Vec<PathBuf>,
    /// Changes kept for watches from an older resourceVersion; older ones get 410 Gone.
    #[arg(long, default_value_t = 10_000)]
    pub history: usize,
    /// Interval of BOOKMARK events on watches that allow them.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub bookmark_interval: Duration,
    /// Also write a kubeconfig for this simulator to this file.
    #[arg(long)]
    pub write_kubeconfig: Option<PathBuf>,
    /// Do not serve the KubeVirt API (a cluster without KubeVirt).
    #[arg(long)]
    pub no_kubevirt: bool,
    /// VM lifecycle writes per second (0: no VM scenario).
    #[arg(long, default_value_t = 2.0)]
    pub vm_rate: f64,
}

/// Everything the simulator runs with.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub seed: u64,
    pub scenario: Option<ScenarioOptions>,
    pub faults: FaultSpec,
    pub load: Vec<PathBuf>,
    pub replay: Vec<PathBuf>,
    /// Rate of `replay` steps per second.
    pub replay_rate: f64,
    /// Wait this long before the first replayed line (so an agent can list and watch first).
    pub replay_start_after: Duration,
    pub history: usize,
    pub bookmark_interval: Duration,
    /// Serve the KubeVirt API (`kubevirt.io/v1`); off: the cluster has no KubeVirt.
    pub kubevirt: bool,
    /// Generate VM lifecycles (implies `kubevirt`).
    pub vm_scenario: Option<vm_scenario::VmScenarioOptions>,
}

impl SimOptions {
    /// No generated traffic: tests write what they need.
    pub fn quiet() -> SimOptions {
        SimOptions {
            seed: 1,
            scenario: None,
            faults: FaultSpec::default(),
            load: Vec::new(),
            replay: Vec::new(),
            replay_rate: 20.0,
            replay_start_after: Duration::ZERO,
            history: 10_000,
            bookmark_interval: Duration::from_secs(10),
            kubevirt: false,
            vm_scenario: None,
        }
    }

    /// What `herald demo` runs: the generator at `rate` per second.
    pub fn demo(seed: u64, rate: f64) -> SimOptions {
        SimOptions {
            seed,
            scenario: Some(ScenarioOptions {
                rate,
                ..ScenarioOptions::default()
            }),
            kubevirt: true,
            vm_scenario: Some(vm_scenario::VmScenarioOptions::default()),
            ..SimOptions::quiet()
        }
    }
}

impl TryFrom<&SimArgs> for SimOptions {
    type Error = Error;
    fn try_from(a: &SimArgs) -> Result<SimOptions, Error> {
        Ok(SimOptions {
            seed: a.seed,
            scenario: (a.rate > 0.0 && a.replay.is_empty()).then(|| ScenarioOptions {
                rate: a.rate,
                namespaces: a.namespaces,
                max_events: a.max_events,
                start_after: a.start_after,
                delete_percent: a.delete_percent.min(100),
                ttl: a.event_ttl,
                preload: a.preload,
            }),
            faults: a.faults.parse()?,
            load: a.load.clone(),
            replay: a.replay.clone(),
            replay_rate: if a.rate > 0.0 && a.rate.is_finite() {
                a.rate
            } else {
                20.0
            },
            replay_start_after: a.start_after,
            history: a.history,
            bookmark_interval: a.bookmark_interval,
            kubevirt: !a.no_kubevirt,
            // A replay is the captured cluster alone: no generated Events or VMs mixed in.
            vm_scenario: (a.vm_rate > 0.0 && !a.no_kubevirt && a.replay.is_empty()).then(|| {
                vm_scenario::VmScenarioOptions {
                    rate: a.vm_rate,
                    start_after: a.start_after,
                    ..vm_scenario::VmScenarioOptions::default()
                }
            }),
        })
    }
}

/// A rate in operations per second, or `max`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    if s == "max" {
        return Ok(f64::INFINITY);
    }
    match s.parse::<f64>() {
        Ok(r) if r >= 0.0 && r.is_finite() => Ok(r),
        _ => Err(format!(
            "expected operations per second or \"max\", got {s:?}"
        )),
    }
}

/// A simulator serving in the background of the current tokio runtime.
pub struct RunningSim {
    addr: SocketAddr,
    shared: Arc<http::Shared>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningSim {
    /// Bind `listen` (port 0 picks one), load files, start the generator or replay, and serve.
    pub async fn start(opts: SimOptions, listen: SocketAddr) -> Result<RunningSim, Error> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| Error::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
        let store = Arc::new(store::Store::new(opts.history));
        load::load_files(&store, &opts.load)?;
        let mut replays = Vec::new();
        for path in &opts.replay {
            replays.extend(load::read_stream(path)?);
        }
        let vm_stores = http::VmKind::ALL.map(|k| {
            Arc::new(store::Store::of_kind(
                "kubevirt.io/v1",
                k.kind(),
                opts.history,
            ))
        });
        let vm_truth = Arc::new(Mutex::new(vm_scenario::VmTruth::default()));
        load::load_vm_files(&vm_stores, &opts.load)?;
        let shared = Arc::new(http::Shared {
            leases: objects::Objects::new(objects::LEASE),
            config_maps: objects::Objects::new(objects::CONFIG_MAP),
            vm_stores: vm_stores.clone(),
            kubevirt: opts.kubevirt || opts.vm_scenario.is_some(),
            vm_truth: vm_truth.clone(),
            store: store.clone(),
            faults: Mutex::new(opts.faults.clone()),
            injected: faults::FaultCounts::default(),
            bookmark_interval: opts.bookmark_interval,
            rng: Mutex::new(fastrand::Rng::with_seed(opts.seed ^ 0x5eed)),
        });
        let stop = CancellationToken::new();
        let mut tasks = vec![tokio::spawn(serve(listener, shared.clone(), stop.clone()))];
        if let Some(scenario) = opts.scenario.clone() {
            let s = scenario::Scenario::new(opts.seed, scenario);
            tasks.push(tokio::spawn(s.run(store.clone(), stop.clone())));
        }
        if let Some(vm) = opts.vm_scenario.clone() {
            let s = vm_scenario::VmScenario::new(opts.seed, vm, vm_truth.clone());
            tasks.push(tokio::spawn(s.run(
                vm_stores.clone(),
                store.clone(),
                stop.clone(),
            )));
        }
        if !replays.is_empty() {
            tasks.push(tokio::spawn(load::replay(
                store.clone(),
                vm_stores.clone(),
                replays,
                opts.replay_rate,
                opts.replay_start_after,
                stop.clone(),
            )));
        }
        Ok(RunningSim {
            addr,
            shared,
            stop,
            tasks,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig (no credentials) pointing at this simulator.
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig_yaml(&self.url())
    }

    /// The ground truth, with the count of faults injected so far.
    pub fn truth(&self) -> Truth {
        self.shared.truth()
    }

    /// The store behind the API, for tests that write faster (or stranger objects) than a client could.
    pub fn store(&self) -> &Arc<store::Store> {
        &self.shared.store
    }

    /// The VM transitions and quota-exceeded Events the VM scenario has produced so far.
    pub fn vm_truth(&self) -> vm_scenario::VmTruth {
        self.shared
            .vm_truth
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_faults(&self, faults: FaultSpec) {
        *self.shared.faults.lock().unwrap_or_else(|p| p.into_inner()) = faults;
    }

    /// Stop serving and generating.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn serve(listener: TcpListener, shared: Arc<http::Shared>, stop: CancellationToken) {
    serve::http1(listener, stop, move |req| http::handle(req, shared.clone())).await;
}

/// A kubeconfig for a simulator (or any plain-HTTP API server) at `url`: no credentials, namespace `default`.
pub fn kubeconfig_yaml(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: herald-sim\n  cluster:\n    server: {url}\ncontexts:\n- name: herald-sim\n  context:\n    cluster: herald-sim\n    user: herald-sim\n    namespace: default\ncurrent-context: herald-sim\nusers:\n- name: herald-sim\n  user: {{}}\n"
    )
}

/// `herald sim`: serve until SIGINT/SIGTERM.
pub async fn run(args: SimArgs) -> Result<(), Error> {
    let opts = SimOptions::try_from(&args)?;
    let sim = RunningSim::start(opts, args.listen).await?;
    if let Some(path) = &args.write_kubeconfig {
        std::fs::write(path, sim.kubeconfig_yaml()).map_err(|source| Error::Kubeconfig {
            path: path.clone(),
            source,
        })?;
    }
    eprintln!(
        "herald sim: Kubernetes API at {url} (try: kubectl --server {url} get events -A); ground truth at {url}/sim/truth",
        url = sim.url()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    sim.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_are_numbers_or_max() {
        assert_eq!(super::parse_rate("250"), Ok(250.0));
        assert_eq!(super::parse_rate("max"), Ok(f64::INFINITY));
        assert!(super::parse_rate("-1").is_err());
        assert!(super::parse_rate("fast").is_err());
    }
}
