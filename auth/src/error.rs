//! The crate's error: what is wrong with a configuration, a policy, a token
//! file or a key set, named precisely enough to fix it. (What a request
//! fails with is not an `Error`: see [`crate::AuthError`],
//! [`crate::Denied`] and [`crate::QuotaExceeded`].)

use std::path::PathBuf;

use crate::permission::Permission;

/// A configuration or load error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tenant name with characters or a length that is not allowed.
    #[error("bad tenant name {name:?}: a tenant name is 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    BadTenantName {
        /// The name as written.
        name: String,
    },
    /// A permission name that does not exist.
    #[error(
        "unknown permission {name:?}: expected one of cas.read, cas.write, ac.read, ac.write, \
         execute, operations.read, operations.cancel, admin, worker"
    )]
    UnknownPermission {
        /// The name as written.
        name: String,
    },
    /// An empty principal pattern.
    #[error("an empty principal pattern matches nobody; write `*` to match everybody")]
    EmptyPattern,
    /// An instance prefix that is not well formed.
    #[error("tenant `{tenant}`: instance prefix {prefix:?} is refused: {reason}")]
    BadPrefix {
        /// The tenant that lists it.
        tenant: String,
        /// The prefix as written.
        prefix: String,
        /// Why.
        reason: &'static str,
    },
    /// Two tenants own overlapping instance prefixes.
    #[error(
        "instance prefix {prefix_a:?} of tenant `{tenant_a}` overlaps prefix {prefix_b:?} of \
         tenant `{tenant_b}`: each instance name must belong to exactly one tenant"
    )]
    PrefixOverlap {
        /// The first tenant.
        tenant_a: String,
        /// Its prefix.
        prefix_a: String,
        /// The second tenant.
        tenant_b: String,
        /// Its prefix.
        prefix_b: String,
    },
    /// A grant or worker entry names a tenant the policy does not define.
    #[error("{entry}: tenant `{tenant}` is not defined under [tenants]")]
    UnknownTenant {
        /// Which entry, e.g. `grants[2]`.
        entry: String,
        /// The tenant as written.
        tenant: String,
    },
    /// A setting that is missing or has a wrong value.
    #[error("{field}: {reason}")]
    Setting {
        /// The setting, e.g. `grants[0].tenant` or `authentication.jwt.issuers`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A worker entry that would give a worker `ac.write` or `admin`.
    #[error(
        "workers[{entry}] gives workers `{permission}`: a worker may never hold it (only the \
         farm writes executed results to the action cache)"
    )]
    WorkerPermissionForbidden {
        /// The index of the `[[workers]]` entry.
        entry: usize,
        /// The permission.
        permission: Permission,
    },
    /// Both an inline `[auth.policy]` and `[auth] policy_file` are set.
    #[error("[auth] sets both `policy` and `policy_file`: choose one")]
    PolicyTwice,
    /// Reading a file failed.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A TOML document did not parse.
    #[error("parsing {what}: {source}")]
    Toml {
        /// What was parsed (a file name or a table).
        what: String,
        /// The error, with its line and column.
        source: toml::de::Error,
    },
    /// A static-token file line is wrong.
    #[error("{}:{line}: {reason}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A JWKS file is wrong.
    #[error("key set {}: {reason}", path.display())]
    KeySet {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An authentication table enables no method.
    #[error("[{table}] enables no authentication method: add at least one of mtls, peer_credentials, jwt, static_tokens")]
    NoAuthenticationMethod {
        /// The table, e.g. `auth.authentication`.
        table: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
