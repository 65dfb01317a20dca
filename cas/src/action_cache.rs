//! The action cache: (instance name, action digest) → ActionResult.
//!
//! Both implementations share the two rules that make a cache trustworthy:
//! an update is validated before it is stored ([`validate`]), and a lookup is
//! a hit only when every blob the result names is still in the CAS
//! ([`is_complete`]) — otherwise a client would be told to download outputs
//! that eviction already removed. The digest function is part of the key
//! (it is part of [`Digest`]), so SHA-256 and BLAKE3 results never mix.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use corral_proto::reapi;
use prost::Message;

use crate::digest::{Digest, DigestFunction};
use crate::error::{Error, Result};
use crate::store::{get_message, BlobStore};

/// An action cache, usable as `Arc<dyn ActionCache>`.
#[async_trait]
pub trait ActionCache: Send + Sync + 'static {
    /// The result cached for `action` in `instance`, if there is one and all
    /// blobs it names still exist.
    async fn get(&self, instance: &str, action: &Digest) -> Result<Option<reapi::ActionResult>>;

    /// Stores `result` for `action` after [`validate`] accepted it
    /// (`InvalidArgument` naming the offending field otherwise).
    async fn update(
        &self,
        instance: &str,
        action: &Digest,
        result: reapi::ActionResult,
    ) -> Result<()>;
}

/// Checks an ActionResult from the network: every digest well formed, every
/// output path relative and free of NUL, output directories carrying a tree.
/// Field names in errors are those of `action_result`.
pub fn validate(function: DigestFunction, result: &reapi::ActionResult) -> Result<()> {
    let digest = |d: Option<&reapi::Digest>, field: String| -> Result<()> {
        Digest::from_proto_field(function, d, &field).map(drop)
    };
    for (i, f) in result.output_files.iter().enumerate() {
        check_path(
            &f.path,
            false,
            &format!("action_result.output_files[{i}].path"),
        )?;
        digest(
            f.digest.as_ref(),
            format!("action_result.output_files[{i}].digest"),
        )?;
    }
    for (i, d) in result.output_directories.iter().enumerate() {
        check_path(
            &d.path,
            true,
            &format!("action_result.output_directories[{i}].path"),
        )?;
        // REAPI 2.3 lets a result carry the Tree, the root Directory (with
        // every Directory uploaded, `output_directory_format`
        // DIRECTORY_ONLY, as BuildStream asks), or both.
        if d.tree_digest.is_none() && d.root_directory_digest.is_none() {
            return Err(Error::invalid(
                format!("action_result.output_directories[{i}]"),
                "has neither tree_digest nor root_directory_digest",
            ));
        }
        if let Some(tree) = &d.tree_digest {
            digest(
                Some(tree),
                format!("action_result.output_directories[{i}].tree_digest"),
            )?;
        }
        if let Some(root) = &d.root_directory_digest {
            digest(
                Some(root),
                format!("action_result.output_directories[{i}].root_directory_digest"),
            )?;
        }
    }
    // The 2.0 symlink lists are deprecated in favour of `output_symlinks`,
    // but REAPI 2.0 clients (Bazel 4) still fill them.
    #[allow(deprecated)]
    let symlinks = [
        ("output_symlinks", &result.output_symlinks),
        ("output_file_symlinks", &result.output_file_symlinks),
        (
            "output_directory_symlinks",
            &result.output_directory_symlinks,
        ),
    ];
    for (name, list) in symlinks {
        for (i, s) in list.iter().enumerate() {
            check_path(&s.path, false, &format!("action_result.{name}[{i}].path"))?;
            if s.target.is_empty() || s.target.contains('\0') {
                return Err(Error::invalid(
                    format!("action_result.{name}[{i}].target"),
                    "must be a non-empty path without NUL",
                ));
            }
        }
    }
    if let Some(d) = &result.stdout_digest {
        digest(Some(d), "action_result.stdout_digest".into())?;
    }
    if let Some(d) = &result.stderr_digest {
        digest(Some(d), "action_result.stderr_digest".into())?;
    }
    Ok(())
}

