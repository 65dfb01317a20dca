//! RFC 3339 UTC timestamps for audit lines (serde `with` module).

use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub(super) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let text = OffsetDateTime::from(*t)
        .format(&Rfc3339)
        .map_err(serde::ser::Error::custom)?;
    s.serialize_str(&text)
}

pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let text = String::deserialize(d)?;
    let t = OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)?;
    Ok(t.into())
}
