//! Bazel 4.2.3 downloads through Corral (`--experimental_remote_downloader`):
//! an `http_file` with a `sha256` is fetched once by the server from an
//! HTTP origin on loopback; a second workspace gets it from the farm with
//! the origin stopped; a wrong checksum fails the build with a message
//! that names the URL and both checksums.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use corral_integration::bazel::Bazel;
use corral_integration::server::{CorralServer, ServerOptions};

/// A one-file HTTP origin on 127.0.0.1, in a thread, counting requests.
struct Origin {
    port: u16,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Origin {
    fn start(body: &'static [u8]) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(body);
            }
        });
        Origin {
            port,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/dist/tool-1.0.txt", self.port)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops accepting and closes the port.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop();
    }
}

const TOOL: &[u8] = b"#!/bin/sh\necho tool 1.0 from the origin\n";

fn sha256_hex(data: &[u8]) -> String {
    use corral_cas::{Digest, DigestFunction};
    Digest::of_bytes(DigestFunction::Sha256, data).hash_hex()
}

/// A scratch workspace with an `http_file` of `url` and a genrule that
/// copies it to `bazel-bin/copied.txt`.
fn workspace(url: &str, sha256: &str) -> anyhow::Result<Bazel> {
    let bazel = Bazel::new("workspace")?;
    let ws = bazel.workspace();
    let mut workspace = std::fs::read_to_string(ws.join("WORKSPACE"))?;
    workspace.push_str(&format!(
        "\nload(\"@bazel_tools//tools/build_defs/repo:http.bzl\", \"http_file\")\n\
         http_file(\n    name = \"tool\",\n    urls = [\"{url}\"],\n    sha256 = \"{sha256}\",\n    downloaded_file_path = \"tool.txt\",\n)\n"
    ));
    std::fs::write(ws.join("WORKSPACE"), workspace)?;
    let mut build = std::fs::read_to_string(ws.join("BUILD"))?;
    build.push_str(
        "\ngenrule(\n    name = \"copied\",\n    srcs = [\"@tool//file\"],\n    outs = [\"copied.txt\"],\n    cmd = \"cp $< $@\",\n)\n",
    );
    std::fs::write(ws.join("BUILD"), build)?;
    Ok(bazel)
}

fn flags(server: &CorralServer) -> Vec<String> {
    vec![
        format!("--experimental_remote_downloader={}", server.grpc_url()),
        format!("--remote_cache={}", server.grpc_url()),
        "--spawn_strategy=processwrapper-sandbox".to_string(),
        "--genrule_strategy=processwrapper-sandbox".to_string(),
        "--remote_timeout=30".to_string(),
    ]
}

#[test]
fn http_file_is_downloaded_once_by_the_farm_and_checked() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let mut origin = Origin::start(TOOL);
    let server = CorralServer::start_with(ServerOptions {
        config_toml: Some(format!(
            "execution = false\n[asset.download]\nallowed_hosts = [\"127.0.0.1:{}\"]\n",
            origin.port
        )),
        ..Default::default()
    })?;

    let first = workspace(&origin.url(), &sha256_hex(TOOL))?;
    first.build(&["//:copied"], &flags(&server))?;
    assert_eq!(std::fs::read(first.bin("copied.txt"))?, TOOL);
    assert_eq!(origin.hits(), 1, "the farm downloaded the file once");

    // A second workspace, its own Bazel and caches, the origin gone: the
    // farm serves the file.
    origin.stop();
    let second = workspace(&origin.url(), &sha256_hex(TOOL))?;
    second.build(&["//:copied"], &flags(&server))?;
    assert_eq!(std::fs::read(second.bin("copied.txt"))?, TOOL);
    assert_eq!(origin.hits(), 1);

    // The origin serves other bytes than the checksum says: the build
    // fails, and the message says why.
    let mut wrong_origin = Origin::start(b"tampered content\n");
    let server = CorralServer::start_with(ServerOptions {
        config_toml: Some(format!(
            "execution = false\n[asset.download]\nallowed_hosts = [\"127.0.0.1:{}\"]\n",
            wrong_origin.port
        )),
        ..Default::default()
    })?;
    let third = workspace(&wrong_origin.url(), &sha256_hex(TOOL))?;
    let mut args = Bazel::offline_flags();
    args.extend(["--color=no".to_string(), "--curses=no".to_string()]);
    args.extend(flags(&server));
    args.push("//:copied".to_string());
    let failed = third.run("build", &args)?;
    assert!(!failed.success, "the build must fail:\n{}", failed.stderr);
    eprintln!("{}", failed.stderr);
    for says in [
        wrong_origin.url().as_str(),
        "does not match checksum.sri",
        "nothing was stored",
    ] {
        assert!(
            failed.stderr.contains(says),
            "bazel's error does not say {says:?}:\n{}",
            failed.stderr
        );
    }
    wrong_origin.stop();
    Ok(())
}
