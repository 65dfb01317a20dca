//! `corral bench cas`: throughput of a CAS over REAPI, measured with plain
//! tonic clients so the figures are the server's and the protocol's, not a
//! client library's.
//!
//! * FindMissingBlobs with 10,000 digests per call (all missing, the case
//!   that makes a client upload);
//! * small-blob BatchUpdateBlobs / BatchReadBlobs, batches filled up to the
//!   server's advertised limit;
//! * one 64 MiB blob through ByteStream Write then Read, fresh data per
//!   round so the server never short-circuits an upload.
//!
//! Works against any REAPI server (`--target`), so a reference server can
//! be measured with the same command.

use crate::bench::stats::ms;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use corral_cas::resource::{read_name, write_name, Compression};
use corral_cas::Connection as Channel;
use corral_cas::{Digest, DigestFunction};
use corral_proto::bytestream::byte_stream_client::ByteStreamClient;
use corral_proto::bytestream::{ReadRequest, WriteRequest};
use corral_proto::reapi;
use corral_proto::reapi::capabilities_client::CapabilitiesClient;
use corral_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;

/// Options of `corral bench cas`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server, e.g. http://127.0.0.1:8980.
    #[arg(long)]
    pub target: String,
    /// REAPI instance name.
    #[arg(long, default_value = "")]
    pub instance: String,
    /// Digest function: sha256 or blake3.
    #[arg(long, default_value = "sha256")]
    pub digest_function: String,
    /// FindMissingBlobs calls to time.
    #[arg(long, default_value_t = 50)]
    pub find_missing_calls: usize,
    /// Digests per FindMissingBlobs call.
    #[arg(long, default_value_t = 10_000)]
    pub find_missing_digests: usize,
    /// Small blobs to upload and download through the batch calls.
    #[arg(long, default_value_t = 10_000)]
    pub small_blobs: usize,
    /// Size of each small blob in bytes.
    #[arg(long, default_value_t = 4096)]
    pub small_blob_size: usize,
    /// Size of the ByteStream blob in MiB.
    #[arg(long, default_value_t = 64)]
    pub large_mib: usize,
    /// ByteStream rounds (each with fresh data).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// ByteStream write chunk size in KiB.
    #[arg(long, default_value_t = 1024)]
    pub chunk_kib: usize,
    /// TLS and token for the target.
    #[command(flatten)]
    pub client: corral_cas::ClientFlags,
}

const MAX_MESSAGE: usize = 256 << 20;

