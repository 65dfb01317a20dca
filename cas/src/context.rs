//! The context every storage and action-cache call carries.
//!
//! A [`RequestContext`] says *for whom* and *under which names* a call runs:
//! the REAPI instance name (which selects a storage namespace), the digest
//! function of the request, who is calling ([`Identity`]) and what the client
//! said about itself ([`Invocation`], from the `RequestMetadata` header).
//! Services build it at the edge, from the tonic request, and pass it down
//! unchanged, so a layer deep in the storage stack (authorization, tenant
//! visibility, metrics) can decide without the service knowing it exists.
//!
//! The identity comes from the connection only (mTLS, a token, peer
//! credentials, checked by the listener's authentication layer), never from
//! a request body: [`Caller::from_request`] reads nothing a client can set
//! to claim to be someone else.

use std::sync::Arc;

use corral_proto::reapi;
use prost::Message;

use crate::digest::DigestFunction;
use crate::store::owners::Viewer;

/// gRPC header in which REAPI clients send a serialised `RequestMetadata`.
pub const REQUEST_METADATA_HEADER: &str = "build.bazel.remote.execution.v2.requestmetadata-bin";

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A client whose connection proved nothing about it. Every network
    /// caller is this until authentication fills in something better.
    Anonymous,
    /// The farm's own code in this process: the scheduler writing an
    /// executed result, the worker filling its local CAS. Never built from
    /// anything a client sends.
    Farm,
    /// A caller the listener's authentication layer identified from its
    /// connection (a certificate, a token, its peer credentials).
    Authenticated(corral_auth::Principal),
}

impl Identity {
    /// The name recorded in provenance and audit records.
    pub fn principal_name(&self) -> String {
        match self {
            Identity::Anonymous => "anonymous".to_string(),
            Identity::Farm => "farm".to_string(),
            Identity::Authenticated(p) => p.name().to_string(),
        }
    }

    /// The authenticated principal, if any.
    pub fn principal(&self) -> Option<&corral_auth::Principal> {
        match self {
            Identity::Authenticated(p) => Some(p),
            _ => None,
        }
    }
}

/// What the client said about the invocation a call belongs to (REAPI
/// `RequestMetadata`). Informational: it steers fairness and logs, never
/// access.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Invocation {
    pub tool_name: String,
    pub tool_version: String,
    pub tool_invocation_id: String,
    pub correlated_invocations_id: String,
    pub action_id: String,
    pub action_mnemonic: String,
    pub target_id: String,
    pub configuration_id: String,
}

impl Invocation {
    /// Parses the `RequestMetadata` header value. A header that does not
    /// decode is logged at debug level and treated as absent: it is only
    /// advice, and a client must not fail because of it.
    pub fn from_headers(headers: &tonic::metadata::MetadataMap) -> Option<Invocation> {
        let value = headers.get_bin(REQUEST_METADATA_HEADER)?;
        match value
            .to_bytes()
            .ok()
            .and_then(|b| reapi::RequestMetadata::decode(b).ok())
        {
            Some(m) => Some(Invocation::from_proto(m)),
            None => {
                tracing::debug!("ignoring a malformed {REQUEST_METADATA_HEADER} header");
                None
            }
        }
    }

    pub fn from_proto(m: reapi::RequestMetadata) -> Invocation {
        let (tool_name, tool_version) = m
            .tool_details
            .map(|t| (t.tool_name, t.tool_version))
            .unwrap_or_default();
        Invocation {
            tool_name,
            tool_version,
            tool_invocation_id: m.tool_invocation_id,
            correlated_invocations_id: m.correlated_invocations_id,
            action_id: m.action_id,
            action_mnemonic: m.action_mnemonic,
            target_id: m.target_id,
            configuration_id: m.configuration_id,
        }
    }

    /// Back to the REAPI message (the scheduler keeps it with a queued
    /// action and hands it to the worker).
    pub fn to_proto(&self) -> reapi::RequestMetadata {
        reapi::RequestMetadata {
            tool_details: (!self.tool_name.is_empty() || !self.tool_version.is_empty()).then(
                || reapi::ToolDetails {
                    tool_name: self.tool_name.clone(),
                    tool_version: self.tool_version.clone(),
                },
            ),
            action_id: self.action_id.clone(),
            tool_invocation_id: self.tool_invocation_id.clone(),
            correlated_invocations_id: self.correlated_invocations_id.clone(),
            action_mnemonic: self.action_mnemonic.clone(),
            target_id: self.target_id.clone(),
            configuration_id: self.configuration_id.clone(),
        }
    }
}

/// The part of a context that comes from the connection and the headers,
/// taken before the request body is consumed: a service reads it first,
/// then parses the body for the instance name and digest function.
#[derive(Clone, Debug)]
pub struct Caller {
    identity: Identity,
    invocation: Option<Invocation>,
    peer: Option<Peer>,
}

/// Where a call came from (`ADDR:PORT`, `unix uid=N`), put in the
/// request's extensions by the listener's authentication layer, for the
/// audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer(pub Arc<str>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Caller {
    /// The caller of a tonic request: the principal the listener's
    /// authentication layer found, or `Anonymous` where no such layer runs
    /// (in-process tests and tools).
    pub fn from_request<T>(request: &tonic::Request<T>) -> Caller {
        // Put there by the listener's authentication layer, never by a
        // client: request extensions do not travel over the wire.
        let identity = request
            .extensions()
            .get::<corral_auth::Principal>()
            .map_or(Identity::Anonymous, |p| Identity::Authenticated(p.clone()));
        Caller {
            identity,
            invocation: Invocation::from_headers(request.metadata()),
            peer: request.extensions().get::<Peer>().cloned(),
        }
    }

    /// The full context of one call by this caller.
    pub fn context(&self, instance_name: &str, function: DigestFunction) -> RequestContext {
        RequestContext {
            inner: Arc::new(Inner {
                instance_name: instance_name.to_string(),
                digest_function: function,
                identity: self.identity.clone(),
                invocation: self.invocation.clone(),
                peer: self.peer.clone(),
                charged: std::sync::atomic::AtomicU16::new(0),
            }),
            viewer: None,
        }
    }

    /// Where the call came from, when the listener recorded it.
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_ref()
    }

    pub fn invocation(&self) -> Option<&Invocation> {
        self.invocation.as_ref()
    }

    /// Who is calling.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

