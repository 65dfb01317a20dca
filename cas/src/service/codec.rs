//! Streaming zstd for `compressed-blobs` resource names: decoding uploads
//! chunk by chunk (never more output than the digest allows, so a small
//! "zip bomb" cannot make the server allocate) and encoding downloads.

use zstd::stream::raw::{Decoder, Encoder, InBuffer, Operation, OutBuffer};

use crate::error::{Error, Result};

const OUT_CHUNK: usize = 256 << 10;

fn zstd_error(e: std::io::Error) -> Error {
    Error::invalid("data", format!("not valid zstd: {e}"))
}

/// Incremental zstd decoder of one upload.
pub struct ZstdDecoder {
    decoder: Decoder<'static>,
    /// True when the input so far ends exactly at a frame boundary.
    frame_done: bool,
}

impl ZstdDecoder {
    pub fn new() -> Result<Self> {
        Ok(ZstdDecoder {
            decoder: Decoder::new().map_err(|e| Error::Internal(format!("zstd decoder: {e}")))?,
            frame_done: true,
        })
    }

    /// Decodes `input`, refusing to produce more than `max_out` bytes.
    pub fn decode(&mut self, input: &[u8], max_out: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; OUT_CHUNK];
        let mut inp = InBuffer::around(input);
        loop {
            let mut ob = OutBuffer::around(&mut buf[..]);
            let hint = self.decoder.run(&mut inp, &mut ob).map_err(zstd_error)?;
            let n = ob.pos();
            out.extend_from_slice(&buf[..n]);
            if out.len() as u64 > max_out {
                return Err(Error::invalid(
                    "data",
                    "decompresses to more bytes than the digest says",
                ));
            }
            self.frame_done = hint == 0;
            if inp.pos() == input.len() && n < buf.len() {
                return Ok(out);
            }
        }
    }

    /// Whether the data ended on a complete frame.
    pub fn frame_done(&self) -> bool {
        self.frame_done
    }
}

/// Incremental zstd encoder of one download.
pub struct ZstdEncoder {
    encoder: Encoder<'static>,
}

impl ZstdEncoder {
    pub fn new() -> Result<Self> {
        Ok(ZstdEncoder {
            encoder: Encoder::new(1).map_err(|e| Error::Internal(format!("zstd encoder: {e}")))?,
        })
    }

    pub fn encode(&mut self, input: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; OUT_CHUNK];
        let mut inp = InBuffer::around(input);
        while inp.pos() < input.len() {
            let mut ob = OutBuffer::around(&mut buf[..]);
            self.encoder
                .run(&mut inp, &mut ob)
                .map_err(|e| Error::Internal(format!("zstd: {e}")))?;
            let n = ob.pos();
            out.extend_from_slice(&buf[..n]);
        }
        Ok(out)
    }

    pub fn finish(&mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; OUT_CHUNK];
        loop {
            let mut ob = OutBuffer::around(&mut buf[..]);
            let remaining = self
                .encoder
                .finish(&mut ob, true)
                .map_err(|e| Error::Internal(format!("zstd: {e}")))?;
            let n = ob.pos();
            out.extend_from_slice(&buf[..n]);
            if remaining == 0 {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_pieces() {
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect();
        let mut enc = ZstdEncoder::new().unwrap();
        let mut z = Vec::new();
        for c in data.chunks(100_000) {
            z.extend(enc.encode(c).unwrap());
        }
        z.extend(enc.finish().unwrap());
        let mut dec = ZstdDecoder::new().unwrap();
        let mut back = Vec::new();
        for c in z.chunks(777) {
            back.extend(dec.decode(c, data.len() as u64).unwrap());
        }
        assert!(dec.frame_done());
        assert_eq!(back, data);
        // One byte less of room than the data needs is refused.
        let mut dec = ZstdDecoder::new().unwrap();
        let e = dec.decode(&z, data.len() as u64 - 1).unwrap_err();
        assert!(e.to_string().contains("data"), "{e}");
        let e = ZstdDecoder::new()
            .unwrap()
            .decode(b"not zstd at all", 100)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
