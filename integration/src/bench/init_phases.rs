//! The request's part of the runner service's runs, step by step: the
//! `init phases (µs)` lines a runner logs at debug level (one per run, see
//! docs/sandbox.md), summed up as p50 and p95 of each step for
//! `corral bench sandbox --phases`.

use super::stats::quantile;

/// The steps, in the order the init takes them.
pub const STEPS: [&str; 9] = [
    "plan_in",
    "root",
    "settings",
    "capabilities",
    "landlock",
    "seccomp",
    "spawn",
    "command",
    "report_out",
];

/// The line's text without terminal colour codes.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-letter.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of `key=N` in `line`, if there.
fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .and_then(|n| n.parse().ok())
}

/// Each step's (name, p50, p95) in microseconds over every run logged in
/// `log`, and the number of runs; no steps when none was logged.
pub fn summarize(log: &str) -> (usize, Vec<(&'static str, f64, f64)>) {
    let lines: Vec<String> = log
        .lines()
        .filter(|l| l.contains("init phases"))
        .map(plain)
        .collect();
    if lines.is_empty() {
        return (0, Vec::new());
    }
    let steps = STEPS
        .iter()
        .map(|step| {
            let values: Vec<f64> = lines.iter().filter_map(|l| field(l, step)).collect();
            let q = |p| quantile(&values, p).unwrap_or(f64::NAN);
            (*step, q(0.5), q(0.95))
        })
        .collect();
    (lines.len(), steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_read_from_coloured_and_plain_lines() {
        let log = "\
x INFO corral_runner::service: limit memory: cgroup v1\n\
2026-12-03T21:31:47Z \u{1b}[34mDEBUG\u{1b}[0m corral_runner::sandbox::watch: init phases (µs) \
\u{1b}[3mplan_in\u{1b}[0m\u{1b}[2m=\u{1b}[0m100 root=10 settings=1 capabilities=1 landlock=1 \
seccomp=1 spawn=1 command=1 report_out=1\n\
y DEBUG corral_runner::sandbox::watch: init phases (µs) plan_in=300 root=30 settings=3 \
capabilities=3 landlock=3 seccomp=3 spawn=3 command=3 report_out=3\n";
        let (runs, steps) = summarize(log);
        assert_eq!(runs, 2);
        assert_eq!(steps.len(), STEPS.len());
        assert_eq!(steps[0], ("plan_in", 100.0, 300.0));
        assert_eq!(steps[1], ("root", 10.0, 30.0));
    }

    #[test]
    fn a_log_without_phases_has_no_steps() {
        assert_eq!(summarize("nothing here\n"), (0, Vec::new()));
    }
}
