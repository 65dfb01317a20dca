//! A durable asset index: one file per entry under the server's data
//! directory, written to a temporary file, synced and renamed (as the
//! action cache and blobs are), so a restart — or a crash — finds every
//! entry that was acknowledged and never a torn one.
//!
//! Layout: `<root>/entries/<sha256(instance name)>/<k[0..2]>/<k>`, where
//! `k` is the SHA-256 of the key (the first two hex digits spread entries
//! over 256 directories), each file an encoded [`Record`] that repeats the
//! full key, checked on read.
//! `<root>/tmp/` holds writes in progress and is cleared on open.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use corral_cas::{Digest, RequestContext};
use corral_proto::protobuf::Timestamp;
use corral_proto::reapi;
use prost::Message;

use super::{AssetEntry, AssetIndex, AssetKey};
use crate::clock::{from_timestamp, to_timestamp};
use crate::error::{AssetError, Result};

/// Largest entry file read; larger ones are dropped as damaged. An entry
/// with the most references a request can carry stays far below it.
const MAX_RECORD_BYTES: u64 = 64 << 20;

/// One entry on disk.
#[derive(Clone, PartialEq, prost::Message)]
struct Record {
    /// [`AssetKey::encode`] of the entry's key and instance.
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    digest: Option<reapi::Digest>,
    #[prost(message, repeated, tag = "3")]
    references_blobs: Vec<reapi::Digest>,
    #[prost(message, repeated, tag = "4")]
    references_directories: Vec<reapi::Digest>,
    #[prost(message, optional, tag = "5")]
    stored_at: Option<Timestamp>,
    #[prost(message, optional, tag = "6")]
    expire_at: Option<Timestamp>,
}

/// The index under one directory.
pub struct DiskIndex {
    root: PathBuf,
}

impl DiskIndex {
    /// Opens (creating if needed) the index at `root`. Blocking.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let tmp = root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp)
                .map_err(|e| AssetError::io(format!("clearing {}", tmp.display()), e))?;
        }
        for dir in [tmp, root.join("entries")] {
            fs::create_dir_all(&dir)
                .map_err(|e| AssetError::io(format!("creating {}", dir.display()), e))?;
        }
        Ok(DiskIndex { root })
    }

    /// The directory it lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, instance: &str, key: &AssetKey) -> PathBuf {
        let instance_dir = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(instance.as_bytes()));
        let id = key.id(instance);
        self.root
            .join("entries")
            .join(instance_dir)
            .join(&id[..2])
            .join(id)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AssetError::Internal(format!("blocking task failed: {e}")))?
}

fn read_record(path: &Path) -> Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AssetError::io(format!("opening {}", path.display()), e)),
    };
    let mut data = Vec::new();
    file.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|e| AssetError::io(format!("reading {}", path.display()), e))?;
    Ok(Some(data))
}

/// The entry in `record`, if it is one for `key` and well formed.
fn decode(record: &[u8], key: &AssetKey, encoded_key: &[u8]) -> Option<AssetEntry> {
    if record.len() as u64 > MAX_RECORD_BYTES {
        return None;
    }
    let r = Record::decode(record).ok()?;
    if r.key != encoded_key {
        return None;
    }
    let digest = |d: &reapi::Digest| Digest::from_proto(key.function, d).ok();
    let all = |ds: &[reapi::Digest]| ds.iter().map(digest).collect::<Option<Vec<_>>>();
    Some(AssetEntry {
        digest: digest(r.digest.as_ref()?)?,
        references_blobs: all(&r.references_blobs)?,
        references_directories: all(&r.references_directories)?,
        stored_at: from_timestamp("stored_at", r.stored_at.as_ref()?).ok()?,
        expire_at: match &r.expire_at {
            Some(t) => Some(from_timestamp("expire_at", t).ok()?),
            None => None,
        },
    })
}

