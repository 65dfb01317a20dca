//! A small REAPI v2 client for end-to-end tests and benchmarks: build an
//! input root, upload blobs, run an action with `Execute` and read its
//! outputs back.
//!
//! * [`BusyboxRoot`] is a minimal system root around Debian's static
//!   busybox (`bin/busybox`, applet links next to it, empty `dev`, `proc`
//!   and `tmp`), plus any files a test adds. It works where the input root
//!   becomes `/`: Corral's `buildstream` instance and buildbox-casd's
//!   bubblewrap runner.
//! * [`RemoteExec`] is one connection to a server's Capabilities, CAS,
//!   ByteStream and Execution services under one instance name.
//! * [`command`], [`action`] and [`platform`] make the messages, with the
//!   platform properties BuildStream sends (`ISA=x86-64`, `OSFamily=linux`).
//!
//! Everything uses SHA-256 ([`FUNCTION`]), which every REAPI server takes.

mod busybox;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};
use corral_cas::resource::{read_name, write_name, Compression};
use corral_cas::{Connection, Connector};
use corral_cas::{Digest, DigestFunction};
use corral_proto::bytestream::byte_stream_client::ByteStreamClient;
use corral_proto::bytestream::{ReadRequest, WriteRequest};
use corral_proto::longrunning::{operation, Operation};
use corral_proto::prost::Message;
use corral_proto::reapi;
use corral_proto::reapi::capabilities_client::CapabilitiesClient;
use corral_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use corral_proto::reapi::execution_client::ExecutionClient;
use corral_proto::reapi::execution_stage::Value as Stage;

pub use busybox::{BusyboxRoot, MINIMAL_APPLETS};

/// The digest function of every blob this module makes or asks for.
pub const FUNCTION: DigestFunction = DigestFunction::Sha256;

/// gRPC message limit of the clients, both directions.
const MAX_MESSAGE: usize = 64 << 20;
/// Room for framing and digests next to the data in a batch request.
const BATCH_SLACK: usize = 4096;
/// Batch limit when the server advertises none.
const DEFAULT_BATCH_LIMIT: usize = 4 << 20;
/// ByteStream chunk size.
const CHUNK: usize = 1 << 20;
/// How often [`RemoteExec::execute`] resumes with WaitExecution.
const MAX_WAITS: usize = 100;

/// `ISA=x86-64`, `OSFamily=linux`: what BuildStream sends, sorted by name
/// as REAPI requires.
pub fn platform() -> reapi::Platform {
    reapi::Platform {
        properties: [("ISA", "x86-64"), ("OSFamily", "linux")]
            .into_iter()
            .map(|(name, value)| reapi::platform::Property {
                name: name.into(),
                value: value.into(),
            })
            .collect(),
    }
}

/// A Command running `arguments` with the environment `env` (sorted by
/// name here, as REAPI requires) and [`platform`].
// `Command.platform` is deprecated since REAPI 2.2 in favour of
// `Action.platform`, but BuildStream's casd and Bazel send it there, and
// older servers read only that: set both, identical.
#[allow(deprecated)]
pub fn command<S: Into<String>>(
    arguments: impl IntoIterator<Item = S>,
    env: &[(&str, &str)],
) -> reapi::Command {
    let mut environment_variables: Vec<_> = env
        .iter()
        .map(|(name, value)| reapi::command::EnvironmentVariable {
            name: name.to_string(),
            value: value.to_string(),
        })
        .collect();
    environment_variables.sort_by(|a, b| a.name.cmp(&b.name));
    reapi::Command {
        arguments: arguments.into_iter().map(Into::into).collect(),
        environment_variables,
        platform: Some(platform()),
        ..Default::default()
    }
}

/// An Action of the Command blob `command` on the input root `root`, with
/// [`platform`]. A fresh `salt` makes an otherwise identical action new to
/// every cache; `do_not_cache` also keeps its result out of them.
pub fn action(
    command: Digest,
    root: Digest,
    salt: Vec<u8>,
    do_not_cache: bool,
    timeout: Option<Duration>,
) -> reapi::Action {
    reapi::Action {
        command_digest: Some(command.to_proto()),
        input_root_digest: Some(root.to_proto()),
        timeout: timeout.map(|t| corral_proto::protobuf::Duration {
            seconds: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
            nanos: t.subsec_nanos() as i32,
        }),
        do_not_cache,
        salt,
        platform: Some(platform()),
    }
}

/// A message encoded as a blob, with its digest.
pub fn message_blob(message: &impl Message) -> (Digest, Vec<u8>) {
    let bytes = message.encode_to_vec();
    (Digest::of_bytes(FUNCTION, &bytes), bytes)
}

