//! The server-rendered pages. Each module is one page (or a family of
//! views of one thing); `render` and `result` hold the pieces several
//! pages show (a Command, a status, a timeline, an ActionResult), `tree`
//! the Directory trees.

pub mod action;
pub mod admin;
pub mod cas;
pub mod executions;
pub mod farm;
pub mod operation;
mod render;
mod result;
mod tree;

use corral_cas::DigestFunction;
use serde::Deserialize;

/// `?instance=…` and friends, shared by the digest-addressed pages.
#[derive(Debug, Default, Deserialize)]
pub struct DigestQuery {
    /// The REAPI instance name ("" if absent).
    #[serde(default)]
    pub instance: String,
    /// How to show a blob (`/blob` only).
    pub view: Option<String>,
    /// The file name a blob had where it was linked from.
    pub name: Option<String>,
    /// A kept ExecuteResponse, `HASH-SIZE` (`/action` only).
    pub response: Option<String>,
}

/// The digest function of a REAPI enum value (SHA-256 when unknown, as
/// the services treat it).
pub fn function_of(value: i32) -> DigestFunction {
    DigestFunction::from_proto(value).unwrap_or(DigestFunction::Sha256)
}
