//! The shared fixtures: real objects from real clusters, kept next to the repository (never copied into it).
//! Tests read the project's own fixtures in `tests/fixtures/` always, and these as an extra layer when present.

use std::io::Write;
use std::path::PathBuf;

/// `../shared/fixtures` when present. Missing: a panic under CI (`CI` set), which requires them; elsewhere a
/// `SKIPPED <test>: <reason>` line written straight to stderr (libtest does not capture a direct write, so the
/// skip is visible in every run) and `None`.
pub fn shared_fixtures() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("../shared/fixtures missing (CI requires it)");
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("<unnamed test>");
    let line = format!(
        "SKIPPED {test}: ../shared/fixtures not found ({} is not a directory)\n",
        dir.display()
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    None
}