/// A connection to one REAPI server under one instance name. Cheap to
/// clone: clones share the connection.
#[derive(Debug, Clone)]
pub struct RemoteExec {
    channel: Connection,
    instance: String,
    batch_limit: usize,
    capabilities: reapi::ServerCapabilities,
}

impl RemoteExec {
    /// Connects to `url` (`http://HOST:PORT`) and checks with
    /// GetCapabilities that `instance` executes actions and takes SHA-256.
    pub async fn connect(url: &str, instance: &str) -> anyhow::Result<Self> {
        Self::connect_with(url, instance, &Connector::default()).await
    }

    /// [`RemoteExec::connect`] with a client's TLS settings and token
    /// (`https://` URLs, a farm with a policy).
    pub async fn connect_with(
        url: &str,
        instance: &str,
        connector: &Connector,
    ) -> anyhow::Result<Self> {
        let channel = connector.connect(url).await?;
        let capabilities = CapabilitiesClient::new(channel.clone())
            .get_capabilities(reapi::GetCapabilitiesRequest {
                instance_name: instance.to_string(),
            })
            .await
            .with_context(|| format!("GetCapabilities for instance {instance:?}"))?
            .into_inner();
        let sha256 = FUNCTION.to_proto();
        let exec = capabilities
            .execution_capabilities
            .as_ref()
            .with_context(|| format!("no execution capabilities for instance {instance:?}"))?;
        if !exec.exec_enabled {
            bail!("execution is not enabled for instance {instance:?}");
        }
        let cache = capabilities.cache_capabilities.as_ref();
        let cas_ok = cache.is_none_or(|c| c.digest_functions.contains(&sha256));
        let exec_ok = exec.digest_function == sha256 || exec.digest_functions.contains(&sha256);
        if !cas_ok || !exec_ok {
            bail!("SHA-256 is not among the advertised digest functions");
        }
        let batch_limit = cache
            .and_then(|c| usize::try_from(c.max_batch_total_size_bytes).ok())
            .filter(|&n| n > 0)
            .unwrap_or(DEFAULT_BATCH_LIMIT);
        Ok(RemoteExec {
            channel,
            instance: instance.to_string(),
            batch_limit,
            capabilities,
        })
    }

    /// The instance name every request carries.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The connection, for services this client does not wrap.
    pub fn channel(&self) -> &Connection {
        &self.channel
    }

    /// The largest total blob size of one batch call (the server's
    /// `max_batch_total_size_bytes`, 4 MiB if it names none).
    pub fn batch_limit(&self) -> usize {
        self.batch_limit
    }

    /// What GetCapabilities answered at [`RemoteExec::connect`].
    pub fn capabilities(&self) -> &reapi::ServerCapabilities {
        &self.capabilities
    }

