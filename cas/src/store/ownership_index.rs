//! Who owns which blobs, for [`super::TenantVisibility`]: per tenant the
//! set of digests it uploaded with verified bytes or its executions
//! produced, and their total size (what its `cas_bytes` quota counts).
//!
//! Kept in memory, and optionally appended to one file per tenant so that
//! ownership survives a restart. The store below evicts blobs without
//! telling this index, so a tenant's count may include blobs that are
//! gone; [`OwnershipIndex::forget`] drops them when the count matters (a
//! tenant at its quota), and rewrites the tenant's file.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::digest::{Digest, DigestFunction, DigestSet, HASH_LEN};
use crate::error::{Error, Result};

/// Bytes of one record in a tenant's file: function, hash, size.
const RECORD: usize = 1 + HASH_LEN + 8;

/// What one tenant owns.
#[derive(Debug, Default)]
pub(crate) struct Owned {
    pub(crate) digests: DigestSet,
    /// The sum of the digests' sizes.
    bytes: u64,
    /// When its blobs were last checked against the store.
    checked_at: Option<Instant>,
}

impl Owned {
    fn insert(&mut self, digest: Digest) -> bool {
        let new = self.digests.insert(digest);
        if new {
            self.bytes = self.bytes.saturating_add(digest.size());
        }
        new
    }
}

/// Who owns which blobs (see the module documentation).
pub struct OwnershipIndex {
    owned: Mutex<HashMap<Arc<str>, Owned>>,
    /// Where each tenant's ownership is appended; none: memory only.
    dir: Option<PathBuf>,
}

impl OwnershipIndex {
    /// An index kept in memory only (lost at restart: tenants upload again).
    pub fn in_memory() -> Self {
        OwnershipIndex {
            owned: Mutex::new(HashMap::new()),
            dir: None,
        }
    }

    /// An index kept in `dir`, one append-only file per tenant, loaded now.
    /// A torn last record (a crash mid-append) is cut off.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let mut owned = HashMap::new();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        for entry in entries {
            let path = entry
                .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?
                .path();
            let Some(tenant) = tenant_of_file(&path) else {
                continue;
            };
            let mut record = Owned::default();
            for digest in load(&path)? {
                record.insert(digest);
            }
            owned.insert(tenant, record);
        }
        Ok(OwnershipIndex {
            owned: Mutex::new(owned),
            dir: Some(dir.to_path_buf()),
        })
    }

    /// Whether `tenant` owns `digest`.
    pub fn owns(&self, tenant: &str, digest: &Digest) -> bool {
        self.lock()
            .get(tenant)
            .is_some_and(|o| o.digests.contains(digest))
    }

    /// Records that `tenant` owns `digest` (appended to its file first, so
    /// a grant that was answered is never lost).
    pub fn grant(&self, tenant: &Arc<str>, digest: &Digest) -> Result<()> {
        let mut owned = self.lock();
        let record = owned.entry(tenant.clone()).or_default();
        if record.digests.contains(digest) {
            return Ok(());
        }
        if let Some(dir) = &self.dir {
            append(&dir.join(file_name(tenant)), digest)?;
        }
        record.insert(*digest);
        Ok(())
    }

    /// Digests `tenant` owns (for tests and accounting).
    pub fn count(&self, tenant: &str) -> usize {
        self.lock().get(tenant).map_or(0, |o| o.digests.len())
    }

    /// Every tenant and the digests it owns (to give them back to a store
    /// that keeps owners, at start).
    pub fn snapshot(&self) -> Vec<(Arc<str>, Vec<Digest>)> {
        self.lock()
            .iter()
            .map(|(tenant, owned)| (tenant.clone(), owned.digests.iter().copied().collect()))
            .collect()
    }

    /// Bytes `tenant` owns: the sum of its digests' sizes.
    pub fn bytes(&self, tenant: &str) -> u64 {
        self.lock().get(tenant).map_or(0, |o| o.bytes)
    }

    /// The digests `tenant` owns, unless they were checked against the
    /// store less than `interval` ago (then `None`: checking again so soon
    /// would let a tenant at its quota make every upload scan everything
    /// it owns). Marks them checked now.
    pub fn due_for_check(
        &self,
        tenant: &str,
        interval: std::time::Duration,
    ) -> Option<Vec<Digest>> {
        let mut owned = self.lock();
        let record = owned.get_mut(tenant)?;
        let now = Instant::now();
        if record
            .checked_at
            .is_some_and(|at| now.duration_since(at) < interval)
        {
            return None;
        }
        record.checked_at = Some(now);
        Some(record.digests.iter().copied().collect())
    }

    /// Drops `gone` (blobs the store no longer holds) from what `tenant`
    /// owns, and rewrites its file without them.
    pub fn forget(&self, tenant: &str, gone: &[Digest]) -> Result<()> {
        if gone.is_empty() {
            return Ok(());
        }
        let mut owned = self.lock();
        let Some(record) = owned.get_mut(tenant) else {
            return Ok(());
        };
        for digest in gone {
            if record.digests.remove(digest) {
                record.bytes = record.bytes.saturating_sub(digest.size());
            }
        }
        if let Some(dir) = &self.dir {
            rewrite(&dir.join(file_name(tenant)), &record.digests)?;
        }
        Ok(())
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Owned>> {
        // Each update leaves the map consistent: a panic cannot tear it.
        self.owned.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A tenant's file name: its name hex-encoded, so any tenant name is a
/// safe file name.
fn file_name(tenant: &str) -> String {
    format!("{}.owned", hex::encode(tenant.as_bytes()))
}

fn tenant_of_file(path: &Path) -> Option<Arc<str>> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".owned")?;
    let bytes = hex::decode(stem).ok()?;
    String::from_utf8(bytes).ok().map(Arc::from)
}

