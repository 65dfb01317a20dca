//! The clock file systems stamp changes with: the kernel's coarse clock,
//! which moves a tick at a time (4 ms on this machine). A change made
//! within a tick of a moment can carry a time from before it; two ticks
//! on, never.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The coarse clock's resolution; 10 ms, the longest tick Linux has, if
/// it cannot be read.
pub(crate) fn tick() -> Duration {
    nix::time::clock_getres(nix::time::ClockId::CLOCK_REALTIME_COARSE)
        .map(Duration::from)
        .unwrap_or(Duration::from_millis(10))
}

/// A time before which every change stamped so far was made, `at` being
/// now or a moment passed: two ticks earlier.
pub(crate) fn settled_before(at: SystemTime) -> SystemTime {
    at.checked_sub(2 * tick()).unwrap_or(UNIX_EPOCH)
}

/// Whether a file-system time (seconds and nanoseconds since the epoch,
/// as `statx` gives it) is before `cut`.
pub(crate) fn stamped_before((secs, nanos): (i64, i64), cut: SystemTime) -> bool {
    let Ok(cut) = cut.duration_since(UNIX_EPOCH) else {
        return false;
    };
    (secs, nanos) < (cut.as_secs() as i64, i64::from(cut.subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_is_before_a_cut_by_its_seconds_then_its_nanoseconds() {
        let cut = UNIX_EPOCH + Duration::new(100, 500);
        assert!(stamped_before((99, 999_999_999), cut));
        assert!(stamped_before((100, 499), cut));
        assert!(!stamped_before((100, 500), cut));
        assert!(!stamped_before((101, 0), cut));
        assert!(settled_before(SystemTime::now()) < SystemTime::now() - tick());
    }
}
