//! `fsd-chaos`: the chaos runs on the network-namespace lab of
//! `deploy/chaos/` (root; the lab must be up: `netns.sh up N`).
//!
//! ```text
//! fsd-chaos smoke [--seed S] [--gap-ms MS]
//! fsd-chaos long --minutes N [--seed S] [--gap-ms MS] [--kinds K1,K2,...]
//! ```
//!
//! `--kinds` runs the long run's cycle restricted to those fault kinds (in
//! the cycle's order), e.g. `--kinds crash-point` to exercise one kind.
//!
//! The lab is read from `FSD_STATE`, `FSD_PREFIX`, `FSD_BIN` (as the
//! scripts do); the scripts are found in `FSD_CHAOS_DIR`, else
//! `deploy/chaos` of this workspace. Prints the run's log, then the report
//! ending with one `CHAOS-RESULT {json}` line. Exit 0: every invariant
//! held; 1: a violation or no convergence; 2: bad usage or no lab.

#[path = "../chaos/mod.rs"]
mod chaos;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chaos::lab::Lab;
use chaos::workload::Opts;

const USAGE: &str =
    "usage: fsd-chaos smoke|long [--minutes N] [--seed S] [--gap-ms MS] [--kinds K1,K2,...]";

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("fsd-chaos: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool, String> {
    let mut args = std::env::args().skip(1);
    let what = args.next().ok_or(USAGE)?;
    let mut opts = Opts::default();
    let mut minutes = 30u64;
    let mut kinds: Vec<&'static str> = chaos::scenario::CYCLE.to_vec();
    while let Some(a) = args.next() {
        if a == "--kinds" {
            let list = args
                .next()
                .ok_or(format!("--kinds needs a list; {USAGE}"))?;
            kinds = chaos::scenario::kinds(&list)?;
            continue;
        }
        let mut value = |name: &str| -> Result<u64, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{name} needs a number; {USAGE}"))
        };
        match a.as_str() {
            "--minutes" => minutes = value("--minutes")?,
            "--seed" => opts.seed = value("--seed")?,
            "--gap-ms" => opts.mean_gap = Duration::from_millis(value("--gap-ms")?.max(10)),
            _ => return Err(format!("unknown argument {a}; {USAGE}")),
        }
    }
    let chaos_dir = std::env::var_os("FSD_CHAOS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/chaos"));
    let mut lab = Lab::from_env(chaos_dir)?;
    lab.log(&format!(
        "lab {} with {} nodes, seed {}",
        lab.state.display(),
        lab.ids.len(),
        opts.seed
    ));
    let report = match what.as_str() {
        "smoke" => chaos::scenario::smoke(&mut lab, opts),
        "long" => chaos::scenario::long(&mut lab, opts, minutes.max(1), &kinds),
        _ => return Err(USAGE.into()),
    };
    print!("{}", report.render());
    Ok(report.ok())
}
