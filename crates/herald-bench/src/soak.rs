//! `herald-bench soak`: the soak harness. It runs the simulator and the agent as two processes, as
//! `herald-bench load` does, for `--duration` at a steady `--rate` with watch faults injected all along, and
//! samples both every `--interval`: RSS and CPU from `/proc`, the agent's counters from `/metrics`, the
//! simulator's ground truth and fault counts from `/sim/truth`, the OTLP records the harness received. Each
//! sample is one CSV row; at the end it draws a PNG plot and prints a summary: RSS flatness after warm-up,
//! occurrences counted against the truth (lost, duplicated), OTLP received against sent, drops, a verdict.
//!
//! For the counts to be exact through faults, the simulated cluster behaves as a real one where it matters:
//! Events are never deleted at random (no list+watch client can see an Event created and deleted while it
//! relists, on any API server); they expire one TTL after their last write, as with the API server's
//! `--event-ttl`, and the TTL is chosen so that about `--live-objects` Events are alive. The live set is
//! bounded, so the agent's per-Event state is too, and its RSS can be flat. The TTL has to stay longer than
//! the longest relist gap (a few seconds of backoff), which the defaults leave room for.
//!
//! Like the load harness it measures and does not tune: the verdict only applies its stated criteria (RSS flatness, counts equal to the truth).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use super::{ChildGuard, Sample, SimTruth, SinkName, otlp, probe};

/// Three one-minute phases in turn: disconnects with 429s, 410 Gone (each one a relist), disconnects with 500s.
/// At the default rate the watch stream carries ~3.4k notifications/s (creates, count increases and TTL
/// deletes), so this injects about 3,000 faults an hour (530 in a 10-minute run).
const DEFAULT_FAULTS: &str = "disconnect-every=3000,error-rate=0.05,error-status=429,retry-after=1;\
                              gone-every=20000;\
                              disconnect-every=3000,error-rate=0.05,error-status=500";
/// The generator's mix without deletes: 70% new Events, 30% count increases.
const CREATES: f64 = 0.7;
const INCREASES: f64 = 0.3;
/// The simulator's watch history, in seconds of generated operations (the stream carries ~1.7 changes per
/// operation): a watch re-opened within that time resumes instead of relisting.
const HISTORY_SECONDS: f64 = 10.0;
/// The simulator generates from this long after it starts, so the agent has listed and is watching.
const SIM_START_AFTER: Duration = Duration::from_secs(3);
/// After the generator stopped, the catch-up ends when the agent has done nothing for this long.
const CATCH_UP_QUIET: Duration = Duration::from_secs(30);
/// Maximum RSS spread after warm-up, (max - min) / min, for the verdict.
const FLAT_WITHIN: f64 = 0.10;
/// Fonts tried for the plot's text (Debian's fonts-dejavu-core first); without one the plot has no text.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// `herald-bench soak` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// How long the simulator generates and the harness samples, e.g. 1h.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub duration: Duration,
    /// Generated operations per second (~70% new Events, ~30% count increases); TTL deletes come on top.
    #[arg(long, default_value_t = 2000.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Time between samples.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub interval: Duration,
    /// Events alive in the simulated API once it has filled up (the simulator expires each one a TTL after
    /// its last write; the TTL is chosen for this many: about 0.73 × live-objects / (0.7 × rate) seconds).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub live_objects: u64,
    /// Watch faults in the simulator's --faults syntax; several specs separated by ';' are phases, applied in
    /// turn for --fault-phase each. Default: disconnects + 429s; 410 Gone; disconnects + 500s.
    #[arg(long, default_value = DEFAULT_FAULTS)]
    pub faults: String,
    /// How long each phase of --faults lasts.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1m")]
    pub fault_phase: Duration,
    /// Samples before this are warm-up, left out of the RSS flatness. Default: 10% of --duration, at least
    /// three Event TTLs (the live set fills up) and two cycles of the fault phases, at most half of --duration.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,
    /// Directory for samples.csv, soak.png, summary.json and the logs (default: soak-<UTC timestamp> in the
    /// current directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Sinks to turn on, comma-separated; metrics is needed (the occurrences are read from it).
    #[arg(long, value_delimiter = ',', default_value = "metrics,otlp")]
    pub sinks: Vec<SinkName>,
    /// After --duration, how long the simulator may take to finish generating and the agent to catch up
    /// (it also ends when the agent has done nothing for 30s after the simulator stopped).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
    pub catch_up_timeout: Duration,
    /// Print one machine-readable JSON summary line instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Seed of the simulated scenario.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// A finite rate of at least one operation per second (a soak needs a steady stream; `max` is a burst).
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 1.0 => Ok(r),
        _ => Err(format!(
            "expected operations per second (1 or more), got {s:?}"
        )),
    }
}

