//! `herald-sim` as a user runs it: it says where it serves, and what it serves there is the simulator's API
//! with its ground truth, checked over plain HTTP as kubectl or a harness would reach it.

// A test binary: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

/// Kills the simulator however the test ends.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn herald_sim_serves_the_api_and_its_truth_where_it_says() {
    let mut child = Kill(
        Command::new(env!("CARGO_BIN_EXE_herald-sim"))
            .args(["--listen", "127.0.0.1:0", "--rate", "0", "--no-kubevirt"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let line = std::io::BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("Kubernetes API at"))
        .expect("herald-sim says where it serves");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("an address in the line");
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap();

    let (status, body) = herald_test_support::probe::http_get(addr, "/api/v1/events").unwrap();
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["kind"], "EventList", "{body}");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{body}");

    let (status, truth) = herald_test_support::probe::http_get(addr, "/sim/truth").unwrap();
    assert_eq!(status, 200, "{truth}");
}

#[test]
fn herald_sim_refuses_an_unknown_flag_naming_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald-sim"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}
