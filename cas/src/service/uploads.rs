//! ByteStream uploads in progress, kept so that an interrupted Write can be
//! resumed after QueryWriteStatus.
//!
//! An upload is identified by instance name and the client's upload id. It
//! stays registered after its stream ends (committed or not) for the resume
//! window, so QueryWriteStatus can answer and a second Write to a committed
//! upload is recognised; entries older than the window are swept whenever a
//! new upload starts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::codec::ZstdDecoder;
use crate::digest::Digest;
use crate::resource::{Compression, WriteResource};
use crate::store::BlobWriter;

/// One upload. Locked by the Write stream that feeds it.
pub struct Upload {
    pub digest: Digest,
    pub compression: Compression,
    pub state: UploadState,
    /// Bytes received on the wire (compressed bytes for zstd uploads), all
    /// of them handed to the writer.
    pub received: u64,
    pub touched: Instant,
}

pub enum UploadState {
    Open {
        writer: Box<dyn BlobWriter>,
        decoder: Option<ZstdDecoder>,
    },
    Committed,
}

pub type Shared = Arc<tokio::sync::Mutex<Upload>>;

/// The registry of uploads.
pub struct Uploads {
    map: Mutex<HashMap<String, Shared>>,
    resume: Duration,
}

/// The registry key of an upload.
pub fn key(resource: &WriteResource) -> String {
    format!("{}\n{}", resource.instance_name, resource.uuid)
}

impl Uploads {
    pub fn new(resume: Duration) -> Self {
        Uploads {
            map: Mutex::new(HashMap::new()),
            resume,
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Shared>> {
        // Poison is harmless: every update is one insert or remove.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Shared> {
        self.map().get(key).cloned()
    }

    /// Registers a new upload (unless one raced in first: then that one is
    /// returned) and sweeps expired ones.
    pub fn insert(&self, key: String, upload: Upload) -> Shared {
        let mut map = self.map();
        let now = Instant::now();
        map.retain(|_, u| match u.try_lock() {
            Ok(u) => now.duration_since(u.touched) < self.resume,
            Err(_) => true, // in use
        });
        map.entry(key)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(upload)))
            .clone()
    }

    pub fn remove(&self, key: &str) {
        self.map().remove(key);
    }
}
