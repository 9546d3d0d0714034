//! Test harness: the simulator in-process, herald as a real child process talking to it through a kubeconfig,
//! and small helpers to read herald's HTTP endpoints. What is not specific to herald's tests (the OTLP and
//! webhook receivers, probes, fixtures, ports, waits, child guards) is herald-test-support's, re-exported here.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use herald_sim::{RunningSim, SimOptions};
use herald_test_support::process::{self, ChildGuard};

pub use herald_test_support::fixtures;
// The receivers herald sends to; only the `agent` test binary uses them.
#[allow(unused_imports)]
pub use herald_test_support::{otlp, webhook};
pub mod ops;
pub mod prometheus;
pub mod truth;

/// A free loopback port (bound and released; good enough for tests).
pub fn free_addr() -> SocketAddr {
    process::free_addr().unwrap()
}

/// A simulator with no generated traffic: tests write the Events they need.
pub async fn quiet_sim() -> RunningSim {
    quiet_sim_at(SocketAddr::from(([127, 0, 0, 1], 0))).await
}

pub async fn quiet_sim_at(addr: SocketAddr) -> RunningSim {
    RunningSim::start(SimOptions::quiet(), addr).await.unwrap()
}

/// A kube client for the simulator (the same client the agent uses).
pub fn client(sim: &RunningSim) -> kube::Client {
    kube::Client::try_from(kube::Config::new(sim.url().parse().unwrap())).unwrap()
}

/// herald as a child process, killed when dropped.
pub struct Herald {
    pub child: ChildGuard,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// Start herald against `api_url` with `config` (YAML, merged over the defaults). stdout is discarded unless
/// `stdout` says otherwise.
pub fn start_herald(api_url: &str, config: &str, stdout: Stdio, extra_args: &[&str]) -> Herald {
    start_herald_with_env(free_addr(), api_url, config, stdout, extra_args, &[])
}

/// [`start_herald`] with extra environment variables.
pub fn start_herald_with(
    api_url: &str,
    config: &str,
    stdout: Stdio,
    extra_args: &[&str],
    env: &[(&str, &str)],
) -> Herald {
    start_herald_with_env(free_addr(), api_url, config, stdout, extra_args, env)
}

/// [`start_herald`] listening on `addr` (to restart an agent where Prometheus expects it).
pub fn start_herald_at(
    addr: SocketAddr,
    api_url: &str,
    config: &str,
    stdout: Stdio,
    extra_args: &[&str],
) -> Herald {
    start_herald_with_env(addr, api_url, config, stdout, extra_args, &[])
}

/// [`start_herald_at`] with extra environment variables (e.g. the downward API's `POD_NAMESPACE`).
pub fn start_herald_with_env(
    addr: SocketAddr,
    api_url: &str,
    config: &str,
    stdout: Stdio,
    extra_args: &[&str],
    env: &[(&str, &str)],
) -> Herald {
    let dir = tempfile::tempdir().unwrap();
    let child = herald_run(
        Command::new(env!("CARGO_BIN_EXE_herald")),
        dir.path(),
        api_url,
        config,
        addr,
    )
    .args(extra_args)
    .envs(env.iter().copied())
    .stdout(stdout)
    .stderr(Stdio::inherit())
    .spawn()
    .unwrap();
    Herald {
        child: ChildGuard(child),
        addr,
        _dir: dir,
    }
}

/// `program` (herald, or a wrapper such as `prlimit ... herald`) as `herald run` against `api_url`, listening
/// on `addr`, with `config` and a kubeconfig written into `dir`; diagnostics at warn.
pub fn herald_run(
    mut program: Command,
    dir: &std::path::Path,
    api_url: &str,
    config: &str,
    addr: SocketAddr,
) -> Command {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, kubeconfig_yaml(api_url)).unwrap();
    let config_path = dir.join("herald.yaml");
    std::fs::write(&config_path, config).unwrap();
    program
        .arg("run")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--config")
        .arg(&config_path)
        .arg("--listen")
        .arg(addr.to_string())
        .env("HERALD_LOG_LEVEL", "warn")
        .env_remove("RUST_LOG");
    program
}

