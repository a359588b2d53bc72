//! `filesyncd [run] --dir DIR ...`: validate the configuration, set up
//! logging, run the daemon on a multi-threaded tokio runtime with the
//! control API (`api::serve_daemon`; the daemon never depends on the API).

use std::process::ExitCode;
use std::time::Duration;

use filesyncd::config::{Config, LogFormat, RunArgs};
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: journald and container logs get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// How long a clean shutdown waits for blocking tasks (an index save, a
/// flush) before the process exits anyway.
const CLEAN_SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// The same after a failure (Raft stopped on a storage error): the exit is
/// what the supervisor waits for.
const FAILED_SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// Exit codes: 0 after a clean shutdown, 2 on a bad configuration or a
/// locked data directory, 1 on any other failure.
pub fn run(args: RunArgs) -> ExitCode {
    let config: Config = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("filesyncd: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    match filesyncd_chunkstore::failpoint::setup_from_env() {
        Ok(0) => {}
        Ok(n) => tracing::warn!(points = n, "crash points armed from FAILPOINTS"),
        Err(e) => {
            eprintln!("filesyncd: {e}");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("filesyncd: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(filesyncd::daemon::run(config, filesyncd::api::serve_daemon));
    // Dropping the runtime waits for every blocking task, and one stuck on a
    // dead disk (the very failure that stopped Raft) would keep the process
    // alive with its API gone, so the supervisor never restarts it. Every
    // durable write is crash-safe, so abandoning such a task loses nothing.
    runtime.shutdown_timeout(if result.is_ok() {
        CLEAN_SHUTDOWN_WAIT
    } else {
        FAILED_SHUTDOWN_WAIT
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "filesyncd stopped");
            eprintln!("filesyncd: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
