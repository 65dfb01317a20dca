//! ByteStream resource names from the network: parsing never panics, every
//! refusal names `resource_name`, and whatever parses prints back to a name
//! that parses to the same thing.

#![no_main]

use corral_cas::resource::{parse_read, parse_write, read_name, write_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    match parse_read(name) {
        Ok(r) => {
            let again = parse_read(&read_name(&r.instance_name, r.compression, &r.digest))
                .expect("a printed read name must parse");
            assert_eq!(again, r);
        }
        Err(e) => assert!(e.to_string().starts_with("resource_name"), "{e}"),
    }
    match parse_write(name) {
        Ok(w) => {
            let again = parse_write(&write_name(&w.instance_name, &w.uuid, w.compression, &w.digest))
                .expect("a printed write name must parse");
            assert_eq!(again, w);
        }
        Err(e) => assert!(e.to_string().starts_with("resource_name"), "{e}"),
    }
});
