//! The health model, free of I/O: the rise/fall machine every check feeds,
//! the jitter that keeps checks out of lockstep, and the `track` rule that
//! turns node check states into an effective VRRP priority. Probes and the
//! loop that runs them are in [`crate::check`].

use std::time::Duration;

use crate::config::Track;

/// A check's state from its results: it goes down after `fall` failures in a
/// row while up, and up after `rise` successes in a row while down. A result
/// that agrees with the current state resets the count towards a change, so
/// results that alternate faster than the thresholds never change it.
///
/// A timeout is a failure: the caller records `false` for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    up: bool,
    /// Consecutive results that disagree with `up`.
    streak: u32,
    flaps: u64,
}

impl RiseFall {
    /// A machine that starts up, so a node's priority does not dip while its
    /// checks run for the first time; it needs `fall` failures to go down.
    ///
    /// keepalived's default (no `init_fail`) also leaves the priority alone
    /// until the first result, but then lets that first result decide at
    /// once; here a freshly started check is treated like one that has been
    /// passing. A threshold of 0 is taken as 1.
    #[must_use]
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            up: true,
            streak: 0,
            flaps: 0,
        }
    }

    /// A machine that starts down and needs `rise` successes to go up
    /// (keepalived's `init_fail`).
    #[must_use]
    pub fn new_down(rise: u32, fall: u32) -> Self {
        Self {
            up: false,
            ..Self::new(rise, fall)
        }
    }

    /// Records one result (`false` for a failure or a timeout). Returns the
    /// new state exactly when this result changes it.
    #[must_use]
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let threshold = if self.up { self.fall } else { self.rise };
        if self.streak < threshold {
            return None;
        }
        self.up = ok;
        self.streak = 0;
        self.flaps += 1;
        Some(ok)
    }

    /// Whether the check is currently considered up.
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// How many times the state has changed since the machine was made.
    #[must_use]
    pub fn flaps(&self) -> u64 {
        self.flaps
    }
}

/// `interval` moved by up to ±10 %, chosen by a cheap deterministic hash of
/// `seed`, so checks that start together do not stay in lockstep. The result
/// lies in `[0.9 × interval, 1.1 × interval]` (to the nanosecond).
#[must_use]
pub fn jittered(interval: Duration, seed: u64) -> Duration {
    let nanos = interval.as_nanos();
    // 0..=2000 steps of 0.01 % each: 0 % to +20 % on top of -10 %.
    let step = u128::from(splitmix64(seed) % 2001);
    let total = nanos - nanos / 10 + nanos * step / 10_000;
    let secs = u64::try_from(total / 1_000_000_000).unwrap_or(u64::MAX);
    let sub = u32::try_from(total % 1_000_000_000).expect("below one second");
    Duration::new(secs, sub)
}

/// splitmix64's finaliser: a well-mixed 64-bit hash of a counter.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a, to give each check its own jitter sequence from its name.
#[must_use]
pub fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// An instance's priority under its `track` list, by keepalived's rule
/// (`vrrp_set_effective_priority`): a positive weight is added while its
/// check passes, a negative weight while it fails; a weight of 0 never moves
/// the priority (a failing check with weight 0 puts the instance in Fault
/// instead, see [`tracked_fault`]). The sum is clamped to `1..=254`, and an
/// address owner (`base` 255) is never changed.
///
/// `down` says whether the named check is currently down.
#[must_use]
pub fn effective_priority(base: u8, track: &[Track], down: &dyn Fn(&str) -> bool) -> u8 {
    if base == u8::MAX {
        return base;
    }
    let total = track.iter().fold(i64::from(base), |sum, t| {
        let failing = down(&t.check);
        match t.weight {
            w if w > 0 && !failing => sum + i64::from(w),
            w if w < 0 && failing => sum + i64::from(w),
            _ => sum,
        }
    });
    u8::try_from(total.clamp(1, 254)).expect("clamped to a u8")
}

