//! Static-token files for tests of a farm with a policy
//! (docs/security.md, `static_tokens`).

use sha2::Digest as _;

/// One line of a token file: `ID PRINCIPAL sha256:HEX` for `token`.
pub fn token_entry(id: &str, principal: &str, token: &str) -> String {
    let hash = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    format!("{id} {principal} sha256:{hash}\n")
}