/// The result of one soak: what `--json` prints (and `summary.json` holds).
#[derive(Debug, Clone, Serialize)]
pub struct SoakSummary {
    /// Time sampled: from the first sample to the last one within --duration.
    pub duration_seconds: f64,
    pub rate_target: f64,
    pub live_objects_target: u64,
    /// Events alive in the simulator, most seen in a sample.
    pub live_objects_max: u64,
    /// The simulator's Event TTL (from the last write).
    pub event_ttl_seconds: f64,
    pub faults_spec: String,
    pub fault_phase_seconds: f64,
    pub sinks: Vec<SinkName>,
    pub samples: usize,
    /// Watch notifications (ADDED, MODIFIED, DELETED) the agent took, catch-up included.
    pub events_streamed: u64,
    /// Faults the simulator injected, all kinds, and by kind.
    pub faults_injected: u64,
    pub faults_by_kind: BTreeMap<String, u64>,
    /// `herald_watch_restarts_total`, and by reason.
    pub watch_restarts: u64,
    pub watch_restarts_by_reason: BTreeMap<String, u64>,
    pub warmup_seconds: f64,
    /// VmRSS of the agent over the samples after warm-up, within --duration.
    pub rss_min_kib: u64,
    pub rss_max_kib: u64,
    /// (max - min) / min of those samples.
    pub rss_flatness: f64,
    /// VmHWM of the agent at the end.
    pub rss_peak_kib: u64,
    /// Agent CPU (user + system) over the sampled time, and as % of one core.
    pub cpu_seconds: f64,
    pub cpu_percent_of_core: f64,
    pub sim_cpu_percent_of_core: f64,
    /// Occurrences the simulator created (its ground truth) and the agent counted
    /// (`herald_event_occurrences_total`) once it had caught up; lost = truth - counted when positive,
    /// duplicated = counted - truth when positive.
    pub occurrences_truth: u64,
    pub occurrences_counted: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// OTLP log records the agent sent and the harness received (0 without the OTLP sink).
    pub otlp_sent: u64,
    pub otlp_received: u64,
    /// `herald_queue_dropped_total`, all queues.
    pub drops: u64,
    /// From the end of --duration until the simulator had stopped and the agent had caught up.
    pub catch_up_seconds: f64,
    pub out_dir: PathBuf,
    /// None if the plot could not be drawn (the reason went to stderr).
    pub png: Option<PathBuf>,
    /// "pass" when nothing in `failed`.
    pub verdict: &'static str,
    /// The criteria not met: lost, duplicated, otlp, drops, rss.
    pub failed: Vec<String>,
}

/// `herald-bench soak`: run, write the CSV, the plot and `summary.json`, print the summary, exit 0 (whatever
/// the verdict); on failure say why and where the logs are, and exit 1.
pub fn run_soak(args: SoakArgs) -> ExitCode {
    super::print_result(soak(&args), args.json, report)
}

fn soak(args: &SoakArgs) -> anyhow::Result<SoakSummary> {
    if !args.sinks.contains(&SinkName::Metrics) {
        bail!("--sinks must include metrics: the occurrences are read from it");
    }
    if args.interval.is_zero() || args.duration.is_zero() || args.fault_phase.is_zero() {
        bail!("--duration, --interval and --fault-phase must be longer than zero");
    }
    let phases = fault_phases(&args.faults)?;
    let out = match &args.out {
        Some(dir) => dir.clone(),
        None => PathBuf::from(default_out_dir(jiff::Timestamp::now())),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let exe = super::Programs::find()?;
    let result = run(args, &phases, &exe, &out);
    if result.is_err() {
        eprintln!(
            "herald-bench: logs in {} (sim.log, agent.log)",
            out.display()
        );
    }
    result
}

/// Everything a run needs to reach.
struct Setup<'a> {
    args: &'a SoakArgs,
    receiver: otlp::Receiver,
    sim: ChildGuard,
    sim_addr: SocketAddr,
    agent: ChildGuard,
    agent_addr: SocketAddr,
}

