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

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (v2 and v3); libmimalloc-sys
/// 0.1.49 does not name it.
#[cfg(not(feature = "system-allocator"))]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// When mimalloc hands freed memory back to the OS, in milliseconds after it is freed (-1:
/// never), for this command; the `MIMALLOC_PURGE_DELAY` environment variable overrides it.
///
/// Training, eval and bench: never. A training step frees and reallocates the same large
/// activations every few hundred milliseconds, and with mimalloc's default (10 ms) the kernel
/// zeroes the pages again on the next step (7-13% of a `fast` training step in `perf`). The
/// cost is memory: `bench`'s peak is unchanged, but a full `fast` training run, which also
/// validates in other batch sizes, peaked at 1,077 MiB against 790 MiB (BENCHMARKS.md).
///
/// `serve`: at once. A server runs for weeks and sees bursts; mimalloc carries out a delayed
/// purge only on a later allocation by the same thread, which an idle server never makes, so
/// after a flood of 5 MiB bodies the default kept 239 MiB resident against 110 MiB before it;
/// with 0 the server went back to 91 MiB (RELIABILITY.md, "Server under stress").
fn set_purge_delay(command: &cli::Command) {
    #[cfg(not(feature = "system-allocator"))]
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        let delay_ms = if matches!(command, cli::Command::Serve(_)) { 0 } else { -1 };
        // SAFETY: sets one integer option; mimalloc reads it on its next purge decision.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, delay_ms) };
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    set_purge_delay(&cli.command);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,classify=info")),
        )
        .init();
    if let Err(e) = classify::device::init_compute_threads(cli.threads.map(usize::from)) {
        tracing::warn!("cannot set up the compute threads (--threads): {e}");
    }
    if let Some(text) = &cli.decode_memory {
        let set = classify::data::store::parse_cache_mem(text).and_then(classify::data::budget::set_decode_memory);
        if let Err(e) = set {
            eprintln!("error: --decode-memory: {e}");
            return ExitCode::from(2);
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
