//! Helpers shared by the runner's tests: a busybox root and a request.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::path::Path;

use corral_runner::{Limits, Profile, Rootfs, SandboxRequest, Stdio};

/// Copies Debian's static busybox into `dir/bin` with one symlink per applet.
pub fn busybox_root(dir: &Path) {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "missing /bin/busybox: install Debian's busybox-static (integration/install-deps.sh)"
    );
    for d in ["bin", "tmp", "proc", "dev", "etc"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    let out = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
        }
    }
}

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
    }
}
