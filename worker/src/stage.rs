//! Input staging: turning an input root digest into a directory on disk.
//!
//! A staged input root is never written to: the runner stacks it as the
//! lowest, read-only layer of an overlay and the action writes into the
//! overlay's upper directory. So one staged tree can serve every action
//! with the same input root, at once and one after the other. The
//! [`Stager`] keeps staged trees by root digest under `trees/`; staging a
//! root already there costs a map lookup (the "warm" case), and a new root
//! is built once from the local CAS with hardlinks (the "cold" case).
//!
//! Files with a `unix_mode` or `mtime` node property get a private copy,
//! because setting either on a hardlink would change the shared CAS inode;
//! executable files link the local CAS's executable variant. A cache file
//! already linked as often as the file system allows is stood in for by a
//! copy (`link.rs`). Directories get their `unix_mode` (default 0755)
//! and `mtime` after their entries are made. `SubtreeReadOnly` directories
//! are listed for the runner.
//!
//! Trees are bounded by a total file budget and evicted least recently
//! used first, never while an action holds them ([`StagedInput`] is a
//! lease). The directory is emptied at start-up.
//!
//! Blobs a tree lacks locally are fetched under the staging action's
//! instance name. The cache itself is keyed by root digest alone, so a tree
//! staged for one instance name is reused for another with the same root
//! (content-addressed, the same bytes); docs/worker.md says what that means.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use corral_cas::{Digest, DigestFunction, RequestContext};
use corral_proto::reapi;

use crate::error::{Error, Result};
use crate::fsutil::remove_tree;
use crate::link::Linker;
use crate::localcas::LocalCas;
use crate::lru::Lru;
use crate::tree::{fetch_tree, InputTree};
use crate::validate::{subtree_read_only, SymlinkPolicy};

/// Builds and caches staged input roots.
#[derive(Clone)]
pub struct Stager {
    inner: Arc<Inner>,
}

struct Inner {
    cas: LocalCas,
    root: PathBuf,
    options: StagerOptions,
    state: Mutex<State>,
}

/// Settings of the [`Stager`].
#[derive(Clone, Copy, Debug)]
pub struct StagerOptions {
    /// Which symlink targets input trees may hold.
    pub policy: SymlinkPolicy,
    /// Files (summed over staged trees) kept before least-recently-used
    /// trees not in use are removed.
    pub max_files: u64,
    /// Host uid and gid that staged directories are given, so that the
    /// sandbox's user may create entries in them through the overlay (the
    /// runner's `sandbox_uid`/`sandbox_gid`). None: leave the worker's.
    pub owner: Option<(u32, u32)>,
}

#[derive(Default)]
struct State {
    entries: HashMap<Digest, Entry>,
    lru: Lru<Digest>,
}

struct Entry {
    staged: Arc<Staged>,
    users: usize,
}

/// One staged tree, shared by its leases.
#[derive(Debug)]
pub struct Staged {
    /// The staged input root.
    pub path: PathBuf,
    /// Every Directory message of the tree (for output capture).
    pub tree: Arc<InputTree>,
    /// Directories (relative to the input root) where a `SubtreeReadOnly`
    /// region starts.
    pub read_only_subtrees: Vec<String>,
    /// Directories inside such a region marked `SubtreeReadOnly: false`,
    /// where writing is allowed again.
    pub writable_subtrees: Vec<String>,
    /// Files placed in the tree (counting repeats).
    pub files: u64,
}

/// A lease on a staged input root; the tree stays while a lease exists.
pub struct StagedInput {
    /// The staged tree, shared by every run that uses it.
    pub staged: Arc<Staged>,
    /// True if the tree was already staged.
    pub reused: bool,
    stager: Stager,
}

impl std::ops::Deref for StagedInput {
    type Target = Staged;
    fn deref(&self) -> &Staged {
        &self.staged
    }
}

impl Drop for StagedInput {
    fn drop(&mut self) {
        let root = self.staged.tree.root;
        let victims = {
            let mut state = self.stager.state();
            if let Some(e) = state.entries.get_mut(&root) {
                e.users = e.users.saturating_sub(1);
            }
            self.stager.evict(&mut state)
        };
        self.stager.delete_later(victims);
    }
}

impl Stager {
    /// Opens (emptying) the staged-tree cache at `root`. Blocking.
    pub fn open(cas: LocalCas, root: PathBuf, options: StagerOptions) -> Result<Self> {
        remove_tree(&root)?;
        fs::create_dir_all(&root)
            .map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
        Ok(Stager {
            inner: Arc::new(Inner {
                cas,
                root,
                options,
                state: Mutex::new(State::default()),
            }),
        })
    }

