//! The real Prometheus and Alertmanager (Debian `prometheus`, `prometheus-alertmanager`, installed by
//! tools/test) as child processes of a test.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

/// A child process killed when the test ends, whatever happens.
pub use herald_test_support::process::ChildGuard as Proc;

/// The first of `names` that is installed; fails the test, naming tools/test, when none is (tests check
/// [`super::fixtures::tool`] first, so a missing tool is a visible skip outside CI).
pub fn which(names: &[&str]) -> String {
    for name in names {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {name}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if found {
            return name.to_string();
        }
    }
    panic!(
        "none of {names:?} is installed: run tools/test, which installs the Debian packages prometheus and \
         prometheus-alertmanager"
    );
}

/// Start Prometheus with `config` (its `prometheus.yml`) in `dir`, on a free port, logging to
/// `dir/prometheus.log`, with `extra_args` on its command line.
pub fn start(dir: &Path, config: &str, extra_args: &[&str]) -> (Proc, SocketAddr) {
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let addr = super::free_addr();
    let child = Command::new(which(&["prometheus"]))
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .args(extra_args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("start prometheus");
    (Proc(child), addr)
}

/// Start Alertmanager with `config` (its `alertmanager.yml`) in `dir`, on a free port, clustering off,
/// logging to `dir/alertmanager.log`.
pub fn start_alertmanager(dir: &Path, config: &str) -> (Proc, SocketAddr) {
    std::fs::write(dir.join("alertmanager.yml"), config).unwrap();
    let addr = super::free_addr();
    let child = Command::new(which(&["prometheus-alertmanager", "alertmanager"]))
        .arg(format!(
            "--config.file={}",
            dir.join("alertmanager.yml").display()
        ))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("alertmanager.log")).unwrap())
        .spawn()
        .expect("start alertmanager");
    (Proc(child), addr)
}