/// The context of one storage or action-cache call. Cheap to clone (one
/// reference count), so a call that fans out or spawns a task passes it on
/// without copying strings.
#[derive(Clone, Debug)]
pub struct RequestContext {
    inner: Arc<Inner>,
    /// The tenant a backend that keeps owners answers for; set by the
    /// tenant-visibility layer on the calls it passes down.
    viewer: Option<Arc<Viewer>>,
}

#[derive(Debug)]
struct Inner {
    instance_name: String,
    digest_function: DigestFunction,
    identity: Identity,
    invocation: Option<Invocation>,
    /// Where the call came from (for audit lines), when a listener said.
    peer: Option<Peer>,
    /// The classes of call (permissions) this request has been charged
    /// against its tenant's rate quota for, one bit each: a request that
    /// reaches the store many times (a batch of a thousand blobs) is still
    /// one call.
    charged: std::sync::atomic::AtomicU16,
}

impl RequestContext {
    pub fn new(
        identity: Identity,
        invocation: Option<Invocation>,
        instance_name: &str,
        digest_function: DigestFunction,
    ) -> Self {
        RequestContext {
            inner: Arc::new(Inner {
                instance_name: instance_name.to_string(),
                digest_function,
                identity,
                invocation,
                peer: None,
                charged: std::sync::atomic::AtomicU16::new(0),
            }),
            viewer: None,
        }
    }

    /// A context for the farm's own calls (the scheduler reading an Action,
    /// the worker filling its local CAS or uploading outputs).
    pub fn internal(instance_name: &str, digest_function: DigestFunction) -> Self {
        Self::new(Identity::Farm, None, instance_name, digest_function)
    }

    /// The REAPI instance name of the request ("" is a valid name).
    pub fn instance_name(&self) -> &str {
        &self.inner.instance_name
    }

    /// The digest function the request named (SHA-256 for clients that
    /// name none).
    pub fn digest_function(&self) -> DigestFunction {
        self.inner.digest_function
    }

    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// Where the call came from, when the listener recorded it.
    pub fn peer(&self) -> Option<&Peer> {
        self.inner.peer.as_ref()
    }

    /// True the first time this request (and its clones) asks for
    /// `permission`: the one time its rate quota is charged for it.
    pub fn first_use_of(&self, permission: corral_auth::Permission) -> bool {
        let bit = corral_auth::Permission::ALL
            .iter()
            .position(|p| *p == permission)
            .map_or(0, |i| 1u16 << i);
        let before = self
            .inner
            .charged
            .fetch_or(bit, std::sync::atomic::Ordering::Relaxed);
        before & bit == 0
    }

    pub fn invocation(&self) -> Option<&Invocation> {
        self.inner.invocation.as_ref()
    }

    /// The same call, answered by backends that keep owners as `viewer`
    /// sees the store (see [`crate::store::owners`]).
    pub fn viewed_by(&self, viewer: Arc<Viewer>) -> RequestContext {
        RequestContext {
            inner: self.inner.clone(),
            viewer: Some(viewer),
        }
    }

    /// The tenant this call is answered for, if the visibility layer set
    /// one.
    pub fn viewer(&self) -> Option<&Viewer> {
        self.viewer.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_header_is_parsed_and_garbage_ignored() {
        let sent = reapi::RequestMetadata {
            tool_details: Some(reapi::ToolDetails {
                tool_name: "bazel".into(),
                tool_version: "4.2.3".into(),
            }),
            tool_invocation_id: "inv-1".into(),
            correlated_invocations_id: "build-7".into(),
            ..Default::default()
        };
        let mut request = tonic::Request::new(());
        request.metadata_mut().insert_bin(
            REQUEST_METADATA_HEADER,
            tonic::metadata::MetadataValue::from_bytes(&sent.encode_to_vec()),
        );
        let ctx = Caller::from_request(&request).context("team-a", DigestFunction::Blake3);
        let inv = ctx.invocation().unwrap();
        assert_eq!(
            (inv.tool_name.as_str(), inv.tool_version.as_str()),
            ("bazel", "4.2.3")
        );
        assert_eq!(inv.tool_invocation_id, "inv-1");
        assert_eq!(inv.correlated_invocations_id, "build-7");
        assert_eq!(ctx.instance_name(), "team-a");
        assert_eq!(ctx.digest_function(), DigestFunction::Blake3);
        assert_eq!(ctx.identity(), &Identity::Anonymous);

        let mut bad = tonic::Request::new(());
        bad.metadata_mut().insert_bin(
            REQUEST_METADATA_HEADER,
            tonic::metadata::MetadataValue::from_bytes(b"\xff\xff\xff"),
        );
        assert!(Caller::from_request(&bad).invocation().is_none());
        assert!(Caller::from_request(&tonic::Request::new(()))
            .invocation()
            .is_none());
        let internal = RequestContext::internal("", DigestFunction::Sha256);
        assert_eq!(internal.identity(), &Identity::Farm);
    }
}
