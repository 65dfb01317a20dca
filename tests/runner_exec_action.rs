//! `corral runner exec --action DIGEST --remote URL`: an action uploaded to
//! a real `corral server` is fetched, staged and run in the sandbox as a
//! worker would; its stdout, stderr and exit code come out as this
//! process's, and `--outputs` holds what it produced.
//!
//! Runs as root (the sandbox user is then uid 65534, so the cache must be
//! reachable by it) with Debian's busybox-static installed.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use corral_cas::{Digest, DigestFunction};
use corral_integration::bench::sandbox::busybox_root;
use corral_integration::server::{corral_binary, CorralServer};
use corral_proto::prost::Message;
use corral_proto::reapi;
use corral_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;

const F: DigestFunction = DigestFunction::Sha256;
/// Longest a `corral runner exec` may take before the test gives up.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Every blob of a tree built from a directory on disk.
#[derive(Default)]
struct Blobs(BTreeMap<Digest, Vec<u8>>);

impl Blobs {
    fn add(&mut self, data: Vec<u8>) -> Digest {
        let d = Digest::of_bytes(F, &data);
        self.0.insert(d, data);
        d
    }

    fn add_message<M: Message>(&mut self, m: &M) -> Digest {
        self.add(m.encode_to_vec())
    }

    /// The Directory for `dir` (and every blob below it).
    fn add_dir(&mut self, dir: &Path) -> Digest {
        let mut out = reapi::Directory::default();
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().into_string().unwrap();
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.symlinks.push(reapi::SymlinkNode {
                    name,
                    target: std::fs::read_link(&path)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                    node_properties: None,
                });
            } else if meta.is_dir() {
                let digest = self.add_dir(&path);
                out.directories.push(reapi::DirectoryNode {
                    name,
                    digest: Some(digest.to_proto()),
                });
            } else {
                let digest = self.add(std::fs::read(&path).unwrap());
                out.files.push(reapi::FileNode {
                    name,
                    digest: Some(digest.to_proto()),
                    is_executable: meta.permissions().mode() & 0o111 != 0,
                    node_properties: None,
                });
            }
        }
        self.add_message(&out)
    }

    /// Uploads everything with BatchUpdateBlobs, in batches under the
    /// server's default 4 MiB limit.
    fn upload(&self, url: &str) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut cas = ContentAddressableStorageClient::connect(url.to_string())
                .await
                .unwrap()
                .max_encoding_message_size(16 << 20)
                .max_decoding_message_size(16 << 20);
            let mut batches: Vec<Vec<(&Digest, &Vec<u8>)>> = vec![Vec::new()];
            let mut size = 0;
            for (d, data) in &self.0 {
                if size + data.len() > 3 << 20 && !batches.last().unwrap().is_empty() {
                    batches.push(Vec::new());
                    size = 0;
                }
                size += data.len();
                batches.last_mut().unwrap().push((d, data));
            }
            for batch in batches {
                let requests = batch
                    .into_iter()
                    .map(|(d, data)| reapi::batch_update_blobs_request::Request {
                        digest: Some(d.to_proto()),
                        data: data.clone(),
                        compressor: 0,
                    })
                    .collect();
                let response = cas
                    .batch_update_blobs(reapi::BatchUpdateBlobsRequest {
                        instance_name: "buildstream".into(),
                        requests,
                        digest_function: F.to_proto(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                for r in response.responses {
                    assert_eq!(r.status.unwrap_or_default().code, 0, "upload failed");
                }
            }
        });
    }
}

