//! Wall-clock time as milliseconds since the Unix epoch: one `u64`,
//! compact, ordered, and comparable across processes and machines. The
//! workload stamps events with it so readers can measure end-to-end
//! latency.

use std::time::SystemTime;

/// `time` in milliseconds since the Unix epoch; 0 for a time before it.
#[inline]
pub fn of(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Now, in milliseconds since the Unix epoch.
#[inline]
pub fn now() -> u64 {
    of(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counts_whole_milliseconds_from_the_epoch() {
        assert_eq!(of(SystemTime::UNIX_EPOCH), 0);
        assert_eq!(of(SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_999)), 1_700_000_000_123);
        assert_eq!(of(SystemTime::UNIX_EPOCH - Duration::from_secs(1)), 0, "before the epoch");
        assert!(now() > 1_700_000_000_000);
    }
}
