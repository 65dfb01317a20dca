//! `corral`, the program a person runs: a small front for `corral-farm`,
//! which is installed beside it and does every command.
//!
//! A plain `corral runner exec` (no `--action`, no `--own-container`)
//! only hands its command to the resident exec service and waits, so its
//! cost is mostly its own start: loading a program relocates every pointer
//! in its read-only data, page by page, and `corral-farm`'s 56,000 cost
//! about 1.3 ms a call, as long as the sandbox run itself
//! (docs/benchmarks.md). This program links only that client, runs such a
//! command itself, and becomes `corral-farm` (`execve`, the same process
//! and arguments) for everything else, for help, for a command line it
//! cannot parse, and when the service cannot take the command, so that
//! `corral-farm` says and does exactly what it would have.

#[path = "cmd/runner/exec_args.rs"]
mod exec_args;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use corral_runner::exec::Served;

/// The program this one becomes, beside it.
const FARM: &str = "corral-farm";

/// `corral runner exec`'s flags, as `corral-farm` parses them.
#[derive(Debug, Parser)]
#[command(name = "corral runner exec")]
struct RunnerExec {
    #[command(flatten)]
    args: exec_args::ExecArgs,
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let farm = std::env::current_exe().map(|exe| exe.with_file_name(FARM));
    let farm = match farm {
        Ok(farm) => farm,
        Err(e) => {
            eprintln!("corral: find this program, to run {FARM} beside it: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run_here(&argv, &farm) {
        Some(Ok(status)) => ExitCode::from(status.clamp(0, 255) as u8),
        Some(Err(e)) => {
            eprintln!("corral: {e:#}");
            ExitCode::FAILURE
        }
        None => become_the_farm(&argv, &farm),
    }
}

/// Runs a plain `runner exec` through the exec service that `farm` runs;
/// `None` for anything else, and for a command the service did not take.
fn run_here(argv: &[OsString], farm: &Path) -> Option<anyhow::Result<i32>> {
    let (Some(runner), Some(exec)) = (argv.get(1), argv.get(2)) else {
        return None;
    };
    if runner != "runner" || exec != "exec" {
        return None;
    }
    let parsed = RunnerExec::try_parse_from(argv.iter().skip(2)).ok()?;
    if parsed.args.action.is_some() {
        return None;
    }
    let config = match exec_args::load_config(parsed.args.config.as_ref()) {
        Ok(config) => config,
        Err(e) => return Some(Err(e)),
    };
    let plain = match parsed.args.plain() {
        Ok(plain) if plain.served => plain,
        Ok(_) => return None,
        Err(e) => return Some(Err(e)),
    };
    let served =
        corral_runner::exec::try_served(&config, plain.config.as_deref(), farm, plain.options);
    match served {
        Ok(Served::Ran(status)) => Some(Ok(status)),
        Ok(Served::Not { .. }) => None,
        Err(e) => Some(Err(e.into())),
    }
}

/// Replaces this process with `farm` and the same arguments; returns only
/// when that fails, saying why.
fn become_the_farm(argv: &[OsString], farm: &Path) -> ExitCode {
    let mut command = std::process::Command::new(farm);
    command.args(argv.iter().skip(1));
    if let Some(name) = argv.first() {
        command.arg0(name);
    }
    let e = command.exec();
    if e.kind() == std::io::ErrorKind::NotFound {
        eprintln!(
            "corral: {} is missing: this program hands every command but a plain \
             `runner exec` to {FARM}, which is built and installed beside it \
             (`cargo build --release` builds both; `cargo install --path .` installs both)",
            farm.display()
        );
    } else {
        eprintln!("corral: run {}: {e}", farm.display());
    }
    ExitCode::FAILURE
}
