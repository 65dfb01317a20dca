//! Settings of the storage services, read from the `[cas]` table of the
//! server's TOML file. Every field is optional; the defaults suit a single
//! machine.

use serde::Deserialize;

/// Default bound of the disk CAS: 10 GiB.
pub const DEFAULT_MAX_CAS_BYTES: u64 = 10 << 30;
/// Default advertised batch limit: 4 MiB, what Bazel and most clients
/// expect from a gRPC server.
pub const DEFAULT_MAX_BATCH_TOTAL_SIZE_BYTES: u64 = 4 << 20;
/// Default time an interrupted ByteStream upload is kept for resumption.
pub const DEFAULT_UPLOAD_RESUME_SECS: u64 = 600;
/// Default bound on ByteStream uploads open at once (being written or
/// waiting to be resumed). Each holds a temp file and its descriptor.
pub const DEFAULT_MAX_OPEN_UPLOADS: u64 = 10_000;
/// Default bound on the bytes those uploads hold: 4 GiB.
pub const DEFAULT_MAX_OPEN_UPLOAD_BYTES: u64 = 4 << 30;
/// Default and largest number of directories in one GetTree page.
pub const DEFAULT_GET_TREE_PAGE_SIZE: u32 = 1000;

/// The `[cas]` table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Upper bound on the bytes the disk CAS keeps; least-recently-used
    /// blobs are evicted beyond it. Default 10 GiB. `--max-cas-bytes`
    /// overrides it.
    pub max_cas_bytes: Option<u64>,
    /// Largest total blob size of one BatchUpdateBlobs/BatchReadBlobs call,
    /// advertised in Capabilities; the gRPC message limit is set from it.
    /// Default 4 MiB.
    pub max_batch_total_size_bytes: Option<u64>,
    /// Seconds an interrupted ByteStream upload is kept so that the client
    /// can resume it after QueryWriteStatus. Default 600.
    pub upload_resume_secs: Option<u64>,
    /// Most ByteStream uploads open at once, counting both those being
    /// written and interrupted ones kept for resumption; a new upload past
    /// it is refused with RESOURCE_EXHAUSTED until some finish or expire.
    /// Bounds what clients that abandon uploads can pin. Default 10,000.
    pub max_open_uploads: Option<u64>,
    /// Bytes the open uploads may hold (in `tmp/` for the disk store) before
    /// new uploads are refused with RESOURCE_EXHAUSTED; uploads already open
    /// may finish. Default 4 GiB.
    pub max_open_upload_bytes: Option<u64>,
    /// Largest number of directories returned in one GetTree page (a smaller
    /// `page_size` in the request wins). Default 1000.
    pub get_tree_page_size: Option<u32>,
}

impl Config {
    pub fn max_cas_bytes(&self) -> u64 {
        self.max_cas_bytes.unwrap_or(DEFAULT_MAX_CAS_BYTES)
    }

    pub fn max_batch_total_size_bytes(&self) -> u64 {
        self.max_batch_total_size_bytes
            .unwrap_or(DEFAULT_MAX_BATCH_TOTAL_SIZE_BYTES)
            .max(1)
    }

    pub fn upload_resume_secs(&self) -> u64 {
        self.upload_resume_secs
            .unwrap_or(DEFAULT_UPLOAD_RESUME_SECS)
    }

    pub fn max_open_uploads(&self) -> u64 {
        self.max_open_uploads
            .unwrap_or(DEFAULT_MAX_OPEN_UPLOADS)
            .max(1)
    }

    pub fn max_open_upload_bytes(&self) -> u64 {
        self.max_open_upload_bytes
            .unwrap_or(DEFAULT_MAX_OPEN_UPLOAD_BYTES)
            .max(1)
    }

    pub fn get_tree_page_size(&self) -> u32 {
        self.get_tree_page_size
            .unwrap_or(DEFAULT_GET_TREE_PAGE_SIZE)
            .max(1)
    }

    /// The gRPC message size limit (both directions) that lets a full batch
    /// through: the batch plus room for per-blob framing.
    pub fn max_message_bytes(&self) -> usize {
        let batch = self.max_batch_total_size_bytes();
        usize::try_from(batch.saturating_mul(2).saturating_add(1 << 20)).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_fields_and_refuses_unknown_ones() {
        let c: Config = toml::from_str(
            "max_cas_bytes = 1000\nget_tree_page_size = 5\nmax_open_uploads = 7\nmax_open_upload_bytes = 9",
        )
        .unwrap();
        assert_eq!(c.max_cas_bytes(), 1000);
        assert_eq!(c.get_tree_page_size(), 5);
        assert_eq!((c.max_open_uploads(), c.max_open_upload_bytes()), (7, 9));
        assert_eq!(
            Config::default().max_open_uploads(),
            DEFAULT_MAX_OPEN_UPLOADS
        );
        assert_eq!(
            Config::default().max_open_upload_bytes(),
            DEFAULT_MAX_OPEN_UPLOAD_BYTES
        );
        assert_eq!(
            c.max_batch_total_size_bytes(),
            DEFAULT_MAX_BATCH_TOTAL_SIZE_BYTES
        );
        let err = toml::from_str::<Config>("max_cas_byte = 1").unwrap_err();
        assert!(err.to_string().contains("max_cas_byte"), "{err}");
        assert_eq!(toml::from_str::<Config>("").unwrap(), Config::default());
    }
}
