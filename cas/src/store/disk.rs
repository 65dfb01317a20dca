//! The disk blob store: one plain, read-only file per blob.
//!
//! Layout under the store's root:
//!
//! ```text
//! sha256/ab/ab12…ef-1234    blob with SHA-256 hash ab12…ef and 1234 bytes
//! blake3/9c/9c0d…11-77      BLAKE3 blobs live apart from SHA-256 ones
//! tmp/                      uploads in progress; emptied on start
//! ```
//!
//! A blob is written to `tmp/`, hashed while it is written, and renamed into
//! place only when it matched its digest, so a killed process never leaves a
//! wrong blob under a right name; a rename is atomic, so concurrent writers
//! of one blob are harmless (the second finds the first's file and drops its
//! own). The files stay plain so the worker's local CAS can hardlink them
//! straight into build directories; they are mode 0444 because every link is
//! the same inode.
//!
//! The store is bounded: an in-memory index keeps blobs in least-recently
//! used order and evicts the oldest when `max_bytes` would be exceeded. On
//! start the index is rebuilt from the files (oldest modification first), so
//! everything stored before a restart is still served. Unless configured,
//! the bound follows the free space of the file system ([`SizeBound`]), and
//! a file system that fills anyway makes the store evict rather than refuse
//! (`writer.rs`).
//!
//! The store trusts what it is asked to store: hashing is the
//! [`super::VerifyingStore`]'s, which calls a writer's `commit` (the rename)
//! only for a blob that matched.

mod free_space;
mod lru;
mod writer;

pub use free_space::{free_bytes, SizeBound, DEFAULT_FREE_SPACE_PERCENT};

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use self::lru::Lru;
use self::writer::DiskWriter;
use super::metrics::EvictionMetrics;
use super::owners::{OwnerId, Viewer};
use super::{read_range, BlobStore, BlobWriter, ChunkStream};
use crate::context::RequestContext;
use crate::digest::{parse_hash, Digest, DigestFunction};
use crate::error::{Error, Result};

/// Chunk size of streamed reads from disk.
const READ_CHUNK: u64 = 1 << 20;

/// A bounded, restart-safe disk store. Cheap to clone.
#[derive(Clone)]
pub struct DiskStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    max_bytes: u64,
    index: Mutex<Lru>,
    /// Where evictions are counted, once someone asks.
    evictions: OnceLock<EvictionMetrics>,
}

impl DiskStore {
    /// Opens (creating if needed) the store at `root`, bounded to
    /// `max_bytes`. See [`DiskStore::open_with`].
    pub fn open(root: impl Into<PathBuf>, max_bytes: u64) -> Result<Self> {
        Self::open_with(root, SizeBound::Bytes(max_bytes))
    }

