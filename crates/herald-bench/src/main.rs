//! `herald-bench`: the load, agent (`stream`) and soak harnesses as a program. It only parses flags; the
//! harnesses live in the library. It measures the `herald` and `herald-sim` programs it finds and never judges
//! the numbers.

// A harness, not the agent: a broken invariant here fails a test or a measurement, loudly, which is what a panic does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Measure herald: the load harness and the soak harness (see BENCHMARKS.md). Runs the `herald` and
/// `herald-sim` programs built beside it (`cargo build --release --workspace`).
#[derive(Parser)]
#[command(name = "herald-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the simulator and the agent as separate processes, stream Events, report throughput, CPU, memory,
    /// delays and drops.
    Load(herald_bench::LoadArgs),
    /// Run the simulator and the agent for a long time with watch faults; sample RSS, CPU, counters and the
    /// ground truth to a CSV and a PNG plot; report RSS flatness and whether every occurrence was counted once.
    Soak(herald_bench::SoakArgs),
    /// Run the agent against a recorded API server (pages and watch lines prepared before the clock starts),
    /// so the agent is what is measured: a paged list, a watch burst, or a steady watch; report its CPU per
    /// Event, memory, processing delay, and which process was the bottleneck.
    Stream(herald_bench::StreamArgs),
    /// The recorded API server `stream` starts as its own process.
    #[command(hide = true)]
    RecordedServer(herald_bench::ServerArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Load(args) => herald_bench::run_load(args),
        Command::Soak(args) => herald_bench::run_soak(args),
        Command::Stream(args) => herald_bench::run_stream(args),
        Command::RecordedServer(args) => match herald_bench::run_server(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("herald-bench recorded-server: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
