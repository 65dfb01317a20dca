//! An action cache on disk: one file per entry holding the encoded
//! ActionResult, written to a temp file and renamed like blobs are.

use std::fs::{self, File};
use std::io::Read;
use std::path::PathBuf;

use async_trait::async_trait;
use corral_proto::reapi;
use prost::Message;

use super::ActionCache;
use crate::context::RequestContext;
use crate::digest::{Digest, DigestFunction};
use crate::error::{Error, Result};
use crate::message::DEFAULT_ACTION_RESULT_BYTES;

/// Layout: `<root>/<function>/<sha256(instance name)>/<hash>-<size>`.
/// Instance names are hashed because they may contain slashes and any
/// characters.
pub struct DiskActionCache {
    root: PathBuf,
    /// Entries larger than this are not read (`[cas.message_limits]
    /// action_result`).
    max_entry_bytes: u64,
}

impl DiskActionCache {
    /// Opens (creating if needed) the action cache at `root`. Blocking.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let tmp = root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp)
                .map_err(|e| Error::io(format!("clearing {}", tmp.display()), e))?;
        }
        fs::create_dir_all(&tmp)
            .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        Ok(DiskActionCache {
            root,
            max_entry_bytes: DEFAULT_ACTION_RESULT_BYTES,
        })
    }

    /// Reads no entry larger than `bytes` (it is a miss instead).
    pub fn with_max_entry_bytes(mut self, bytes: u64) -> Self {
        self.max_entry_bytes = bytes;
        self
    }

    fn path(&self, instance: &str, action: &Digest) -> PathBuf {
        let instance_dir = Digest::of_bytes(DigestFunction::Sha256, instance.as_bytes()).hash_hex();
        self.root
            .join(action.function().name())
            .join(instance_dir)
            .join(format!("{}-{}", action.hash_hex(), action.size()))
    }
}

/// The entry at `path`, or `None` when there is none or it is larger than
/// `max` (checked from the file's size before it is read).
fn read_entry(path: &PathBuf, max: u64) -> Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    let len = file
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
        .len();
    if len > max {
        tracing::warn!(path = %path.display(), len, max, "action cache entry over [cas.message_limits] action_result: a miss");
        return Ok(None);
    }
    let mut data = Vec::with_capacity(len as usize);
    file.take(max)
        .read_to_end(&mut data)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(Some(data))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
}

#[async_trait]
impl ActionCache for DiskActionCache {
    async fn get(
        &self,
        ctx: &RequestContext,
        action: &Digest,
    ) -> Result<Option<reapi::ActionResult>> {
        let path = self.path(ctx.instance_name(), action);
        let max = self.max_entry_bytes;
        let p = path.clone();
        let Some(data) = blocking(move || read_entry(&p, max)).await? else {
            return Ok(None);
        };
        match reapi::ActionResult::decode(&data[..]) {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "dropping unreadable action cache entry");
                let _ = tokio::fs::remove_file(&path).await;
                Ok(None)
            }
        }
    }

    async fn update(
        &self,
        ctx: &RequestContext,
        action: &Digest,
        result: reapi::ActionResult,
    ) -> Result<()> {
        let path = self.path(ctx.instance_name(), action);
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{:016x}", fastrand::u64(..)));
        let data = result.encode_to_vec();
        blocking(move || {
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
    }
}
