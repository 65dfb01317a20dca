//! Digests, blob stores, the action cache and the CAS/AC/ByteStream/Capabilities services.