    /// Opens (creating if needed) the store at `root` with its bound chosen
    /// by `bound`. Scans existing blobs, drops leftovers of interrupted
    /// uploads and files whose size does not match their name, and evicts
    /// down to the bound. Blocking: call it before serving, or from
    /// `spawn_blocking`.
    pub fn open_with(root: impl Into<PathBuf>, bound: SizeBound) -> Result<Self> {
        let root = root.into();
        let tmp = root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp)
                .map_err(|e| Error::io(format!("clearing {}", tmp.display()), e))?;
        }
        fs::create_dir_all(&tmp)
            .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;

        let mut found = Vec::new();
        for function in DigestFunction::ALL {
            let dir = root.join(function.name());
            fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            scan(function, &dir, &mut found)?;
        }
        found.sort();
        let mut index = Lru::default();
        for (modified, digest) in found {
            index.insert_used_at(digest, modified);
        }
        let max_bytes = bound.resolve(&root, index.total())?;
        let store = DiskStore {
            inner: Arc::new(Inner {
                root,
                max_bytes,
                index: Mutex::new(index),
                evictions: OnceLock::new(),
            }),
        };
        let victims = store
            .index()
            .evict_to(max_bytes, &Digest::of_bytes(DigestFunction::Sha256, b""));
        for v in &victims {
            store.unlink(v);
        }
        tracing::info!(
            root = %store.inner.root.display(),
            blobs = store.len(),
            bytes = store.total_bytes(),
            max_bytes,
            bound = ?bound,
            evicted = victims.len(),
            "disk CAS opened"
        );
        Ok(store)
    }

    /// Where the blob's file lives (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hash_hex();
        self.inner
            .root
            .join(digest.function().name())
            .join(&hex[..2])
            .join(format!("{}-{}", hex, digest.size()))
    }

    /// Drops a blob as eviction would (for tests and tools): its file and
    /// its entry, owners with it. False if it was not held.
    pub fn remove(&self, digest: &Digest) -> bool {
        let held = self.index().remove(digest);
        if held {
            self.unlink(digest);
        }
        held
    }

    /// The path of a stored blob to hardlink from, marking it recently used.
    /// The empty blob is materialised on demand. `NotFound` if absent. The
    /// file may still be evicted afterwards; a failed link means "fetch it
    /// again", never a wrong file.
    pub async fn file_for_link(&self, digest: &Digest) -> Result<PathBuf> {
        let path = self.path(digest);
        if digest.is_empty_blob() {
            if !path.exists() {
                let store = self.clone();
                let d = *digest;
                run_blocking(move || store.commit_bytes(&d, &[], None)).await?;
            }
            return Ok(path);
        }
        if !self.index().touch(digest) {
            return Err(Error::NotFound(format!("blob {digest}")));
        }
        Ok(path)
    }

    /// Number of blobs held.
    pub fn len(&self) -> usize {
        self.index().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held.
    pub fn total_bytes(&self) -> u64 {
        self.index().total()
    }

    /// The bound in bytes (as configured, or as resolved from the free
    /// space at open).
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// Counts this store's evictions into `metrics` from now on (the first
    /// call wins).
    pub fn observe_evictions(&self, metrics: EvictionMetrics) {
        let _ = self.inner.evictions.set(metrics);
    }

    /// Counts evicted blobs, if anyone observes this store.
    fn evicted(&self, victims: &[Digest], age: Option<std::time::Duration>) {
        if let Some(m) = self.inner.evictions.get() {
            m.evicted(victims, age);
        }
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Lru> {
        // Every index update completes before any call that could panic, so
        // a poisoned lock still guards a consistent index.
        self.inner.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unlink(&self, digest: &Digest) {
        let path = self.path(digest);
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "could not remove evicted blob");
            }
        }
    }

    fn check_fits(&self, digest: &Digest) -> Result<()> {
        if digest.size() > self.inner.max_bytes {
            return Err(Error::ResourceExhausted(format!(
                "blob {} is larger than the whole store ({} bytes)",
                digest, self.inner.max_bytes
            )));
        }
        Ok(())
    }

    fn temp_path(&self, digest: &Digest) -> PathBuf {
        self.inner.root.join("tmp").join(format!(
            "{}-{}.{:016x}",
            digest.hash_hex(),
            digest.size(),
            fastrand::u64(..)
        ))
    }

    /// Moves a verified temp file into place and records it.
    fn publish(&self, digest: &Digest, tmp: &Path, owner: Option<OwnerId>) -> Result<()> {
        let path = self.path(digest);
        fs::set_permissions(tmp, fs::Permissions::from_mode(0o444))
            .map_err(|e| Error::io(format!("chmod {}", tmp.display()), e))?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        fs::rename(tmp, &path).map_err(|e| {
            Error::io(
                format!("renaming {} to {}", tmp.display(), path.display()),
                e,
            )
        })?;
        let (victims, age) = {
            let mut index = self.index();
            index.insert(*digest, owner);
            let victims = index.evict_to(self.inner.max_bytes, digest);
            (victims, index.last_evicted_age())
        };
        for v in &victims {
            self.unlink(v);
        }
        self.evicted(&victims, age);
        if !victims.is_empty() {
            tracing::debug!(evicted = victims.len(), "disk CAS evicted blobs");
        }
        Ok(())
    }

    /// The file system is full: evicts least-recently-used blobs worth at
    /// least `needed` bytes, never `keep`. False when nothing was left to
    /// evict (the caller then fails with the file system's error).
    fn make_room(&self, needed: u64, keep: &Digest) -> bool {
        let (victims, age) = {
            let mut index = self.index();
            let victims = index.evict_bytes(needed, keep);
            (victims, index.last_evicted_age())
        };
        for v in &victims {
            self.unlink(v);
        }
        self.evicted(&victims, age);
        let freed: u64 = victims.iter().map(Digest::size).sum();
        tracing::warn!(
            root = %self.inner.root.display(),
            evicted = victims.len(),
            freed,
            held = self.total_bytes(),
            max_bytes = self.inner.max_bytes,
            "file system full below the store's bound: evicted to make room"
        );
        !victims.is_empty()
    }

    /// Opens a held blob `viewer` may see (any, without a viewer).
    fn open_blob(&self, digest: &Digest, viewer: Option<&Viewer>) -> Result<File> {
        if viewer.is_some() && !self.index().visible_to(digest, viewer) {
            return Err(Error::NotFound(format!("blob {digest}")));
        }
        let path = self.path(digest);
        match File::open(&path) {
            Ok(f) => {
                self.index().touch(digest);
                Ok(f)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Deleted behind our back (or never there): forget it.
                self.index().remove(digest);
                Err(Error::NotFound(format!("blob {digest}")))
            }
            Err(e) => Err(Error::io(format!("opening {}", path.display()), e)),
        }
    }
}

/// Collects `(mtime, digest)` of every well-formed blob under `dir`,
/// removing files that cannot be blobs.
fn scan(function: DigestFunction, dir: &Path, out: &mut Vec<(SystemTime, Digest)>) -> Result<()> {
    let read_dir =
        |d: &Path| fs::read_dir(d).map_err(|e| Error::io(format!("listing {}", d.display()), e));
    for fan in read_dir(dir)? {
        let fan = fan.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let fan_path = fan.path();
        if !fan_path.is_dir() {
            continue;
        }
        for entry in read_dir(&fan_path)? {
            let entry =
                entry.map_err(|e| Error::io(format!("listing {}", fan_path.display()), e))?;
            let path = entry.path();
            let meta = entry
                .metadata()
                .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
            let parsed = entry
                .file_name()
                .to_str()
                .and_then(|name| parse_file_name(function, name));
            match parsed {
                Some(d) if meta.is_file() && meta.len() == d.size() => {
                    out.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), d));
                }
                _ => {
                    tracing::warn!(path = %path.display(), "removing a file that is not a valid blob");
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }
    Ok(())
}

