//! The crate's one error type.

use std::path::PathBuf;

/// What went wrong while building a TLS configuration. Every variant names
/// the setting or the file at fault, so an operator can fix it from the
/// message alone.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is missing or contradicts another one.
    #[error("TLS setting `{field}`: {reason}")]
    Config {
        /// The TOML key at fault (`cert`, `client_auth`, …).
        field: &'static str,
        /// What is wrong with it and how to fix it.
        reason: String,
    },
    /// A file named by the configuration could not be read.
    #[error("TLS: reading {what} {}: {source}", path.display())]
    Read {
        /// What the file should hold (`certificate`, `private key`, `CRL` …).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// A file was read but does not hold what it should.
    #[error("TLS: {what} {}: {reason}", path.display())]
    Invalid {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with its content.
        reason: String,
    },
    /// rustls refused the configuration as a whole.
    #[error("TLS: building the {what} configuration: {source}")]
    Rustls {
        /// Which configuration (`server`, `client`).
        what: &'static str,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// tonic refused the client configuration for an endpoint.
    #[error("TLS: configuring the endpoint {uri}: {source}")]
    Endpoint {
        /// The endpoint's URI.
        uri: String,
        /// tonic's reason.
        source: tonic::transport::Error,
    },
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Error {
        Error::Config {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(
        what: &'static str,
        path: impl Into<PathBuf>,
        reason: impl ToString,
    ) -> Error {
        Error::Invalid {
            what,
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}
