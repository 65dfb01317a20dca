//! The content-addressed layer store: one unpacked directory per layer blob
//! digest, bounded, evicting least-recently-used layers that nobody holds.
//!
//! Layout under the cache root:
//! `layers/sha256/<hex>/` is the unpacked layer, `layers/sha256/<hex>.json`
//! its metadata (written last, so a directory without it is a crash leftover
//! and is removed on open), `tmp/` holds unpacks in progress.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tree::remove_tree;

/// What is kept about one layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LayerMeta {
    diff_id: String,
    bytes: u64,
    /// Milliseconds since the epoch, strictly increasing within a process,
    /// so LRU order is exact even for uses within the same millisecond.
    last_used: u64,
}

#[derive(Debug)]
struct Entry {
    meta: LayerMeta,
    pins: u32,
    /// `last_used` as last written to disk.
    persisted: u64,
}

/// How stale the on-disk `last_used` may get: the warm path then touches no
/// file, and after a restart LRU order is right to within this much.
const PERSIST_EVERY_MS: u64 = 60_000;

#[derive(Debug, Default)]
struct State {
    layers: HashMap<String, Entry>,
    clock: u64,
}

/// The layer store. Shared through `Arc`; pins keep layers from eviction.
#[derive(Debug)]
pub(crate) struct LayerStore {
    dir: PathBuf,
    tmp: PathBuf,
    state: Mutex<State>,
}

/// A temporary file or directory, removed on drop (if still there).
#[derive(Debug)]
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let result = match std::fs::symlink_metadata(&self.0) {
            Ok(meta) if meta.is_dir() => remove_tree(&self.0),
            Ok(_) => std::fs::remove_file(&self.0).map_err(Error::io("remove temp file", &self.0)),
            Err(_) => Ok(()),
        };
        if let Err(e) = result {
            // Left for the next open, which empties tmp/.
            tracing::debug!(error = %e, "temp path not removed");
        }
    }
}

/// Holds one layer in use: it is not evicted while a pin exists.
#[derive(Debug)]
pub(crate) struct LayerPin {
    store: Arc<LayerStore>,
    digest: String,
    path: PathBuf,
}

impl LayerPin {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
    pub(crate) fn digest(&self) -> &str {
        &self.digest
    }
}

impl Drop for LayerPin {
    fn drop(&mut self) {
        let mut state = self.store.lock();
        if let Some(entry) = state.layers.get_mut(&self.digest) {
            entry.pins = entry.pins.saturating_sub(1);
        }
    }
}

impl LayerStore {
    /// Opens the store under `root`, dropping crash leftovers.
    pub(crate) fn open(root: &Path) -> Result<Arc<LayerStore>> {
        let dir = root.join("layers").join("sha256");
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&dir).map_err(Error::io("create layer directory", &dir))?;
        remove_tree(&tmp)?;
        std::fs::create_dir_all(&tmp).map_err(Error::io("create temp directory", &tmp))?;
        let mut state = State::default();
        let entries = std::fs::read_dir(&dir).map_err(Error::io("list layers", &dir))?;
        let mut dirs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(Error::io("list layers", &dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(hex) = name.strip_suffix(".json") {
                let meta = std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<LayerMeta>(&b).ok());
                match meta {
                    Some(meta) if dir.join(hex).is_dir() => {
                        state.clock = state.clock.max(meta.last_used);
                        let persisted = meta.last_used;
                        state.layers.insert(
                            format!("sha256:{hex}"),
                            Entry {
                                meta,
                                pins: 0,
                                persisted,
                            },
                        );
                    }
                    _ => {
                        tracing::warn!(path = %path.display(), "dropping layer metadata without a layer");
                        let _ = std::fs::remove_file(&path);
                    }
                }
            } else {
                dirs.push((name, path));
            }
        }
        for (name, path) in dirs {
            if !state.layers.contains_key(&format!("sha256:{name}")) {
                tracing::warn!(path = %path.display(), "removing incomplete layer");
                remove_tree(&path)?;
            }
        }
        Ok(Arc::new(LayerStore {
            dir,
            tmp,
            state: Mutex::new(state),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hex(digest: &str) -> &str {
        digest.strip_prefix("sha256:").unwrap_or(digest)
    }

    fn layer_path(&self, digest: &str) -> PathBuf {
        self.dir.join(Self::hex(digest))
    }

    fn meta_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{}.json", Self::hex(digest)))
    }

    /// A fresh path under `tmp/` for a download or an unpack, removed when
    /// the returned guard drops: a failed or cancelled pull leaves nothing.
    pub(crate) fn scratch(&self, what: &str) -> Scratch {
        let mut state = self.lock();
        state.clock += 1;
        Scratch(
            self.tmp
                .join(format!("{what}-{}-{}", std::process::id(), state.clock)),
        )
    }

    /// Pins the layer if it is present, marking it used now.
    pub(crate) fn pin(self: &Arc<Self>, digest: &str) -> Option<LayerPin> {
        let stale = {
            let mut state = self.lock();
            let now = tick(&mut state);
            let entry = state.layers.get_mut(digest)?;
            entry.pins += 1;
            entry.meta.last_used = now;
            if now.saturating_sub(entry.persisted) > PERSIST_EVERY_MS {
                entry.persisted = now;
                Some(entry.meta.clone())
            } else {
                None
            }
        };
        if let Some(meta) = stale {
            self.write_meta(digest, &meta);
        }
        Some(LayerPin {
            store: Arc::clone(self),
            digest: digest.to_string(),
            path: self.layer_path(digest),
        })
    }

    /// The DiffID recorded for a present layer.
    pub(crate) fn diff_id(&self, digest: &str) -> Option<String> {
        self.lock()
            .layers
            .get(digest)
            .map(|e| e.meta.diff_id.clone())
    }

    /// Moves a finished unpack into place and pins it.
    pub(crate) fn insert(
        self: &Arc<Self>,
        digest: &str,
        unpacked_dir: &Path,
        diff_id: &str,
        bytes: u64,
    ) -> Result<LayerPin> {
        if let Some(pin) = self.pin(digest) {
            remove_tree(unpacked_dir)?;
            return Ok(pin);
        }
        let path = self.layer_path(digest);
        remove_tree(&path)?;
        std::fs::rename(unpacked_dir, &path)
            .map_err(Error::io("move layer into the cache", &path))?;
        let meta = {
            let mut state = self.lock();
            let now = tick(&mut state);
            let meta = LayerMeta {
                diff_id: diff_id.to_string(),
                bytes,
                last_used: now,
            };
            state.layers.insert(
                digest.to_string(),
                Entry {
                    meta: meta.clone(),
                    pins: 1,
                    persisted: now,
                },
            );
            meta
        };
        self.write_meta(digest, &meta);
        Ok(LayerPin {
            store: Arc::clone(self),
            digest: digest.to_string(),
            path,
        })
    }

    fn write_meta(&self, digest: &str, meta: &LayerMeta) {
        let path = self.meta_path(digest);
        let tmp = path.with_extension("json.tmp");
        let result = serde_json::to_vec(meta)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            // The layer stays usable; only its LRU position is lost on restart.
            tracing::warn!(path = %path.display(), error = %e, "cannot write layer metadata");
        }
    }

    /// Total bytes of the layers present.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.lock().layers.values().map(|e| e.meta.bytes).sum()
    }