/// Runs `corral ARGS` with stdin `stdin`, under a deadline.
fn corral(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(corral_binary().unwrap())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(RUN_TIMEOUT) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("corral {args:?} did not finish within {RUN_TIMEOUT:?}");
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A world: a server holding a busybox input root, a Command and an Action.
struct World {
    server: CorralServer,
    tmp: tempfile::TempDir,
    action: Digest,
    /// `sleep 30` with a 1 s timeout.
    slow: Digest,
    /// BuildStream's shape: `output_paths` with `..`, DIRECTORY_ONLY.
    bst: Digest,
}

const SCRIPT: &str = r#"
echo "greeting=$GREETING"
echo "pwd=$(pwd)"
echo "home=${HOME-unset}"
echo "stdin=[$(cat)]"
cat input.txt > out/sub/result.txt
echo made >> out/sub/result.txt
mkdir gen
echo g > gen/g.txt
ln -s g.txt gen/link
echo oops >&2
exit 3
"#;

const EXPECTED_STDOUT: &str = "greeting=hello there\npwd=/src\nhome=unset\nstdin=[]\n";

fn world() -> World {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs as root (as CI does)"
    );
    let tmp = tempfile::tempdir().unwrap();
    // The sandbox's user (uid 65534) must reach the cache and scratch.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = tmp.path().join("root");
    busybox_root(&root).unwrap();
    std::fs::create_dir(root.join("src")).unwrap();
    std::fs::write(root.join("src/input.txt"), "from the input root\n").unwrap();

    let mut blobs = Blobs::default();
    let input_root = blobs.add_dir(&root);
    #[allow(deprecated)]
    let command = reapi::Command {
        arguments: vec!["/bin/sh".into(), "-c".into(), SCRIPT.into()],
        environment_variables: vec![
            reapi::command::EnvironmentVariable {
                name: "GREETING".into(),
                value: "hello there".into(),
            },
            reapi::command::EnvironmentVariable {
                name: "PATH".into(),
                value: "/bin".into(),
            },
        ],
        output_files: vec!["out/sub/result.txt".into()],
        output_directories: vec!["gen".into()],
        working_directory: "src".into(),
        ..Default::default()
    };
    let command = blobs.add_message(&command);
    let action = blobs.add_message(&reapi::Action {
        command_digest: Some(command.to_proto()),
        input_root_digest: Some(input_root.to_proto()),
        timeout: Some(corral_proto::protobuf::Duration {
            seconds: 60,
            nanos: 0,
        }),
        ..Default::default()
    });
    let sleep = blobs.add_message(&reapi::Command {
        arguments: vec!["/bin/sleep".into(), "30".into()],
        ..Default::default()
    });
    let slow = blobs.add_message(&reapi::Action {
        command_digest: Some(sleep.to_proto()),
        input_root_digest: Some(input_root.to_proto()),
        timeout: Some(corral_proto::protobuf::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    });
    let bst = blobs.add_message(&reapi::Command {
        arguments: vec![
            "sh".into(),
            "-c".into(),
            "mkdir -p ../made/deep && echo x > ../made/deep/x && ln -s deep/x ../made/link".into(),
        ],
        environment_variables: vec![reapi::command::EnvironmentVariable {
            name: "PATH".into(),
            value: "/bin".into(),
        }],
        output_paths: vec!["../made".into()],
        output_directory_format: reapi::command::OutputDirectoryFormat::DirectoryOnly as i32,
        working_directory: "src".into(),
        ..Default::default()
    });
    let bst = blobs.add_message(&reapi::Action {
        command_digest: Some(bst.to_proto()),
        input_root_digest: Some(input_root.to_proto()),
        ..Default::default()
    });
    let server = CorralServer::start().unwrap();
    blobs.upload(&server.url());
    World {
        server,
        tmp,
        action,
        slow,
        bst,
    }
}

impl World {
    fn cache(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }

    /// `corral runner exec --action D --remote URL --instance buildstream`
    /// plus `extra`.
    fn exec(&self, action: &str, url: &str, extra: &[&str]) -> Output {
        self.exec_in("buildstream", action, url, extra)
    }

    fn exec_in(&self, instance: &str, action: &str, url: &str, extra: &[&str]) -> Output {
        let cache = self.cache();
        let mut args = vec![
            "runner",
            "exec",
            "--action",
            action,
            "--remote",
            url,
            "--instance",
            instance,
            "--cache",
            cache.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        corral(&args, b"this must not reach the action\n")
    }
}

#[test]
fn reproduces_an_action_with_its_output_and_exit_code() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let w = world();
    let action = w.action.to_string();
    for round in 0..2 {
        // The second round finds every blob in the cache.
        let outputs = w.tmp.path().join(format!("outputs-{round}"));
        let out = w.exec(
            &action,
            &w.server.url(),
            &["--outputs", outputs.to_str().unwrap()],
        );
        assert_eq!(
            text(&out.stdout),
            EXPECTED_STDOUT,
            "round {round}; stderr: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stderr), "oops\n", "round {round}");
        assert_eq!(out.status.code(), Some(3), "round {round}");

        let result = std::fs::read_to_string(outputs.join("src/out/sub/result.txt")).unwrap();
        assert_eq!(result, "from the input root\nmade\n");
        assert_eq!(
            std::fs::read_to_string(outputs.join("src/gen/g.txt")).unwrap(),
            "g\n"
        );
        assert_eq!(
            std::fs::read_link(outputs.join("src/gen/link")).unwrap(),
            Path::new("g.txt")
        );
        // Only the outputs: nothing else of the input root.
        assert!(!outputs.join("src/input.txt").exists());
        assert!(!outputs.join("bin").exists());
    }
    // The cache stays.
    assert!(w.cache().join("cas").is_dir());

    // Another instance name gets the host's system directories as `/`,
    // with the input root at the exec path, as the scheduler would choose.
    let outputs = w.tmp.path().join("outputs-host");
    let out = w.exec_in(
        "main",
        &action,
        &w.server.url(),
        &["--outputs", outputs.to_str().unwrap()],
    );
    assert_eq!(
        text(&out.stdout),
        EXPECTED_STDOUT.replace("pwd=/src", "pwd=/work/src"),
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        std::fs::read_to_string(outputs.join("src/out/sub/result.txt")).unwrap(),
        "from the input root\nmade\n"
    );
}

#[test]
fn unknown_malformed_and_unreachable_are_named() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let w = world();
    let url = w.server.url();

    let unknown = Digest::of_bytes(F, b"no such action").to_string();
    let out = w.exec(&unknown, &url, &[]);
    assert_ne!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("action {unknown} is not in the CAS at {url}")),
        "{stderr}"
    );

    let out = w.exec("0123/abc", &url, &[]);
    assert_ne!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("\"0123/abc\" is not a digest: expected HASH/SIZE"),
        "{stderr}"
    );

    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("http://127.0.0.1:{port}");
    let out = w.exec(&unknown, &nowhere, &[]);
    assert_ne!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach the CAS at {nowhere}")),
        "{stderr}"
    );
}

