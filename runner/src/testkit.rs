//! Helpers for the crate's unit tests that run real sandboxes.

use std::path::Path;

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
