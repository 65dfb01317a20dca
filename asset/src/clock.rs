//! Wall-clock time, injected so tests can move it: entries are stamped
//! with when they were stored (`oldest_content_accepted`) and expire at a
//! client-given time (`expire_at`).

use std::time::SystemTime;

use corral_proto::protobuf::Timestamp;

use crate::error::{AssetError, Result};

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A `google.protobuf.Timestamp` for `time` (times before 1970 cannot
/// occur here: they come from this clock or from a parsed timestamp).
pub fn to_timestamp(time: SystemTime) -> Timestamp {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

/// Largest `seconds` of a valid Timestamp (9999-12-31T23:59:59Z).
const MAX_SECONDS: i64 = 253_402_300_799;

/// The time a request's `field` names. A Timestamp outside what the type
/// allows (nanos not in 0..1e9, before 1970 or after year 9999) is an
/// INVALID_ARGUMENT naming the field.
pub fn from_timestamp(field: &str, ts: &Timestamp) -> Result<SystemTime> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(AssetError::invalid(
            format!("{field}.nanos"),
            format!("{} is not in 0..1000000000", ts.nanos),
        ));
    }
    if !(0..=MAX_SECONDS).contains(&ts.seconds) {
        return Err(AssetError::invalid(
            format!("{field}.seconds"),
            format!(
                "{} is outside 1970-01-01 .. 9999-12-31 (as seconds since 1970)",
                ts.seconds
            ),
        ));
    }
    let since = std::time::Duration::new(ts.seconds as u64, ts.nanos as u32);
    Ok(SystemTime::UNIX_EPOCH + since)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_bad_ones_are_named() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123);
        assert_eq!(from_timestamp("x", &to_timestamp(t)).unwrap(), t);
        let bad = Timestamp {
            seconds: 1,
            nanos: -1,
        };
        assert!(from_timestamp("expire_at", &bad)
            .unwrap_err()
            .to_string()
            .starts_with("expire_at.nanos"));
        let bad = Timestamp {
            seconds: -5,
            nanos: 0,
        };
        assert!(from_timestamp("oldest_content_accepted", &bad)
            .unwrap_err()
            .to_string()
            .starts_with("oldest_content_accepted.seconds"));
    }
}