pub fn run(args: Args) -> anyhow::Result<()> {
    let function = DigestFunction::from_name(&args.digest_function).with_context(|| {
        format!(
            "--digest-function {:?}: use sha256 or blake3",
            args.digest_function
        )
    })?;
    if args.find_missing_calls == 0 || args.rounds == 0 || args.small_blobs == 0 {
        bail!("--find-missing-calls, --rounds and --small-blobs must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(bench(&args, function))
}

/// Deterministic, incompressible-looking bytes (xorshift64*).
fn fill(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Salt so that repeated runs against one server upload new blobs.
fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

async fn bench(args: &Args, function: DigestFunction) -> anyhow::Result<()> {
    let channel = args
        .client
        .connector()?
        .connect(&args.target)
        .await
        .with_context(|| format!("--target {:?}", args.target))?;
    let caps = CapabilitiesClient::new(channel.clone())
        .get_capabilities(reapi::GetCapabilitiesRequest {
            instance_name: args.instance.clone(),
        })
        .await
        .context("GetCapabilities")?
        .into_inner();
    let batch_limit = caps
        .cache_capabilities
        .map(|c| c.max_batch_total_size_bytes)
        .filter(|&n| n > 0)
        .unwrap_or(4 << 20) as usize;
    println!(
        "target {}  instance {:?}  digest function {}  batch limit {} bytes",
        args.target, args.instance, function, batch_limit
    );
    find_missing(args, function, channel.clone()).await?;
    batches(args, function, channel.clone(), batch_limit).await?;
    bytestream(args, function, channel).await
}

fn cas(channel: Channel) -> ContentAddressableStorageClient<Channel> {
    ContentAddressableStorageClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

async fn find_missing(
    args: &Args,
    function: DigestFunction,
    channel: Channel,
) -> anyhow::Result<()> {
    let mut client = cas(channel);
    let mut times = Vec::new();
    for call in 0..args.find_missing_calls + 2 {
        let digests: Vec<reapi::Digest> = (0..args.find_missing_digests)
            .map(|i| Digest::of_bytes(function, format!("fm-{call}-{i}").as_bytes()).to_proto())
            .collect();
        let request = reapi::FindMissingBlobsRequest {
            instance_name: args.instance.clone(),
            blob_digests: digests,
            digest_function: function.to_proto(),
        };
        let start = Instant::now();
        let missing = client
            .find_missing_blobs(request)
            .await
            .context("FindMissingBlobs")?;
        let elapsed = start.elapsed();
        if missing.into_inner().missing_blob_digests.len() != args.find_missing_digests {
            bail!("FindMissingBlobs did not report every absent digest as missing");
        }
        if call >= 2 {
            times.push(elapsed); // the first calls warm the connection
        }
    }
    let med = median(times.clone());
    println!(
        "FindMissingBlobs  {} digests/call  {} calls  median {:.2} ms  p90 {:.2} ms  {:.0} calls/s  {:.2} M digests/s",
        args.find_missing_digests,
        times.len(),
        ms(med),
        ms(percentile(times, 0.9)),
        1.0 / med.as_secs_f64(),
        args.find_missing_digests as f64 / med.as_secs_f64() / 1e6
    );
    Ok(())
}

async fn batches(
    args: &Args,
    function: DigestFunction,
    channel: Channel,
    limit: usize,
) -> anyhow::Result<()> {
    let mut client = cas(channel);
    let salt = now_nanos() ^ u64::from(std::process::id());
    let blobs: Vec<(Digest, Vec<u8>)> = (0..args.small_blobs)
        .map(|i| {
            let data = fill(salt ^ ((i as u64) << 20), args.small_blob_size);
            (Digest::of_bytes(function, &data), data)
        })
        .collect();
    // Fill each batch up to the limit, leaving room for per-blob framing.
    let per_batch = ((limit * 9 / 10) / (args.small_blob_size + 100)).max(1);
    let start = Instant::now();
    for group in blobs.chunks(per_batch) {
        let response = client
            .batch_update_blobs(reapi::BatchUpdateBlobsRequest {
                instance_name: args.instance.clone(),
                requests: group
                    .iter()
                    .map(|(d, data)| reapi::batch_update_blobs_request::Request {
                        digest: Some(d.to_proto()),
                        data: data.clone(),
                        compressor: 0,
                    })
                    .collect(),
                digest_function: function.to_proto(),
            })
            .await
            .context("BatchUpdateBlobs")?
            .into_inner();
        if let Some(bad) = response
            .responses
            .iter()
            .find(|r| r.status.as_ref().is_some_and(|s| s.code != 0))
        {
            bail!("BatchUpdateBlobs refused a blob: {:?}", bad.status);
        }
    }
    report("BatchUpdateBlobs", args, per_batch, start.elapsed());

    let start = Instant::now();
    let mut read_bytes = 0usize;
    for group in blobs.chunks(per_batch) {
        let response = client
            .batch_read_blobs(reapi::BatchReadBlobsRequest {
                instance_name: args.instance.clone(),
                digests: group.iter().map(|(d, _)| d.to_proto()).collect(),
                acceptable_compressors: Vec::new(),
                digest_function: function.to_proto(),
            })
            .await
            .context("BatchReadBlobs")?
            .into_inner();
        for r in &response.responses {
            if r.status.as_ref().is_some_and(|s| s.code != 0) {
                bail!("BatchReadBlobs failed for a blob: {:?}", r.status);
            }
            read_bytes += r.data.len();
        }
    }
    report("BatchReadBlobs", args, per_batch, start.elapsed());
    if read_bytes != args.small_blobs * args.small_blob_size {
        bail!(
            "BatchReadBlobs returned {read_bytes} bytes, expected {}",
            args.small_blobs * args.small_blob_size
        );
    }
    Ok(())
}

fn report(what: &str, args: &Args, per_batch: usize, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    println!(
        "{what:<17} {} blobs x {} B  {} blobs/call  {:.0} ms  {:.0} blobs/s  {:.1} MB/s",
        args.small_blobs,
        args.small_blob_size,
        per_batch,
        secs * 1e3,
        args.small_blobs as f64 / secs,
        (args.small_blobs * args.small_blob_size) as f64 / secs / 1e6
    );
}

async fn bytestream(args: &Args, function: DigestFunction, channel: Channel) -> anyhow::Result<()> {
    let mut client = ByteStreamClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let size = args.large_mib << 20;
    let chunk = (args.chunk_kib << 10).max(1);
    let mut writes = Vec::new();
    let mut reads = Vec::new();
    for round in 0..args.rounds {
        let seed = now_nanos() ^ (round as u64);
        let data = Bytes::from(fill(seed.wrapping_add(0xABCD), size));
        let digest = Digest::of_bytes(function, &data);
        let name = write_name(
            &args.instance,
            &format!("bench-{seed:x}-{round}"),
            Compression::Identity,
            &digest,
        );
        // The requests share `data` (no copy), as a client streaming a
        // file it has mapped or read once would.
        let requests: Vec<WriteRequest> = (0..size)
            .step_by(chunk)
            .map(|offset| {
                let end = (offset + chunk).min(size);
                WriteRequest {
                    resource_name: if offset == 0 {
                        name.clone()
                    } else {
                        String::new()
                    },
                    write_offset: offset as i64,
                    finish_write: end == size,
                    data: data.slice(offset..end),
                }
            })
            .collect();
        let start = Instant::now();
        let response = client
            .write(futures::stream::iter(requests))
            .await
            .context("ByteStream Write")?
            .into_inner();
        writes.push(start.elapsed());
        if response.committed_size != size as i64 {
            bail!(
                "ByteStream Write committed {} of {size} bytes",
                response.committed_size
            );
        }

        let start = Instant::now();
        let mut stream = client
            .read(ReadRequest {
                resource_name: read_name(&args.instance, Compression::Identity, &digest),
                read_offset: 0,
                read_limit: 0,
            })
            .await
            .context("ByteStream Read")?
            .into_inner();
        // Every chunk is compared with what was written as it arrives.
        let mut seen = 0usize;
        while let Some(m) = stream.message().await.context("ByteStream Read")? {
            let end = seen + m.data.len();
            if end > size || m.data != data[seen..end] {
                bail!("ByteStream Read returned different bytes at offset {seen}");
            }
            seen = end;
        }
        reads.push(start.elapsed());
        if seen != size {
            bail!("ByteStream Read returned {seen} of {size} bytes");
        }
    }
    for (what, times) in [("ByteStream Write", writes), ("ByteStream Read", reads)] {
        let best = *times.iter().min().context("no rounds")?;
        let med = median(times.clone());
        println!(
            "{what:<17} {} MiB x {} rounds  median {:.0} ms ({:.2} GB/s)  best {:.0} ms ({:.2} GB/s)",
            args.large_mib,
            times.len(),
            ms(med),
            size as f64 / med.as_secs_f64() / 1e9,
            ms(best),
            size as f64 / best.as_secs_f64() / 1e9
        );
    }
    Ok(())
}
