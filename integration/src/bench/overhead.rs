//! `corral bench overhead`: what a configuration costs, measured to a few
//! per cent on a noisy machine.
//!
//! Two farms run at once, A and B, each a `corral up --listen
//! 127.0.0.1:0 --data DIR --config FILE` of its own with one of the two
//! configurations (say `[http] metrics = true` and `false`, or without and
//! with an `[auth]` policy). The benchmark calls A, then B, then B, then
//! A, … alternating at the grain of single calls (or short blocks), so
//! whatever the machine does meanwhile hits both sides alike; each pair's
//! B/A ratio cancels it, and the median of the ratios with a bootstrap
//! interval ([`paired`]) is the figure. Both farms are started afresh
//! several times (`--restarts`), since two processes started alike differ
//! by a few per cent for as long as they live; the interval accounts for
//! it. Measuring the two modes in
//! separate rounds instead, as the first metrics figures did, let rounds
//! of the same mode differ by 20–40 %.
//!
//! The operations, each timed by the client from request to answer:
//!
//! * `find-missing`: FindMissingBlobs of a large batch of digests (all
//!   absent, fresh per call);
//! * `find-present`: FindMissingBlobs of as many digests, all present: the
//!   caller uploaded them before timing (a warm build's question, where a
//!   farm with tenancy checks each digest's owner);
//! * `execute`: the Execute round trip of a trivial action (`/bin/true`
//!   on an empty input root) that misses the action cache: a fresh salt
//!   per action, the cache lookup made, the result written back. All
//!   blobs are uploaded before timing starts.
//!
//! A side whose configuration asks for authentication gets its token with
//! `--a-token`/`--b-token`, sent as `authorization: Bearer TOKEN` on every
//! call.

pub mod paired;

use crate::bench::stats::ms;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use corral_cas::Digest;
use corral_proto::longrunning::operation;
use corral_proto::prost::Message;
use corral_proto::reapi;
use corral_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use corral_proto::reapi::execution_client::ExecutionClient;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::farm::{CorralFarm, FarmOptions};
use crate::remote::{self, FUNCTION};
use paired::{Pairs, Summary};

/// gRPC message limit of the clients.
const MAX_MESSAGE: usize = 64 << 20;
/// Action blobs per BatchUpdateBlobs call while preparing.
const UPLOAD_BATCH: usize = 500;

/// Options of `corral bench overhead`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// TOML config of farm A (passed to its `corral up --config`).
    #[arg(long, value_name = "FILE")]
    pub a_config: PathBuf,
    /// TOML config of farm B.
    #[arg(long, value_name = "FILE")]
    pub b_config: PathBuf,
    /// Name of A in the report.
    #[arg(long, default_value = "A")]
    pub a_name: String,
    /// Name of B in the report.
    #[arg(long, default_value = "B")]
    pub b_name: String,
    /// Token A's calls carry as `authorization: Bearer TOKEN`.
    #[arg(long, value_name = "TOKEN")]
    pub a_token: Option<String>,
    /// Token B's calls carry.
    #[arg(long, value_name = "TOKEN")]
    pub b_token: Option<String>,
    /// REAPI instance name on both farms (must execute on the host's
    /// system directories, i.e. not `buildstream`).
    #[arg(long, default_value = "main")]
    pub instance: String,
    /// Operations to measure: `find-missing`, `execute` (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "find-missing,execute")]
    pub ops: Vec<Op>,
    /// Timed pairs per operation, over all starts.
    #[arg(long, default_value_t = 800)]
    pub pairs: usize,
    /// How many times both farms are started afresh (each start measures
    /// its share of the pairs): a difference between two processes that
    /// lasts as long as they do averages out over starts.
    #[arg(long, default_value_t = 4)]
    pub restarts: usize,
    /// Untimed pairs per operation and start, run first.
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// Calls per side in a row within a pair (1: A, B, B, A, …); a pair's
    /// time per side is the sum of its block.
    #[arg(long, default_value_t = 1)]
    pub block: usize,
    /// Digests per FindMissingBlobs call.
    #[arg(long, default_value_t = 10_000)]
    pub find_missing_digests: usize,
    /// An environment variable both farms get, `NAME=VALUE` (repeat), e.g.
    /// `MALLOC_MMAP_THRESHOLD_=4194304` to take glibc's history-dependent
    /// mmap threshold out of the comparison.
    #[arg(long = "farm-env", value_name = "NAME=VALUE")]
    pub farm_env: Vec<String>,
    /// `--slots` of each farm.
    #[arg(long, default_value_t = 1)]
    pub slots: u32,
}