fn encode(entry: &AssetEntry, encoded_key: Vec<u8>) -> Vec<u8> {
    Record {
        key: encoded_key,
        digest: Some(entry.digest.to_proto()),
        references_blobs: entry
            .references_blobs
            .iter()
            .map(Digest::to_proto)
            .collect(),
        references_directories: entry
            .references_directories
            .iter()
            .map(Digest::to_proto)
            .collect(),
        stored_at: Some(to_timestamp(entry.stored_at)),
        expire_at: entry.expire_at.map(to_timestamp),
    }
    .encode_to_vec()
}

/// Writes `data` to `path` through a synced temporary file in `tmp_dir`.
fn write_atomically(tmp_dir: &Path, path: &Path, data: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| AssetError::io(format!("creating {}", parent.display()), e))?;
    }
    let tmp = tmp_dir.join(format!("{:016x}", fastrand::u64(..)));
    let written = File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(data)?;
            f.sync_all()
        })
        .map_err(|e| AssetError::io(format!("writing {}", tmp.display()), e));
    let renamed = written.and_then(|()| {
        fs::rename(&tmp, path)
            .map_err(|e| AssetError::io(format!("renaming to {}", path.display()), e))
    });
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    renamed
}

#[async_trait]
impl AssetIndex for DiskIndex {
    async fn get(&self, ctx: &RequestContext, key: &AssetKey) -> Result<Option<AssetEntry>> {
        let path = self.path(ctx.instance_name(), key);
        let p = path.clone();
        let Some(record) = blocking(move || read_record(&p)).await? else {
            return Ok(None);
        };
        let encoded_key = key.encode(ctx.instance_name());
        match decode(&record, key, &encoded_key) {
            Some(entry) => Ok(Some(entry)),
            None => {
                tracing::warn!(path = %path.display(), uri = %key.uri, "dropping an unreadable asset index entry");
                let _ = tokio::fs::remove_file(&path).await;
                Ok(None)
            }
        }
    }

    async fn put(&self, ctx: &RequestContext, key: &AssetKey, entry: &AssetEntry) -> Result<()> {
        let path = self.path(ctx.instance_name(), key);
        let data = encode(entry, key.encode(ctx.instance_name()));
        let tmp_dir = self.root.join("tmp");
        blocking(move || write_atomically(&tmp_dir, &path, &data)).await
    }

    async fn remove(&self, ctx: &RequestContext, key: &AssetKey) -> Result<()> {
        let path = self.path(ctx.instance_name(), key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(AssetError::io(format!("removing {}", path.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::AssetKind;
    use crate::qualifiers::Qualifiers;
    use corral_cas::DigestFunction;
    use std::time::{Duration, SystemTime};

    #[tokio::test]
    async fn entries_survive_reopening_and_damage_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = RequestContext::internal("team/a", DigestFunction::Sha256);
        let other = RequestContext::internal("team/b", DigestFunction::Sha256);
        let key = AssetKey::new(
            AssetKind::Blob,
            DigestFunction::Sha256,
            "https://example.com/x",
            &Qualifiers::default(),
        );
        let entry = AssetEntry {
            digest: Digest::of_bytes(DigestFunction::Sha256, b"x"),
            references_blobs: vec![Digest::of_bytes(DigestFunction::Sha256, b"y")],
            references_directories: Vec::new(),
            stored_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            expire_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000)),
        };
        {
            let index = DiskIndex::open(dir.path()).unwrap();
            index.put(&ctx, &key, &entry).await.unwrap();
        }
        let index = DiskIndex::open(dir.path()).unwrap();
        assert_eq!(index.get(&ctx, &key).await.unwrap(), Some(entry));
        assert_eq!(index.get(&other, &key).await.unwrap(), None);
        let path = index.path("team/a", &key);
        std::fs::write(&path, b"\xff\xffgarbage").unwrap();
        assert_eq!(index.get(&ctx, &key).await.unwrap(), None);
        assert!(!path.exists(), "a damaged entry is removed");
        index.remove(&ctx, &key).await.unwrap();
    }
}
