//! The flags with which a benchmark reaches a protected target: the same
//! spelling as `corral worker` and `corral runner exec --remote`.

use std::path::PathBuf;

/// `--tls-ca`, `--tls-cert`, `--tls-key`, `--token-file`, for every
/// `--target` of one run.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ClientArgs {
    /// PEM file of the CA that signs the targets' certificates (for
    /// https:// targets; default: the system's CAs).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// PEM file with a client certificate for the targets (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file with the private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// File holding a bearer token sent on every call to the targets.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl ClientArgs {
    /// The connector for these flags; a file that cannot be read is an
    /// error naming its flag.
    pub fn connector(&self) -> anyhow::Result<corral_cas::Connector> {
        let flags = corral_cas::ClientFlags {
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            token_file: self.token_file.clone(),
        };
        Ok(flags
            .apply(corral_cas::ClientOptions::default())?
            .connector()?)
    }
}
