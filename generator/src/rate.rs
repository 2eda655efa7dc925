//! The target event rate: a sinusoid between a minimum and a maximum, and a
//! pacer that says how many events are due so far.

use std::time::Duration;

/// `min + (max - min) * (1 - cos(2πt/period)) / 2`: starts at the minimum,
/// peaks at half the period.
#[derive(Debug, Clone, Copy)]
pub struct Sinusoid {
    pub min: f64,
    pub max: f64,
    pub period: Duration,
}

impl Sinusoid {
    fn omega(&self) -> f64 {
        std::f64::consts::TAU / self.period.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Events per second at `t`.
    pub fn rate_at(&self, t: Duration) -> f64 {
        let amplitude = (self.max - self.min) / 2.0;
        self.min + amplitude * (1.0 - (self.omega() * t.as_secs_f64()).cos())
    }

    /// Events due in `[0, t]`: the integral of the rate.
    pub fn events_by(&self, t: Duration) -> f64 {
        let (t, w) = (t.as_secs_f64(), self.omega());
        let amplitude = (self.max - self.min) / 2.0;
        self.min * t + amplitude * (t - (w * t).sin() / w)
    }
}

/// Counts events handed out against what the sinusoid says is due.
#[derive(Debug)]
pub struct Pacer {
    shape: Sinusoid,
    sent: u64,
}

impl Pacer {
    pub fn new(shape: Sinusoid) -> Self {
        Pacer { shape, sent: 0 }
    }

    /// How many events to send now to be on schedule at `t`.
    pub fn due(&mut self, t: Duration) -> u64 {
        let due = self.shape.events_by(t).floor().max(0.0) as u64;
        let now = due.saturating_sub(self.sent);
        self.sent = self.sent.max(due);
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Sinusoid {
        Sinusoid { min: 100.0, max: 900.0, period: Duration::from_secs(60) }
    }

    #[test]
    fn rate_goes_from_min_to_max_and_back() {
        let s = shape();
        assert!((s.rate_at(Duration::ZERO) - 100.0).abs() < 1e-9);
        assert!((s.rate_at(Duration::from_secs(30)) - 900.0).abs() < 1e-9);
        assert!((s.rate_at(Duration::from_secs(60)) - 100.0).abs() < 1e-6);
        assert!((s.rate_at(Duration::from_secs(15)) - 500.0).abs() < 1e-6);
    }

    #[test]
    fn one_period_sends_the_mean_rate_times_the_period() {
        let s = shape();
        assert!((s.events_by(Duration::from_secs(60)) - 500.0 * 60.0).abs() < 1e-6);
    }

    #[test]
    fn pacer_hands_out_each_event_once() {
        let mut pacer = Pacer::new(shape());
        let total: u64 = (1..=600).map(|tenth| pacer.due(Duration::from_millis(tenth * 100))).sum();
        assert_eq!(total, 30_000);
        assert_eq!(pacer.due(Duration::from_secs(60)), 0, "nothing is due twice");
    }
}
