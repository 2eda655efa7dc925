//! The adapter's monotonic clock. Every age the adapter acts on (how old a
//! scrape is, how long a stream has gone unlisted, how old an API answer
//! is) is measured on it, so a step of the wall clock (NTP, a VM resumed,
//! an operator's `date -s`) neither keeps dead data served nor drops live
//! data. Only the timestamps in answers are wall-clock times, derived as
//! "now minus the age".

use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime};

/// A point on the monotonic clock: milliseconds since the clock started,
/// never 0 (0 is free for "none" in packed fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Moment(u64);

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Moment {
    /// The earliest moment: when the clock started.
    pub const START: Moment = Moment(1);

    pub fn now() -> Moment {
        Moment::START + START.elapsed()
    }

    /// The moment `millis` as [`Moment::as_millis`] gave it (0 reads as
    /// [`Moment::START`]).
    pub const fn from_millis(millis: u64) -> Moment {
        Moment(if millis == 0 { 1 } else { millis })
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// How long after `earlier` this moment is; zero if it is not later.
    pub fn since(self, earlier: Moment) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// This moment `duration` earlier, or [`Moment::START`] if that is before it.
    pub fn saturating_sub(self, duration: Duration) -> Moment {
        Moment::from_millis(self.0.saturating_sub(millis(duration)))
    }

    /// The wall-clock time of this moment, given that `now` is `wall_now`.
    pub fn wall_time(self, now: Moment, wall_now: SystemTime) -> SystemTime {
        wall_now.checked_sub(now.since(self)).unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

impl std::ops::Add<Duration> for Moment {
    type Output = Moment;

    fn add(self, duration: Duration) -> Moment {
        Moment(self.0.saturating_add(millis(duration)))
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_ordered_never_zero_and_measure_ages() {
        let (a, b) = (Moment::now(), Moment::now());
        assert!(a <= b && a.as_millis() > 0);
        assert_eq!(Moment::from_millis(0), Moment::START);
        let later = a + Duration::from_secs(90);
        assert_eq!(later.since(a), Duration::from_secs(90));
        assert_eq!(a.since(later), Duration::ZERO, "an earlier moment has no age");
        assert_eq!(later.saturating_sub(Duration::from_secs(90)), a);
        assert_eq!(a.saturating_sub(Duration::MAX), Moment::START);
    }

    #[test]
    fn wall_time_is_now_minus_the_age() {
        let now = Moment::START + Duration::from_secs(100);
        let wall_now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let scraped = now.saturating_sub(Duration::from_secs(7));
        assert_eq!(scraped.wall_time(now, wall_now), wall_now - Duration::from_secs(7));
        assert_eq!(now.wall_time(scraped, wall_now), wall_now, "a later moment has no age");
    }
}
