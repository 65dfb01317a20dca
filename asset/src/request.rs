//! What every Fetch and Push request shares, checked at the edge: the
//! [`RequestContext`] (caller from the connection, instance name and
//! digest function from the body), the URIs and the qualifiers.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use bazel_remote_apis::build::bazel::remote::asset::v1::Qualifier;
use corral_cas::{Caller, Digest, DigestFunction, RequestContext};
use corral_proto::protobuf;
use corral_proto::reapi;

use crate::clock::from_timestamp;
use crate::error::{AssetError, Result};
use crate::index::{AssetKey, AssetKind};
use crate::qualifiers::Qualifiers;
use crate::uri::{self, AssetUri};

/// The parts of a request every RPC checks the same way.
#[derive(Clone)]
pub struct Common {
    /// The call's context.
    pub ctx: RequestContext,
    /// The checked URIs, in request order.
    pub uris: Vec<AssetUri>,
    /// The checked qualifiers.
    pub qualifiers: Qualifiers,
}

impl Common {
    /// Checks `digest_function`, `uris` and `qualifiers`.
    pub fn parse(
        caller: &Caller,
        instance_name: &str,
        digest_function: i32,
        uris: &[String],
        qualifiers: &[Qualifier],
        ignorable: &BTreeSet<String>,
    ) -> Result<Common> {
        let function = DigestFunction::from_proto(digest_function)?;
        let ctx = caller.context(instance_name, function);
        let uris = uri::parse_all(uris)?;
        let qualifiers = Qualifiers::parse(qualifiers, ignorable)?;
        Ok(Common {
            ctx,
            uris,
            qualifiers,
        })
    }

    /// The digest function of the request.
    pub fn function(&self) -> DigestFunction {
        self.ctx.digest_function()
    }

    /// The index key of `uri` for an asset of `kind`.
    pub fn key(&self, kind: AssetKind, uri: &AssetUri) -> AssetKey {
        AssetKey::new(kind, self.function(), &uri.text, &self.qualifiers)
    }
}

/// A digest field of the request, under its digest function.
pub fn digest(function: DigestFunction, d: Option<&reapi::Digest>, field: &str) -> Result<Digest> {
    Ok(Digest::from_proto_field(function, d, field)?)
}

/// A repeated digest field.
pub fn digests(function: DigestFunction, ds: &[reapi::Digest], field: &str) -> Result<Vec<Digest>> {
    ds.iter()
        .enumerate()
        .map(|(i, d)| digest(function, Some(d), &format!("{field}[{i}]")))
        .collect()
}

/// An optional Timestamp field.
pub fn time(ts: Option<&protobuf::Timestamp>, field: &str) -> Result<Option<SystemTime>> {
    ts.map(|t| from_timestamp(field, t)).transpose()
}

/// The `timeout` field: a Duration that is not negative.
pub fn timeout(d: Option<&protobuf::Duration>) -> Result<Option<Duration>> {
    let Some(d) = d else { return Ok(None) };
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(AssetError::invalid(
            "timeout",
            format!(
                "{}s {}ns is not a valid non-negative duration",
                d.seconds, d.nanos
            ),
        ));
    }
    let t = Duration::new(d.seconds as u64, d.nanos as u32);
    // Zero means the client set none.
    Ok((!t.is_zero()).then_some(t))
}
