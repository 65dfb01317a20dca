//! Which blobs of an asset the CAS no longer (or never) held.
//!
//! An asset is a blob or a directory tree plus the blobs and trees its
//! push said it refers to. A Fetch answers an entry only while all of that
//! is in the CAS — otherwise the client would be sent to download what
//! eviction already removed — and a Push is refused, naming what is
//! missing, if any of it is absent. For a directory that means every
//! Directory message of the tree and every file in it.

use std::collections::{HashSet, VecDeque};

use corral_cas::store::BoundedStore;
use corral_cas::{BlobStore, Digest, RequestContext};
use corral_proto::reapi;

use crate::error::{AssetError, Result};
use crate::index::AssetEntry;

/// The blobs the CAS lacks among `blobs` and the trees rooted at
/// `directories`, each named by its request field for errors. A Directory
/// that is missing is listed itself (what is below it cannot be known);
/// one that is present but is not a Directory is an INVALID_ARGUMENT
/// naming its field.
pub async fn missing(
    cas: &BoundedStore,
    ctx: &RequestContext,
    blobs: &[Digest],
    directories: &[(Digest, String)],
) -> Result<Vec<Digest>> {
    let mut absent = Vec::new();
    let mut files: Vec<Digest> = blobs.to_vec();
    let mut seen = HashSet::new();
    let mut pending: VecDeque<(Digest, String)> = directories.iter().cloned().collect();
    while let Some((digest, field)) = pending.pop_front() {
        if !seen.insert(digest) {
            continue;
        }
        let dir: reapi::Directory = match cas.get_message(ctx, &digest, &field).await {
            Ok(d) => d,
            Err(corral_cas::Error::NotFound(_)) => {
                absent.push(digest);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for (i, f) in dir.files.iter().enumerate() {
            files.push(child(&digest, f.digest.as_ref(), &format!("files[{i}]"))?);
        }
        for (i, d) in dir.directories.iter().enumerate() {
            let sub = child(&digest, d.digest.as_ref(), &format!("directories[{i}]"))?;
            pending.push_back((
                sub,
                format!("directory {} {}", digest_text(&digest), d.name),
            ));
        }
    }
    files.sort();
    files.dedup();
    absent.extend(cas.find_missing(ctx, &files).await?);
    absent.sort();
    absent.dedup();
    Ok(absent)
}

/// Whether everything `entry` refers to is in the CAS. A tree that cannot
/// be read as Directories counts as incomplete, never as an error of the
/// Fetch.
pub async fn is_complete(
    cas: &BoundedStore,
    ctx: &RequestContext,
    entry: &AssetEntry,
    root_is_directory: bool,
) -> Result<bool> {
    let mut blobs = entry.references_blobs.clone();
    let mut directories: Vec<(Digest, String)> = entry
        .references_directories
        .iter()
        .map(|d| (*d, "references_directories".to_string()))
        .collect();
    if root_is_directory {
        directories.push((entry.digest, "root_directory_digest".to_string()));
    } else {
        blobs.push(entry.digest);
    }
    match missing(cas, ctx, &blobs, &directories).await {
        Ok(absent) => Ok(absent.is_empty()),
        Err(AssetError::InvalidArgument { .. }) => Ok(false),
        Err(AssetError::Cas(e)) if e.code() == tonic::Code::InvalidArgument => Ok(false),
        Err(e) => Err(e),
    }
}

fn child(parent: &Digest, d: Option<&reapi::Digest>, field: &str) -> Result<Digest> {
    let d = d.ok_or_else(|| {
        AssetError::invalid(
            format!("directory {}.{field}", digest_text(parent)),
            "has no digest",
        )
    })?;
    Digest::from_proto(parent.function(), d).map_err(|e| {
        AssetError::invalid(
            format!("directory {}.{field}", digest_text(parent)),
            e.to_string(),
        )
    })
}

fn digest_text(d: &Digest) -> String {
    format!("{}/{}", d.hash_hex(), d.size())
}
