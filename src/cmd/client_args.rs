//! The flags every Corral client command shares to reach a protected farm:
//! which CA to trust, which certificate to present, which token to send.
//! `corral worker` and `corral runner exec --remote` flatten them into
//! their own arguments; the bench tools have the same spelling.

use std::path::PathBuf;

/// `--tls-ca`, `--tls-cert`, `--tls-key`, `--token-file`.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ClientArgs {
    /// PEM file of the CA that signs the server's certificate (for
    /// https:// URLs; default: the system's CAs).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// PEM file with this client's certificate, presented to a server that
    /// asks for one (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file with the private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// File holding a bearer token sent on every call (re-read when it
    /// changes); a token on the command line would be visible to every
    /// user of the machine.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl ClientArgs {
    /// The flags as corral-cas takes them (its errors name the flag).
    pub fn flags(&self) -> corral_cas::ClientFlags {
        corral_cas::ClientFlags {
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            token_file: self.token_file.clone(),
        }
    }
}
