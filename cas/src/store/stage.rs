//! One step of an upload's pipeline: blocking work (hashing, writing a file)
//! applied to the upload's chunks in order, on tokio's blocking pool, while
//! the caller goes on receiving the next ones.
//!
//! A disk upload runs two stages side by side over the same chunks (shared
//! `Bytes`, not copies): the hash of chunk N+1 starts as soon as the hash of
//! chunk N is done, not when the slower of hashing and writing is. SHA-256
//! is the slowest step of a large upload and cannot be split across threads,
//! so keeping it busy from the first byte to the last is what sets an
//! upload's speed.
//!
//! A stage holds a blocking thread only while it has chunks to work on, so a
//! client that stalls in the middle of an upload ties up nothing but memory,
//! and at most `depth` chunks of that.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// What a stage does to each chunk, in order, with its state.
pub type Work<S> = fn(&mut S, &[u8]) -> Result<()>;

pub struct Stage<S> {
    name: &'static str,
    queue: Option<mpsc::Sender<Bytes>>,
    task: Option<JoinHandle<Result<(S, Duration)>>>,
}

impl<S: Send + 'static> Stage<S> {
    /// Starts a stage that applies `work` to every chunk sent to it. At most
    /// `depth` chunks wait in its queue before [`Stage::send`] waits too.
    pub fn spawn(name: &'static str, state: S, depth: usize, work: Work<S>) -> Self {
        let (queue, mut chunks) = mpsc::channel::<Bytes>(depth.max(1));
        let task = tokio::spawn(async move {
            let mut state = state;
            let mut busy = Duration::ZERO;
            while let Some(first) = chunks.recv().await {
                // Everything already queued goes to one blocking call.
                let mut batch = vec![first];
                while let Ok(more) = chunks.try_recv() {
                    batch.push(more);
                }
                let (back, took) = tokio::task::spawn_blocking(move || {
                    let start = Instant::now();
                    for chunk in &batch {
                        work(&mut state, chunk)?;
                    }
                    Ok::<_, Error>((state, start.elapsed()))
                })
                .await
                .map_err(|e| Error::Internal(format!("{name}: {e}")))??;
                state = back;
                busy += took;
            }
            Ok((state, busy))
        });
        Stage {
            name,
            queue: Some(queue),
            task: Some(task),
        }
    }

    /// Queues a chunk. If the stage has failed, this is its error.
    pub async fn send(&mut self, chunk: Bytes) -> Result<()> {
        let queue = self
            .queue
            .as_ref()
            .ok_or_else(|| Error::Internal(format!("{}: used after it failed", self.name)))?;
        if queue.send(chunk).await.is_ok() {
            return Ok(());
        }
        // The receiving task ended before its queue did: it failed.
        self.queue = None;
        match self.ended().await {
            Err(e) => Err(e),
            Ok(_) => Err(Error::Internal(format!(
                "{}: stopped taking chunks",
                self.name
            ))),
        }
    }

    /// Waits for every queued chunk to be done; returns the state and the
    /// time spent working (for the upload's log line: which stage bounds
    /// an upload shows there).
    pub async fn finish(mut self) -> Result<(S, Duration)> {
        self.queue = None;
        self.ended().await
    }

    async fn ended(&mut self) -> Result<(S, Duration)> {
        let task = self
            .task
            .take()
            .ok_or_else(|| Error::Internal(format!("{}: already ended", self.name)))?;
        task.await
            .map_err(|e| Error::Internal(format!("{}: {e}", self.name)))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(seen: &mut Vec<u8>, chunk: &[u8]) -> Result<()> {
        if chunk == b"bad" {
            return Err(Error::Internal("refused a bad chunk".into()));
        }
        seen.extend_from_slice(chunk);
        Ok(())
    }

    #[tokio::test]
    async fn chunks_are_worked_on_in_order() {
        let mut stage = Stage::spawn("append", Vec::new(), 2, append);
        for i in 0..100u8 {
            stage.send(Bytes::from(vec![i; 3])).await.unwrap();
        }
        let (seen, _) = stage.finish().await.unwrap();
        let expected: Vec<u8> = (0..100u8).flat_map(|i| [i; 3]).collect();
        assert_eq!(seen, expected);
    }

    #[tokio::test]
    async fn a_failure_comes_back_from_send_or_finish() {
        let mut stage = Stage::spawn("append", Vec::new(), 1, append);
        stage.send(Bytes::from_static(b"bad")).await.unwrap();
        // The failure surfaces on a later send (once the task has seen it)
        // or, at the latest, on finish.
        let mut failed = None;
        for _ in 0..10 {
            if let Err(e) = stage.send(Bytes::from_static(b"ok")).await {
                failed = Some(e);
                break;
            }
        }
        let e = match failed {
            Some(e) => e,
            None => stage.finish().await.unwrap_err(),
        };
        assert!(e.to_string().contains("refused a bad chunk"), "{e}");
    }
}
