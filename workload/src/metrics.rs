//! Rates the workload binaries report, measured from their counters.

/// Events per second over the last measurement window, from a counter.
#[derive(Debug)]
pub struct RateMeter {
    last_count: u64,
    last_time: std::time::Instant,
}

impl RateMeter {
    pub fn new(count: u64) -> Self {
        RateMeter { last_count: count, last_time: std::time::Instant::now() }
    }

    /// The rate since the previous call.
    pub fn tick(&mut self, count: u64) -> f64 {
        let elapsed = self.last_time.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 { count.saturating_sub(self.last_count) as f64 / elapsed } else { 0.0 };
        (self.last_count, self.last_time) = (count, std::time::Instant::now());
        rate
    }
}
