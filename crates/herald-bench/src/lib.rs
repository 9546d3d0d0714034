//! `herald-bench load`: the load harness. It runs the simulator (`herald-sim`) and the agent
//! (`herald run`) as two child processes on loopback (the programs built beside this one), the agent through its normal
//! kube client with a generated kubeconfig and configuration, its OTLP sink pointed at a small receiver in this
//! process. It streams generated Events, samples the agent's `/metrics` and `/proc/<pid>` while they flow, and
//! reports throughput, CPU per Event, memory, processing and OTLP arrival delays and drops.
//!
//! It is a measuring tool, not part of the agent: nothing in herald's data path knows it exists, and it never
//! judges the numbers (no thresholds); BENCHMARKS.md does that. `herald-bench soak` ([`soak`]) runs the same
//! two processes for a long time with faults and samples them; `herald-bench stream` ([`stream`]) runs the agent
//! against a recorded API server ([`recorded`]) instead of the simulator; the pieces they share live here.

// A harness, not the agent: a broken invariant here fails a test or a measurement, loudly, which is what a panic does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod otlp;
pub use herald_test_support::probe;
pub mod recorded;
mod soak;
mod stream;

pub use recorded::{ServerArgs, run_server};
pub use soak::{SoakArgs, run_soak};
pub use stream::{StreamArgs, run_stream};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use herald_test_support::process::{self, ChildGuard};
use serde::Serialize;

use probe::{Histogram, Proc, Scrape};

/// First resourceVersion of the simulator's store; every write adds one.
const SIM_FIRST_RV: u64 = 1000;
/// How often the agent is sampled while Events flow.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// A sink `--sinks` can turn on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkName {
    Metrics,
    Otlp,
    Json,
}

/// `herald-bench load` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Operations the simulator streams (~70% new Events, ~25% count increases, ~5% deletes); 0: an idle run.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Operations per second, or max (as fast as the agent takes them).
    #[arg(long, default_value = "max", value_parser = herald_sim::parse_rate)]
    pub rate: f64,
    /// Events alive in the API before the stream starts (listed by the agent at startup).
    #[arg(long, default_value_t = 0)]
    pub live_objects: u64,
    /// Sinks to turn on, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "metrics,otlp,json")]
    pub sinks: Vec<SinkName>,
    /// Print one machine-readable JSON summary line instead of the report.
    #[arg(long)]
    pub json: bool,
    /// How long an idle run (--events 0) measures.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub idle: Duration,
    /// Time between the simulator's preload and its first streamed operation; the agent must be ready by then
    /// (it lists and counts the live objects first). Default: 3s plus 1s per 10k live objects.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,
    /// Give up when the agent takes no Event for this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub stall_timeout: Duration,
    /// Seed of the simulated scenario.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// The result of one run: what `--json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub events: u64,
    /// Operations per second asked for; null for max.
    pub rate_target: Option<f64>,
    pub live_objects: u64,
    pub sinks: Vec<SinkName>,
    /// Watch notifications (ADDED, MODIFIED, DELETED) the agent took during the stream.
    pub watch_events: u64,
    /// Records that entered the agent's pipeline (notifications that carried new occurrences, plus the
    /// live objects' initial list).
    pub pipeline_records: u64,
    /// Occurrences the simulator created (its ground truth), live objects included.
    pub occurrences_expected: u64,
    /// Occurrences the agent counted (`herald_event_occurrences_total`); null without the metrics sink.
    pub occurrences_counted: Option<u64>,
    /// OTLP log records the agent sent and the receiver got, live objects included.
    pub otlp_sent: u64,
    pub otlp_received: u64,
    /// Every count matches: watch notifications = events, occurrences = truth, OTLP received = sent.
    pub counts_match: bool,
    /// Agent start to `/readyz` 200.
    pub ready_seconds: f64,
    /// From the sample before the first streamed Event to the one where the agent had taken them all
    /// (the idle time for an idle run).
    pub duration_seconds: f64,
    pub events_per_second: f64,
    /// Agent CPU (user + system) over the stream.
    pub cpu_seconds: f64,
    /// The simulator's CPU over the same time (it shares the machine: at `max` it can be the limit).
    pub sim_cpu_seconds: f64,
    pub cpu_seconds_per_100k_events: Option<f64>,
    pub cpu_percent_of_core: f64,
    /// VmRSS when ready, before the stream.
    pub rss_ready_kib: u64,
    /// VmRSS after the stream, sinks drained.
    pub rss_end_kib: u64,
    /// VmHWM: the peak.
    pub rss_peak_kib: u64,
    /// Quantiles of `herald_processing_seconds` over the run, interpolated in its buckets.
    pub processing_p50_seconds: Option<f64>,
    pub processing_p99_seconds: Option<f64>,
    /// Event time (the simulator's microsecond `eventTime`, on new scheduler Events) to arrival at the
    /// harness's OTLP receiver.
    pub otlp_arrival_p50_seconds: Option<f64>,
    pub otlp_arrival_p99_seconds: Option<f64>,
    pub otlp_arrival_samples: usize,
    /// `herald_queue_dropped_total`, all queues.
    pub drops: u64,
    /// The same by queue (sink name), queues without drops left out.
    pub drops_by_queue: std::collections::BTreeMap<String, u64>,
    /// `herald_watch_restarts_total`: a relist during the run would blur the numbers.
    pub watch_restarts: u64,
}

