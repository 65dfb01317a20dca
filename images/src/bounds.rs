//! Bounds on what unpacking a layer may cost, enforced while it happens.
//!
//! A layer comes from the network, and a few kilobytes of gzip or zstd can
//! decompress to terabytes. So the uncompressed stream is counted as it
//! leaves the decoder ([`MeteredReader`]), and the read that passes a bound
//! fails: the unpack stops there instead of after the disk is full. The tar
//! reader sits on top of that stream, so whatever the tar does, it cannot
//! consume more than the bound.
//!
//! Two things can make an unpack write more than it reads, and are charged
//! to the same bound: sparse files (a tiny header standing for gigabytes of
//! zeros) and hard links copied because their inode is out of links.
//!
//! The tar crate keeps a GNU long name, long link or PAX header of any size
//! in memory before it yields the entry they describe. The meter therefore
//! also bounds the bytes read between two entries' data, which are exactly
//! those headers (and the padding before them).

use std::cell::Cell;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::{Bound, Error};

/// Bound of the header bytes (long names, PAX records, sparse maps) of one
/// tar entry. Real ones are well under a kilobyte; GNU tar's own readers
/// and Go's archive/tar stop at about a megabyte too.
pub const MAX_ENTRY_HEADER_BYTES: u64 = 1 << 20;

/// The per-layer bounds, from [`crate::ImagesConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Uncompressed bytes of one layer (`max_layer_bytes`).
    pub max_layer_bytes: u64,
    /// Tar entries of one layer (`max_layer_entries`).
    pub max_layer_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_layer_bytes: crate::config::DEFAULT_MAX_LAYER_BYTES,
            max_layer_entries: crate::config::DEFAULT_MAX_LAYER_ENTRIES,
        }
    }
}

/// The uncompressed bytes of one image so far, shared by the unpacks of its
/// layers (which run several at once) so that their sum is bounded.
#[derive(Debug)]
pub struct ImageBudget {
    max: u64,
    used: AtomicU64,
    stopped: AtomicBool,
}

impl ImageBudget {
    /// A budget of `max` bytes (`max_image_bytes`).
    pub fn new(max: u64) -> ImageBudget {
        ImageBudget {
            max,
            used: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        }
    }

    /// The bound.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Bytes charged so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Adds `n` bytes; false once the total passes the bound.
    pub fn charge(&self, n: u64) -> bool {
        let add = |used: u64| Some(used.saturating_add(n));
        let before = match self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, add)
        {
            Ok(before) | Err(before) => before,
        };
        before.saturating_add(n) <= self.max
    }

    /// Makes every unpack still charging this budget fail at its next read:
    /// once one layer of an image has failed, the others are wasted work
    /// (and disk) that nobody will use.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// Whether [`ImageBudget::stop`] was called.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// A guard that stops the budget when dropped, whether the pull it
    /// covers succeeded, failed or was cancelled.
    pub fn stop_on_drop(self: &Arc<Self>) -> StopOnDrop {
        StopOnDrop(Arc::clone(self))
    }
}

/// See [`ImageBudget::stop_on_drop`].
#[derive(Debug)]
pub struct StopOnDrop(Arc<ImageBudget>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Why a metered unpack stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A configured bound was passed; its value.
    Bound(Bound, u64),
    /// One entry's headers passed [`MAX_ENTRY_HEADER_BYTES`].
    Headers,
    /// The image's budget was stopped (another layer failed).
    Stopped,
}

impl Refusal {
    /// The error for `layer` (its digest and image).
    pub(crate) fn into_error(self, layer: &str) -> Error {
        match self {
            Refusal::Bound(bound, limit) => Error::TooLarge {
                layer: layer.to_string(),
                bound,
                limit,
            },
            Refusal::Headers => Error::Layer {
                layer: layer.to_string(),
                entry: "<archive>".to_string(),
                reason: format!(
                    "the headers of one tar entry (long names, PAX records, sparse maps) \
                     pass {MAX_ENTRY_HEADER_BYTES} bytes"
                ),
            },
            Refusal::Stopped => Error::Layer {
                layer: layer.to_string(),
                entry: "<archive>".to_string(),
                reason: "unpack stopped: the image's pull failed or was cancelled".to_string(),
            },
        }
    }
}

/// Counts what one layer's unpack reads and writes against its bounds.
/// Single-threaded: the reader inside the tar and the unpacker both hold a
/// shared reference. The first refusal sticks.
pub(crate) struct Meter<'a> {
    limits: UnpackLimits,
    image: Option<&'a ImageBudget>,
    /// Bytes charged: the uncompressed stream plus expansions.
    charged: Cell<u64>,
    /// Bytes of the uncompressed stream.
    read: Cell<u64>,
    /// Stream bytes read outside entry data since the last entry began.
    headers: Cell<u64>,
    in_data: Cell<bool>,
    entries: Cell<u64>,
    refusal: Cell<Option<Refusal>>,
}