/// Output paths are relative to the working directory. Clients do use `.`
/// and `..` components (BuildStream does), so those are accepted; absolute
/// paths and NUL are not. Only a directory may be the empty path (the
/// working directory itself).
fn check_path(path: &str, may_be_empty: bool, field: &str) -> Result<()> {
    if path.is_empty() && !may_be_empty {
        return Err(Error::invalid(field, "is empty"));
    }
    if path.starts_with('/') {
        return Err(Error::invalid(field, format!("{path:?} is absolute")));
    }
    if path.contains('\0') {
        return Err(Error::invalid(field, "contains NUL"));
    }
    Ok(())
}

/// Adds a Tree and the files it lists to `out`; false if the Tree is gone.
async fn tree_blobs(
    cas: &dyn BlobStore,
    function: DigestFunction,
    tree: &reapi::Digest,
    out: &mut Vec<Digest>,
) -> Result<bool> {
    let tree_digest = Digest::from_proto_field(function, Some(tree), "tree_digest")?;
    let tree: reapi::Tree = match get_message(cas, &tree_digest).await {
        Ok(t) => t,
        Err(Error::NotFound(_)) | Err(Error::InvalidArgument { .. }) => return Ok(false),
        Err(e) => return Err(e),
    };
    out.push(tree_digest);
    for d in tree.root.iter().chain(tree.children.iter()) {
        for f in &d.files {
            if let Some(fd) = &f.digest {
                out.push(Digest::from_proto(function, fd)?);
            }
        }
    }
    Ok(true)
}

