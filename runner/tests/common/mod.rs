//! Helpers shared by the runner's tests: a busybox root and a request.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::path::Path;

use corral_runner::{Limits, Profile, Rootfs, SandboxRequest, Stdio};

// The crate's unit tests and these share one busybox-root builder.
#[path = "../../src/testkit.rs"]
mod testkit;
// Not every test binary that includes this module builds roots.
#[allow(unused_imports)]
pub use testkit::busybox_root;

pub fn request(root: &Path, scratch: &Path, out: &Path, script: &str) -> SandboxRequest {
    SandboxRequest {
        rootfs: Rootfs::InputRoot,
        input_root: root.to_path_buf(),
        scratch_dir: scratch.to_path_buf(),
        args: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![("PATH".into(), "/bin".into())],
        cwd: String::new(),
        stdin: Stdio::Null,
        stdout: Stdio::File(out.to_path_buf()),
        stderr: Stdio::File(out.with_extension("err")),
        profile: Profile::default_profile().unwrap(),
        network: false,
        limits: Limits::default(),
        uid: 0,
        gid: 0,
        read_only_subtrees: vec![],
        writable_subtrees: vec![],
        controlling_tty: false,
        hostname: "corral".into(),
        upper_holds_only_directories: false,
        upper_watch: None,
    }
}
