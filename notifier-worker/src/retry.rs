//! How long to wait before the next attempt.

use std::time::Duration;

/// Exponential backoff with jitter: `base * 2^(attempt-1)`, capped at `max`, then a random
/// point in its upper half (`unit` in [0, 1)), so that replicas that failed together do not
/// retry together.
pub fn backoff(attempt: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let full = base.saturating_mul(1u32 << exp.min(31)).min(max);
    let unit = unit.clamp(0.0, 1.0);
    full / 2 + full.mul_f64(unit) / 2
}

/// [`backoff`] with a fresh random draw.
pub fn backoff_now(attempt: u32, base: Duration, max: Duration) -> Duration {
    backoff(attempt, base, max, rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered_in_the_upper_half() {
        let b = Duration::from_millis(100);
        let m = Duration::from_secs(5);
        assert_eq!(backoff(1, b, m, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(1, b, m, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(3, b, m, 1.0), Duration::from_millis(400));
        assert_eq!(backoff(40, b, m, 1.0), m);
        assert_eq!(backoff(40, b, m, 0.0), m / 2);
        let d = backoff_now(2, b, m);
        assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(200));
    }
}