fn load(path: &Path) -> Result<DigestSet> {
    let mut data = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let torn = data.len() % RECORD;
    if torn != 0 {
        // Cut the partial record so later appends stay aligned.
        let whole = (data.len() - torn) as u64;
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(whole))
            .map_err(|e| Error::io(format!("truncating {}", path.display()), e))?;
        tracing::warn!(file = %path.display(), bytes = torn, "dropped a torn ownership record");
    }
    let mut set = DigestSet::default();
    for record in data.chunks_exact(RECORD) {
        let function = match record[0] {
            0 => DigestFunction::Sha256,
            1 => DigestFunction::Blake3,
            other => {
                tracing::warn!(file = %path.display(), function = other, "skipping an ownership record of an unknown digest function");
                continue;
            }
        };
        let mut hash = [0u8; HASH_LEN];
        hash.copy_from_slice(&record[1..1 + HASH_LEN]);
        let mut size = [0u8; 8];
        size.copy_from_slice(&record[1 + HASH_LEN..]);
        set.insert(Digest::new(function, hash, u64::from_le_bytes(size)));
    }
    Ok(set)
}

fn encode(digest: &Digest, into: &mut Vec<u8>) {
    into.push(match digest.function() {
        DigestFunction::Sha256 => 0,
        DigestFunction::Blake3 => 1,
    });
    into.extend_from_slice(digest.hash());
    into.extend_from_slice(&digest.size().to_le_bytes());
}

fn append(path: &Path, digest: &Digest) -> Result<()> {
    let mut record = Vec::with_capacity(RECORD);
    encode(digest, &mut record);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(&record))
        .map_err(|e| Error::io(format!("appending to {}", path.display()), e))
}

/// Replaces the file at `path` with `digests`, through a temporary file
/// renamed over it, so a crash leaves the old file or the new one.
fn rewrite(path: &Path, digests: &DigestSet) -> Result<()> {
    let mut data = Vec::with_capacity(digests.len() * RECORD);
    for digest in digests {
        encode(digest, &mut data);
    }
    let tmp = path.with_extension("owned.tmp");
    std::fs::write(&tmp, &data)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Error::io(format!("rewriting {}", path.display()), e))
}
