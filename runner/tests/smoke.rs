//! Runs real containers through `isolate::run_forked`, as root (CI) in a
//! busybox root. The full escape suite lives in integration/tests.

use std::path::{Path, PathBuf};

use corral_runner::{Host, Limits, Profile, Rootfs, RunnerConfig, SandboxRequest, Stdio};

fn busybox_root(dir: &Path) {
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

fn request(root: &Path, scratch: &Path, out: &Path, script: &str) -> SandboxRequest {
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
    }
}

#[test]
fn echo_in_busybox_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    busybox_root(&root);
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let out: PathBuf = tmp.path().join("out");
    let host = Host::probe(&RunnerConfig::default()).unwrap();
    let req = request(&root, &scratch, &out, "echo hello; id; cat /proc/self/status | grep -E 'Seccomp|NoNewPrivs|Cap'; hostname; echo x > /new; exit 3");
    let outcome = corral_runner::isolate::run_forked(&host, &req).unwrap();
    let stdout = std::fs::read_to_string(&out).unwrap();
    let stderr = std::fs::read_to_string(out.with_extension("err")).unwrap();
    eprintln!("{outcome:?}\n{stdout}\n{stderr}");
    assert_eq!(outcome.exit_code, Some(3));
    assert!(stdout.starts_with("hello\n"));
}
