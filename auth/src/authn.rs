//! The authentication methods.

mod jwks;
mod jwt;
mod mtls;
mod peer_credentials;
mod static_tokens;

pub use jwt::JwtAuthenticator;
pub use mtls::{MtlsAuthenticator, DEFAULT_CERT_FIELDS};
pub use peer_credentials::PeerCredentialsAuthenticator;
pub use static_tokens::{StaticTokenAuthenticator, MIN_TOKEN_LEN};
