//! ByteStream Write: one stream feeding one upload, which is verified and
//! committed on `finish_write` or kept for resumption when the stream ends
//! early.
//!
//! Plain uploads are resumable at the byte QueryWriteStatus reports.
//! Compressed ones are not: REAPI counts the first `write_offset` of a
//! resumed compressed stream in uncompressed bytes, while Bazel resumes at
//! the compressed count it was given. Only 0 means the same to both, so an
//! interrupted compressed upload is dropped and QueryWriteStatus says 0.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use corral_proto::bytestream::WriteRequest;
use tonic::Streaming;

use super::codec::ZstdDecoder;
use super::decode_errors::from_stream_error;
use super::uploads::{Upload, UploadKey};
use super::State;
use crate::context::Caller;
use crate::error::{Error, Result};
use crate::resource::{parse_write, Compression, WriteResource};
use crate::store::BlobStore;

/// Small client chunks are gathered to this size before they go to the
/// store, so a client writing 16 KiB messages costs no more than one
/// writing 1 MiB ones.
const COALESCE: usize = 1 << 20;

/// The `committed_size` of an upload that ends because the blob is already
/// stored: the full size, or -1 for a compressed upload (REAPI: the
/// compressed size depends on the other client's compressor).
pub fn already_stored(resource: &WriteResource) -> i64 {
    match resource.compression {
        Compression::Identity => resource.digest.size() as i64,
        Compression::Zstd => -1,
    }
}

/// Runs one Write stream whose first message is `first`; returns the
/// `committed_size` to answer.
pub async fn run(
    state: Arc<State>,
    caller: Caller,
    first: WriteRequest,
    mut stream: Streaming<WriteRequest>,
) -> Result<i64> {
    let name = first.resource_name.clone();
    let resource = parse_write(&name)?;
    let digest = resource.digest;
    let ctx = caller.context(&resource.instance_name, digest.function());
    let key = UploadKey::of(&resource);
    if state.store.find_missing(&ctx, &[digest]).await?.is_empty() {
        // Already stored (always so for the empty blob): REAPI lets the
        // server end the upload now, whatever was sent or kept before.
        state.uploads.forget(&key);
        return Ok(already_stored(&resource));
    }
    let mut checkout = state.uploads.claim(key, first.write_offset)?;
    if checkout.is_fresh() {
        let writer = state.store.write(&ctx, &digest).await?;
        let decoder = match resource.compression {
            Compression::Identity => None,
            Compression::Zstd => Some(ZstdDecoder::new()?),
        };
        checkout.begin(writer, decoder);
    }
    let mut feed = Feed {
        upload: checkout.upload()?,
        pending: BytesMut::new(),
        size: digest.size(),
    };
    match feed.run(&name, first, &mut stream).await? {
        Ended::Finished => {
            let upload = checkout.take()?;
            let received = upload.received();
            upload.into_writer().commit().await?;
            Ok(received as i64)
        }
        Ended::Interrupted(answer) => {
            if resource.compression == Compression::Identity {
                checkout.keep();
            }
            Err(answer)
        }
    }
}

/// How a stream ended while its upload stayed sound. (An `Err` from
/// [`Feed::run`] means the upload is broken and must be dropped.)
enum Ended {
    /// `finish_write` came and the stream closed after it: commit.
    Finished,
    /// The stream stopped before `finish_write` (closed, broken, or a wrong
    /// `write_offset`); every byte received is in the writer, so the upload
    /// can be resumed. The error is this stream's answer.
    Interrupted(Error),
}

/// The message loop of one Write stream.
struct Feed<'a> {
    upload: &'a mut Upload,
    /// Plain bytes gathered for the next store write.
    pending: BytesMut,
    size: u64,
}

impl Feed<'_> {
    /// Feeds the upload from `first` and the rest of `stream`. Pending
    /// bytes are flushed on every sound ending, so the upload's received
    /// count is always what its writer holds.
    async fn run(
        &mut self,
        first_name: &str,
        first: WriteRequest,
        stream: &mut Streaming<WriteRequest>,
    ) -> Result<Ended> {
        let mut msg = first;
        loop {
            if !msg.resource_name.is_empty() && msg.resource_name != first_name {
                return Err(Error::invalid(
                    "resource_name",
                    "changed in the middle of a Write stream",
                ));
            }
            let expected = self.upload.received();
            if msg.write_offset != expected as i64 {
                self.flush().await?;
                return Ok(Ended::Interrupted(Error::invalid(
                    "write_offset",
                    format!("is {}, expected {expected}", msg.write_offset),
                )));
            }
            let ready = self.take(msg.data)?;
            if msg.finish_write {
                if let Some(chunk) = ready {
                    self.upload.writer.write(chunk).await?;
                }
                self.flush().await?;
                return self.finish(stream).await;
            }
            // Hash and store this chunk while the next message arrives.
            let next = match ready {
                Some(chunk) => {
                    let (written, next) =
                        tokio::join!(self.upload.writer.write(chunk), stream.message());
                    written?;
                    self.upload.account();
                    next
                }
                None => stream.message().await,
            };
            msg = match next {
                Ok(Some(m)) => m,
                Ok(None) => {
                    self.flush().await?;
                    return Ok(Ended::Interrupted(Error::invalid(
                        "finish_write",
                        format!(
                            "the stream ended before finish_write, at write_offset {}; \
                             QueryWriteStatus says where to resume",
                            self.upload.received()
                        ),
                    )));
                }
                Err(status) => {
                    self.flush().await?;
                    return Ok(Ended::Interrupted(from_stream_error(
                        status,
                        "WriteRequest",
                    )));
                }
            };
        }
    }

    /// After `finish_write`: the data must be complete and the stream must
    /// end there.
    async fn finish(&mut self, stream: &mut Streaming<WriteRequest>) -> Result<Ended> {
        if let Some(d) = self.upload.decoder.as_ref() {
            if !d.frame_done() {
                return Err(Error::invalid("data", "the zstd stream is truncated"));
            }
        }
        match stream.message().await {
            Ok(None) => Ok(Ended::Finished),
            Ok(Some(_)) => Err(Error::invalid(
                "finish_write",
                "data was sent after finish_write",
            )),
            Err(status) => Err(from_stream_error(status, "WriteRequest")),
        }
    }

    /// Accepts one message's data; returns a chunk ready for the store once
    /// enough has gathered (or at once for a large message).
    fn take(&mut self, data: Bytes) -> Result<Option<Bytes>> {
        if data.is_empty() {
            return Ok(None);
        }
        let room = self.size - self.upload.writer.committed() - self.pending.len() as u64;
        let received = self.upload.received() + data.len() as u64;
        match self.upload.decoder.as_mut() {
            Some(decoder) => {
                let plain = decoder.decode(&data, room)?;
                self.pending.extend_from_slice(&plain);
            }
            None => {
                if data.len() as u64 > room {
                    return Err(Error::invalid(
                        "data",
                        format!("write goes past the blob's size of {} bytes", self.size),
                    ));
                }
                if self.pending.is_empty() && data.len() >= COALESCE {
                    self.upload.set_received(received);
                    return Ok(Some(data));
                }
                self.pending.extend_from_slice(&data);
            }
        }
        self.upload.set_received(received);
        if self.pending.len() >= COALESCE {
            return Ok(Some(self.pending.split().freeze()));
        }
        Ok(None)
    }

    async fn flush(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            let chunk = self.pending.split().freeze();
            self.upload.writer.write(chunk).await?;
        }
        self.upload.account();
        Ok(())
    }
}