/// `herald-bench load`: run, print, exit 0; on failure say why (and where the logs are) and exit 1.
pub fn run_load(args: LoadArgs) -> ExitCode {
    print_result(load(&args), args.json, report)
}

/// Print a summary (one JSON line with `json`, else the report) and exit 0; on failure say why and exit 1.
fn print_result<S: Serialize>(
    result: anyhow::Result<S>,
    json: bool,
    report: impl Fn(&S) -> String,
) -> ExitCode {
    match result {
        Ok(summary) => {
            if json {
                match serde_json::to_string(&summary) {
                    Ok(line) => println!("{line}"),
                    Err(e) => {
                        eprintln!("herald-bench: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report(&summary));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("herald-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A scratch directory removed when dropped, unless the run failed (its logs explain why).
struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn load(args: &LoadArgs) -> anyhow::Result<Summary> {
    in_scratch(|dir| {
        let exe = Programs::find()?;
        measure(args, &exe, dir)
    })
}

/// Run `f` in a new scratch directory, kept (and named on stderr) when `f` fails, so its logs explain why.
fn in_scratch<T>(f: impl FnOnce(&Path) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut scratch = Scratch {
        path: std::env::temp_dir().join(format!("herald-bench-{}-{nanos}", std::process::id())),
        keep: false,
    };
    std::fs::create_dir_all(&scratch.path)
        .with_context(|| format!("cannot create {}", scratch.path.display()))?;
    let result = f(&scratch.path);
    if result.is_err() {
        scratch.keep = true;
        eprintln!(
            "herald-bench: logs kept in {} (its .log files)",
            scratch.path.display()
        );
    }
    result
}

fn measure(args: &LoadArgs, exe: &Programs, dir: &Path) -> anyhow::Result<Summary> {
    let receiver = otlp::Receiver::start().context("cannot start the OTLP receiver")?;

    // The simulator: preload the live objects, wait `warmup`, stream `events` operations.
    let rate = if args.rate.is_finite() {
        args.rate.to_string()
    } else {
        "max".to_string()
    };
    let (sim, sim_addr) = start_sim(
        exe,
        dir,
        &[
            format!("--seed={}", args.seed),
            format!("--rate={}", if args.events == 0 { "max" } else { &rate }),
            format!("--max-events={}", args.events),
            format!("--preload={}", args.live_objects),
            format!("--start-after={}ms", warmup(args).as_millis()),
        ],
    )?;
    let sim_pid = sim.0.id();
    // Preloaded before the agent starts, so the agent's list sees all of them.
    let preloaded_rv = SIM_FIRST_RV + args.live_objects;
    process::wait_for(Duration::from_secs(600), "the simulator's preload", || {
        sim_truth(sim_addr).filter(|t| t.rv >= preloaded_rv)
    })?;

    let (mut agent, agent_addr, ready_seconds) =
        start_agent(exe, dir, &args.sinks, receiver.addr())?;
    let pid = agent.0.id();
    let first = sample(agent_addr, pid, sim_pid)?;
    let truth = sim_truth(sim_addr).context("cannot read the simulator's truth")?;
    if truth.rv != preloaded_rv {
        bail!(
            "the stream started {:.1}s after the agent did, before it was ready; raise --warmup",
            ready_seconds
        );
    }
    // Arrival delays of the stream only (replayed live objects carry their old event times).
    receiver.reset_delays();

    // The stream (or the idle time), sampled.
    let base = first.scrape.watch_ops();
    let (before, done) = if args.events == 0 {
        std::thread::sleep(args.idle);
        (first.clone(), sample(agent_addr, pid, sim_pid)?)
    } else {
        let mut before = first.clone();
        let mut last_progress = (base, Instant::now());
        loop {
            let s = next_sample(&mut agent, agent_addr, pid, sim_pid)?;
            let ops = s.scrape.watch_ops();
            if ops >= base + args.events {
                break (before, s);
            }
            if ops == base {
                before = s;
            } else if ops > last_progress.0 {
                last_progress = (ops, Instant::now());
            } else if last_progress.1.elapsed() > args.stall_timeout {
                bail!(
                    "the agent took {} of {} Events, then nothing for {:?}",
                    ops - base,
                    args.events,
                    args.stall_timeout
                );
            }
        }
    };

    // Let the sinks drain: the OTLP batch interval is 1s.
    let otlp_on = args.sinks.contains(&SinkName::Otlp);
    let drain_until = Instant::now() + Duration::from_secs(15);
    let last = loop {
        let s = sample(agent_addr, pid, sim_pid)?;
        if drained(&s.scrape, &receiver, otlp_on) || Instant::now() > drain_until {
            break s;
        }
        std::thread::sleep(SAMPLE_EVERY);
    };
    let truth = sim_truth(sim_addr).context("cannot read the simulator's truth")?;
    drop(agent);
    drop(sim);

    let delta = |name: &str, labels: &[(&str, &str)]| {
        (last.scrape.sum(name, labels) - first.scrape.sum(name, labels)).max(0.0) as u64
    };
    let watch_events = last.scrape.watch_ops() - base;
    let Delivered {
        occurrences_counted,
        otlp_sent,
        otlp_received,
    } = Delivered::at(&last.scrape, &args.sinks, &receiver);
    let counts_match = watch_events == args.events
        && occurrences_counted.is_none_or(|c| c == truth.occurrences)
        && otlp_sent == otlp_received;
    let duration = done.at.duration_since(before.at).as_secs_f64();
    let cpu_seconds = done.proc.cpu_seconds - before.proc.cpu_seconds;
    let sim_cpu_seconds = done.sim.cpu_seconds - before.sim.cpu_seconds;
    let processing = Histogram::delta(&last.scrape, &first.scrape, "herald_processing_seconds");
    let arrivals = receiver.arrival_delays();
    Ok(Summary {
        events: args.events,
        rate_target: args.rate.is_finite().then_some(args.rate),
        live_objects: args.live_objects,
        sinks: args.sinks.clone(),
        watch_events,
        pipeline_records: last.scrape.sum("herald_pipeline_received_total", &[]) as u64,
        occurrences_expected: truth.occurrences,
        occurrences_counted,
        otlp_sent,
        otlp_received,
        counts_match,
        ready_seconds,
        duration_seconds: duration,
        events_per_second: per_second(watch_events as f64, duration),
        cpu_seconds,
        sim_cpu_seconds,
        cpu_seconds_per_100k_events: (args.events > 0)
            .then(|| cpu_seconds * 100_000.0 / args.events as f64),
        cpu_percent_of_core: 100.0 * per_second(cpu_seconds, duration),
        rss_ready_kib: first.proc.rss_kib,
        rss_end_kib: last.proc.rss_kib,
        rss_peak_kib: last.proc.hwm_kib,
        processing_p50_seconds: processing.quantile(0.5),
        processing_p99_seconds: processing.quantile(0.99),
        otlp_arrival_p50_seconds: probe::exact_quantile(&arrivals, 0.5),
        otlp_arrival_p99_seconds: probe::exact_quantile(&arrivals, 0.99),
        otlp_arrival_samples: arrivals.len(),
        drops: delta("herald_queue_dropped_total", &[]),
        drops_by_queue: drops_by_queue(&last.scrape, &first.scrape),
        watch_restarts: delta("herald_watch_restarts_total", &[]),
    })
}

/// `/readyz` also answers 200 in the first milliseconds, before the Events source has registered (and so
/// before its initial list); the harness waits for the source's own line.
fn events_source_ready(readyz: &str) -> bool {
    readyz
        .lines()
        .any(|l| l.starts_with("source events") && l.ends_with(": ok"))
}

fn warmup(args: &LoadArgs) -> Duration {
    args.warmup.unwrap_or_else(|| {
        Duration::from_secs(3) + Duration::from_secs(args.live_objects.div_ceil(10_000))
    })
}

/// Every record the pipeline passed on has left the agent: no backlog in any queue and, with the OTLP sink
/// on, every record it passed exported and received (a batch waiting for its interval is in no backlog).
fn drained(scrape: &Scrape, receiver: &otlp::Receiver, otlp_on: bool) -> bool {
    let backlog = scrape.sum("herald_queue_backlog", &[]);
    let sent = scrape.sum("herald_sink_sent_total", &[("sink", "otlp")]);
    let passed = scrape.sum("herald_pipeline_received_total", &[])
        - scrape.sum("herald_pipeline_filtered_total", &[])
        - scrape.sum("herald_pipeline_deduplicated_total", &[]);
    backlog == 0.0 && (!otlp_on || (sent >= passed && sent as u64 == receiver.records()))
}

/// The two programs the harness runs: the agent (`herald`) and the simulator (`herald-sim`).
pub struct Programs {
    herald: PathBuf,
    sim: PathBuf,
}

impl Programs {
    /// Beside this executable, as cargo builds them into one target directory (`cargo build --release
    /// --workspace`); `HERALD_BENCH_AGENT` and `HERALD_BENCH_SIM` name others. The harness measures the binaries
    /// it finds and never builds them, so a stale build is measured as it is.
    pub fn find() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the herald-bench executable")?;
        let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        let pick = |var: &str, name: &str| -> anyhow::Result<PathBuf> {
            let path = std::env::var_os(var).map_or_else(|| dir.join(name), PathBuf::from);
            if !path.is_file() {
                bail!(
                    "{name} not found at {} (build it beside herald-bench with `cargo build --release --workspace`, \
                     or set {var} to its path)",
                    path.display()
                );
            }
            Ok(path)
        };
        Ok(Self {
            herald: pick("HERALD_BENCH_AGENT", "herald")?,
            sim: pick("HERALD_BENCH_SIM", "herald-sim")?,
        })
    }
}

/// The simulator as a child process: `herald-sim` on a free loopback port without KubeVirt, with `args`, its
/// kubeconfig written to `dir/kubeconfig` and its log to `dir/sim.log`. Returns once it serves.
fn start_sim(
    exe: &Programs,
    dir: &Path,
    args: &[String],
) -> anyhow::Result<(ChildGuard, SocketAddr)> {
    let kubeconfig = dir.join("kubeconfig");
    let _ = std::fs::remove_file(&kubeconfig);
    let mut cmd = Command::new(&exe.sim);
    cmd.args(["--listen", "127.0.0.1:0", "--no-kubevirt", "--vm-rate", "0"])
        .args(args)
        .arg("--write-kubeconfig")
        .arg(&kubeconfig);
    let sim = ChildGuard(spawn(cmd, &dir.join("sim.log")).context("cannot start the simulator")?);
    let addr = process::wait_for(
        Duration::from_secs(30),
        "the simulator's kubeconfig",
        || {
            let text = std::fs::read_to_string(&kubeconfig).ok()?;
            text.contains("current-context")
                .then(|| server_addr(&text))
                .flatten()
        },
    )?;
    Ok((sim, addr))
}

/// The agent as a child process (`herald run`) against the simulator of `dir/kubeconfig`, with the
/// configuration of [`agent_config`] in `dir/herald.yaml` and its log in `dir/agent.log`. Returns once its
/// Events source is ready, with its address and the seconds that took.
fn start_agent(
    exe: &Programs,
    dir: &Path,
    sinks: &[SinkName],
    otlp: SocketAddr,
) -> anyhow::Result<(ChildGuard, SocketAddr, f64)> {
    let addr = process::free_addr()?;
    let started = Instant::now();
    let agent = spawn_agent(exe, dir, &agent_config(sinks, addr, otlp, None))?;
    process::wait_for(Duration::from_secs(120), "the agent's /readyz", || {
        let (status, body) = probe::http_get(addr, "/readyz")?;
        (status == 200 && events_source_ready(&body)).then_some(())
    })?;
    Ok((agent, addr, started.elapsed().as_secs_f64()))
}

/// The agent as a child process (`herald run`) with `config` in `dir/herald.yaml`, against the API server of
/// `dir/kubeconfig`, its log in `dir/agent.log`; returns at once.
fn spawn_agent(exe: &Programs, dir: &Path, config: &str) -> anyhow::Result<ChildGuard> {
    let path = dir.join("herald.yaml");
    std::fs::write(&path, config).context("cannot write the agent's configuration")?;
    let mut cmd = Command::new(&exe.herald);
    cmd.arg("run")
        .arg("--config")
        .arg(&path)
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"));
    Ok(ChildGuard(
        spawn(cmd, &dir.join("agent.log")).context("cannot start the agent")?,
    ))
}

/// The agent's configuration: the chosen sinks, live objects counted at startup (`replay`, so the truth
/// compares one to one), dedup off so every record reaches every log sink (the worst case), no KubeVirt.
/// `max_tracked` raises `source.events.max_tracked_objects` (memory runs with more live Events than its default).
fn agent_config(
    sinks: &[SinkName],
    listen: SocketAddr,
    otlp: SocketAddr,
    max_tracked: Option<u64>,
) -> String {
    let on = |s| sinks.contains(&s);
    let endpoint = if on(SinkName::Otlp) {
        format!("http://{otlp}")
    } else {
        String::new()
    };
    format!(
        "listen: \"{listen}\"\n\
         source:\n  events:\n    startup: replay\n{tracked}  kubevirt:\n    enabled: false\n\
         dedup:\n  enabled: false\n\
         sinks:\n  metrics:\n    enabled: {}\n  json:\n    enabled: {}\n  otlp:\n    endpoint: \"{endpoint}\"\n    protocol: http/protobuf\n\
         log:\n  level: warn\n",
        on(SinkName::Metrics),
        on(SinkName::Json),
        tracked = max_tracked.map_or(String::new(), |n| format!("    max_tracked_objects: {n}\n")),
    )
}

fn spawn(mut cmd: Command, log: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log)?;
    // The children take their settings from the generated files only.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("HERALD_")
            || k.starts_with("OTEL_")
            || k == "RUST_LOG"
            || k == "KUBECONFIG"
        {
            cmd.env_remove(&key);
        }
    }
    Ok(cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?)
}

/// `server: http://HOST:PORT` of a kubeconfig.
fn server_addr(kubeconfig: &str) -> Option<SocketAddr> {
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: http://"))
        .and_then(|a| a.trim().parse().ok())
}

/// What the harnesses read from the simulator's `/sim/truth`.
struct SimTruth {
    rv: u64,
    occurrences: u64,
    /// Events alive in the simulated API.
    objects: u64,
    /// Faults injected so far, all kinds, and by kind.
    faults: u64,
    faults_by_kind: std::collections::BTreeMap<String, u64>,
}

fn sim_truth(addr: SocketAddr) -> Option<SimTruth> {
    let (status, body) = probe::http_get(addr, "/sim/truth")?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(SimTruth {
        rv: v["resourceVersion"].as_str()?.parse().ok()?,
        occurrences: v["occurrences_total"].as_u64()?,
        objects: v["objects"].as_u64()?,
        faults: v["faults_injected_total"].as_u64().unwrap_or(0),
        faults_by_kind: serde_json::from_value(v["faults_injected"].clone()).unwrap_or_default(),
    })
}

/// One look at the agent (`/metrics`, `/proc`) and the simulator's `/proc`.
#[derive(Clone)]
struct Sample {
    at: Instant,
    scrape: Scrape,
    proc: Proc,
    /// The simulator's; zeros if it could not be read.
    sim: Proc,
}

fn sample(agent: SocketAddr, pid: u32, sim_pid: u32) -> anyhow::Result<Sample> {
    let proc = Proc::read(pid).context("cannot read the agent's /proc entry")?;
    let sim = Proc::read(sim_pid).unwrap_or_default();
    let at = Instant::now();
    let (status, body) =
        probe::http_get(agent, "/metrics").context("cannot scrape the agent's /metrics")?;
    if status != 200 {
        bail!("the agent's /metrics answered {status}");
    }
    Ok(Sample {
        at,
        scrape: Scrape::parse(&body),
        proc,
        sim,
    })
}

/// Wait one sampling period, then sample; an agent that exited ends the run.
fn next_sample(
    agent: &mut ChildGuard,
    addr: SocketAddr,
    pid: u32,
    other_pid: u32,
) -> anyhow::Result<Sample> {
    std::thread::sleep(SAMPLE_EVERY);
    if let Some(status) = agent.0.try_wait()? {
        bail!("the agent exited during the run: {status}");
    }
    sample(addr, pid, other_pid)
}

/// What the agent's sinks delivered by a scrape, for the counts against the truth.
struct Delivered {
    /// `herald_event_occurrences_total`; `None` without the metrics sink (nothing counts them).
    occurrences_counted: Option<u64>,
    otlp_sent: u64,
    /// What the harness's receiver decoded.
    otlp_received: u64,
}

impl Delivered {
    fn at(scrape: &Scrape, sinks: &[SinkName], receiver: &otlp::Receiver) -> Delivered {
        Delivered {
            occurrences_counted: sinks
                .contains(&SinkName::Metrics)
                .then(|| scrape.sum("herald_event_occurrences_total", &[]) as u64),
            otlp_sent: scrape.sum("herald_sink_sent_total", &[("sink", "otlp")]) as u64,
            otlp_received: receiver.records(),
        }
    }
}

/// Drops from `start` to `end` by queue (sink name), queues without drops left out.
fn drops_by_queue(end: &Scrape, start: &Scrape) -> std::collections::BTreeMap<String, u64> {
    end.by_label("herald_queue_dropped_total", "queue")
        .into_iter()
        .map(|(q, v)| {
            let before = start.sum("herald_queue_dropped_total", &[("queue", &q)]);
            (q, (v - before).max(0.0) as u64)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// [`drops_by_queue`] as the reports print it after the total: ` otlp: 12 json: 3`.
fn queue_drops_text(drops: &std::collections::BTreeMap<String, u64>) -> String {
    drops.iter().map(|(q, n)| format!(" {q}: {n}")).collect()
}

/// `n` over a window of `seconds`, 0 for an empty window (a run that ended at once).
fn per_second(n: f64, seconds: f64) -> f64 {
    if seconds > 0.0 { n / seconds } else { 0.0 }
}

fn report(s: &Summary) -> String {
    let secs = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.3} ms", v * 1e3));
    let rate = s
        .rate_target
        .map_or("max".to_string(), |r| format!("{r}/s"));
    let sinks: Vec<String> = s
        .sinks
        .iter()
        .map(|k| format!("{k:?}").to_lowercase())
        .collect();
    format!(
        "herald-bench load: {events} events at {rate}, {live} live objects, sinks {sinks}\n\
         counts          {ok}: {watch} watch events, occurrences {counted} of {expected}, OTLP {recv} received of {sent} sent, {drops} dropped{drops_by_queue}, {restarts} watch restarts\n\
         throughput      {eps:.0} events/s over {dur:.2}s (agent ready after {ready:.2}s)\n\
         cpu             {cpu:.3}s = {per100k} s per 100k events, {pct:.1}% of a core (simulator: {sim_cpu:.3}s)\n\
         memory          RSS {rss_ready} KiB ready, {rss_end} KiB after, peak {peak} KiB\n\
         processing      p50 {p50}, p99 {p99} (herald_processing_seconds buckets)\n\
         otlp arrival    p50 {a50}, p99 {a99} ({samples} samples, event time to receiver)\n",
        events = s.events,
        live = s.live_objects,
        sinks = sinks.join(","),
        ok = if s.counts_match { "match" } else { "MISMATCH" },
        drops_by_queue = queue_drops_text(&s.drops_by_queue),
        watch = s.watch_events,
        counted = s
            .occurrences_counted
            .map_or("-".to_string(), |c| c.to_string()),
        expected = s.occurrences_expected,
        recv = s.otlp_received,
        sent = s.otlp_sent,
        drops = s.drops,
        restarts = s.watch_restarts,
        eps = s.events_per_second,
        dur = s.duration_seconds,
        ready = s.ready_seconds,
        cpu = s.cpu_seconds,
        per100k = s
            .cpu_seconds_per_100k_events
            .map_or("-".to_string(), |v| format!("{v:.2}")),
        pct = s.cpu_percent_of_core,
        sim_cpu = s.sim_cpu_seconds,
        rss_ready = s.rss_ready_kib,
        rss_end = s.rss_end_kib,
        peak = s.rss_peak_kib,
        p50 = secs(s.processing_p50_seconds),
        p99 = secs(s.processing_p99_seconds),
        a50 = secs(s.otlp_arrival_p50_seconds),
        a99 = secs(s.otlp_arrival_p99_seconds),
        samples = s.otlp_arrival_samples,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_per_queue_between_two_scrapes_and_rates_of_an_empty_window() {
        let start = Scrape::parse(
            "herald_queue_dropped_total{queue=\"otlp\"} 5\nherald_queue_dropped_total{queue=\"json\"} 2\n",
        );
        let end = Scrape::parse(
            "herald_queue_dropped_total{queue=\"otlp\"} 17\nherald_queue_dropped_total{queue=\"json\"} 2\n\
             herald_queue_dropped_total{queue=\"kafka\"} 3\n",
        );
        let drops = drops_by_queue(&end, &start);
        assert_eq!(
            drops.into_iter().collect::<Vec<_>>(),
            [("kafka".to_string(), 3), ("otlp".to_string(), 12)],
            "a queue without new drops is left out"
        );
        assert_eq!(
            queue_drops_text(&drops_by_queue(&end, &start)),
            " kafka: 3 otlp: 12"
        );
        assert_eq!(per_second(50.0, 2.0), 25.0);
        assert_eq!(per_second(50.0, 0.0), 0.0);
    }

    #[test]
    fn kubeconfig_server_address() {
        let kc = "clusters:\n- name: x\n  cluster:\n    server: http://127.0.0.1:4242\n";
        assert_eq!(server_addr(kc), Some("127.0.0.1:4242".parse().unwrap()));
    }

    #[test]
    fn ready_only_with_the_events_source_listed() {
        assert!(!events_source_ready("pipeline: ok\n"));
        assert!(!events_source_ready(
            "pipeline: ok\nsource events: initial list not done\n"
        ));
        assert!(events_source_ready(
            "pipeline: ok\nsource events: ok\nsink json: ok\n"
        ));
    }

    #[test]
    fn generated_config_is_valid() {
        let args = LoadArgs {
            events: 10,
            rate: f64::INFINITY,
            live_objects: 0,
            sinks: vec![SinkName::Metrics, SinkName::Otlp],
            json: true,
            idle: Duration::from_secs(1),
            warmup: None,
            stall_timeout: Duration::from_secs(1),
            seed: 1,
        };
        let text = agent_config(
            &args.sinks,
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            Some(1_000_000),
        );
        let value = herald::config::yaml_value(&text, "bench").unwrap();
        let config = herald::config::Config::from_value(value, "bench").unwrap();
        assert!(!config.sinks.json.enabled);
        assert!(!config.dedup.enabled);
        assert_eq!(config.source.events.max_tracked_objects, 1_000_000);
        assert_eq!(warmup(&args), Duration::from_secs(3));
        let many = LoadArgs {
            live_objects: 50_000,
            ..args
        };
        assert_eq!(
            warmup(&many),
            Duration::from_secs(8),
            "1s more per 10k live objects"
        );
    }
}
