//! Retrying after a failure: the one backoff policy and the one interruptible sleep that every
//! retry loop (the batch consumer, the score applier, the scan projector) shares.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The delay before the next attempt after `failures` consecutive failures (the first is 1):
/// `base`, doubling per failure, capped at `cap`, and jittered to between half and all of
/// that, so processes that failed together do not retry together.
pub fn backoff(failures: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)));
    let ceiling = exp.min(cap);
    let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0;
    ceiling.mul_f64(0.5 + jitter / 2.0)
}

/// Sleeps `d`, or less if `shutdown` comes first; `true` when shutdown came first.
pub async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = shutdown.cancelled() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_stays_under_the_cap() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(2));
        for failures in 1..40 {
            let d = backoff(failures, base, cap);
            let ceiling =
                base.saturating_mul(2u32.pow(failures.saturating_sub(1).min(16))).min(cap);
            assert!(d >= ceiling / 2 && d <= ceiling, "{failures}: {d:?} vs {ceiling:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_ends_early_when_shutdown_comes_first() {
        let shutdown = CancellationToken::new();
        assert!(!sleep_or_shutdown(Duration::from_secs(1), &shutdown).await);
        shutdown.cancel();
        assert!(sleep_or_shutdown(Duration::from_secs(3600), &shutdown).await);
    }
}