    /// Unpacked bytes of a present layer (0 if absent).
    pub(crate) fn bytes(&self, digest: &str) -> u64 {
        self.lock().layers.get(digest).map_or(0, |e| e.meta.bytes)
    }

    /// Whether the layer is present.
    pub(crate) fn contains(&self, digest: &str) -> bool {
        self.lock().layers.contains_key(digest)
    }

    /// Evicts unpinned layers, least recently used first, until at most
    /// `max_bytes` remain (or only pinned layers are left). Returns the
    /// digests evicted.
    pub(crate) fn evict_to(&self, max_bytes: u64) -> Result<Vec<String>> {
        let victims = {
            let mut state = self.lock();
            let mut total: u64 = state.layers.values().map(|e| e.meta.bytes).sum();
            let mut candidates: Vec<(u64, String, u64)> = state
                .layers
                .iter()
                .filter(|(_, e)| e.pins == 0)
                .map(|(d, e)| (e.meta.last_used, d.clone(), e.meta.bytes))
                .collect();
            candidates.sort();
            let mut victims = Vec::new();
            for (_, digest, bytes) in candidates {
                if total <= max_bytes {
                    break;
                }
                total -= bytes;
                state.layers.remove(&digest);
                victims.push(digest);
            }
            victims
        };
        for digest in &victims {
            tracing::info!(layer = %digest, "evicting layer");
            let _ = std::fs::remove_file(self.meta_path(digest));
            remove_tree(&self.layer_path(digest))?;
        }
        Ok(victims)
    }
}

fn tick(state: &mut State) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    state.clock = now.max(state.clock + 1);
    state.clock
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(store: &Arc<LayerStore>, digest: &str, bytes: u64) -> LayerPin {
        let dir = store.scratch("unpack");
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/file"), vec![0u8; bytes as usize]).unwrap();
        store
            .insert(digest, dir.path(), "sha256:diff", bytes)
            .unwrap()
    }

    #[test]
    fn scratch_paths_are_removed_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LayerStore::open(tmp.path()).unwrap();
        let file = store.scratch("blob");
        std::fs::write(file.path(), b"x").unwrap();
        let dir = store.scratch("layer");
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        let (f, d) = (file.path().to_path_buf(), dir.path().to_path_buf());
        drop(file);
        drop(dir);
        assert!(!f.exists() && !d.exists());
    }

    #[test]
    fn lru_eviction_skips_pinned_layers_and_survives_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LayerStore::open(tmp.path()).unwrap();
        let a = add(&store, "sha256:aa", 100);
        let b = add(&store, "sha256:bb", 100);
        let c = add(&store, "sha256:cc", 100);
        drop(a);
        drop(c);
        // b is in use; a is older than c.
        assert_eq!(store.total_bytes(), 300);
        let evicted = store.evict_to(150).unwrap();
        assert_eq!(
            evicted,
            vec!["sha256:aa".to_string(), "sha256:cc".to_string()]
        );
        assert!(store.contains("sha256:bb"));
        assert!(b.path().join("sub/file").exists());
        assert!(!tmp.path().join("layers/sha256/aa").exists());
        // Using a layer again moves it to the back of the queue.
        let d = add(&store, "sha256:dd", 100);
        drop(d);
        drop(b);
        drop(store.pin("sha256:bb").unwrap());
        assert_eq!(store.evict_to(100).unwrap(), vec!["sha256:dd".to_string()]);
        drop(store);

        std::fs::create_dir_all(tmp.path().join("layers/sha256/leftover")).unwrap();
        let store = LayerStore::open(tmp.path()).unwrap();
        assert!(store.contains("sha256:bb"));
        assert_eq!(store.diff_id("sha256:bb").as_deref(), Some("sha256:diff"));
        assert!(!tmp.path().join("layers/sha256/leftover").exists());
    }
}
