//! A writer that refuses bytes past a bound: a registry that sends more than
//! the manifest's descriptor says (a hostile or broken one) is stopped at
//! the descriptor's size instead of filling the disk first and being caught
//! by the size check afterwards.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// Wraps `inner`, failing any write that would take it past `limit` bytes.
pub(crate) struct BoundedWrite<W> {
    inner: W,
    written: u64,
    limit: u64,
}

impl<W> BoundedWrite<W> {
    pub(crate) fn new(inner: W, limit: u64) -> Self {
        BoundedWrite {
            inner,
            written: 0,
            limit,
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for BoundedWrite<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.written.saturating_add(buf.len() as u64) > self.limit {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the registry sent more than the {} bytes the manifest names",
                    self.limit
                ),
            )));
        }
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            this.written += *n as u64;
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::BoundedWrite;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn takes_up_to_the_bound_and_refuses_past_it() {
        let mut w = BoundedWrite::new(Vec::new(), 8);
        w.write_all(b"12345678").await.unwrap();
        let err = w.write_all(b"9").await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("8 bytes"), "{err}");
        assert_eq!(w.inner, b"12345678");
        let mut w = BoundedWrite::new(Vec::new(), 4);
        assert!(w.write_all(b"12345").await.is_err());
        assert!(w.inner.is_empty(), "nothing past the bound is written");
    }
}
