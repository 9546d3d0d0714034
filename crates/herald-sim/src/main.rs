//! `herald-sim`: the simulated cluster as a program of its own, for kubectl, the harnesses and anyone who wants
//! a Kubernetes API with Events and KubeVirt objects on loopback. It only parses flags and serves; what it serves
//! lives in the library. It must not grow agent behaviour: herald is a client of it, like kubectl.

// A harness, not the agent: a broken invariant here fails a test or a measurement, loudly, which is what a panic does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;

use clap::Parser;

/// A protocol-faithful local Kubernetes API server for Events and KubeVirt's VMs, VMIs and migrations, with
/// its ground truth at /sim/truth and faults on demand.
#[derive(Parser)]
#[command(name = "herald-sim", version, about)]
struct Cli {
    #[command(flatten)]
    sim: herald_sim::SimArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(herald_sim::run(cli.sim)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
