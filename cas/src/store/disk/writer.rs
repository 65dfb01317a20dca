//! Writing blobs into the disk store: a temp file per upload, published by
//! a rename only on commit, and room made by eviction when the file system
//! is full.
//!
//! The disk store does not hash: the [`crate::store::VerifyingStore`] above
//! it hashes each upload in a pipeline stage of its own while this one
//! writes the file, and calls `commit` only when the hash matched. So the
//! rename into place still happens only for a verified blob, and a killed
//! process leaves at most a temp file, which the next start deletes.
//!
//! A full file system (ENOSPC, or a quota) is not the end of uploads: the
//! write evicts least-recently-used blobs worth what the upload still
//! needs and carries on where it stopped. Only when nothing is left to
//! evict does the upload fail, with RESOURCE_EXHAUSTED, and the next one
//! tries again.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use super::{run_blocking, DiskStore};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::store::owners::OwnerId;
use crate::store::stage::Stage;
use crate::store::BlobWriter;

/// Chunks (of about 1 MiB from the ByteStream service) queued for the
/// file write before the upload waits.
const STAGE_DEPTH: usize = 4;

fn is_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
}

impl DiskStore {
    /// Writes all of `data` to `file`, the temp file of `blob` holding
    /// `written` bytes so far. When the file system is full, evicts blobs
    /// worth the rest of the upload and carries on where the write stopped.
    pub(super) fn append_with_room(
        &self,
        file: &mut File,
        path: &Path,
        blob: &Digest,
        written: u64,
        mut data: &[u8],
    ) -> Result<()> {
        let mut done = 0u64;
        while !data.is_empty() {
            match file.write(data) {
                Ok(0) => {
                    return Err(Error::io(
                        format!("writing {}", path.display()),
                        ErrorKind::WriteZero.into(),
                    ))
                }
                Ok(n) => {
                    data = &data[n..];
                    done += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if is_full(&e) => {
                    let rest = blob.size().saturating_sub(written + done);
                    if !self.make_room(rest.max(data.len() as u64), blob) {
                        return Err(Error::io(format!("writing {}", path.display()), e));
                    }
                }
                Err(e) => return Err(Error::io(format!("writing {}", path.display()), e)),
            }
        }
        Ok(())
    }

    /// Creates the temp file of `blob`, making room if the file system has
    /// no inode or block left for it.
    pub(super) fn create_with_room(&self, path: &Path, blob: &Digest) -> Result<File> {
        loop {
            match File::create(path) {
                Ok(f) => return Ok(f),
                Err(e) if is_full(&e) && self.make_room(blob.size().max(1), blob) => {}
                Err(e) => return Err(Error::io(format!("creating {}", path.display()), e)),
            }
        }
    }

    /// Writes already-verified bytes to a temp file and publishes them.
    pub(super) fn commit_bytes(
        &self,
        digest: &Digest,
        data: &[u8],
        owner: Option<OwnerId>,
    ) -> Result<()> {
        let tmp = TempFile::new(self.temp_path(digest));
        let mut f = self.create_with_room(&tmp.path, digest)?;
        self.append_with_room(&mut f, &tmp.path, digest, 0, data)?;
        drop(f);
        self.publish(digest, &tmp.path, owner)?;
        tmp.published();
        Ok(())
    }
}

/// What the writing stage holds: the open temp file and what it needs to
/// make room.
struct TempWrite {
    file: File,
    path: PathBuf,
    store: DiskStore,
    blob: Digest,
    written: u64,
}

impl TempWrite {
    fn append(&mut self, chunk: &[u8]) -> Result<()> {
        self.store
            .append_with_room(&mut self.file, &self.path, &self.blob, self.written, chunk)?;
        self.written += chunk.len() as u64;
        Ok(())
    }
}

/// A streaming upload into a temp file, written by a [`Stage`] while the
/// caller receives the next chunks.
pub(super) struct DiskWriter {
    store: DiskStore,
    expected: Digest,
    /// Who becomes an owner of the blob once it is published.
    owner: Option<OwnerId>,
    writing: Stage<TempWrite>,
    /// Bytes accepted (queued to the stage).
    accepted: u64,
    tmp: TempFile,
    started: Instant,
}

impl DiskWriter {
    pub(super) async fn start(
        store: DiskStore,
        digest: Digest,
        owner: Option<OwnerId>,
    ) -> Result<Self> {
        let tmp = TempFile::new(store.temp_path(&digest));
        let (s, path) = (store.clone(), tmp.path.clone());
        let file = run_blocking(move || s.create_with_room(&path, &digest)).await?;
        let state = TempWrite {
            file,
            path: tmp.path.clone(),
            store: store.clone(),
            blob: digest,
            written: 0,
        };
        Ok(DiskWriter {
            store,
            expected: digest,
            owner,
            writing: Stage::spawn("writing", state, STAGE_DEPTH, TempWrite::append),
            accepted: 0,
            tmp,
            started: Instant::now(),
        })
    }
}

#[async_trait]
impl BlobWriter for DiskWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.accepted += data.len() as u64;
        self.writing.send(data).await
    }

    fn committed(&self) -> u64 {
        self.accepted
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let DiskWriter {
            store,
            expected,
            owner,
            writing,
            tmp,
            started,
            ..
        } = *self;
        let (state, writing_busy) = writing.finish().await?;
        let written = state.written;
        drop(state);
        if written != expected.size() {
            // The verifying layer refuses short and long uploads before
            // commit; publishing one would break the index's byte count.
            return Err(Error::Internal(format!(
                "disk store: upload of {expected} wrote {written} of {} bytes",
                expected.size()
            )));
        }
        let path = tmp.path.clone();
        run_blocking(move || store.publish(&expected, &path, owner)).await?;
        tmp.published();
        tracing::debug!(
            blob = %expected,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
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

impl TempFile {
    fn new(path: PathBuf) -> Self {
        TempFile {
            path,
            published: false,
        }
    }

    /// The file was renamed into place: nothing to remove.
    fn published(mut self) {
        self.published = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.path);
        }
    }
}
