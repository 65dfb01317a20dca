//! Who may do what through the pages: the two seams authentication plugs
//! into. The pages never decide identity themselves; they hand the
//! request's extensions (where an authentication layer puts the caller's
//! principal) to these traits.
//!
//! * [`AdminPolicy`]: may this caller drain or release a worker, or cancel
//!   an operation? Without authentication the farm's default is
//!   [`OpenAdmin`] (anyone who reaches the pages, as anyone who reaches
//!   the gRPC port may cancel an operation); `[http] admin = false`
//!   gives [`NoAdmin`].
//! * [`ContextSource`]: under which identity do the pages read the CAS
//!   and the action cache for this caller? By default
//!   [`AnonymousContext`], as any unauthenticated gRPC client; with
//!   tenancy the caller's own identity, so a page shows only what that
//!   caller could fetch itself.

use corral_cas::{DigestFunction, Identity, RequestContext};
use http::Extensions;

/// An operator action the pages offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminAction {
    /// Hold a worker: it finishes what it runs and gets nothing new.
    Drain(String),
    /// Let a held worker take work again.
    Undrain(String),
    /// Cancel an operation.
    Cancel(String),
}

impl AdminAction {
    /// The action's name in URLs and forms.
    pub fn verb(&self) -> &'static str {
        match self {
            AdminAction::Drain(_) => "drain",
            AdminAction::Undrain(_) => "undrain",
            AdminAction::Cancel(_) => "cancel",
        }
    }

    /// The worker or operation it acts on.
    pub fn target(&self) -> &str {
        match self {
            AdminAction::Drain(t) | AdminAction::Undrain(t) | AdminAction::Cancel(t) => t,
        }
    }

    /// The action `verb` on `target`, if `verb` is one.
    pub fn parse(verb: &str, target: String) -> Option<AdminAction> {
        match verb {
            "drain" => Some(AdminAction::Drain(target)),
            "undrain" => Some(AdminAction::Undrain(target)),
            "cancel" => Some(AdminAction::Cancel(target)),
            _ => None,
        }
    }
}

/// Decides whether the caller of a request may take an admin action.
pub trait AdminPolicy: Send + Sync + 'static {
    /// `Err` holds the reason shown on the 403 page.
    fn authorize(&self, extensions: &Extensions, action: &AdminAction) -> Result<(), String>;
}

/// Anyone who reaches the pages may (no authentication configured).
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenAdmin;

impl AdminPolicy for OpenAdmin {
    fn authorize(&self, _: &Extensions, _: &AdminAction) -> Result<(), String> {
        Ok(())
    }
}

/// No one may: admin actions are off.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoAdmin;

impl AdminPolicy for NoAdmin {
    fn authorize(&self, _: &Extensions, action: &AdminAction) -> Result<(), String> {
        Err(format!(
            "admin actions ({}) are turned off on this server ([http] admin = false)",
            action.verb()
        ))
    }
}

/// The storage context of a page's reads for the caller of a request.
pub trait ContextSource: Send + Sync + 'static {
    /// The context to read `instance`'s CAS under with `function`; `Err`
    /// holds the reason shown on the 403 page.
    fn context(
        &self,
        extensions: &Extensions,
        instance: &str,
        function: DigestFunction,
    ) -> Result<RequestContext, String>;
}

/// Every page reader is anonymous.
#[derive(Debug, Default, Clone, Copy)]
pub struct AnonymousContext;

impl ContextSource for AnonymousContext {
    fn context(
        &self,
        _: &Extensions,
        instance: &str,
        function: DigestFunction,
    ) -> Result<RequestContext, String> {
        Ok(RequestContext::new(
            Identity::Anonymous,
            None,
            instance,
            function,
        ))
    }
}