    /// The local CAS the stager links files from.
    pub fn cas(&self) -> &LocalCas {
        &self.inner.cas
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Updated in single statements; a poisoned state is still consistent.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn evict(&self, state: &mut State) -> Vec<Arc<Staged>> {
        let State { entries, lru } = state;
        let keys = lru.evict(self.inner.options.max_files, |k| {
            entries.get(k).is_some_and(|e| e.users > 0)
        });
        keys.iter()
            .filter_map(|k| entries.remove(k))
            .map(|e| e.staged)
            .collect()
    }

    fn delete_later(&self, victims: Vec<Arc<Staged>>) {
        for v in victims {
            let path = v.path.clone();
            let remove = move || {
                if let Err(e) = remove_tree(&path) {
                    tracing::warn!(error = %e, "could not remove an evicted staged tree");
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(h) => drop(h.spawn_blocking(remove)),
                Err(_) => remove(),
            }
        }
    }

    /// Number of trees held and their total file count.
    pub fn usage(&self) -> (usize, u64) {
        let state = self.state();
        (state.entries.len(), state.lru.total())
    }

    /// Stages `root` under the default instance name `""`: for tools with
    /// no action behind them (the staging benchmark). An action's inputs
    /// are staged with [`stage_in`](Self::stage_in), under its own.
    pub async fn stage(&self, function: DigestFunction, root: Digest) -> Result<StagedInput> {
        self.stage_in(&RequestContext::internal("", function), root)
            .await
    }

    /// Stages the input root `root`, reusing a tree staged before; what is
    /// not local is fetched under `ctx` (the action's instance name and
    /// digest function).
    pub async fn stage_in(&self, ctx: &RequestContext, root: Digest) -> Result<StagedInput> {
        if let Some(staged) = self.lease(&root) {
            return Ok(StagedInput {
                staged,
                reused: true,
                stager: self.clone(),
            });
        }
        let started = std::time::Instant::now();
        let tree =
            Arc::new(fetch_tree(&self.inner.cas, ctx, root, self.inner.options.policy).await?);
        let fetched = started.elapsed();
        let mut attempt = 0;
        let staged = loop {
            attempt += 1;
            match self.build(ctx, &tree).await {
                Ok(built) => break built,
                // A blob evicted from the local CAS between fetch and link:
                // fetch again once.
                Err(e) if e.is_missing_blob() && attempt == 1 => continue,
                Err(e) => return Err(e),
            }
        };
        let (dir, made) = staged;
        tracing::debug!(
            %root,
            files = made.files,
            tree_ms = fetched.as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "staged a new input root"
        );
        let staged = Arc::new(Staged {
            path: dir,
            tree,
            read_only_subtrees: made.read_only,
            writable_subtrees: made.writable,
            files: made.files,
        });
        let victims = {
            let mut state = self.state();
            if let Some(existing) = state.entries.get_mut(&root) {
                // Another action staged the same root meanwhile: use that one.
                existing.users += 1;
                let theirs = existing.staged.clone();
                state.lru.touch(&root);
                drop(state);
                self.delete_later(vec![staged]);
                return Ok(StagedInput {
                    staged: theirs,
                    reused: true,
                    stager: self.clone(),
                });
            }
            state.entries.insert(
                root,
                Entry {
                    staged: staged.clone(),
                    users: 1,
                },
            );
            state.lru.insert(root, staged.files.max(1));
            self.evict(&mut state)
        };
        self.delete_later(victims);
        Ok(StagedInput {
            staged,
            reused: false,
            stager: self.clone(),
        })
    }

    fn lease(&self, root: &Digest) -> Option<Arc<Staged>> {
        let mut state = self.state();
        let entry = state.entries.get_mut(root)?;
        entry.users += 1;
        let staged = entry.staged.clone();
        state.lru.touch(root);
        Some(staged)
    }

    /// Makes sure every file is local, then materialises the tree in a
    /// fresh directory.
    async fn build(
        &self,
        ctx: &RequestContext,
        tree: &Arc<InputTree>,
    ) -> Result<(PathBuf, Materialised)> {
        let cas = &self.inner.cas;
        let digests: Vec<Digest> = tree.files.iter().map(|(d, _)| *d).collect();
        let started = std::time::Instant::now();
        cas.ensure(ctx, &digests).await?;
        let ensured = started.elapsed();
        let mut sources = HashMap::with_capacity(tree.files.len());
        for (d, exec) in &tree.files {
            sources.insert((*d, *exec), cas.link_source(d, *exec).await?);
        }
        tracing::debug!(
            blobs = digests.len(),
            ensure_ms = ensured.as_secs_f64() * 1e3,
            sources_ms = (started.elapsed() - ensured).as_secs_f64() * 1e3,
            "input blobs local"
        );
        let dir = self.inner.root.join(format!(
            "{}-{}-{}.{:08x}",
            tree.function,
            tree.root.hash_hex(),
            tree.root.size(),
            fastrand::u32(..)
        ));
        let tree = tree.clone();
        let target = dir.clone();
        // Copies of blobs out of links are made beside the tree, not in it:
        // every entry of the tree is an input the action sees.
        let mut spare_dir = dir.clone().into_os_string();
        spare_dir.push(".spares");
        let spare_dir = PathBuf::from(spare_dir);
        let owner = self.inner.options.owner.filter(|(uid, gid)| {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ) != (*uid, *gid)
        });
        let result = tokio::task::spawn_blocking(move || {
            let mut out = Materialised {
                owner,
                ..Default::default()
            };
            let mut linker = Linker::new(sources, spare_dir);
            materialise(&tree, &mut linker, &tree.root, &target, "", false, &mut out)?;
            if linker.copies() > 0 {
                tracing::debug!(
                    root = %tree.root,
                    copies = linker.copies(),
                    "cache files out of links: staged from copies"
                );
            }
            Ok::<_, Error>(out)
        })
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?;
        match result {
            Ok(out) => Ok((dir, out)),
            Err(e) => {
                let _ = remove_tree(&dir);
                Err(e)
            }
        }
    }
}

#[derive(Default)]
struct Materialised {
    read_only: Vec<String>,
    writable: Vec<String>,
    files: u64,
    owner: Option<(u32, u32)>,
}

/// Creates `dest` from the Directory `digest` of `tree`. Blocking.
/// `parent_read_only`: whether the parent lies in a `SubtreeReadOnly`
/// region; a directory where that changes is recorded for the runner.
fn materialise(
    tree: &InputTree,
    linker: &mut Linker,
    digest: &Digest,
    dest: &Path,
    rel: &str,
    parent_read_only: bool,
    out: &mut Materialised,
) -> Result<()> {
    let dir = tree.dir(digest)?;
    let props = dir.node_properties.as_ref();
    let read_only = subtree_read_only(props).unwrap_or(parent_read_only);
    match (parent_read_only, read_only) {
        (false, true) => out.read_only.push(rel.to_string()),
        (true, false) => out.writable.push(rel.to_string()),
        _ => {}
    }
    fs::create_dir(dest).map_err(|e| Error::io(format!("creating {}", dest.display()), e))?;
    for f in &dir.files {
        let d = Digest::from_proto_field(tree.function, f.digest.as_ref(), "digest")?;
        let key = (d, f.is_executable);
        let path = dest.join(&f.name);
        let props = f.node_properties.as_ref();
        if props.is_some_and(|p| p.unix_mode.is_some() || p.mtime.is_some()) {
            private_copy(linker.source(&key)?, &path, &d, f.is_executable, props)?;
        } else {
            linker.link(&key, &path)?;
        }
        out.files += 1;
    }
    for l in &dir.symlinks {
        let path = dest.join(&l.name);
        std::os::unix::fs::symlink(&l.target, &path)
            .map_err(|e| Error::io(format!("creating symlink {}", path.display()), e))?;
    }
    for sub in &dir.directories {
        let d = Digest::from_proto_field(tree.function, sub.digest.as_ref(), "digest")?;
        let sub_rel = if rel.is_empty() {
            sub.name.clone()
        } else {
            format!("{rel}/{}", sub.name)
        };
        materialise(
            tree,
            linker,
            &d,
            &dest.join(&sub.name),
            &sub_rel,
            read_only,
            out,
        )?;
    }
    if let Some((uid, gid)) = out.owner {
        nix::unistd::chown(dest, Some(uid.into()), Some(gid.into()))
            .map_err(|e| Error::io(format!("chown {}", dest.display()), e.into()))?;
    }
    let mode = props
        .and_then(|p| p.unix_mode.as_ref())
        .map(|m| m.value)
        .unwrap_or(0o755);
    fs::set_permissions(dest, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("chmod {}", dest.display()), e))?;
    if let Some(t) = props.and_then(|p| p.mtime.as_ref()) {
        set_mtime(dest, t)?;
    }
    Ok(())
}

