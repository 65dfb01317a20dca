//! `corral` is a small front for `corral-farm` (src/front.rs): a plain
//! `runner exec` is handed to the exec service by the front itself; every
//! other command, help, a command line it cannot parse, `--own-container`
//! and `--action` are left to `corral-farm` beside it, which says and does
//! what it always did; without `corral-farm` the front says what is
//! missing.
//!
//! Here the `corral-farm` beside the front is a shell script that writes
//! down its arguments and becomes the `corral-farm` cargo built, so each
//! test sees which program did what. Runs as root (as CI does) with
//! Debian's busybox-static.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use corral_integration::bench::sandbox::busybox_root;
use corral_integration::process::output_within;

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// A directory holding the front, a recording `corral-farm` (unless the
/// test leaves it out), a busybox root and a runtime directory whose
/// removal at the end makes the exec service leave.
struct Install {
    tmp: tempfile::TempDir,
}

impl Install {
    fn new(with_farm: bool) -> Install {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let bin = tmp.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let front = Path::new(env!("CARGO_BIN_EXE_corral"));
        if fs::hard_link(front, bin.join("corral")).is_err() {
            fs::copy(front, bin.join("corral")).unwrap();
        }
        if with_farm {
            let script = format!(
                "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
                tmp.path().join("farm.log").display(),
                env!("CARGO_BIN_EXE_corral-farm"),
            );
            fs::write(bin.join("corral-farm"), script).unwrap();
            fs::set_permissions(bin.join("corral-farm"), fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        fs::create_dir(tmp.path().join("run")).unwrap();
        fs::set_permissions(tmp.path().join("run"), fs::Permissions::from_mode(0o700)).unwrap();
        busybox_root(&tmp.path().join("root")).unwrap();
        Install { tmp }
    }

    /// `corral ARGS…` run from this directory, with its runtime directory.
    fn corral(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(self.tmp.path().join("bin/corral"));
        cmd.args(args)
            .env("XDG_RUNTIME_DIR", self.tmp.path().join("run"))
            .env_remove("RUST_LOG");
        output_within(&mut cmd, RUN_TIMEOUT).unwrap()
    }

    /// `corral runner exec --root ROOT EXTRA… -- ARGS…`.
    fn exec(&self, extra: &[&str], args: &[&str]) -> Output {
        let root = self.tmp.path().join("root").display().to_string();
        let mut all = vec!["runner", "exec", "--root", root.as_str()];
        all.extend(extra);
        all.push("--");
        all.extend(args);
        self.corral(&all)
    }

    /// The argument lists `corral-farm` was started with, one a line.
    fn farm_calls(&self) -> Vec<String> {
        fs::read_to_string(self.tmp.path().join("farm.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_plain_runner_exec_is_run_by_the_front_through_the_service() {
    let install = Install::new(true);
    for word in ["first", "second"] {
        let out = install.exec(&[], &["/bin/echo", word]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("{word}\n"));
    }
    let out = install.exec(&[], &["/bin/sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    // The farm only ever served: the first call started its service.
    let calls = install.farm_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(
        calls[0].starts_with("runner resident --socket "),
        "{calls:?}"
    );
}

#[test]
fn everything_else_is_left_to_the_farm() {
    let install = Install::new(true);
    let out = install.corral(&["--version"]);
    assert!(text(&out.stdout).starts_with("corral "), "{out:?}");

    let help = install.corral(&["runner", "exec", "--help"]);
    let farm_help = Command::new(env!("CARGO_BIN_EXE_corral-farm"))
        .args(["runner", "exec", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    assert_eq!(text(&help.stdout), text(&farm_help.stdout));
    assert!(text(&help.stdout).contains("--own-container"));

    let bad = install.exec(&["--bogus"], &["/bin/true"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(text(&bad.stderr).contains("--bogus"), "{bad:?}");

    let own = install.exec(&["--own-container"], &["/bin/echo", "own"]);
    assert!(own.status.success(), "{}", text(&own.stderr));
    assert_eq!(text(&own.stdout), "own\n");

    let calls = install.farm_calls();
    assert_eq!(calls[0], "--version", "{calls:?}");
    assert_eq!(calls[1], "runner exec --help", "{calls:?}");
    assert!(calls[2].starts_with("runner exec --root ") && calls[2].contains("--bogus"));
    assert!(calls[3].contains("--own-container"), "{calls:?}");
    assert_eq!(calls.len(), 4, "{calls:?}");
}

#[test]
fn a_mistake_in_a_plain_runner_exec_is_named_by_the_front_as_the_farm_names_it() {
    let install = Install::new(true);
    let args = ["runner", "exec", "--", "/bin/true"];
    let out = install.corral(&args);
    let farm = Command::new(env!("CARGO_BIN_EXE_corral-farm"))
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("choose the root"), "{out:?}");
    assert_eq!(text(&out.stderr), text(&farm.stderr));
    assert!(install.farm_calls().is_empty());
}

#[test]
fn without_the_farm_beside_it_the_front_says_what_is_missing() {
    let install = Install::new(false);
    let missing: PathBuf = install.tmp.path().join("bin/corral-farm");
    for out in [install.corral(&["up"]), install.exec(&[], &["/bin/true"])] {
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("{} is missing", missing.display()))
                && err.contains("cargo build --release"),
            "{err}"
        );
    }
}
