//! ByteStream uploads in progress, kept so that an interrupted Write can be
//! resumed after QueryWriteStatus.
//!
//! An upload is identified by its [`UploadKey`]: instance name, the client's
//! upload id *and* the blob (compression and digest). REAPI lets a client
//! reuse one upload id for different blobs, one after another or at the same
//! time, and buildbox-casd uses a single id for everything it uploads, so
//! the id alone names nothing.
//!
//! Only unfinished uploads are registered. A committed upload is forgotten
//! at once; whether a blob is complete is asked of the store, which also
//! knows blobs that other clients uploaded and forgets evicted ones (a
//! registry entry saying "committed" would outlive an eviction and lie).
//!
//! A registered upload is either *in use* (one Write stream owns it through
//! a [`Checkout`]) or *idle* (its stream ended before `finish_write` and it
//! waits for the client to resume). Idle uploads also sit in a queue ordered
//! by deadline; every claim and every return pops the expired ones off its
//! front, so each upload costs O(log n) once to expire instead of a scan of
//! every upload on every new one.
//!
//! Two bounds keep abandoned uploads from exhausting the server: how many
//! uploads are registered, and how many bytes their writers hold. Past
//! either, a *new* upload is refused with `RESOURCE_EXHAUSTED`; uploads
//! already registered may still be resumed and finished, which is what frees
//! room.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

// tokio's clock, not std's: the same outside tests, and a test can pause
// and advance it instead of waiting out a resume window.
use tokio::time::Instant;

use super::codec::ZstdDecoder;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::resource::{Compression, WriteResource};
use crate::store::BlobWriter;

/// What identifies one upload.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UploadKey {
    pub instance_name: String,
    pub uuid: String,
    pub compression: Compression,
    pub digest: Digest,
}

impl UploadKey {
    pub fn of(resource: &WriteResource) -> Self {
        UploadKey {
            instance_name: resource.instance_name.clone(),
            uuid: resource.uuid.clone(),
            compression: resource.compression,
            digest: resource.digest,
        }
    }
}

/// The bounds of the registry.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long an idle upload stays resumable.
    pub resume: Duration,
    /// Most uploads registered at once (in use or idle).
    pub max_uploads: usize,
    /// Past this many bytes held by registered uploads, new ones are refused.
    pub max_bytes: u64,
}

/// One upload's writer and position.
pub struct Upload {
    pub writer: Box<dyn BlobWriter>,
    pub decoder: Option<ZstdDecoder>,
    /// Wire bytes accepted (compressed bytes for zstd): the `write_offset`
    /// the next message must carry. Shared with the registry so that
    /// QueryWriteStatus sees the progress of a stream still running.
    received: Arc<AtomicU64>,
    held: Held,
}

impl Upload {
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub fn set_received(&self, n: u64) {
        self.received.store(n, Ordering::Relaxed);
    }

    /// Brings the registry's byte count up to what the writer now holds;
    /// called after every chunk handed to the writer.
    pub fn account(&mut self) {
        self.held.set(self.writer.committed());
    }

    /// The writer, for commit; the bytes stop counting against the bound.
    pub fn into_writer(self) -> Box<dyn BlobWriter> {
        self.writer
    }

    /// Stops counting the upload's bytes now, before it is dropped on the
    /// blocking pool, so the claim that dropped it sees the room at once.
    fn retired(mut self) -> Self {
        self.held.set(0);
        self
    }
}

/// An upload's share of the registry's byte count, given back when the
/// upload is dropped, however it ends (commit, failure, expiry, restart).
struct Held {
    total: Arc<AtomicU64>,
    mine: u64,
}

impl Held {
    fn set(&mut self, now: u64) {
        if now >= self.mine {
            self.total.fetch_add(now - self.mine, Ordering::Relaxed);
        } else {
            self.total.fetch_sub(self.mine - now, Ordering::Relaxed);
        }
        self.mine = now;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.total.fetch_sub(self.mine, Ordering::Relaxed);
    }
}

/// Position of an idle upload in the expiry queue; the sequence number
/// keeps equal instants apart.
type Deadline = (Instant, u64);

struct Slot {
    /// `None` while a stream owns the upload.
    idle: Option<(Upload, Deadline)>,
    received: Arc<AtomicU64>,
}

#[derive(Default)]
struct Registry {
    slots: HashMap<UploadKey, Slot>,
    expiry: BTreeMap<Deadline, UploadKey>,
    next: u64,
}