/// A file of its own for an input whose mode or mtime is given.
fn private_copy(
    src: &Path,
    dest: &Path,
    digest: &Digest,
    executable: bool,
    props: Option<&reapi::NodeProperties>,
) -> Result<()> {
    fs::copy(src, dest).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::MissingBlob(digest.to_string())
        } else {
            Error::io(
                format!("copying {} to {}", src.display(), dest.display()),
                e,
            )
        }
    })?;
    let default = if executable { 0o555 } else { 0o444 };
    let mut mode = props
        .and_then(|p| p.unix_mode.as_ref())
        .map(|m| m.value)
        .unwrap_or(default);
    if executable {
        mode |= 0o111;
    }
    fs::set_permissions(dest, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("chmod {}", dest.display()), e))?;
    if let Some(t) = props.and_then(|p| p.mtime.as_ref()) {
        set_mtime(dest, t)?;
    }
    Ok(())
}

fn set_mtime(path: &Path, t: &corral_proto::protobuf::Timestamp) -> Result<()> {
    let when = if t.seconds >= 0 {
        SystemTime::UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos.max(0) as u32)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(t.seconds.unsigned_abs())
    };
    let file =
        fs::File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    file.set_modified(when)
        .map_err(|e| Error::io(format!("setting mtime of {}", path.display()), e))
}