impl Setup<'_> {
    fn look(&self) -> anyhow::Result<(Sample, SimTruth)> {
        let s = super::sample(self.agent_addr, self.agent.0.id(), self.sim.0.id())?;
        let truth = super::sim_truth(self.sim_addr).context("cannot read the simulator's truth")?;
        Ok((s, truth))
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.agent.0.try_wait()? {
            bail!("the agent exited during the soak: {status}");
        }
        if let Some(status) = self.sim.0.try_wait()? {
            bail!("the simulator exited during the soak: {status}");
        }
        Ok(())
    }

    fn row(&self, elapsed: f64, s: &Sample, truth: &SimTruth) -> Row {
        Row::new(elapsed, s, truth, self.receiver.records())
    }

    fn set_faults(&self, spec: &str) -> anyhow::Result<()> {
        match probe::http_put(self.sim_addr, "/sim/faults", spec) {
            Some((200, _)) => Ok(()),
            other => bail!("the simulator refused the faults {spec:?}: {other:?}"),
        }
    }

    fn otlp_on(&self) -> bool {
        self.args.sinks.contains(&SinkName::Otlp)
    }
}

fn run(
    args: &SoakArgs,
    phases: &[String],
    exe: &super::Programs,
    out: &Path,
) -> anyhow::Result<SoakSummary> {
    let ttl = event_ttl(args.live_objects, args.rate);
    let warmup = args.warmup.unwrap_or_else(|| {
        default_warmup(args.duration, ttl, args.fault_phase * phases.len() as u32)
    });
    let max_events = (args.rate * args.duration.as_secs_f64()).ceil() as u64;
    let history = ((args.rate * HISTORY_SECONDS).ceil() as u64).max(10_000);
    let receiver = otlp::Receiver::start().context("cannot start the OTLP receiver")?;
    let (sim, sim_addr) = super::start_sim(
        exe,
        out,
        &[
            format!("--seed={}", args.seed),
            format!("--rate={}", args.rate),
            format!("--max-events={max_events}"),
            "--delete-percent=0".to_string(),
            format!("--event-ttl={}ms", ttl.as_millis()),
            format!("--history={history}"),
            format!("--start-after={}ms", SIM_START_AFTER.as_millis()),
            format!("--faults={}", phases[0]),
        ],
    )?;
    let generating_from = Instant::now() + SIM_START_AFTER;
    let (agent, agent_addr, _) = super::start_agent(exe, out, &args.sinks, receiver.addr())?;
    let mut setup = Setup {
        args,
        receiver,
        sim,
        sim_addr,
        agent,
        agent_addr,
    };

    let csv_path = out.join("samples.csv");
    let mut csv = std::io::BufWriter::new(
        std::fs::File::create(&csv_path)
            .with_context(|| format!("cannot create {}", csv_path.display()))?,
    );
    writeln!(csv, "{}", Row::CSV_HEADER)?;
    let mut rows = Vec::new();
    let mut record =
        |row: Row, csv: &mut std::io::BufWriter<std::fs::File>| -> anyhow::Result<()> {
            writeln!(csv, "{}", row.csv_line())?;
            csv.flush()?;
            rows.push(row);
            Ok(())
        };

    // Sampling: from the generator's start for --duration, fault phases switched on their own clock.
    std::thread::sleep(generating_from.saturating_duration_since(Instant::now()));
    let t0 = Instant::now();
    let end = t0 + args.duration;
    let (first, _) = setup.look()?;
    let mut next_sample = t0;
    let mut next_phase = t0 + args.fault_phase;
    let mut next_progress = t0 + Duration::from_secs(60);
    let mut phase = 0;
    let mut last_in_window = first.clone();
    loop {
        let now = Instant::now();
        // A failed request (a timeout on a loaded machine) skips one phase switch or sample, not the run;
        // only a process that exited ends it.
        if now >= next_phase && phases.len() > 1 {
            phase = (phase + 1) % phases.len();
            if let Err(e) = setup.set_faults(&phases[phase]) {
                eprintln!("herald-bench soak: fault phase {phase} not applied: {e:#}");
            }
            next_phase += args.fault_phase;
        }
        if now >= next_sample {
            setup.check_running()?;
            match setup.look() {
                Ok((s, truth)) => {
                    let row = setup.row(s.at.duration_since(t0).as_secs_f64(), &s, &truth);
                    if now >= next_progress {
                        eprintln!("herald-bench soak: {}", progress(&row, args.duration));
                        next_progress += Duration::from_secs(60);
                    }
                    record(row, &mut csv)?;
                    last_in_window = s;
                }
                Err(e) => eprintln!("herald-bench soak: sample skipped: {e:#}"),
            }
            next_sample += args.interval;
        }
        if next_sample > end {
            break;
        }
        let wake = next_sample.min(if phases.len() > 1 { next_phase } else { end });
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    }

    // Catch-up: the generator stops after its --max-events; faults off so the last reconnects go through;
    // then wait until the agent has counted everything and its sinks have drained, or until it has done
    // nothing for a while once the generator stopped (what is lost does not come later).
    while let Err(e) = setup.set_faults("") {
        setup.check_running()?;
        eprintln!("herald-bench soak: retrying to turn the faults off: {e:#}");
        std::thread::sleep(Duration::from_secs(1));
    }
    let catch_up_from = Instant::now();
    let until = catch_up_from + args.catch_up_timeout;
    let stable_for = Duration::from_secs_f64((3.0 / args.rate).max(1.0));
    let mut sim_moved = (0, Instant::now());
    let mut agent_moved = ((0, 0, 0.0, 0.0), Instant::now());
    let (last, truth) = loop {
        let (s, truth) = match setup.look() {
            Ok(look) => look,
            Err(e) if Instant::now() <= until => {
                setup.check_running()?;
                eprintln!("herald-bench soak: catch-up sample skipped: {e:#}");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            Err(e) => return Err(e),
        };
        if truth.rv != sim_moved.0 {
            sim_moved = (truth.rv, Instant::now());
        }
        let counted = s.scrape.sum("herald_event_occurrences_total", &[]) as u64;
        let activity = (
            counted,
            s.scrape.watch_ops(),
            s.scrape
                .sum("herald_watch_events_total", &[("type", "LISTED")]),
            s.scrape.sum("herald_sink_sent_total", &[]),
        );
        if activity != agent_moved.0 {
            agent_moved = (activity, Instant::now());
        }
        let generated = sim_moved.1.elapsed() >= stable_for;
        let drained = super::drained(&s.scrape, &setup.receiver, setup.otlp_on());
        let caught_up = generated && drained && counted >= truth.occurrences;
        let gave_up = generated && agent_moved.1.elapsed() >= CATCH_UP_QUIET;
        if caught_up || gave_up || Instant::now() > until {
            break (s, truth);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let catch_up_seconds = catch_up_from.elapsed().as_secs_f64();
    let final_row = setup.row(last.at.duration_since(t0).as_secs_f64(), &last, &truth);
    record(final_row, &mut csv)?;
    drop(setup.agent);
    drop(setup.sim);

    let window = &rows[..rows.len() - 1];
    let warmup_s = warmup.as_secs_f64();
    let (rss_min, rss_max) = rss_range(window, warmup_s).unwrap_or_default();
    let rss_flatness = flatness(rss_min, rss_max);
    let duration = last_in_window.at.duration_since(first.at).as_secs_f64();
    let cpu_seconds = last_in_window.proc.cpu_seconds - first.proc.cpu_seconds;
    let sim_cpu_seconds = last_in_window.sim.cpu_seconds - first.sim.cpu_seconds;
    let percent = |cpu: f64| {
        if duration > 0.0 {
            100.0 * cpu / duration
        } else {
            0.0
        }
    };
    let png_path = out.join("soak.png");
    let png = match plot(&rows, warmup_s, &png_path) {
        Ok(()) => Some(png_path),
        Err(e) => {
            eprintln!("herald-bench soak: no plot: {e}");
            None
        }
    };
    let counted = final_row.occurrences_counted;
    let drops = final_row.drops;
    let failed = verdict(
        truth.occurrences,
        counted,
        (final_row.otlp_sent, final_row.otlp_received),
        drops,
        rss_flatness,
    );
    let summary = SoakSummary {
        duration_seconds: duration,
        rate_target: args.rate,
        live_objects_target: args.live_objects,
        live_objects_max: rows.iter().map(|r| r.live_objects).max().unwrap_or(0),
        event_ttl_seconds: ttl.as_secs_f64(),
        faults_spec: phases.join(";"),
        fault_phase_seconds: args.fault_phase.as_secs_f64(),
        sinks: args.sinks.clone(),
        samples: rows.len(),
        events_streamed: final_row.watch_events,
        faults_injected: truth.faults,
        faults_by_kind: truth.faults_by_kind.clone(),
        watch_restarts: final_row.watch_restarts,
        watch_restarts_by_reason: last
            .scrape
            .by_label("herald_watch_restarts_total", "reason")
            .into_iter()
            .fold(BTreeMap::new(), |mut m, (reason, n)| {
                *m.entry(reason).or_default() += n as u64;
                m
            }),
        warmup_seconds: warmup_s,
        rss_min_kib: rss_min,
        rss_max_kib: rss_max,
        rss_flatness,
        rss_peak_kib: last.proc.hwm_kib,
        cpu_seconds,
        cpu_percent_of_core: percent(cpu_seconds),
        sim_cpu_percent_of_core: percent(sim_cpu_seconds),
        occurrences_truth: truth.occurrences,
        occurrences_counted: counted,
        lost: truth.occurrences.saturating_sub(counted),
        duplicated: counted.saturating_sub(truth.occurrences),
        otlp_sent: final_row.otlp_sent,
        otlp_received: final_row.otlp_received,
        drops,
        catch_up_seconds,
        out_dir: out.to_path_buf(),
        png,
        verdict: if failed.is_empty() { "pass" } else { "fail" },
        failed,
    };
    std::fs::write(
        out.join("summary.json"),
        format!("{}\n", serde_json::to_string_pretty(&summary)?),
    )
    .context("cannot write summary.json")?;
    Ok(summary)
}

/// The fault phases of `--faults`, each checked with the simulator's parser (and printed back in its form).
fn fault_phases(spec: &str) -> anyhow::Result<Vec<String>> {
    let phases = spec
        .split(';')
        .map(|p| {
            p.parse::<herald_sim::FaultSpec>()
                .map(|f| f.to_string())
                .with_context(|| format!("--faults: phase {p:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(phases)
}

/// The TTL that keeps about `live` Events alive. Created at `c` per second and deleted one TTL after their
/// last write, Events would number `c × ttl` if none were written again; but a count increase (`i` per
/// second, spread over the live set) keeps one alive for another TTL, so each lives a geometric number of
/// TTL periods, `e^(i × ttl / live)` on average. Solving `live = c × ttl × e^(i × ttl / live)` for ttl:
/// `ttl = u × live / c` with `u × e^(u × i / c) = 1` (u ≈ 0.731 for this mix).
fn event_ttl(live: u64, rate: f64) -> Duration {
    let k = INCREASES / CREATES;
    // u e^(k u) is increasing: bisect on [0, 1].
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..50 {
        let mid = (lo + hi) / 2.0;
        if mid * (k * mid).exp() < 1.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let seconds = lo * live as f64 / (rate * CREATES);
    Duration::from_millis((seconds * 1000.0).ceil() as u64)
}

/// 10% of the run, at least three TTLs (the live set fills up during the first one or two) and two full cycles
/// of the fault phases (in a 10-minute run the RSS rose in steps during the first two, then stayed level), at
/// most half the run.
fn default_warmup(duration: Duration, ttl: Duration, fault_cycle: Duration) -> Duration {
    (duration / 10)
        .max(ttl * 3)
        .max(fault_cycle * 2)
        .min(duration / 2)
}

fn default_out_dir(now: jiff::Timestamp) -> String {
    format!("soak-{}", now.strftime("%Y%m%dT%H%M%SZ"))
}

/// Lowest and highest agent RSS of the samples after `warmup` seconds.
fn rss_range(rows: &[Row], warmup: f64) -> Option<(u64, u64)> {
    let after = rows.iter().filter(|r| r.elapsed_s >= warmup);
    let min = after.clone().map(|r| r.agent_rss_kib).min()?;
    let max = after.map(|r| r.agent_rss_kib).max()?;
    Some((min, max))
}

/// (max - min) / min: 0 is perfectly flat, 0.1 a 10% spread.
fn flatness(min: u64, max: u64) -> f64 {
    if min == 0 {
        return if max == 0 { 0.0 } else { f64::INFINITY };
    }
    (max - min) as f64 / min as f64
}

/// The criteria not met.
fn verdict(truth: u64, counted: u64, otlp: (u64, u64), drops: u64, flat: f64) -> Vec<String> {
    let mut failed = Vec::new();
    if counted < truth {
        failed.push(format!("lost: {} occurrences", truth - counted));
    }
    if counted > truth {
        failed.push(format!("duplicated: {} occurrences", counted - truth));
    }
    if otlp.0 != otlp.1 {
        failed.push(format!("otlp: {} sent, {} received", otlp.0, otlp.1));
    }
    if drops > 0 {
        failed.push(format!("drops: {drops}"));
    }
    if flat > FLAT_WITHIN {
        failed.push(format!(
            "rss: {:.1}% spread after warm-up (limit {:.0}%)",
            flat * 100.0,
            FLAT_WITHIN * 100.0
        ));
    }
    failed
}

/// One sample: one CSV row.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Row {
    elapsed_s: f64,
    agent_rss_kib: u64,
    agent_cpu_s: f64,
    sim_rss_kib: u64,
    sim_cpu_s: f64,
    /// Events alive in the simulator.
    live_objects: u64,
    /// ADDED + MODIFIED + DELETED the agent took.
    watch_events: u64,
    occurrences_counted: u64,
    occurrences_truth: u64,
    drops: u64,
    watch_restarts: u64,
    faults_injected: u64,
    otlp_sent: u64,
    otlp_received: u64,
}

impl Row {
    const CSV_HEADER: &str = "elapsed_s,agent_rss_kib,agent_cpu_s,sim_rss_kib,sim_cpu_s,live_objects,\
                              watch_events,occurrences_counted,occurrences_truth,drops,watch_restarts,\
                              faults_injected,otlp_sent,otlp_received";

    fn new(elapsed_s: f64, s: &Sample, truth: &SimTruth, otlp_received: u64) -> Row {
        let total = |name| s.scrape.sum(name, &[]) as u64;
        Row {
            elapsed_s,
            agent_rss_kib: s.proc.rss_kib,
            agent_cpu_s: s.proc.cpu_seconds,
            sim_rss_kib: s.sim.rss_kib,
            sim_cpu_s: s.sim.cpu_seconds,
            live_objects: truth.objects,
            watch_events: s.scrape.watch_ops(),
            occurrences_counted: total("herald_event_occurrences_total"),
            occurrences_truth: truth.occurrences,
            drops: total("herald_queue_dropped_total"),
            watch_restarts: total("herald_watch_restarts_total"),
            faults_injected: truth.faults,
            otlp_sent: s.scrape.sum("herald_sink_sent_total", &[("sink", "otlp")]) as u64,
            otlp_received,
        }
    }

    fn csv_line(&self) -> String {
        format!(
            "{:.1},{},{:.2},{},{:.2},{},{},{},{},{},{},{},{},{}",
            self.elapsed_s,
            self.agent_rss_kib,
            self.agent_cpu_s,
            self.sim_rss_kib,
            self.sim_cpu_s,
            self.live_objects,
            self.watch_events,
            self.occurrences_counted,
            self.occurrences_truth,
            self.drops,
            self.watch_restarts,
            self.faults_injected,
            self.otlp_sent,
            self.otlp_received,
        )
    }
}

fn progress(row: &Row, duration: Duration) -> String {
    format!(
        "{} of {}: agent RSS {:.1} MiB, {} live Events, {} faults, {} watch restarts, occurrences {} of {}",
        humantime::format_duration(Duration::from_secs(row.elapsed_s as u64)),
        humantime::format_duration(duration),
        row.agent_rss_kib as f64 / 1024.0,
        row.live_objects,
        row.faults_injected,
        row.watch_restarts,
        row.occurrences_counted,
        row.occurrences_truth,
    )
}

fn report(s: &SoakSummary) -> String {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let by = |m: &BTreeMap<String, u64>| {
        m.iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "herald-bench soak: {:.0}s at {}/s, ~{} live Events (TTL {:.1}s), {} samples, faults {}",
        s.duration_seconds,
        s.rate_target,
        s.live_objects_target,
        s.event_ttl_seconds,
        s.samples,
        s.faults_spec,
    );
    let _ = writeln!(
        out,
        "verdict         {}{}",
        s.verdict.to_uppercase(),
        if s.failed.is_empty() {
            String::new()
        } else {
            format!(" ({})", s.failed.join("; "))
        }
    );
    let _ = writeln!(
        out,
        "counts          occurrences {} counted of {} (lost {}, duplicated {}), OTLP {} received of {} sent, {} dropped",
        s.occurrences_counted,
        s.occurrences_truth,
        s.lost,
        s.duplicated,
        s.otlp_received,
        s.otlp_sent,
        s.drops,
    );
    let _ = writeln!(
        out,
        "stream          {} watch events, up to {} live Events; caught up {:.1}s after the end",
        s.events_streamed, s.live_objects_max, s.catch_up_seconds,
    );
    let _ = writeln!(
        out,
        "faults          {} injected ({}); {} watch restarts ({})",
        s.faults_injected,
        by(&s.faults_by_kind),
        s.watch_restarts,
        by(&s.watch_restarts_by_reason),
    );
    let _ = writeln!(
        out,
        "memory          RSS {:.1} to {:.1} MiB after {:.0}s warm-up ({:.1}% spread), peak {:.1} MiB",
        mib(s.rss_min_kib),
        mib(s.rss_max_kib),
        s.warmup_seconds,
        s.rss_flatness * 100.0,
        mib(s.rss_peak_kib),
    );
    let _ = writeln!(
        out,
        "cpu             {:.1}s = {:.1}% of a core (simulator {:.1}%)",
        s.cpu_seconds, s.cpu_percent_of_core, s.sim_cpu_percent_of_core,
    );
    let _ = writeln!(
        out,
        "files           {} (samples.csv, {}summary.json, sim.log, agent.log)",
        s.out_dir.display(),
        if s.png.is_some() { "soak.png, " } else { "" },
    );
    out
}

/// Register a system font for the plot's text once; false if none was found (the plot then has no text).
fn font() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| {
        FONTS.iter().any(|path| {
            let Ok(bytes) = std::fs::read(path) else {
                return false;
            };
            // plotters keeps fonts for the life of the process; this runs once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, bytes)
                .is_ok()
        })
    })
}

/// Draw the samples to a PNG: agent RSS (warm-up marked), CPU of the agent and the simulator per interval,
/// and faults injected with the agent's watch restarts.
fn plot(rows: &[Row], warmup: f64, path: &Path) -> Result<(), String> {
    const SIZE: (u32, u32) = (1200, 900);
    let mut pixels = vec![255u8; (SIZE.0 * SIZE.1 * 3) as usize];
    draw(rows, warmup, font(), SIZE, &mut pixels).map_err(|e| e.to_string())?;
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), SIZE.0, SIZE.1);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer
        .write_image_data(&pixels)
        .map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(rows: &[Row], warmup: f64, text: bool, size: (u32, u32), pixels: &mut [u8]) -> DrawResult {
    use plotters::prelude::*;

    let root = BitMapBackend::with_buffer(pixels, size).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((3, 1));
    let x_max = rows.last().map_or(1.0, |r| r.elapsed_s).max(1.0);
    let cpu: Vec<(f64, f64, f64)> = rows
        .windows(2)
        .filter(|w| w[1].elapsed_s > w[0].elapsed_s)
        .map(|w| {
            let dt = w[1].elapsed_s - w[0].elapsed_s;
            (
                w[1].elapsed_s,
                100.0 * (w[1].agent_cpu_s - w[0].agent_cpu_s) / dt,
                100.0 * (w[1].sim_cpu_s - w[0].sim_cpu_s) / dt,
            )
        })
        .collect();
    let rss = |r: &Row| r.agent_rss_kib as f64 / 1024.0;
    let rss_max = rows.iter().map(rss).fold(1.0, f64::max);
    let cpu_max = cpu.iter().map(|c| c.1.max(c.2)).fold(10.0, f64::max);
    let count_max = rows
        .iter()
        .map(|r| r.faults_injected.max(r.watch_restarts) as f64)
        .fold(1.0, f64::max);

    // (title, y range, series: (label, colour, points)), one panel each.
    type Series = (&'static str, RGBColor, Vec<(f64, f64)>);
    let charts: [(&str, f64, Vec<Series>); 3] = [
        (
            "agent RSS (MiB); warm-up ends at the grey line",
            rss_max * 1.1,
            vec![(
                "agent RSS",
                BLUE,
                rows.iter().map(|r| (r.elapsed_s, rss(r))).collect(),
            )],
        ),
        (
            "CPU, % of one core, per interval",
            cpu_max * 1.1,
            vec![
                ("agent", BLUE, cpu.iter().map(|c| (c.0, c.1)).collect()),
                ("simulator", RED, cpu.iter().map(|c| (c.0, c.2)).collect()),
            ],
        ),
        (
            "faults injected and agent watch restarts (cumulative)",
            count_max * 1.1,
            vec![
                (
                    "faults injected",
                    RED,
                    rows.iter()
                        .map(|r| (r.elapsed_s, r.faults_injected as f64))
                        .collect(),
                ),
                (
                    "watch restarts",
                    BLUE,
                    rows.iter()
                        .map(|r| (r.elapsed_s, r.watch_restarts as f64))
                        .collect(),
                ),
            ],
        ),
    ];
    for (panel, (title, y_max, series)) in panels.iter().zip(charts) {
        let mut builder = ChartBuilder::on(panel);
        builder.margin(12);
        if text {
            builder
                .caption(title, ("sans-serif", 18))
                .x_label_area_size(30)
                .y_label_area_size(60);
        }
        let mut chart = builder.build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc("seconds");
        }
        mesh.draw()?;
        if title.starts_with("agent RSS") && warmup > 0.0 {
            chart.draw_series(LineSeries::new(
                [(warmup, 0.0), (warmup, y_max)],
                RGBColor(120, 120, 120).stroke_width(3),
            ))?;
        }
        for (label, colour, points) in series {
            let drawn = chart.draw_series(LineSeries::new(points, colour.stroke_width(2)))?;
            if text {
                drawn
                    .label(label)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour));
            }
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(elapsed_s: f64, rss: u64) -> Row {
        Row {
            elapsed_s,
            agent_rss_kib: rss,
            agent_cpu_s: elapsed_s / 4.0,
            sim_cpu_s: elapsed_s / 3.0,
            faults_injected: elapsed_s as u64,
            watch_restarts: elapsed_s as u64 / 2,
            ..Row::default()
        }
    }

    #[test]
    fn csv_rows_match_the_header() {
        let r = Row {
            elapsed_s: 5.04,
            agent_rss_kib: 51200,
            agent_cpu_s: 1.234,
            sim_rss_kib: 80000,
            sim_cpu_s: 2.5,
            live_objects: 20000,
            watch_events: 42000,
            occurrences_counted: 30000,
            occurrences_truth: 30001,
            drops: 0,
            watch_restarts: 7,
            faults_injected: 9,
            otlp_sent: 25000,
            otlp_received: 25000,
        };
        assert_eq!(
            r.csv_line(),
            "5.0,51200,1.23,80000,2.50,20000,42000,30000,30001,0,7,9,25000,25000"
        );
        let columns = Row::CSV_HEADER.split(',').count();
        assert_eq!(columns, 14);
        assert_eq!(r.csv_line().split(',').count(), columns);
        assert!(!Row::CSV_HEADER.contains(' '), "{}", Row::CSV_HEADER);
    }

    #[test]
    fn flatness_after_warm_up() {
        let rows = [
            row(0.0, 10_000),
            row(5.0, 40_000),
            row(10.0, 50_000),
            row(15.0, 55_000),
        ];
        assert_eq!(rss_range(&rows, 0.0), Some((10_000, 55_000)));
        let (min, max) = rss_range(&rows, 10.0).unwrap();
        assert_eq!((min, max), (50_000, 55_000), "the warm-up is left out");
        assert!((flatness(min, max) - 0.1).abs() < 1e-12);
        assert_eq!(rss_range(&rows, 20.0), None);
        assert_eq!(flatness(0, 0), 0.0);
        assert_eq!(flatness(100, 100), 0.0);
    }

    #[test]
    fn verdict_names_each_failed_criterion() {
        assert!(verdict(100, 100, (5, 5), 0, 0.1).is_empty());
        let failed = verdict(100, 98, (5, 4), 3, 0.15);
        assert_eq!(failed.len(), 4, "{failed:?}");
        assert!(failed[0].starts_with("lost: 2"));
        assert!(verdict(100, 101, (0, 0), 0, 0.0)[0].starts_with("duplicated: 1"));
        assert!(verdict(1, 1, (0, 0), 0, 0.1001)[0].starts_with("rss"));
    }

    #[test]
    fn ttl_warm_up_and_fault_phases() {
        // u e^(3u/7) = 1 at u = 0.7310: 20k live at 2000/s (1400 creates/s) is 10.4s.
        assert_eq!(event_ttl(20_000, 2000.0), Duration::from_millis(10444));
        assert_eq!(
            event_ttl(1400, 2000.0).as_millis(),
            732,
            "0.731s, rounded up"
        );
        let hour = Duration::from_secs(3600);
        let ttl = Duration::from_secs(6);
        let cycle = Duration::from_secs(180);
        let warmup = |secs| default_warmup(Duration::from_secs(secs), ttl, cycle).as_secs();
        assert_eq!(warmup(3600), 360, "10% of an hour");
        assert_eq!(warmup(1200), 360, "two cycles of fault phases");
        assert_eq!(
            default_warmup(hour, ttl * 100, cycle).as_secs(),
            1800,
            "at most half"
        );
        assert_eq!(
            default_warmup(Duration::from_secs(60), ttl, Duration::ZERO).as_secs(),
            18,
            "three TTLs"
        );
        assert_eq!(warmup(6), 3, "at most half the run");
        let phases = fault_phases(DEFAULT_FAULTS).unwrap();
        assert_eq!(phases.len(), 3);
        assert_eq!(phases[1], "gone-every=20000");
        assert!(fault_phases("disconnect-every=10;explode=1").is_err());
        let ts: jiff::Timestamp = "2026-11-27T08:09:10Z".parse().unwrap();
        assert_eq!(default_out_dir(ts), "soak-20261127T080910Z");
    }

    #[test]
    fn rate_is_finite() {
        assert_eq!(parse_rate("5000"), Ok(5000.0));
        assert!(parse_rate("max").is_err());
        assert!(parse_rate("0.5").is_err());
    }

    #[test]
    fn plot_draws_with_and_without_text() {
        let rows: Vec<Row> = (0..20)
            .map(|i| row(i as f64 * 5.0, 40_000 + i * 10))
            .collect();
        for text in [false, font()] {
            let mut pixels = vec![255u8; 400 * 300 * 3];
            draw(&rows, 30.0, text, (400, 300), &mut pixels).unwrap();
            assert!(pixels.iter().any(|p| *p != 255), "something was drawn");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("soak.png");
        plot(&rows, 30.0, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }
}
