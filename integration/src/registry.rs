//! A real OCI registry for tests: Debian's `docker-registry` on an ephemeral
//! 127.0.0.1 port with a config of its own, images built with `umoci` and
//! pushed with `skopeo`. Dropping the [`Registry`] stops it and removes its
//! storage.
//!
//! Missing tools are errors that name the Debian package, never a skip: CI
//! installs them with `integration/install-deps.sh`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

/// Manifest format a push stores in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    /// OCI image manifest (and OCI index for `push_all`).
    Oci,
    /// Docker v2 schema 2 manifest.
    V2s2,
    /// OCI image manifest with the layers recompressed with zstd.
    OciZstd,
}

/// A running `docker-registry`.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
    /// `user:password` that pushes use, when the registry requires them.
    push_creds: Option<String>,
}

impl Registry {
    /// Starts a registry on a free loopback port and waits until it answers.
    pub fn start() -> Result<Registry> {
        Registry::start_with(None)
    }

    /// Starts a registry that requires HTTP basic authentication for
    /// `user`, whose bcrypt hash (`$2b$…`, as htpasswd writes it) is
    /// `bcrypt_hash`; pushes use `user:password`.
    pub fn start_with_auth(user: &str, password: &str, bcrypt_hash: &str) -> Result<Registry> {
        let mut registry = Registry::start_with(Some(format!("{user}:{bcrypt_hash}\n")))?;
        registry.push_creds = Some(format!("{user}:{password}"));
        Ok(registry)
    }

    fn start_with(htpasswd: Option<String>) -> Result<Registry> {
        let mut last = None;
        for _ in 0..3 {
            match Registry::try_start(htpasswd.as_deref()) {
                Ok(r) => return Ok(r),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("docker-registry did not start")))
    }

    fn try_start(htpasswd: Option<&str>) -> Result<Registry> {
        let dir = tempfile::tempdir().context("temp dir for the registry")?;
        // Bind port 0 to learn a free port; the registry takes it over. A race
        // with another process is possible but rare, and `start` retries.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("storage").display()
        );
        if let Some(line) = htpasswd {
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, line)?;
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: corral-test\n    path: {}\n",
                file.display()
            ));
        }
        std::fs::write(&config, yaml)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| tool_missing("docker-registry", "docker-registry", e))?;
        let mut registry = Registry {
            child,
            dir,
            addr,
            push_creds: None,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if registry.answers() {
                return Ok(registry);
            }
            if let Some(status) = registry.child.try_wait()? {
                bail!(
                    "docker-registry exited with {status}: {}",
                    registry.log().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "docker-registry on {} did not answer within 15 s: {}",
            registry.addr,
            registry.log().unwrap_or_default()
        )
    }

    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(&self.addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").is_err() {
            return false;
        }
        // 200, or 401 when the registry requires authentication: either way it serves.
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).is_ok() && (buf.ends_with(b"200") || buf.ends_with(b"401"))
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `docker://127.0.0.1:PORT/REPO_TAG`, the form Bazel users write.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("docker://{}/{repo_tag}", self.addr)
    }

    /// The registry's own log, for failure messages.
    pub fn log(&self) -> Result<String> {
        Ok(std::fs::read_to_string(
            self.dir.path().join("registry.log"),
        )?)
    }

    /// Pushes image `name` of `layout` to `REPO:TAG`; returns the manifest
    /// digest the registry stored.
    pub fn push(
        &self,
        layout: &OciLayout,
        name: &str,
        repo_tag: &str,
        format: ManifestFormat,
    ) -> Result<String> {
        self.copy(layout, name, repo_tag, format, false)
    }

    /// Pushes an index of `layout` (see [`OciLayout::make_index`]) with all
    /// its images; returns the index digest.
    pub fn push_all(&self, layout: &OciLayout, name: &str, repo_tag: &str) -> Result<String> {
        self.copy(layout, name, repo_tag, ManifestFormat::Oci, true)
    }

    fn copy(
        &self,
        layout: &OciLayout,
        name: &str,
        repo_tag: &str,
        format: ManifestFormat,
        all: bool,
    ) -> Result<String> {
        let digest_file = self.dir.path().join("pushed-digest");
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false", "--digestfile"])
            .arg(&digest_file);
        if all {
            cmd.arg("--all");
        }
        if let Some(creds) = &self.push_creds {
            cmd.arg("--dest-creds").arg(creds);
        }
        match format {
            ManifestFormat::Oci => cmd.args(["--format", "oci"]),
            ManifestFormat::V2s2 => cmd.args(["--format", "v2s2"]),
            ManifestFormat::OciZstd => {
                cmd.args(["--format", "oci", "--dest-compress-format", "zstd"])
            }
        };
        cmd.arg(format!("oci:{}:{name}", layout.path().display()))
            .arg(format!("docker://{}/{repo_tag}", self.addr));
        run(&mut cmd, "skopeo", "skopeo")?;
        let digest = std::fs::read_to_string(&digest_file)?.trim().to_string();
        if !digest.starts_with("sha256:") {
            bail!("skopeo wrote an unexpected digest {digest:?}");
        }
        Ok(digest)
    }

    /// Flips one byte of a stored blob, keeping its size, so the registry
    /// serves content that no longer matches its digest.
    pub fn corrupt_blob(&self, digest: &str) -> Result<()> {
        let hex = digest
            .strip_prefix("sha256:")
            .context("digest without sha256:")?;
        let path = self
            .dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        let mut bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&path, bytes)?;
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OCI image layout directory that `umoci` builds images in.
pub struct OciLayout {
    dir: PathBuf,
}