    fn cas(&self) -> ContentAddressableStorageClient<Connection> {
        ContentAddressableStorageClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    fn bytestream(&self) -> ByteStreamClient<Connection> {
        ByteStreamClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// Uploads the blobs: BatchUpdateBlobs in batches under the server's
    /// limit, ByteStream Write for any blob too big for a batch.
    pub async fn upload(&self, blobs: &BTreeMap<Digest, Vec<u8>>) -> anyhow::Result<()> {
        let budget = self.batch_limit.saturating_sub(BATCH_SLACK).max(1);
        let mut batches: Vec<Vec<(&Digest, &Vec<u8>)>> = vec![vec![]];
        let mut used = 0usize;
        let mut large = Vec::new();
        for (digest, data) in blobs {
            let cost = data.len() + 200;
            if cost > budget {
                large.push((digest, data));
                continue;
            }
            if used + cost > budget {
                batches.push(vec![]);
                used = 0;
            }
            used += cost;
            if let Some(batch) = batches.last_mut() {
                batch.push((digest, data));
            }
        }
        let mut cas = self.cas();
        for batch in batches.into_iter().filter(|b| !b.is_empty()) {
            let requests = batch
                .iter()
                .map(|(d, data)| reapi::batch_update_blobs_request::Request {
                    digest: Some(d.to_proto()),
                    data: (*data).clone(),
                    compressor: 0,
                })
                .collect();
            let response = cas
                .batch_update_blobs(reapi::BatchUpdateBlobsRequest {
                    instance_name: self.instance.clone(),
                    requests,
                    digest_function: FUNCTION.to_proto(),
                })
                .await
                .context("BatchUpdateBlobs")?
                .into_inner();
            if let Some(bad) = response
                .responses
                .iter()
                .find(|r| r.status.as_ref().is_some_and(|s| s.code != 0))
            {
                bail!(
                    "BatchUpdateBlobs refused {:?}: {:?}",
                    bad.digest,
                    bad.status
                );
            }
        }
        for (digest, data) in large {
            self.write(digest, data).await?;
        }
        Ok(())
    }

    /// One blob by ByteStream Write, under a fresh upload id.
    async fn write(&self, digest: &Digest, data: &[u8]) -> anyhow::Result<()> {
        static UPLOADS: AtomicU64 = AtomicU64::new(0);
        let uuid = format!(
            "corral-remote-{}-{}",
            std::process::id(),
            UPLOADS.fetch_add(1, Ordering::Relaxed)
        );
        let name = write_name(&self.instance, &uuid, Compression::Identity, digest);
        let requests: Vec<WriteRequest> = data
            .chunks(CHUNK)
            .enumerate()
            .map(|(i, piece)| WriteRequest {
                resource_name: if i == 0 { name.clone() } else { String::new() },
                write_offset: (i * CHUNK) as i64,
                finish_write: i * CHUNK + piece.len() == data.len(),
                data: piece.to_vec().into(),
            })
            .collect();
        let response = self
            .bytestream()
            .write(futures::stream::iter(requests))
            .await
            .with_context(|| format!("ByteStream Write of {digest}"))?
            .into_inner();
        if response.committed_size != data.len() as i64 {
            bail!(
                "ByteStream Write of {digest} committed {} of {} bytes",
                response.committed_size,
                data.len()
            );
        }
        Ok(())
    }

    /// Uploads `command` and an [`action`] running it on `root` (which
    /// must already be uploaded), with the Command's platform; returns the
    /// Action's digest.
    pub async fn upload_action(
        &self,
        root: Digest,
        command: reapi::Command,
        salt: Vec<u8>,
        do_not_cache: bool,
        timeout: Option<Duration>,
    ) -> anyhow::Result<Digest> {
        // The Action carries the same platform as the Command, as clients
        // that fill both (BuildStream) do.
        #[allow(deprecated)]
        let platform = command.platform.clone();
        let (command_digest, command) = message_blob(&command);
        let mut action = action(command_digest, root, salt, do_not_cache, timeout);
        action.platform = platform;
        let (digest, action) = message_blob(&action);
        let blobs = BTreeMap::from([(command_digest, command), (digest, action)]);
        self.upload(&blobs).await?;
        Ok(digest)
    }

    /// The stdout an ActionResult names, read back and checked.
    pub async fn stdout(&self, result: &reapi::ActionResult) -> anyhow::Result<String> {
        let digest = result
            .stdout_digest
            .as_ref()
            .context("the result names no stdout digest")?;
        let data = self.get_blob(Digest::from_proto(FUNCTION, digest)?).await?;
        String::from_utf8(data).context("stdout is not UTF-8")
    }

    /// Reads one blob (BatchReadBlobs, or ByteStream Read if it is too big
    /// for a batch) and checks it against `digest`.
    pub async fn get_blob(&self, digest: Digest) -> anyhow::Result<Vec<u8>> {
        let data = if usize::try_from(digest.size())
            .is_ok_and(|n| n <= self.batch_limit.saturating_sub(BATCH_SLACK))
        {
            self.batch_read(digest).await?
        } else {
            self.read(digest).await?
        };
        if Digest::of_bytes(FUNCTION, &data) != digest {
            bail!(
                "blob {digest} came back as {} bytes of other content",
                data.len()
            );
        }
        Ok(data)
    }

    async fn batch_read(&self, digest: Digest) -> anyhow::Result<Vec<u8>> {
        let response = self
            .cas()
            .batch_read_blobs(reapi::BatchReadBlobsRequest {
                instance_name: self.instance.clone(),
                digests: vec![digest.to_proto()],
                acceptable_compressors: vec![],
                digest_function: FUNCTION.to_proto(),
            })
            .await
            .with_context(|| format!("BatchReadBlobs of {digest}"))?
            .into_inner();
        let Some(entry) = response.responses.into_iter().next() else {
            bail!("BatchReadBlobs of {digest} answered nothing");
        };
        if let Some(status) = entry.status.filter(|s| s.code != 0) {
            bail!(
                "BatchReadBlobs of {digest}: code {} {}",
                status.code,
                status.message
            );
        }
        Ok(entry.data)
    }

    async fn read(&self, digest: Digest) -> anyhow::Result<Vec<u8>> {
        let mut stream = self
            .bytestream()
            .read(ReadRequest {
                resource_name: read_name(&self.instance, Compression::Identity, &digest),
                read_offset: 0,
                read_limit: 0,
            })
            .await
            .with_context(|| format!("ByteStream Read of {digest}"))?
            .into_inner();
        let mut data = Vec::new();
        while let Some(chunk) = stream
            .message()
            .await
            .with_context(|| format!("ByteStream Read of {digest}"))?
        {
            data.extend_from_slice(&chunk.data);
        }
        Ok(data)
    }

    /// Sends Execute for `action` and waits for the final Operation,
    /// resuming with WaitExecution if the stream ends early (as REAPI
    /// clients must). An Operation that ends in an error status is `Err`;
    /// a failed action (non-zero exit, `status` in the response) is `Ok`.
    pub async fn execute(
        &self,
        action: Digest,
        skip_cache_lookup: bool,
    ) -> anyhow::Result<reapi::ExecuteResponse> {
        self.execute_observed(action, skip_cache_lookup, |_| {})
            .await
    }

    /// [`RemoteExec::execute`], calling `on_stage` each time the
    /// Operation's metadata reports a new stage (`QUEUED`, `EXECUTING`, …,
    /// `COMPLETED` last), e.g. to act while the action runs.
    pub async fn execute_observed(
        &self,
        action: Digest,
        skip_cache_lookup: bool,
        mut on_stage: impl FnMut(Stage),
    ) -> anyhow::Result<reapi::ExecuteResponse> {
        let mut client = ExecutionClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let request = reapi::ExecuteRequest {
            instance_name: self.instance.clone(),
            skip_cache_lookup,
            action_digest: Some(action.to_proto()),
            digest_function: FUNCTION.to_proto(),
            ..Default::default()
        };
        let mut stream = client
            .execute(request)
            .await
            .with_context(|| format!("Execute {action}"))?
            .into_inner();
        let mut name: Option<String> = None;
        let mut last_stage = None;
        let mut waits = 0;
        loop {
            let message = stream
                .message()
                .await
                .with_context(|| format!("Execute stream of {action}"))?;
            let Some(op) = message else {
                let Some(op_name) = name.clone() else {
                    bail!("the Execute stream of {action} ended without an operation");
                };
                waits += 1;
                if waits > MAX_WAITS {
                    bail!("operation {op_name} never completed");
                }
                stream = client
                    .wait_execution(reapi::WaitExecutionRequest {
                        name: op_name.clone(),
                    })
                    .await
                    .with_context(|| format!("WaitExecution {op_name}"))?
                    .into_inner();
                continue;
            };
            if let Some(stage) = stage_of(&op).filter(|s| last_stage != Some(*s)) {
                last_stage = Some(stage);
                on_stage(stage);
            }
            if op.done {
                return decode(op);
            }
            name = Some(op.name);
        }
    }
}

/// The stage in an Operation's `ExecuteOperationMetadata`, if it has one.
fn stage_of(op: &Operation) -> Option<Stage> {
    let any = op.metadata.as_ref()?;
    let metadata = reapi::ExecuteOperationMetadata::decode(any.value.as_slice()).ok()?;
    Stage::try_from(metadata.stage).ok()
}

/// The ExecuteResponse of a finished Operation.
fn decode(op: Operation) -> anyhow::Result<reapi::ExecuteResponse> {
    match op.result {
        Some(operation::Result::Response(any)) => {
            if !any.type_url.is_empty()
                && !any
                    .type_url
                    .ends_with("build.bazel.remote.execution.v2.ExecuteResponse")
            {
                bail!("operation {} answered a {}", op.name, any.type_url);
            }
            reapi::ExecuteResponse::decode(any.value.as_slice())
                .with_context(|| format!("decoding the ExecuteResponse of {}", op.name))
        }
        Some(operation::Result::Error(status)) => bail!(
            "operation {} failed: code {} {}",
            op.name,
            status.code,
            status.message
        ),
        None => bail!("operation {} is done without a result", op.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_carry_the_platform_and_a_sorted_environment() {
        let c = command(["/bin/true"], &[("PATH", "/bin"), ("HOME", "/")]);
        let env: Vec<_> = c
            .environment_variables
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(env, ["HOME", "PATH"]);
        #[allow(deprecated)]
        let p = c.platform.unwrap();
        assert_eq!(p, platform());
        assert_eq!(p.properties[0].name, "ISA");
        let a = action(
            Digest::of_bytes(FUNCTION, b"c"),
            Digest::of_bytes(FUNCTION, b"r"),
            vec![1],
            true,
            Some(Duration::from_millis(1500)),
        );
        let t = a.timeout.unwrap();
        assert_eq!((t.seconds, t.nanos), (1, 500_000_000));
        assert_eq!(a.platform, Some(platform()));
    }
}