/// A kubeconfig for the API server at `url` (the simulator's, or a stand-in a test writes).
pub use herald_sim::kubeconfig_yaml;

impl Herald {
    /// The configuration file herald was started with (tests rewrite it to exercise reloads).
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("herald.yaml")
    }

    /// `(status, body)` of a GET on herald's server, or None when it does not answer.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.addr, path)
    }

    pub fn metrics(&self) -> String {
        self.get("/metrics").map(|(_, b)| b).unwrap_or_default()
    }

    /// Sum of every sample of `name` whose labels include all of `labels`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics(), name, labels)
    }

    pub fn wait_ready(&self) {
        wait_until(Duration::from_secs(30), "herald /readyz", || {
            matches!(self.get("/readyz"), Some((200, _)))
        });
    }

    /// Wait until `metric(name, labels) == want` (see [`wait_count`]: as long as the value still moves,
    /// up to [`COUNT_CEILING`]; [`COUNT_STALLED`] without a change is a failure), failing with the last value
    /// seen and the whole scrape.
    pub fn wait_metric(&self, name: &str, labels: &[(&str, &str)], want: f64) {
        let waited = wait_count(want, COUNT_STALLED, COUNT_CEILING, || {
            self.metric(name, labels)
        });
        if let Err(e) = waited {
            panic!("{name}{labels:?}: {e}\n{}", self.metrics());
        }
    }

    /// SIGKILL: a crash, with no chance to save or flush anything.
    pub fn crash(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.child.signal("TERM");
        self.child
            .exited_within(within)
            .unwrap_or_else(|| panic!("herald did not exit within {within:?} of SIGTERM"))
    }
}

/// How long a count may stand still, short of what a test waits for, before the wait fails: on a healthy
/// watch nothing between two counted records takes this long. (Tests that inject watch faults wait longer:
/// a watch may sit out its back-off, up to 30 s, before it resumes; see `truth::assert_exact`.)
pub const COUNT_STALLED: Duration = Duration::from_secs(20);
/// The most any wait for a count takes in all, however slowly the count still moves (a CI machine running
/// every test binary at once on 2 cores makes herald slower, not wrong).
pub const COUNT_CEILING: Duration = Duration::from_secs(300);

/// Wait until `read()` gives `want`, for as long as the value still moves (see
/// [`herald_test_support::process::Progress`]): a count herald is still catching up on is waited for, one
/// that has stood still for `stalled` short of (or past) `want` fails, and so does any after `ceiling`.
/// Returns the value it ended with.
pub fn wait_count(
    want: f64,
    stalled: Duration,
    ceiling: Duration,
    mut read: impl FnMut() -> f64,
) -> Result<f64, process::Error> {
    let mut progress = process::Progress::new(stalled, ceiling);
    loop {
        let now = read();
        if now == want {
            return Ok(now);
        }
        progress.observe(now)?;
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    process::wait_for(limit, what, || cond().then_some(())).unwrap_or_else(|e| panic!("{e}"));
}

/// `(status, body)` of a GET (the load harness's probe, which the tests share).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    herald_test_support::probe::http_get(addr, path)
}

/// Sum of every sample of `name` whose labels include all of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    herald_test_support::probe::Scrape::parse(text).sum(name, labels)
}

pub fn herald_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_herald"))
}

/// The shared fixtures folder of real objects, or `None` (after a visible skip, or a failure under CI).
pub fn fixtures() -> Option<PathBuf> {
    fixtures::shared_fixtures()
}

/// Every object in a JSON or YAML fixture file; a `List` (`kubectl get -o yaml`) is expanded.
pub fn fixture_objects(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let value: serde_json::Value = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).unwrap()
    } else {
        serde_saphyr::from_str(&text).unwrap()
    };
    match value.get("items").and_then(|i| i.as_array()) {
        Some(items) => items.clone(),
        None => vec![value],
    }
}
