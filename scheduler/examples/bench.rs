//! Runs the scheduler benchmark without the `corral` binary:
//! `cargo run --release -p corral-scheduler --example bench [WORKERS ACTIONS]`.

use corral_scheduler::bench::{run, BenchOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut options = BenchOptions::default();
    if let Some(w) = args.next() {
        options.workers = w.parse().map_err(|e| format!("WORKERS {w:?}: {e}"))?;
    }
    if let Some(a) = args.next() {
        options.actions = a.parse().map_err(|e| format!("ACTIONS {a:?}: {e}"))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(options))?;
    println!("{report}");
    Ok(())
}