fn parse_file_name(function: DigestFunction, name: &str) -> Option<Digest> {
    let (hash, size) = name.split_once('-')?;
    let hash = parse_hash(hash).ok()?;
    let size = size.parse().ok()?;
    Some(Digest::new(function, hash, size))
}

/// Runs blocking file work off the async threads.
async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
}

#[async_trait]
impl BlobStore for DiskStore {
    fn keeps_owners(&self) -> bool {
        true
    }

    fn restore_owners(&self, owner: OwnerId, digests: &[Digest]) {
        let mut index = self.index();
        for digest in digests {
            index.add_owner(digest, owner);
        }
    }

    async fn find_missing(&self, ctx: &RequestContext, digests: &[Digest]) -> Result<Vec<Digest>> {
        let viewer = ctx.viewer();
        let mut index = self.index();
        Ok(digests
            .iter()
            .filter(|d| !d.is_empty_blob() && !index.touch_for(d, viewer))
            .copied()
            .collect())
    }

    async fn get(&self, ctx: &RequestContext, digest: &Digest) -> Result<Bytes> {
        if digest.is_empty_blob() {
            return Ok(Bytes::new());
        }
        let store = self.clone();
        let d = *digest;
        let ctx = ctx.clone();
        run_blocking(move || {
            let f = store.open_blob(&d, ctx.viewer())?;
            let mut buf = vec![0u8; d.size() as usize];
            f.read_exact_at(&mut buf, 0)
                .map_err(|e| Error::io(format!("reading {}", store.path(&d).display()), e))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn put(&self, ctx: &RequestContext, digest: &Digest, data: Bytes) -> Result<()> {
        if digest.is_empty_blob() {
            return Ok(());
        }
        self.check_fits(digest)?;
        if data.len() as u64 != digest.size() {
            // The verifying layer refuses this first; the index counts
            // bytes by digest, so never store a blob of another size.
            return Err(Error::Internal(format!(
                "disk store: {} bytes offered for {digest}",
                data.len()
            )));
        }
        let store = self.clone();
        let d = *digest;
        let owner = ctx.viewer().map(|v| v.owner);
        run_blocking(move || {
            if store.index().touch(&d) && store.path(&d).exists() {
                // Verified bytes make the uploader an owner, stored or not.
                if let Some(owner) = owner {
                    store.index().add_owner(&d, owner);
                }
                return Ok(());
            }
            store.commit_bytes(&d, &data, owner)
        })
        .await
    }

    async fn read(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<ChunkStream> {
        let (start, end) = read_range(digest, offset, limit)?;
        if digest.is_empty_blob() || start == end {
            if !digest.is_empty_blob() {
                // Still say NotFound for a zero-length read of a missing blob.
                let store = self.clone();
                let d = *digest;
                let ctx = ctx.clone();
                run_blocking(move || store.open_blob(&d, ctx.viewer()).map(drop)).await?;
            }
            return Ok(Box::pin(futures::stream::empty()));
        }
        let store = self.clone();
        let d = *digest;
        let call = ctx.clone();
        let file = Arc::new(run_blocking(move || store.open_blob(&d, call.viewer())).await?);
        let path = self.path(digest);
        let stream = futures::stream::try_unfold(start, move |pos| {
            let file = file.clone();
            let path = path.clone();
            async move {
                if pos >= end {
                    return Ok(None);
                }
                let n = (end - pos).min(READ_CHUNK) as usize;
                let chunk = run_blocking(move || {
                    // Read into spare capacity: zeroing a buffer the read
                    // then overwrites would cost a pass over every byte.
                    let mut buf = Vec::with_capacity(n);
                    let read = (&*file)
                        .seek(SeekFrom::Start(pos))
                        .and_then(|_| (&*file).take(n as u64).read_to_end(&mut buf));
                    match read {
                        Ok(got) if got == n => Ok(Bytes::from(buf)),
                        Ok(got) => Err(Error::io(
                            format!("reading {}", path.display()),
                            std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                format!("ended after {got} of {n} bytes at offset {pos}"),
                            ),
                        )),
                        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
                    }
                })
                .await?;
                Ok(Some((chunk, pos + n as u64)))
            }
        });
        Ok(Box::pin(stream))
    }

    async fn write(&self, ctx: &RequestContext, digest: &Digest) -> Result<Box<dyn BlobWriter>> {
        self.check_fits(digest)?;
        let owner = ctx.viewer().map(|v| v.owner);
        Ok(Box::new(
            DiskWriter::start(self.clone(), *digest, owner).await?,
        ))
    }
}
