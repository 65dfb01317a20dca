//! Digests from the network: any hash string, size and digest-function
//! value either parses to a digest that round-trips through the wire form,
//! or is refused as INVALID_ARGUMENT naming the field. Never a panic.

#![no_main]

use corral_cas::{Digest, DigestFunction};
use corral_proto::reapi;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (i32, i64, &[u8])| {
    let (function, size_bytes, hash) = input;
    let function = match DigestFunction::from_proto(function) {
        Ok(f) => f,
        Err(e) => {
            assert_eq!(e.code(), corral_proto::tonic::Code::InvalidArgument);
            assert!(e.to_string().starts_with("digest_function"), "{e}");
            return;
        }
    };
    let hash = String::from_utf8_lossy(hash).into_owned();
    let wire = reapi::Digest { hash, size_bytes };
    match Digest::from_proto(function, &wire) {
        Ok(d) => {
            assert_eq!(d.to_proto(), wire);
            assert_eq!(d.to_string(), format!("{}/{}", wire.hash, wire.size_bytes));
        }
        Err(e) => {
            assert_eq!(e.code(), corral_proto::tonic::Code::InvalidArgument);
            let text = e.to_string();
            assert!(text.starts_with("hash") || text.starts_with("size_bytes"), "{text}");
        }
    }
});
