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
//! everything stored before a restart is still served.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use super::stage::Stage;
use super::{check_room, read_range, verify, BlobStore, BlobWriter, ChunkStream, Verifier};
use crate::digest::{parse_hash, Digest, DigestFunction, DigestMap};
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
    index: Mutex<Index>,
}

/// LRU bookkeeping: each blob has a tick; `order` maps ticks back to blobs.
#[derive(Default)]
struct Index {
    ticks: DigestMap<u64>,
    order: BTreeMap<u64, Digest>,
    next_tick: u64,
    total: u64,
}

impl Index {
    fn touch(&mut self, digest: &Digest) -> bool {
        let Some(tick) = self.ticks.get_mut(digest) else {
            return false;
        };
        self.order.remove(tick);
        *tick = self.next_tick;
        self.order.insert(self.next_tick, *digest);
        self.next_tick += 1;
        true
    }

    fn insert(&mut self, digest: Digest) {
        if self.touch(&digest) {
            return;
        }
        self.ticks.insert(digest, self.next_tick);
        self.order.insert(self.next_tick, digest);
        self.next_tick += 1;
        self.total += digest.size();
    }

    fn remove(&mut self, digest: &Digest) {
        if let Some(tick) = self.ticks.remove(digest) {
            self.order.remove(&tick);
            self.total -= digest.size();
        }
    }

    /// Removes least-recently-used entries until `total <= max`, never
    /// `keep`; returns what to delete.
    fn evict(&mut self, max: u64, keep: &Digest) -> Vec<Digest> {
        let mut victims = Vec::new();
        let mut cursor = 0;
        while self.total > max {
            let Some((&tick, &victim)) = self.order.range(cursor..).next() else {
                break;
            };
            cursor = tick + 1;
            if victim == *keep {
                continue;
            }
            self.remove(&victim);
            victims.push(victim);
        }
        victims
    }
}

