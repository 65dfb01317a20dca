//! Who may do what through the pages: the two seams authentication plugs
//! into. The pages never decide identity themselves: the listener's
//! authentication layer puts the caller's `corral_auth::Principal` in the
//! request's extensions (extensions never come over the wire), and these
//! traits read it from there.
//!
//! * [`AdminPolicy`]: may this caller drain or undrain a worker, or cancel
//!   an operation? [`AuthorizedAdmin`] asks the farm's authorization
//!   (`admin` for workers; `admin` or `operations.cancel` on the
//!   operation's instance for a cancel), which under the zero-config local
//!   policy allows the local user. [`OpenAdmin`] allows anyone who reaches
//!   the pages (for tests and tools), [`NoAdmin`] no one (`[http] admin =
//!   false`).
//! * [`ContextSource`]: under which identity do the pages read the CAS
//!   and the action cache? [`PrincipalContext`] (the default) reads as the
//!   authenticated caller, so a page shows only what that caller could
//!   fetch itself, and as `Anonymous` when the request carries no
//!   principal (which the authorization layers refuse under a policy).

use corral_auth::{AuditKind, Permission, Principal};
use corral_cas::{Authorization, DigestFunction, Identity, RequestContext};
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

/// The caller's identity as the authentication layer left it.
pub fn identity(extensions: &Extensions) -> Identity {
    match extensions.get::<Principal>() {
        Some(p) => Identity::Authenticated(p.clone()),
        None => Identity::Anonymous,
    }
}

/// Decides whether the caller of a request may take an admin action.
pub trait AdminPolicy: Send + Sync + 'static {
    /// `instance` is the instance name the action concerns ("" for a
    /// worker; the operation's for a cancel). `Err` holds the reason shown
    /// on the 403 page.
    fn authorize(
        &self,
        extensions: &Extensions,
        action: &AdminAction,
        instance: &str,
    ) -> Result<(), String>;

    /// Records an action that was taken (the audit log's `admin` event).
    /// Default: nothing to record to.
    fn taken(&self, extensions: &Extensions, action: &AdminAction, instance: &str) {
        let _ = (extensions, action, instance);
    }
}

/// Asks the farm's authorization; see the module comment.
#[derive(Clone)]
pub struct AuthorizedAdmin {
    authorization: Authorization,
}

impl AuthorizedAdmin {
    /// Decides with `authorization`.
    pub fn new(authorization: Authorization) -> Self {
        AuthorizedAdmin { authorization }
    }
}

impl AdminPolicy for AuthorizedAdmin {
    fn authorize(
        &self,
        extensions: &Extensions,
        action: &AdminAction,
        instance: &str,
    ) -> Result<(), String> {
        let who = identity(extensions);
        let name = who.principal_name();
        // `admin` is a farm-wide permission (a grant with `tenant = "*"`),
        // tied to no instance; a denial of it is audited.
        let admin = self
            .authorization
            .check_farm(&who, Permission::Admin)
            .is_ok();
        let ctx = RequestContext::new(who, None, instance, DigestFunction::Sha256);
        let may = admin
            || (matches!(action, AdminAction::Cancel(_))
                && self.authorization.may(&ctx, Permission::OperationsCancel));
        if may {
            return Ok(());
        }
        let reason = format!(
            "{name} may not {} {:?}: it needs the `admin` permission{}",
            action.verb(),
            action.target(),
            if matches!(action, AdminAction::Cancel(_)) {
                format!(" or `operations.cancel` on instance {instance:?}")
            } else {
                String::new()
            }
        );
        self.authorization
            .record(AuditKind::Denied, ctx.identity(), &reason);
        Err(reason)
    }

    fn taken(&self, extensions: &Extensions, action: &AdminAction, instance: &str) {
        let detail = if instance.is_empty() {
            format!("{} {:?} (web pages)", action.verb(), action.target())
        } else {
            format!(
                "{} {:?} of instance {instance:?} (web pages)",
                action.verb(),
                action.target()
            )
        };
        self.authorization
            .record(AuditKind::Admin, &identity(extensions), &detail);
    }
}

/// Anyone who reaches the pages may.
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenAdmin;

impl AdminPolicy for OpenAdmin {
    fn authorize(&self, _: &Extensions, _: &AdminAction, _: &str) -> Result<(), String> {
        Ok(())
    }
}

/// No one may: admin actions are off.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoAdmin;

impl AdminPolicy for NoAdmin {
    fn authorize(&self, _: &Extensions, action: &AdminAction, _: &str) -> Result<(), String> {
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

/// Reads as the authenticated caller (anonymous without one).
#[derive(Debug, Default, Clone, Copy)]
pub struct PrincipalContext;

impl ContextSource for PrincipalContext {
    fn context(
        &self,
        extensions: &Extensions,
        instance: &str,
        function: DigestFunction,
    ) -> Result<RequestContext, String> {
        Ok(RequestContext::new(
            identity(extensions),
            None,
            instance,
            function,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_auth::PrincipalKind;

    #[test]
    fn the_local_policy_lets_the_local_user_act_and_a_principal_is_read() {
        let admin = AuthorizedAdmin::new(Authorization::local());
        let none = Extensions::new();
        let drain = AdminAction::Drain("w1".into());
        assert!(admin.authorize(&none, &drain, "").is_ok());
        let mut with = Extensions::new();
        with.insert(Principal::new(PrincipalKind::Person, "alice", None));
        assert_eq!(identity(&with).principal_name(), "alice");
        let ctx = PrincipalContext
            .context(&with, "team", DigestFunction::Sha256)
            .unwrap();
        assert_eq!(ctx.identity().principal_name(), "alice");
        assert_eq!(ctx.instance_name(), "team");
        assert!(NoAdmin.authorize(&with, &drain, "").is_err());
    }
}