impl<'a> Meter<'a> {
    pub(crate) fn new(limits: UnpackLimits, image: Option<&'a ImageBudget>) -> Meter<'a> {
        Meter {
            limits,
            image,
            charged: Cell::new(0),
            read: Cell::new(0),
            headers: Cell::new(0),
            in_data: Cell::new(false),
            entries: Cell::new(0),
            refusal: Cell::new(None),
        }
    }

    /// Why the unpack was refused, if it was.
    pub(crate) fn refusal(&self) -> Option<Refusal> {
        self.refusal.get()
    }

    fn refuse(&self, why: Refusal) -> io::Error {
        if self.refusal.get().is_none() {
            self.refusal.set(Some(why));
        }
        // The text is for whoever wraps it; callers look at `refusal()`.
        io::Error::other("layer unpack refused: a bound was passed")
    }

    /// Bytes of the uncompressed stream read so far.
    pub(crate) fn stream_bytes(&self) -> u64 {
        self.read.get()
    }

    /// Charges `n` bytes about to be written or just decompressed to the
    /// layer and to the image; fails once either bound is passed.
    pub(crate) fn charge(&self, n: u64) -> io::Result<()> {
        if let Some(why) = self.refusal.get() {
            return Err(self.refuse(why));
        }
        let charged = self.charged.get().saturating_add(n);
        self.charged.set(charged);
        if charged > self.limits.max_layer_bytes {
            let limit = self.limits.max_layer_bytes;
            return Err(self.refuse(Refusal::Bound(Bound::LayerBytes, limit)));
        }
        if let Some(image) = self.image {
            if image.stopped() {
                return Err(self.refuse(Refusal::Stopped));
            }
            if !image.charge(n) {
                return Err(self.refuse(Refusal::Bound(Bound::ImageBytes, image.max())));
            }
        }
        Ok(())
    }

    /// Counts `n` bytes leaving the decoder.
    fn on_read(&self, n: u64) -> io::Result<()> {
        self.read.set(self.read.get() + n);
        if !self.in_data.get() {
            let headers = self.headers.get() + n;
            self.headers.set(headers);
            if headers > MAX_ENTRY_HEADER_BYTES {
                return Err(self.refuse(Refusal::Headers));
            }
        }
        self.charge(n)
    }

    /// A new entry was yielded: counts it, and lets its data be read
    /// without counting it as headers.
    pub(crate) fn begin_entry(&self) -> io::Result<()> {
        let entries = self.entries.get() + 1;
        self.entries.set(entries);
        if entries > self.limits.max_layer_entries {
            let limit = self.limits.max_layer_entries;
            return Err(self.refuse(Refusal::Bound(Bound::LayerEntries, limit)));
        }
        self.headers.set(0);
        self.in_data.set(true);
        Ok(())
    }

    /// A directory the tar did not list was created for an entry's parents:
    /// it costs an inode and a block like a listed one, so it counts as an
    /// entry and as a header's worth of bytes. Otherwise one entry 2,000
    /// directories deep would make 2,000 inodes for the price of one.
    pub(crate) fn implicit_entry(&self) -> io::Result<()> {
        let entries = self.entries.get() + 1;
        self.entries.set(entries);
        if entries > self.limits.max_layer_entries {
            let limit = self.limits.max_layer_entries;
            return Err(self.refuse(Refusal::Bound(Bound::LayerEntries, limit)));
        }
        self.charge(512)
    }

    /// The entry's data is consumed: what follows is the next headers.
    pub(crate) fn end_entry(&self) {
        self.in_data.set(false);
    }

    /// The tar has ended; what follows (trailing blocks) is read to sink.
    pub(crate) fn begin_trailer(&self) {
        self.headers.set(0);
        self.in_data.set(true);
    }
}

/// The uncompressed layer stream: hashed for the DiffID and counted
/// against the bounds as it is read.
pub(crate) struct MeteredReader<'m, 'a, R> {
    inner: R,
    hasher: Sha256,
    meter: &'m Meter<'a>,
}

impl<'m, 'a, R: Read> MeteredReader<'m, 'a, R> {
    pub(crate) fn new(inner: R, meter: &'m Meter<'a>) -> Self {
        MeteredReader {
            inner,
            hasher: Sha256::new(),
            meter,
        }
    }

    /// `sha256:` of everything read.
    pub(crate) fn diff_id(self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for MeteredReader<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(why) = self.meter.refusal() {
            return Err(self.meter.refuse(why));
        }
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.meter.on_read(n as u64)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_budget_is_shared_and_stops() {
        let budget = Arc::new(ImageBudget::new(100));
        assert!(budget.charge(60));
        assert!(budget.charge(40));
        assert!(!budget.charge(1));
        let meter = Meter::new(UnpackLimits::default(), Some(&budget));
        assert!(meter.charge(1).is_err());
        assert_eq!(
            meter.refusal(),
            Some(Refusal::Bound(Bound::ImageBytes, 100))
        );

        let budget = Arc::new(ImageBudget::new(u64::MAX));
        assert!(budget.charge(u64::MAX));
        drop(budget.stop_on_drop());
        let meter = Meter::new(UnpackLimits::default(), Some(&budget));
        assert!(meter.charge(0).is_err());
        assert_eq!(meter.refusal(), Some(Refusal::Stopped));
    }

    #[test]
    fn the_read_that_passes_the_layer_bound_fails_and_the_refusal_sticks() {
        let limits = UnpackLimits {
            max_layer_bytes: 10,
            max_layer_entries: 1,
        };
        let meter = Meter::new(limits, None);
        meter.begin_entry().unwrap();
        let mut reader = MeteredReader::new(&[7u8; 32][..], &meter);
        let mut buf = [0u8; 8];
        assert_eq!(reader.read(&mut buf).unwrap(), 8);
        assert!(reader.read(&mut buf).is_err());
        assert!(reader.read(&mut buf).is_err(), "stays refused");
        assert_eq!(meter.refusal(), Some(Refusal::Bound(Bound::LayerBytes, 10)));
    }
}