impl DiskStore {
    /// Opens (creating if needed) the store at `root`, bounded to
    /// `max_bytes`. Scans existing blobs, drops leftovers of interrupted
    /// uploads and files whose size does not match their name, and evicts
    /// down to `max_bytes`. Blocking: call it before serving, or from
    /// `spawn_blocking`.
    pub fn open(root: impl Into<PathBuf>, max_bytes: u64) -> Result<Self> {
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
        let mut index = Index::default();
        for (_, digest) in found {
            index.insert(digest);
        }
        let store = DiskStore {
            inner: Arc::new(Inner {
                root,
                max_bytes,
                index: Mutex::new(index),
            }),
        };
        let victims = store
            .index()
            .evict(max_bytes, &Digest::of_bytes(DigestFunction::Sha256, b""));
        for v in &victims {
            store.unlink(v);
        }
        tracing::info!(
            root = %store.inner.root.display(),
            blobs = store.len(),
            bytes = store.total_bytes(),
            max_bytes,
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
                run_blocking(move || store.commit_bytes(&d, &[])).await?;
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
        self.index().ticks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held.
    pub fn total_bytes(&self) -> u64 {
        self.index().total
    }

    /// The configured bound.
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
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
    fn publish(&self, digest: &Digest, tmp: &Path) -> Result<()> {
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
        let victims = {
            let mut index = self.index();
            index.insert(*digest);
            index.evict(self.inner.max_bytes, digest)
        };
        for v in &victims {
            self.unlink(v);
        }
        if !victims.is_empty() {
            tracing::debug!(evicted = victims.len(), "disk CAS evicted blobs");
        }
        Ok(())
    }

    /// Writes already-verified bytes to a temp file and publishes them.
    fn commit_bytes(&self, digest: &Digest, data: &[u8]) -> Result<()> {
        let tmp = self.temp_path(digest);
        let result = (|| {
            let mut f = File::create(&tmp)
                .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
            f.write_all(data)
                .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
            drop(f);
            self.publish(digest, &tmp)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn open_blob(&self, digest: &Digest) -> Result<File> {
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
    async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>> {
        let mut index = self.index();
        Ok(digests
            .iter()
            .filter(|d| !d.is_empty_blob() && !index.touch(d))
            .copied()
            .collect())
    }

    async fn get(&self, digest: &Digest) -> Result<Bytes> {
        if digest.is_empty_blob() {
            return Ok(Bytes::new());
        }
        let store = self.clone();
        let d = *digest;
        run_blocking(move || {
            let f = store.open_blob(&d)?;
            let mut buf = vec![0u8; d.size() as usize];
            f.read_exact_at(&mut buf, 0)
                .map_err(|e| Error::io(format!("reading {}", store.path(&d).display()), e))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn put(&self, digest: &Digest, data: Bytes) -> Result<()> {
        if digest.is_empty_blob() && data.is_empty() {
            return Ok(());
        }
        self.check_fits(digest)?;
        let store = self.clone();
        let d = *digest;
        run_blocking(move || {
            verify(&d, &data)?;
            if store.index().touch(&d) && store.path(&d).exists() {
                return Ok(());
            }
            store.commit_bytes(&d, &data)
        })
        .await
    }

    async fn read(&self, digest: &Digest, offset: u64, limit: Option<u64>) -> Result<ChunkStream> {
        let (start, end) = read_range(digest, offset, limit)?;
        if digest.is_empty_blob() || start == end {
            if !digest.is_empty_blob() {
                // Still say NotFound for a zero-length read of a missing blob.
                let store = self.clone();
                let d = *digest;
                run_blocking(move || store.open_blob(&d).map(drop)).await?;
            }
            return Ok(Box::pin(futures::stream::empty()));
        }
        let store = self.clone();
        let d = *digest;
        let file = Arc::new(run_blocking(move || store.open_blob(&d)).await?);
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

    async fn write(&self, digest: &Digest) -> Result<Box<dyn BlobWriter>> {
        self.check_fits(digest)?;
        let tmp = self.temp_path(digest);
        let path = tmp.clone();
        let file = run_blocking(move || {
            File::create(&path).map_err(|e| Error::io(format!("creating {}", path.display()), e))
        })
        .await?;
        Ok(Box::new(DiskWriter {
            store: self.clone(),
            expected: *digest,
            hashing: Stage::spawn(
                "hashing",
                Verifier::new(*digest),
                STAGE_DEPTH,
                |v, chunk| v.update(chunk),
            ),
            writing: Stage::spawn(
                "writing",
                (file, tmp.clone()),
                STAGE_DEPTH,
                |(f, tmp), chunk| {
                    f.write_all(chunk)
                        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))
                },
            ),
            committed: 0,
            started: Instant::now(),
            tmp: TempFile {
                path: tmp,
                published: false,
            },
        }))
    }
}

/// Chunks (of about 1 MiB from the ByteStream service) queued per stage of
/// an upload before the receiver waits.
const STAGE_DEPTH: usize = 4;

/// A streaming upload into a temp file: each chunk is hashed and written at
/// the same time, by two [`Stage`]s.
struct DiskWriter {
    store: DiskStore,
    expected: Digest,
    hashing: Stage<Verifier>,
    writing: Stage<(File, PathBuf)>,
    /// Bytes accepted (queued to both stages).
    committed: u64,
    tmp: TempFile,
    started: Instant,
}

#[async_trait]
impl BlobWriter for DiskWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        check_room(&self.expected, self.committed, data.len())?;
        self.committed += data.len() as u64;
        self.hashing.send(data.clone()).await?;
        self.writing.send(data).await
    }

    fn committed(&self) -> u64 {
        self.committed
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let DiskWriter {
            store,
            expected,
            hashing,
            writing,
            mut tmp,
            started,
            ..
        } = *self;
        let (verified, written) = tokio::join!(hashing.finish(), writing.finish());
        let ((file, _), writing_busy) = written?;
        drop(file);
        let (verifier, hashing_busy) = verified?;
        verifier.finish()?;
        let path = tmp.path.clone();
        run_blocking(move || store.publish(&expected, &path)).await?;
        tmp.published = true;
        tracing::debug!(
            blob = %expected,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            hashing_ms = hashing_busy.as_secs_f64() * 1e3,
            writing_ms = writing_busy.as_secs_f64() * 1e3,
            "upload committed"
        );
        Ok(())
    }
}

/// An upload's temp file, removed when dropped unless it was published.
struct TempFile {
    path: PathBuf,
    published: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.path);
        }
    }
}
