//! Worker: scheduler session, input staging from a hardlink-caching local CAS, output capture.