/// Whether a tracked check with weight 0 is down, which in keepalived puts
/// the instance in Fault whatever its priority.
#[must_use]
pub fn tracked_fault(track: &[Track], down: &dyn Fn(&str) -> bool) -> bool {
    track.iter().any(|t| t.weight == 0 && down(&t.check))
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- rise/fall ----

    fn feed(m: &mut RiseFall, results: &[bool]) -> Vec<Option<bool>> {
        results.iter().map(|&ok| m.record(ok)).collect()
    }

    #[test]
    fn starts_up_and_falls_after_exactly_fall_failures() {
        let mut m = RiseFall::new(2, 3);
        assert!(m.is_up());
        assert_eq!(feed(&mut m, &[false, false]), [None, None]);
        assert!(m.is_up());
        assert_eq!(m.record(false), Some(false));
        assert!(!m.is_up());
        assert_eq!(m.record(false), None, "already down: no second event");
    }

    #[test]
    fn rises_after_exactly_rise_successes() {
        let mut m = RiseFall::new_down(3, 2);
        assert!(!m.is_up());
        assert_eq!(feed(&mut m, &[true, true]), [None, None]);
        assert_eq!(m.record(true), Some(true));
        assert!(m.is_up());
        assert_eq!(m.record(true), None);
    }

    #[test]
    fn one_and_one_follows_every_result() {
        let mut m = RiseFall::new(1, 1);
        assert_eq!(
            feed(&mut m, &[false, true, true, false, false, true]),
            [Some(false), Some(true), None, Some(false), None, Some(true)]
        );
        assert_eq!(m.flaps(), 4);
    }

    #[test]
    fn alternating_results_never_flip_two_and_two() {
        for mut m in [RiseFall::new(2, 2), RiseFall::new_down(2, 2)] {
            let was = m.is_up();
            for i in 0..100 {
                assert_eq!(m.record(i % 2 == 0), None, "result {i}");
            }
            assert_eq!(m.is_up(), was);
            assert_eq!(m.flaps(), 0);
        }
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut m = RiseFall::new(2, 3);
        assert_eq!(feed(&mut m, &[false, false, true, false, false]), [None; 5]);
        assert_eq!(m.record(false), Some(false));
    }

    #[test]
    fn flaps_count_every_change() {
        let mut m = RiseFall::new(2, 2);
        for _ in 0..5 {
            assert_eq!(feed(&mut m, &[false, false]), [None, Some(false)]);
            assert_eq!(feed(&mut m, &[true, true]), [None, Some(true)]);
        }
        assert_eq!(m.flaps(), 10);
        assert!(m.is_up());
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut m = RiseFall::new(0, 0);
        assert_eq!(m.record(false), Some(false));
        assert_eq!(m.record(true), Some(true));
    }

    // ---- jitter ----

    #[test]
    fn jitter_stays_within_ten_percent() {
        for interval in [
            Duration::from_millis(1),
            Duration::from_millis(100),
            Duration::from_secs(1),
            Duration::from_secs(4000),
            Duration::from_nanos(7),
        ] {
            let n = interval.as_nanos();
            let (lo, hi) = (n - n / 10, n + n / 10 + 1);
            let mut seen_below = false;
            let mut seen_above = false;
            for seed in 0..10_000 {
                let j = jittered(interval, seed).as_nanos();
                assert!((lo..=hi).contains(&j), "{interval:?} seed {seed}: {j}ns");
                seen_below |= j < n;
                seen_above |= j > n;
            }
            if n >= 100 {
                assert!(
                    seen_below && seen_above,
                    "{interval:?} is jittered both ways"
                );
            }
        }
        assert_eq!(jittered(Duration::ZERO, 42), Duration::ZERO);
    }

    #[test]
    fn jitter_is_deterministic_and_spread() {
        let i = Duration::from_secs(1);
        assert_eq!(jittered(i, 7), jittered(i, 7));
        let distinct: std::collections::HashSet<_> = (0..100).map(|s| jittered(i, s)).collect();
        assert!(
            distinct.len() > 90,
            "only {} distinct values",
            distinct.len()
        );
    }

    // ---- priority ----

    fn track(check: &str, weight: i32) -> Track {
        Track {
            check: check.to_owned(),
            weight,
        }
    }

    fn downs<'a>(names: &'a [&'a str]) -> impl Fn(&str) -> bool + 'a {
        move |n| names.contains(&n)
    }

    #[test]
    fn negative_weight_applies_while_failing() {
        // keepalived's usual example: master 101, backup 100, `weight -2`;
        // the master's check fails and the backup wins.
        let t = [track("chk_haproxy", -2)];
        assert_eq!(effective_priority(101, &t, &downs(&[])), 101);
        assert_eq!(effective_priority(101, &t, &downs(&["chk_haproxy"])), 99);
        assert!(effective_priority(101, &t, &downs(&["chk_haproxy"])) < 100);
    }

    #[test]
    fn positive_weight_applies_while_passing() {
        // keepalived: "weight 2": priority rises by 2 while the script succeeds.
        let t = [track("chk", 2)];
        assert_eq!(effective_priority(100, &t, &downs(&[])), 102);
        assert_eq!(effective_priority(100, &t, &downs(&["chk"])), 100);
    }

    #[test]
    fn weights_add_up() {
        let t = [track("a", -60), track("b", -10), track("c", 5)];
        assert_eq!(effective_priority(150, &t, &downs(&[])), 155);
        assert_eq!(effective_priority(150, &t, &downs(&["a"])), 95);
        assert_eq!(effective_priority(150, &t, &downs(&["a", "b", "c"])), 80);
    }

    #[test]
    fn priority_is_clamped_to_1_through_254() {
        assert_eq!(
            effective_priority(10, &[track("a", -60)], &downs(&["a"])),
            1
        );
        assert_eq!(
            effective_priority(1, &[track("a", -254)], &downs(&["a"])),
            1
        );
        assert_eq!(effective_priority(250, &[track("a", 10)], &downs(&[])), 254);
        assert_eq!(
            effective_priority(254, &[track("a", 254)], &downs(&[])),
            254
        );
    }

    #[test]
    fn the_owner_is_never_moved() {
        let t = [track("a", -100), track("b", 50)];
        assert_eq!(effective_priority(255, &t, &downs(&["a"])), 255);
        assert_eq!(effective_priority(255, &t, &downs(&[])), 255);
    }

    #[test]
    fn weight_zero_means_fault_not_priority() {
        let t = [track("a", 0), track("b", -5)];
        assert_eq!(effective_priority(100, &t, &downs(&["a"])), 100);
        assert!(tracked_fault(&t, &downs(&["a"])));
        assert!(!tracked_fault(&t, &downs(&["b"])));
        assert!(!tracked_fault(&[], &downs(&["a"])));
    }
}