impl Registry {
    /// Moves idle uploads whose deadline has passed into `out`.
    fn sweep(&mut self, now: Instant, out: &mut Vec<Upload>) {
        while let Some(entry) = self.expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            if let Some(Slot {
                idle: Some((upload, _)),
                ..
            }) = self.slots.remove(&key)
            {
                out.push(upload.retired());
            }
        }
    }

    /// Unregisters `key`, idle or in use; only the stream that holds an
    /// upload in use may do this.
    fn remove(&mut self, key: &UploadKey) -> Option<Upload> {
        let (upload, deadline) = self.slots.remove(key)?.idle?;
        self.expiry.remove(&deadline);
        Some(upload)
    }

    /// Unregisters `key` if no stream is using it.
    fn remove_idle(&mut self, key: &UploadKey) -> Option<Upload> {
        self.slots.get(key)?.idle.as_ref()?;
        self.remove(key)
    }
}

/// The registry of uploads.
pub struct Uploads {
    registry: Mutex<Registry>,
    held: Arc<AtomicU64>,
    limits: Limits,
}

impl Uploads {
    pub fn new(mut limits: Limits) -> Self {
        // A deadline past what `Instant` can hold would panic; ten years is
        // "never" for an upload.
        limits.resume = limits.resume.min(Duration::from_secs(10 * 365 * 86_400));
        Uploads {
            registry: Mutex::new(Registry::default()),
            held: Arc::new(AtomicU64::new(0)),
            limits,
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Poison is harmless: each update leaves the maps consistent before
        // anything that could panic.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of registered uploads.
    #[cfg(test)]
    fn registered(&self) -> usize {
        self.registry().slots.len()
    }

    /// Bytes held by registered uploads' writers.
    pub fn held_bytes(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Where an upload stands, for QueryWriteStatus: the `write_offset` to
    /// resume at, or `None` if it is not registered.
    pub fn status(&self, key: &UploadKey) -> Option<u64> {
        let registry = self.registry();
        let slot = registry.slots.get(key)?;
        Some(slot.received.load(Ordering::Relaxed))
    }

    /// Drops an idle upload whose blob turned up in the store meanwhile
    /// (one in use is left to its stream).
    pub fn forget(&self, key: &UploadKey) {
        let upload = self.registry().remove_idle(key);
        drop(upload);
    }

    /// Claims `key` for a Write stream whose first message has
    /// `write_offset`. The checkout holds the idle upload to resume when the
    /// offset is where it stopped, or no upload at all when the stream is to
    /// start one: nothing was registered, or the client starts over at 0
    /// (the kept bytes are dropped; a client that retries from scratch
    /// instead of asking QueryWriteStatus is common and harmless).
    pub fn claim(self: &Arc<Self>, key: UploadKey, write_offset: i64) -> Result<Checkout> {
        let mut dropped = Vec::new();
        let claimed = {
            let mut registry = self.registry();
            registry.sweep(Instant::now(), &mut dropped);
            self.claim_locked(&mut registry, &key, write_offset, &mut dropped)
        };
        dispose(dropped);
        let (upload, received, registered) = match claimed {
            Ok((upload, received)) => (upload, received, true),
            // Another stream is writing the same blob under the same uuid
            // (buildbox-casd uses one uuid for all its uploads, so two of
            // its jobs uploading one input collide): a stream that starts
            // from the beginning writes a copy of its own, which the store
            // accepts beside the other, instead of failing a build.
            Err(Error::FailedPrecondition(_)) if write_offset == 0 => {
                (None, Arc::new(AtomicU64::new(0)), false)
            }
            Err(e) => return Err(e),
        };
        Ok(Checkout {
            uploads: self.clone(),
            key,
            upload,
            received,
            settled: !registered,
            registered,
        })
    }

    fn claim_locked(
        &self,
        registry: &mut Registry,
        key: &UploadKey,
        write_offset: i64,
        dropped: &mut Vec<Upload>,
    ) -> Result<(Option<Upload>, Arc<AtomicU64>)> {
        let Registry { slots, expiry, .. } = registry;
        if let Some(slot) = slots.get_mut(key) {
            let Some((upload, deadline)) = slot.idle.take() else {
                return Err(Error::FailedPrecondition(format!(
                    "resource_name: upload {:?} of {} is being written by another stream",
                    key.uuid, key.digest
                )));
            };
            let received = upload.received();
            if write_offset != 0 && write_offset != received as i64 {
                slot.idle = Some((upload, deadline));
                return Err(Error::invalid(
                    "write_offset",
                    format!(
                        "is {write_offset}, but the upload stopped at {received} \
                         (QueryWriteStatus says where to resume, or start over at 0)"
                    ),
                ));
            }
            expiry.remove(&deadline);
            if write_offset == received as i64 {
                return Ok((Some(upload), slot.received.clone()));
            }
            dropped.push(upload.retired());
            slot.received.store(0, Ordering::Relaxed);
            return Ok((None, slot.received.clone()));
        }
        if write_offset != 0 {
            return Err(Error::invalid(
                "write_offset",
                format!(
                    "is {write_offset} for an upload that has no bytes yet (ask QueryWriteStatus)"
                ),
            ));
        }
        self.check_room(slots.len())?;
        let received = Arc::new(AtomicU64::new(0));
        slots.insert(
            key.clone(),
            Slot {
                idle: None,
                received: received.clone(),
            },
        );
        Ok((None, received))
    }

    /// Refuses a new upload past either bound.
    fn check_room(&self, registered: usize) -> Result<()> {
        let limits = &self.limits;
        if registered >= limits.max_uploads {
            return Err(Error::ResourceExhausted(format!(
                "max_open_uploads: {} ByteStream uploads are open, the most allowed; \
                 unfinished ones expire after upload_resume_secs ({} s)",
                registered,
                limits.resume.as_secs()
            )));
        }
        let held = self.held_bytes();
        if held >= limits.max_bytes {
            return Err(Error::ResourceExhausted(format!(
                "max_open_upload_bytes: open ByteStream uploads hold {held} bytes, \
                 the bound is {}; unfinished ones expire after upload_resume_secs ({} s)",
                limits.max_bytes,
                limits.resume.as_secs()
            )));
        }
        Ok(())
    }

    /// Puts an upload back as idle, resumable until its deadline.
    fn put_back(&self, key: &UploadKey, upload: Upload) {
        let mut dropped = Vec::new();
        {
            let mut registry = self.registry();
            let now = Instant::now();
            registry.sweep(now, &mut dropped);
            let deadline = (now + self.limits.resume, registry.next);
            registry.next += 1;
            match registry.slots.get_mut(key) {
                Some(slot) => {
                    slot.idle = Some((upload, deadline));
                    registry.expiry.insert(deadline, key.clone());
                }
                None => dropped.push(upload),
            }
        }
        dispose(dropped);
    }

    fn unregister(&self, key: &UploadKey) {
        let upload = self.registry().remove(key);
        drop(upload);
    }
}

/// Drops uploads off the async threads: a disk upload's drop deletes its
/// temp file, and an expiry may drop thousands at once.
fn dispose(uploads: Vec<Upload>) {
    if uploads.is_empty() {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(move || drop(uploads));
        }
        Err(_) => drop(uploads),
    }
}

/// One Write stream's hold on an upload. Dropped without [`Checkout::keep`],
/// it unregisters the upload: that is the right end for a commit and for a
/// failure, and the safe one if the stream's task panicked mid-chunk.
pub struct Checkout {
    uploads: Arc<Uploads>,
    key: UploadKey,
    upload: Option<Upload>,
    received: Arc<AtomicU64>,
    settled: bool,
    /// False for a second stream writing a blob whose registered upload
    /// another stream holds: its bytes are its own and not resumable.
    registered: bool,
}

impl Checkout {
    /// Whether there is no upload to continue: [`Checkout::begin`] must
    /// start one.
    pub fn is_fresh(&self) -> bool {
        self.upload.is_none()
    }

    /// The upload, once resumed or begun.
    pub fn upload(&mut self) -> Result<&mut Upload> {
        self.upload.as_mut().ok_or_else(not_begun)
    }

    /// Starts the upload with a fresh writer.
    pub fn begin(&mut self, writer: Box<dyn BlobWriter>, decoder: Option<ZstdDecoder>) {
        self.received.store(0, Ordering::Relaxed);
        self.upload = Some(Upload {
            writer,
            decoder,
            received: self.received.clone(),
            held: Held {
                total: self.uploads.held.clone(),
                mine: 0,
            },
        });
    }

    /// Takes the upload out, to commit it; the registration stays (so a
    /// second stream for the same blob is still told it is in use) until
    /// the checkout is dropped.
    pub fn take(&mut self) -> Result<Upload> {
        self.upload.take().ok_or_else(not_begun)
    }

    /// Keeps the upload for resumption after its stream ended early.
    pub fn keep(mut self) {
        if !self.registered {
            return;
        }
        if let Some(upload) = self.upload.take() {
            self.settled = true;
            self.uploads.put_back(&self.key, upload);
        }
    }
}

fn not_begun() -> Error {
    Error::Internal("an upload checkout was used before it was begun".into())
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if !self.settled {
            self.uploads.unregister(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::DigestFunction;
    use crate::store::BlobStore;
    use crate::MemoryStore;
    use bytes::Bytes;

    fn key(uuid: &str, data: &[u8]) -> UploadKey {
        UploadKey {
            instance_name: "i".into(),
            uuid: uuid.into(),
            compression: Compression::Identity,
            digest: Digest::of_bytes(DigestFunction::Sha256, data),
        }
    }

    fn uploads(resume: Duration, max_uploads: usize, max_bytes: u64) -> Arc<Uploads> {
        Arc::new(Uploads::new(Limits {
            resume,
            max_uploads,
            max_bytes,
        }))
    }

    /// Claims `key` fresh, writes `data` and leaves it idle.
    async fn abandon(uploads: &Arc<Uploads>, key: &UploadKey, data: &[u8]) {
        let store = MemoryStore::new();
        let mut c = uploads.claim(key.clone(), 0).unwrap();
        assert!(c.is_fresh());
        let ctx = crate::RequestContext::internal("", key.digest.function());
        c.begin(store.write(&ctx, &key.digest).await.unwrap(), None);
        let u = c.upload().unwrap();
        u.writer.write(Bytes::copy_from_slice(data)).await.unwrap();
        u.set_received(data.len() as u64);
        u.account();
        c.keep();
    }

    #[tokio::test]
    async fn one_uuid_names_one_upload_per_blob() {
        let u = uploads(Duration::from_secs(60), 10, 1 << 20);
        let (a, b) = (key("same", b"blob a"), key("same", b"blob b"));
        abandon(&u, &a, b"blob").await;
        abandon(&u, &b, b"bl").await;
        assert_eq!((u.status(&a), u.status(&b)), (Some(4), Some(2)));
        assert_eq!(u.held_bytes(), 6);
        // Resume a where it stopped; b is untouched.
        let mut c = u.claim(a.clone(), 4).unwrap();
        assert_eq!(c.upload().unwrap().received(), 4);
        // A second stream resuming a, while the first holds it, is refused;
        // one starting from 0 gets an upload of its own, not registered.
        let e = u.claim(a.clone(), 4).err().unwrap();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        let own = u.claim(a.clone(), 0).unwrap();
        assert!(own.is_fresh());
        own.keep();
        assert_eq!((u.status(&a), u.registered()), (Some(4), 2));
        drop(c); // as after a commit
        assert_eq!((u.status(&a), u.registered(), u.held_bytes()), (None, 1, 2));
        // Wrong offsets are refused and keep the upload; 0 starts over.
        let e = u.claim(b.clone(), 1).err().unwrap();
        assert!(e.to_string().starts_with("write_offset"), "{e}");
        assert_eq!(u.status(&b), Some(2));
        let c = u.claim(b.clone(), 0).unwrap();
        assert!(c.is_fresh());
        assert_eq!(u.status(&b), Some(0));
    }

    #[tokio::test]
    async fn bounds_refuse_new_uploads_and_expiry_frees_them() {
        let u = uploads(Duration::from_millis(200), 3, 1 << 20);
        for i in 0..3 {
            abandon(&u, &key(&format!("u{i}"), b"x"), b"").await;
        }
        let e = u.claim(key("u3", b"x"), 0).err().unwrap();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(e.to_string().starts_with("max_open_uploads"), "{e}");
        // Resuming a registered upload is not a new one.
        u.claim(key("u0", b"x"), 0).unwrap().keep();
        tokio::time::sleep(Duration::from_millis(250)).await;
        u.claim(key("u3", b"x"), 0).unwrap();
        assert_eq!(
            u.registered(),
            0,
            "expired uploads were swept, the claim dropped"
        );

        let u = uploads(Duration::from_secs(60), 100, 10);
        abandon(&u, &key("big", b"0123456789"), b"0123456789").await;
        let e = u.claim(key("next", b"x"), 0).err().unwrap();
        assert!(e.to_string().starts_with("max_open_upload_bytes"), "{e}");
        u.forget(&key("big", b"0123456789"));
        assert_eq!(u.held_bytes(), 0);
        u.claim(key("next", b"x"), 0).unwrap();
    }

    #[tokio::test]
    async fn expiry_pops_only_what_is_due() {
        let u = uploads(Duration::from_millis(300), 100, 1 << 20);
        abandon(&u, &key("early", b"x"), b"").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        abandon(&u, &key("late", b"x"), b"").await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        drop(u.claim(key("other", b"x"), 0).unwrap());
        assert_eq!(u.status(&key("early", b"x")), None);
        assert_eq!(u.status(&key("late", b"x")), Some(0));
        assert_eq!(u.registry().expiry.len(), 1);
    }
}