#[test]
fn the_action_timeout_applies_and_keep_keeps_the_scratch() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let w = world();
    let started = std::time::Instant::now();
    let out = w.exec(&w.slow.to_string(), &w.server.url(), &["--keep"]);
    let stderr = text(&out.stderr);
    assert!(started.elapsed() < Duration::from_secs(20), "{stderr}");
    assert_eq!(out.status.code(), Some(128 + 9), "{stderr}");
    assert!(stderr.contains("stopped by a limit: Timeout"), "{stderr}");
    let kept = stderr
        .lines()
        .find_map(|l| l.strip_prefix("corral: scratch directory kept at "))
        .and_then(|l| l.split(" (").next())
        .unwrap_or_else(|| panic!("no kept scratch directory in {stderr:?}"));
    assert!(Path::new(kept).join("upper").is_dir(), "{kept}");
    std::fs::remove_dir_all(kept).unwrap();
}

#[test]
fn output_paths_with_dots_and_directory_only_format() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let w = world();
    let outputs = w.tmp.path().join("outputs");
    let out = w.exec(
        &w.bst.to_string(),
        &w.server.url(),
        &["--outputs", outputs.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(text(&out.stderr), "");
    // `../made` from working directory `src` is `made` in the input root.
    assert_eq!(
        std::fs::read_to_string(outputs.join("made/deep/x")).unwrap(),
        "x\n"
    );
    assert_eq!(
        std::fs::read_link(outputs.join("made/link")).unwrap(),
        Path::new("deep/x")
    );
}
