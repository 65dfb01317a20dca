//! Decoding protobuf messages from blobs that a client named, with a size
//! cap per kind of message.
//!
//! An Action, Command, Directory, Tree or ActionResult is named by a digest
//! the client chose, and the digest says how large the blob is. Decoding
//! means holding the whole blob in memory, so a digest that claims a
//! gigabyte must be refused from the digest alone, before a byte is read:
//! [`MessageLimits::check`] does that, and every place that decodes such a
//! message goes through it ([`crate::store::BoundedStore::get_message`] on
//! the server side, the worker's tree fetch with [`MessageLimits::check`] and
//! [`decode`] directly).

use bytes::Bytes;
use corral_proto::reapi;
use serde::Deserialize;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// Default cap of Action and Command messages: 4 MiB, the gRPC message size
/// most clients use, which such a message never needs to exceed.
pub const DEFAULT_ACTION_BYTES: u64 = 4 << 20;
/// Default cap of a Directory: 16 MiB, about 150,000 entries with their
/// names and digests.
pub const DEFAULT_DIRECTORY_BYTES: u64 = 16 << 20;
/// Default cap of a Tree (an output directory with every descendant in one
/// message): 64 MiB.
pub const DEFAULT_TREE_BYTES: u64 = 64 << 20;
/// Default cap of an ActionResult: 16 MiB.
pub const DEFAULT_ACTION_RESULT_BYTES: u64 = 16 << 20;

/// The kinds of message read from client-named blobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    Action,
    Command,
    Directory,
    Tree,
    ActionResult,
}

impl MessageKind {
    /// The REAPI message name, for errors.
    pub fn name(self) -> &'static str {
        match self {
            MessageKind::Action => "Action",
            MessageKind::Command => "Command",
            MessageKind::Directory => "Directory",
            MessageKind::Tree => "Tree",
            MessageKind::ActionResult => "ActionResult",
        }
    }

    /// The `[cas.message_limits]` field that sets its cap.
    pub fn setting(self) -> &'static str {
        match self {
            MessageKind::Action => "action",
            MessageKind::Command => "command",
            MessageKind::Directory => "directory",
            MessageKind::Tree => "tree",
            MessageKind::ActionResult => "action_result",
        }
    }
}

/// A message type that is read from client-named blobs.
pub trait BoundedMessage: prost::Message + Default {
    const KIND: MessageKind;
}

impl BoundedMessage for reapi::Action {
    const KIND: MessageKind = MessageKind::Action;
}
impl BoundedMessage for reapi::Command {
    const KIND: MessageKind = MessageKind::Command;
}
impl BoundedMessage for reapi::Directory {
    const KIND: MessageKind = MessageKind::Directory;
}
impl BoundedMessage for reapi::Tree {
    const KIND: MessageKind = MessageKind::Tree;
}
impl BoundedMessage for reapi::ActionResult {
    const KIND: MessageKind = MessageKind::ActionResult;
}

/// The `[cas.message_limits]` table: the largest blob, in bytes, decoded as
/// each kind of message. Every field is optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MessageLimits {
    /// Action messages (Execute's `action_digest`). Default 4 MiB.
    pub action: Option<u64>,
    /// Command messages (`action.command_digest`). Default 4 MiB.
    pub command: Option<u64>,
    /// Directory messages (input roots, GetTree, output directories given
    /// as a root Directory). Default 16 MiB. GetTree is further bound by
    /// what one response may carry.
    pub directory: Option<u64>,
    /// Tree messages (output directories). Default 64 MiB.
    pub tree: Option<u64>,
    /// Stored ActionResults. Default 16 MiB.
    pub action_result: Option<u64>,
}

impl MessageLimits {
    /// The cap for `kind`.
    pub fn limit(&self, kind: MessageKind) -> u64 {
        match kind {
            MessageKind::Action => self.action.unwrap_or(DEFAULT_ACTION_BYTES),
            MessageKind::Command => self.command.unwrap_or(DEFAULT_ACTION_BYTES),
            MessageKind::Directory => self.directory.unwrap_or(DEFAULT_DIRECTORY_BYTES),
            MessageKind::Tree => self.tree.unwrap_or(DEFAULT_TREE_BYTES),
            MessageKind::ActionResult => self.action_result.unwrap_or(DEFAULT_ACTION_RESULT_BYTES),
        }
    }

    /// Refuses a blob of kind `M` whose digest claims more than the cap,
    /// naming `field`. Needs nothing but the digest, so it runs before any
    /// read.
    pub fn check<M: BoundedMessage>(&self, digest: &Digest, field: &str) -> Result<()> {
        let limit = self.limit(M::KIND);
        let setting = format!("[cas.message_limits] {}", M::KIND.setting());
        check_size(M::KIND, digest, field, limit, setting)
    }
}

/// Refuses a blob larger than `limit` to be read as a `kind` message.
/// `setting` names what sets the limit.
pub fn check_size(
    kind: MessageKind,
    digest: &Digest,
    field: &str,
    limit: u64,
    setting: String,
) -> Result<()> {
    if digest.size() <= limit {
        return Ok(());
    }
    Err(Error::MessageTooLarge {
        field: field.to_string(),
        kind: kind.name(),
        digest: digest.to_string(),
        size: digest.size(),
        limit,
        setting,
    })
}

/// Decodes the blob `digest` (already fetched as `data`) as an `M`; a blob
/// that is not one is `InvalidArgument` naming `field`.
pub fn decode<M: BoundedMessage>(digest: &Digest, field: &str, data: Bytes) -> Result<M> {
    if data.len() as u64 != digest.size() {
        // A store hands back exactly the digest's bytes; anything else is a
        // fault below, and must not be decoded as if it were the blob.
        return Err(Error::Internal(format!(
            "read {} bytes for {digest}, expected {}",
            data.len(),
            digest.size()
        )));
    }
    M::decode(data).map_err(|e| {
        Error::invalid(
            field,
            format!("blob {digest} is not a valid {}: {e}", M::KIND.name()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::DigestFunction;

    #[test]
    fn a_digest_over_the_cap_is_refused_naming_field_and_limit() {
        let limits = MessageLimits {
            command: Some(10),
            ..Default::default()
        };
        let huge = Digest::new(DigestFunction::Sha256, [7; 32], 1 << 30);
        let e = limits
            .check::<reapi::Action>(&huge, "action_digest")
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let text = e.to_string();
        assert!(text.starts_with("action_digest: the Action"), "{text}");
        assert!(text.contains("4194304"), "{text}");
        assert!(text.contains("[cas.message_limits] action"), "{text}");
        let small = Digest::new(DigestFunction::Sha256, [7; 32], 11);
        assert!(limits.check::<reapi::Command>(&small, "c").is_err());
        assert!(limits.check::<reapi::Action>(&small, "a").is_ok());
        assert_eq!(limits.limit(MessageKind::Tree), DEFAULT_TREE_BYTES);
    }

    #[test]
    fn garbage_is_invalid_argument_naming_the_field() {
        let data = Bytes::from_static(b"\xff\xff\xff\xff");
        let d = Digest::of_bytes(DigestFunction::Sha256, &data);
        let e = decode::<reapi::Directory>(&d, "root_digest", data).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { ref field, .. } if field == "root_digest"));
    }
}
