//! Token-bucket rate limits keyed by client address or account.
//!
//! In-process: a single node needs nothing more. A cluster shares its limits
//! through Redis behind the same [`RateLimiter::check`] (a later issue).

use myelin_core::config::RateLimit;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Keys tracked at most; past this, buckets that have refilled are dropped.
const KEYS_MAX: usize = 100_000;

pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; `Err(retry_after_ms)` when none is left.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        let RateLimit { per_second, burst } = self.limit;
        if per_second <= 0.0 {
            return Ok(());
        }
        let burst = f64::from(burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= KEYS_MAX && !buckets.contains_key(key) {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * per_second < burst
            });
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let refilled =
            bucket.tokens + now.duration_since(bucket.updated).as_secs_f64() * per_second;
        bucket.tokens = refilled.min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait_s = (1.0 - bucket.tokens) / per_second;
            Err((wait_s * 1000.0).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check_at("a", t0), Ok(()));
        }
        let retry = limiter.check_at("a", t0).unwrap_err();
        assert_eq!(retry, 500);
        // Other keys are independent.
        assert_eq!(limiter.check_at("b", t0), Ok(()));
        assert_eq!(
            limiter.check_at("a", t0 + Duration::from_millis(500)),
            Ok(())
        );
        assert!(
            limiter
                .check_at("a", t0 + Duration::from_millis(500))
                .is_err()
        );
    }

    #[test]
    fn zero_rate_is_off() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 0.0,
            burst: 0,
        });
        for _ in 0..1000 {
            assert!(limiter.check("x").is_ok());
        }
    }
}