impl OciLayout {
    /// `umoci init` in `dir` (which must not exist yet).
    pub fn create(dir: &Path) -> Result<OciLayout> {
        run(
            Command::new("umoci").arg("init").arg("--layout").arg(dir),
            "umoci",
            "umoci",
        )?;
        Ok(OciLayout {
            dir: dir.to_path_buf(),
        })
    }

    /// The layout directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn image(&self, name: &str) -> String {
        format!("{}:{name}", self.dir.display())
    }

    /// A new empty image `name` for linux and `arch` (OCI spelling: amd64, arm64…).
    pub fn new_image(&self, name: &str, arch: &str) -> Result<()> {
        run(
            Command::new("umoci")
                .args(["new", "--image"])
                .arg(self.image(name)),
            "umoci",
            "umoci",
        )?;
        self.config(name, &["--os", "linux", "--architecture", arch])
    }

    /// `umoci config` with extra arguments, e.g. `["--config.env", "A=b"]`.
    pub fn config(&self, name: &str, args: &[&str]) -> Result<()> {
        run(
            Command::new("umoci")
                .args(["config", "--image"])
                .arg(self.image(name))
                .args(args),
            "umoci",
            "umoci",
        )
    }

    /// Adds a layer made by `umoci repack` after `change` edited the unpacked
    /// rootfs: removed files become whiteouts.
    pub fn add_layer(&self, name: &str, change: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        let bundle = self.dir.with_extension(format!("bundle-{name}"));
        run(
            Command::new("umoci")
                .args(["unpack", "--rootless", "--image"])
                .arg(self.image(name))
                .arg(&bundle),
            "umoci",
            "umoci",
        )?;
        change(&bundle.join("rootfs"))?;
        run(
            Command::new("umoci")
                .args(["repack", "--image"])
                .arg(self.image(name))
                .arg(&bundle),
            "umoci",
            "umoci",
        )?;
        std::fs::remove_dir_all(&bundle)?;
        Ok(())
    }

    /// Adds the files under `tree` verbatim as a layer (names such as
    /// `.wh.x` and `.wh..wh..opq` included), through `umoci raw add-layer`.
    pub fn add_tree_layer(&self, name: &str, tree: &Path) -> Result<()> {
        let tar = self.dir.with_extension(format!("layer-{name}.tar"));
        run(
            Command::new("tar")
                .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
                .arg(&tar)
                .arg("-C")
                .arg(tree)
                .arg("."),
            "tar",
            "tar",
        )?;
        run(
            Command::new("umoci")
                .args(["raw", "add-layer", "--image"])
                .arg(self.image(name))
                .arg(&tar),
            "umoci",
            "umoci",
        )?;
        std::fs::remove_file(&tar)?;
        Ok(())
    }

    /// Writes an OCI image index named `name` over the images `members`,
    /// each with the platform its config states, and lists it in
    /// `index.json` so skopeo can push it with `--all`. Returns its digest.
    pub fn make_index(&self, name: &str, members: &[&str]) -> Result<String> {
        let index_path = self.dir.join("index.json");
        let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index_path)?)?;
        let entries = index["manifests"].as_array().cloned().unwrap_or_default();
        let mut manifests = Vec::new();
        for member in members {
            let entry = entries
                .iter()
                .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == *member)
                .with_context(|| format!("no image {member} in the layout"))?;
            let digest = entry["digest"].as_str().context("entry without digest")?;
            let manifest: serde_json::Value = serde_json::from_slice(&self.read_blob(digest)?)?;
            let config_digest = manifest["config"]["digest"]
                .as_str()
                .context("manifest without config")?;
            let config: serde_json::Value =
                serde_json::from_slice(&self.read_blob(config_digest)?)?;
            manifests.push(serde_json::json!({
                "mediaType": entry["mediaType"],
                "digest": digest,
                "size": entry["size"],
                "platform": {"os": config["os"], "architecture": config["architecture"]},
            }));
        }
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        std::fs::write(self.blob_path(&digest), &body)?;
        index["manifests"]
            .as_array_mut()
            .context("index.json without manifests")?
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": digest,
                "size": body.len(),
                "annotations": {"org.opencontainers.image.ref.name": name},
            }));
        std::fs::write(&index_path, serde_json::to_vec(&index)?)?;
        Ok(digest)
    }

    /// The digest of image `name`'s manifest in the layout.
    pub fn manifest_digest(&self, name: &str) -> Result<String> {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.dir.join("index.json"))?)?;
        index["manifests"]
            .as_array()
            .and_then(|m| {
                m.iter()
                    .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == name)
            })
            .and_then(|e| e["digest"].as_str())
            .map(str::to_string)
            .with_context(|| format!("no image {name} in the layout"))
    }

    /// The layer digests of image `name`, lowest first.
    pub fn layer_digests(&self, name: &str) -> Result<Vec<String>> {
        let manifest: serde_json::Value =
            serde_json::from_slice(&self.read_blob(&self.manifest_digest(name)?)?)?;
        Ok(manifest["layers"]
            .as_array()
            .context("manifest without layers")?
            .iter()
            .filter_map(|l| l["digest"].as_str().map(str::to_string))
            .collect())
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        std::fs::read(self.blob_path(digest)).with_context(|| format!("blob {digest}"))
    }
}

/// The OCI name of this machine's architecture.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn run(cmd: &mut Command, tool: &str, package: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| tool_missing(tool, package, e))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn tool_missing(tool: &str, package: &str, e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        anyhow!("`{tool}` is not installed: install the Debian package {package} (integration/install-deps.sh does)")
    } else {
        anyhow!("cannot run {tool}: {e}")
    }
}