/// An operation the benchmark times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    /// FindMissingBlobs of `--find-missing-digests` absent digests.
    FindMissing,
    /// FindMissingBlobs of `--find-missing-digests` digests the caller
    /// uploaded before timing.
    FindPresent,
    /// Execute round trip of a trivial action missing the action cache.
    Execute,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::FindMissing => "FindMissingBlobs",
            Op::FindPresent => "FindMissingBlobs, all present",
            Op::Execute => "Execute round trip",
        }
    }
}

/// One farm and a client of it.
struct Side {
    farm: CorralFarm,
    channel: Channel,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
    instance: String,
    /// Actions prepared for `execute`, used one per call.
    actions: Vec<Digest>,
    /// Blobs uploaded for `find-present`.
    present: Vec<reapi::Digest>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.pairs == 0 || args.block == 0 || args.find_missing_digests == 0 || args.restarts == 0 {
        bail!("--pairs, --restarts, --block and --find-missing-digests must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(bench(&args))
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    let mut results: Vec<(Op, Pairs)> = args.ops.iter().map(|&op| (op, Pairs::default())).collect();
    let per_start = args.pairs.div_ceil(args.restarts);
    for start in 0..args.restarts {
        // Which farm starts first alternates too.
        let (mut a, mut b) = if start % 2 == 0 {
            let a = Side::start(&args.a_config, args.a_token.as_deref(), args).await?;
            (
                a,
                Side::start(&args.b_config, args.b_token.as_deref(), args).await?,
            )
        } else {
            let b = Side::start(&args.b_config, args.b_token.as_deref(), args).await?;
            (
                Side::start(&args.a_config, args.a_token.as_deref(), args).await?,
                b,
            )
        };
        println!(
            "start {}/{}: A = {} ({}) at {}, B = {} ({}) at {}; {per_start} pairs per operation, block {}",
            start + 1,
            args.restarts,
            args.a_name,
            args.a_config.display(),
            a.farm.url(),
            args.b_name,
            args.b_config.display(),
            b.farm.url(),
            args.block
        );
        if args.ops.contains(&Op::Execute) {
            let calls = (per_start + args.warmup) * args.block;
            a.prepare_actions(calls).await?;
            b.prepare_actions(calls).await?;
        }
        if args.ops.contains(&Op::FindPresent) {
            a.prepare_present(args.find_missing_digests).await?;
            b.prepare_present(args.find_missing_digests).await?;
        }
        for (op, pairs) in results.iter_mut() {
            pairs.next_group();
            measure(*op, &mut a, &mut b, args, per_start, pairs).await?;
        }
        stop(a, &args.a_name).await;
        stop(b, &args.b_name).await;
    }
    let mut rows = Vec::new();
    for (i, (op, pairs)) in results.iter().enumerate() {
        let summary = pairs
            .summary(0x5eed + i as u64)
            .context("no pairs were measured")?;
        rows.push((*op, summary));
    }
    print_report(args, &rows);
    Ok(())
}

/// Stops a farm; the figures do not depend on a clean stop, so a bad one
/// is a warning.
async fn stop(side: Side, name: &str) {
    match tokio::task::spawn_blocking(move || side.farm.stop()).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => eprintln!("corral bench overhead: farm {name} exited with {status}"),
        Ok(Err(e)) => eprintln!("corral bench overhead: stopping farm {name}: {e:#}"),
        Err(e) => eprintln!("corral bench overhead: stopping farm {name}: {e}"),
    }
}

/// `count` pairs (after the warm-up) into `pairs`, alternating A and B and
/// swapping who goes first every pair, so neither side always runs on the
/// warmer or the colder machine.
async fn measure(
    op: Op,
    a: &mut Side,
    b: &mut Side,
    args: &Args,
    count: usize,
    pairs: &mut Pairs,
) -> anyhow::Result<()> {
    let mut serial = 0u64;
    for pair in 0..args.warmup + count {
        let (ta, tb) = if pair % 2 == 0 {
            let ta = a.block(op, args, &mut serial).await?;
            (ta, b.block(op, args, &mut serial).await?)
        } else {
            let tb = b.block(op, args, &mut serial).await?;
            (a.block(op, args, &mut serial).await?, tb)
        };
        if pair >= args.warmup {
            pairs.push(ta, tb);
        }
    }
    Ok(())
}

fn print_report(args: &Args, rows: &[(Op, Summary)]) {
    println!();
    println!(
        "| operation | {a} median | {b} median | {b}/{a}, median of paired ratios | 95 % interval (bootstrap) | pairs |",
        a = args.a_name,
        b = args.b_name
    );
    println!("|---|---|---|---|---|---|");
    for (op, s) in rows {
        let what = match op {
            Op::FindMissing | Op::FindPresent => {
                format!("{} ({} digests)", op.label(), args.find_missing_digests)
            }
            Op::Execute => op.label().to_string(),
        };
        println!(
            "| {what} | {:.3} ms | {:.3} ms | {:+.2} % | {:+.2} % … {:+.2} % | {} |",
            ms(s.a_median),
            ms(s.b_median),
            (s.ratio - 1.0) * 100.0,
            (s.interval.0 - 1.0) * 100.0,
            (s.interval.1 - 1.0) * 100.0,
            s.pairs
        );
    }
    println!();
    for (op, s) in rows {
        let starts: Vec<String> = s
            .per_group
            .iter()
            .map(|r| format!("{:+.2} %", (r - 1.0) * 100.0))
            .collect();
        println!(
            "{}: median ratio per start: {}",
            op.label(),
            starts.join(", ")
        );
    }
}

impl Side {
    async fn start(config: &PathBuf, token: Option<&str>, args: &Args) -> anyhow::Result<Side> {
        let toml = std::fs::read_to_string(config)
            .with_context(|| format!("reading {}", config.display()))?;
        let env = args
            .farm_env
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .with_context(|| format!("--farm-env {kv:?}: expected NAME=VALUE"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let options = FarmOptions {
            config_toml: Some(toml),
            slots: Some(args.slots),
            env,
            ..FarmOptions::default()
        };
        let farm = tokio::task::spawn_blocking(move || CorralFarm::start_with(options))
            .await
            .context("starting a farm")?
            .with_context(|| format!("corral up --config {}", config.display()))?;
        let channel = corral_cas::channel::connect(&farm.url()).await?;
        let token = token
            .map(|t| {
                MetadataValue::try_from(format!("Bearer {t}"))
                    .context("the token is not a valid header value")
            })
            .transpose()?;
        Ok(Side {
            farm,
            channel,
            token,
            instance: args.instance.clone(),
            actions: Vec::new(),
            present: Vec::new(),
        })
    }

    /// `message` with this side's token, if any.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        request
    }

    fn cas(&self) -> ContentAddressableStorageClient<Channel> {
        ContentAddressableStorageClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// Uploads `blobs` in batches; `what` names them in errors.
    async fn upload(&self, blobs: &[(Digest, Vec<u8>)], what: &str) -> anyhow::Result<()> {
        for chunk in blobs.chunks(UPLOAD_BATCH) {
            let request = reapi::BatchUpdateBlobsRequest {
                instance_name: self.instance.clone(),
                requests: chunk
                    .iter()
                    .map(|(d, bytes)| reapi::batch_update_blobs_request::Request {
                        digest: Some(d.to_proto()),
                        data: bytes.clone(),
                        ..Default::default()
                    })
                    .collect(),
                digest_function: FUNCTION.to_proto(),
            };
            let answer = self
                .cas()
                .batch_update_blobs(self.request(request))
                .await
                .with_context(|| format!("BatchUpdateBlobs of {what}"))?
                .into_inner();
            if let Some(bad) = answer
                .responses
                .iter()
                .find(|r| r.status.as_ref().is_some_and(|s| s.code != 0))
            {
                bail!("uploading {what}: {bad:?}");
            }
        }
        Ok(())
    }

    /// Uploads the Command, the empty input root and `count` Actions, each
    /// with a salt of its own so every one misses the action cache.
    async fn prepare_actions(&mut self, count: usize) -> anyhow::Result<()> {
        let command = reapi::Command {
            arguments: vec!["/bin/true".into()],
            ..Default::default()
        };
        let (command_digest, command_bytes) = remote::message_blob(&command);
        let (root_digest, root_bytes) = remote::message_blob(&reapi::Directory::default());
        let run = std::process::id();
        let mut blobs = vec![(command_digest, command_bytes), (root_digest, root_bytes)];
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for i in 0..count {
            let salt = format!("overhead-{run}-{nonce}-{i}").into_bytes();
            let action = reapi::Action {
                command_digest: Some(command_digest.to_proto()),
                input_root_digest: Some(root_digest.to_proto()),
                salt,
                ..Default::default()
            };
            let (digest, bytes) = remote::message_blob(&action);
            self.actions.push(digest);
            blobs.push((digest, bytes));
        }
        self.upload(&blobs, "the actions").await?;
        self.actions.reverse(); // popped from the end, in order
        Ok(())
    }

    /// `args.block` calls of `op`; their total time.
    async fn block(&mut self, op: Op, args: &Args, serial: &mut u64) -> anyhow::Result<Duration> {
        let mut total = Duration::ZERO;
        for _ in 0..args.block {
            *serial += 1;
            total += match op {
                Op::FindMissing => self.find_missing(args, *serial).await?,
                Op::FindPresent => self.find_present().await?,
                Op::Execute => self.execute().await?,
            };
        }
        Ok(total)
    }

    async fn find_missing(&self, args: &Args, serial: u64) -> anyhow::Result<Duration> {
        let digests: Vec<reapi::Digest> = (0..args.find_missing_digests)
            .map(|i| Digest::of_bytes(FUNCTION, format!("fm-{serial}-{i}").as_bytes()).to_proto())
            .collect();
        let (elapsed, missing) = self.timed_find_missing(digests).await?;
        if missing != args.find_missing_digests {
            bail!("FindMissingBlobs did not report every absent digest as missing");
        }
        Ok(elapsed)
    }

    /// Uploads `count` small blobs of this side's own for `find-present`.
    async fn prepare_present(&mut self, count: usize) -> anyhow::Result<()> {
        let blobs: Vec<(Digest, Vec<u8>)> = (0..count)
            .map(|i| {
                let bytes = format!("present-{i}").into_bytes();
                (Digest::of_bytes(FUNCTION, &bytes), bytes)
            })
            .collect();
        self.upload(&blobs, "the present blobs").await?;
        self.present = blobs.iter().map(|(d, _)| d.to_proto()).collect();
        Ok(())
    }

    /// One FindMissingBlobs of `digests`: its time, from request to
    /// answer, and how many it reported missing.
    async fn timed_find_missing(
        &self,
        digests: Vec<reapi::Digest>,
    ) -> anyhow::Result<(Duration, usize)> {
        let request = self.request(reapi::FindMissingBlobsRequest {
            instance_name: self.instance.clone(),
            blob_digests: digests,
            digest_function: FUNCTION.to_proto(),
        });
        let mut client = self.cas();
        let start = Instant::now();
        let answer = client
            .find_missing_blobs(request)
            .await
            .context("FindMissingBlobs")?;
        let elapsed = start.elapsed();
        Ok((elapsed, answer.into_inner().missing_blob_digests.len()))
    }

    async fn find_present(&self) -> anyhow::Result<Duration> {
        let (elapsed, missing) = self.timed_find_missing(self.present.clone()).await?;
        if missing != 0 {
            bail!("FindMissingBlobs reported {missing} of the uploaded blobs missing");
        }
        Ok(elapsed)
    }

    async fn execute(&mut self) -> anyhow::Result<Duration> {
        let action = self.actions.pop().context("ran out of prepared actions")?;
        let mut client = ExecutionClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let request = self.request(reapi::ExecuteRequest {
            instance_name: self.instance.clone(),
            action_digest: Some(action.to_proto()),
            digest_function: FUNCTION.to_proto(),
            ..Default::default()
        });
        let start = Instant::now();
        let mut stream = client
            .execute(request)
            .await
            .with_context(|| format!("Execute {action}"))?
            .into_inner();
        loop {
            let Some(op) = stream.message().await.context("the Execute stream")? else {
                bail!("the Execute stream of {action} ended before the operation was done");
            };
            if !op.done {
                continue;
            }
            let elapsed = start.elapsed();
            check_success(&action, op.result)?;
            return Ok(elapsed);
        }
    }
}

/// An error unless the operation's response is a successful run that did
/// not come from the cache (the benchmark would measure the wrong thing).
fn check_success(action: &Digest, result: Option<operation::Result>) -> anyhow::Result<()> {
    let response = match result {
        Some(operation::Result::Response(any)) => {
            reapi::ExecuteResponse::decode(any.value.as_slice())
                .with_context(|| format!("decoding the ExecuteResponse of {action}"))?
        }
        Some(operation::Result::Error(status)) => {
            bail!("Execute {action}: {} {}", status.code, status.message)
        }
        None => bail!("Execute {action}: done without a result"),
    };
    if let Some(status) = response.status.as_ref().filter(|s| s.code != 0) {
        bail!("Execute {action}: {} {}", status.code, status.message);
    }
    let exit = response.result.as_ref().map_or(-1, |r| r.exit_code);
    if exit != 0 || response.cached_result {
        bail!(
            "Execute {action}: exit code {exit}, cached {}: {}",
            response.cached_result,
            response.message
        );
    }
    Ok(())
}