/// Adds a root Directory, every Directory below it and their files to
/// `out`; false if any Directory is gone.
async fn directory_blobs(
    cas: &dyn BlobStore,
    function: DigestFunction,
    root: &reapi::Digest,
    out: &mut Vec<Digest>,
) -> Result<bool> {
    let mut pending = vec![Digest::from_proto_field(
        function,
        Some(root),
        "root_directory_digest",
    )?];
    let mut seen = std::collections::HashSet::new();
    while let Some(digest) = pending.pop() {
        if !seen.insert(digest) {
            continue;
        }
        let dir: reapi::Directory = match get_message(cas, &digest).await {
            Ok(d) => d,
            Err(Error::NotFound(_)) | Err(Error::InvalidArgument { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        out.push(digest);
        for f in &dir.files {
            if let Some(fd) = &f.digest {
                out.push(Digest::from_proto(function, fd)?);
            }
        }
        for sub in &dir.directories {
            pending.push(Digest::from_proto_field(
                function,
                sub.digest.as_ref(),
                "digest",
            )?);
        }
    }
    Ok(true)
}

/// Every blob an ActionResult refers to, including the files inside its
/// output directories' Tree messages. A Tree that is itself missing or
/// unreadable makes the result incomplete (`Ok(None)`).
pub async fn referenced_blobs(
    cas: &dyn BlobStore,
    function: DigestFunction,
    result: &reapi::ActionResult,
) -> Result<Option<Vec<Digest>>> {
    let mut out = Vec::new();
    let mut push = |d: &Option<reapi::Digest>| -> Result<()> {
        if let Some(d) = d {
            out.push(Digest::from_proto(function, d)?);
        }
        Ok(())
    };
    for f in &result.output_files {
        push(&f.digest)?;
    }
    push(&result.stdout_digest)?;
    push(&result.stderr_digest)?;
    for dir in &result.output_directories {
        let complete = match (&dir.tree_digest, &dir.root_directory_digest) {
            (Some(tree), _) => tree_blobs(cas, function, tree, &mut out).await?,
            (None, Some(root)) => directory_blobs(cas, function, root, &mut out).await?,
            (None, None) => false,
        };
        if !complete {
            return Ok(None);
        }
    }
    Ok(Some(out))
}

/// True when every blob `result` names is in `cas`.
pub async fn is_complete(
    cas: &dyn BlobStore,
    function: DigestFunction,
    result: &reapi::ActionResult,
) -> Result<bool> {
    let Some(mut blobs) = referenced_blobs(cas, function, result).await? else {
        return Ok(false);
    };
    blobs.sort();
    blobs.dedup();
    Ok(cas.find_missing(&blobs).await?.is_empty())
}

type Key = (String, Digest);

/// An action cache in memory, for tests and throw-away servers.
pub struct MemoryActionCache {
    cas: Arc<dyn BlobStore>,
    entries: RwLock<HashMap<Key, reapi::ActionResult>>,
}

impl MemoryActionCache {
    pub fn new(cas: Arc<dyn BlobStore>) -> Self {
        MemoryActionCache {
            cas,
            entries: RwLock::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl ActionCache for MemoryActionCache {
    async fn get(&self, instance: &str, action: &Digest) -> Result<Option<reapi::ActionResult>> {
        let found = {
            // Poison is ignored: every update is one insert.
            let map = self.entries.read().unwrap_or_else(|p| p.into_inner());
            map.get(&(instance.to_string(), *action)).cloned()
        };
        match found {
            Some(r) if is_complete(&*self.cas, action.function(), &r).await? => Ok(Some(r)),
            _ => Ok(None),
        }
    }

    async fn update(
        &self,
        instance: &str,
        action: &Digest,
        result: reapi::ActionResult,
    ) -> Result<()> {
        validate(action.function(), &result)?;
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        map.insert((instance.to_string(), *action), result);
        Ok(())
    }
}

/// An action cache on disk: one file per entry holding the encoded
/// ActionResult, written to a temp file and renamed like blobs are.
///
/// Layout: `<root>/<function>/<sha256(instance name)>/<hash>-<size>`.
/// Instance names are hashed because they may contain slashes and any
/// characters.
pub struct DiskActionCache {
    root: PathBuf,
    cas: Arc<dyn BlobStore>,
}

impl DiskActionCache {
    /// Opens (creating if needed) the action cache at `root`. Blocking.
    pub fn open(root: impl Into<PathBuf>, cas: Arc<dyn BlobStore>) -> Result<Self> {
        let root = root.into();
        let tmp = root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp)
                .map_err(|e| Error::io(format!("clearing {}", tmp.display()), e))?;
        }
        fs::create_dir_all(&tmp)
            .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        Ok(DiskActionCache { root, cas })
    }

    fn path(&self, instance: &str, action: &Digest) -> PathBuf {
        let instance_dir = Digest::of_bytes(DigestFunction::Sha256, instance.as_bytes()).hash_hex();
        self.root
            .join(action.function().name())
            .join(instance_dir)
            .join(format!("{}-{}", action.hash_hex(), action.size()))
    }
}

#[async_trait]
impl ActionCache for DiskActionCache {
    async fn get(&self, instance: &str, action: &Digest) -> Result<Option<reapi::ActionResult>> {
        let path = self.path(instance, action);
        let data = match tokio::fs::read(&path).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        let result = match reapi::ActionResult::decode(&data[..]) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "dropping unreadable action cache entry");
                let _ = tokio::fs::remove_file(&path).await;
                return Ok(None);
            }
        };
        if is_complete(&*self.cas, action.function(), &result).await? {
            Ok(Some(result))
        } else {
            Ok(None)
        }
    }

    async fn update(
        &self,
        instance: &str,
        action: &Digest,
        result: reapi::ActionResult,
    ) -> Result<()> {
        validate(action.function(), &result)?;
        let path = self.path(instance, action);
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{:016x}", fastrand::u64(..)));
        let data = result.encode_to_vec();
        tokio::task::spawn_blocking(move || -> Result<()> {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
            }
            fs::write(&tmp, &data)
                .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
            fs::rename(&tmp, &path).map_err(|e| {
                let _ = fs::remove_file(&tmp);
                Error::io(format!("renaming to {}", path.display()), e)
            })
        })
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
    }
}
