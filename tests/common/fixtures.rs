//! Where the shared fixtures (real objects from real clusters, `../shared/fixtures`) are, for the tests that
//! read them as an extra layer over the project's own `tests/fixtures/`.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;

/// The shared fixtures folder (`HERALD_FIXTURES`, else `../shared/fixtures`) when it exists. When it does not:
/// under CI (env `CI` set) the test fails, since a skipped layer must not pass there; elsewhere the test is
/// skipped with a `SKIPPED <test>: <reason>` line written straight to stderr (libtest does not capture a
/// direct write), so a skip is always visible.
pub fn shared_fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("HERALD_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("../shared/fixtures missing (CI requires it)");
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("test");
    let line = format!(
        "SKIPPED {test}: shared fixtures folder {} not found (set HERALD_FIXTURES)\n",
        dir.display()
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    None
}
