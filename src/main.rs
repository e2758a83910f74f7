//! `classify`: parse flags, start logging, dispatch, map errors to exit codes
//! (0 success, 1 failure, 2 usage — clap's own).

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

/// burn allocates fresh buffers for most ops; glibc's malloc hands large ones back to the OS
/// and faults them in again on every step. mimalloc keeps them.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,classify=info")),
        )
        .init();
    if let Some(threads) = cli.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).build_global() {
            tracing::warn!("cannot set --threads: {e}");
        }
    }
    let device = match classify::device::select(cli.device) {
        Ok(device) => device,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match commands::run(cli.command, &device, cli.device.name()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
