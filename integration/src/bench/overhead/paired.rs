//! Paired ratios and their interval: what makes a small difference between
//! two farms measurable on a noisy machine.
//!
//! Each pair is one measurement of A and one of B taken back to back, so
//! whatever slows the machine for a moment (another process, the host of
//! the virtual machine) slows both; the ratio B/A of a pair cancels it.
//! The median of the ratios is the estimate, robust to the odd pair a
//! hiccup hit on one side only; its interval comes from resampling (a
//! percentile bootstrap), which assumes nothing about the distribution of
//! the ratios.
//!
//! Pairs come in groups, one per start of the two farms: two processes
//! started alike still differ by a few per cent, for good (hash seeds,
//! where their memory and threads landed), so pairs of one start are not
//! independent. The bootstrap therefore resamples groups first and pairs
//! within each chosen group (a two-stage cluster bootstrap): the interval
//! is as wide as the difference between starts makes it.

use std::time::Duration;

use crate::bench::stats::{median, median_f64, quantile};

/// Resamples drawn for the bootstrap interval.
pub const RESAMPLES: usize = 2000;

/// The measured times of one operation on A and B, pair by pair.
#[derive(Debug, Clone, Default)]
pub struct Pairs {
    /// A's time of each pair.
    pub a: Vec<Duration>,
    /// B's time of each pair, same order.
    pub b: Vec<Duration>,
    /// The group (start of the farms) of each pair, same order.
    pub group: Vec<usize>,
    /// The group [`Pairs::push`] adds to.
    current: usize,
}

/// What a set of pairs says.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Pairs measured.
    pub pairs: usize,
    /// Median of A's times.
    pub a_median: Duration,
    /// Median of B's times.
    pub b_median: Duration,
    /// Median of the pairs' B/A ratios.
    pub ratio: f64,
    /// 2.5th and 97.5th percentiles of the bootstrap medians: a 95 %
    /// interval of `ratio`.
    pub interval: (f64, f64),
    /// The median ratio of each group.
    pub per_group: Vec<f64>,
}

impl Pairs {
    /// Adds one pair.
    pub fn push(&mut self, a: Duration, b: Duration) {
        self.a.push(a);
        self.b.push(b);
        self.group.push(self.current);
    }

    /// Pairs pushed from now on belong to a new group.
    pub fn next_group(&mut self) {
        if self.group.last() == Some(&self.current) {
            self.current += 1;
        }
    }

    /// The ratios of each group.
    fn groups(&self) -> Vec<Vec<f64>> {
        let mut groups: Vec<Vec<f64>> = Vec::new();
        for ((a, b), &g) in self.a.iter().zip(&self.b).zip(&self.group) {
            if a.is_zero() {
                continue;
            }
            if groups.len() <= g {
                groups.resize(g + 1, Vec::new());
            }
            groups[g].push(b.as_secs_f64() / a.as_secs_f64());
        }
        groups.retain(|g| !g.is_empty());
        groups
    }

    /// Each pair's B/A (a pair whose A took no measurable time is left out).
    pub fn ratios(&self) -> Vec<f64> {
        self.a
            .iter()
            .zip(&self.b)
            .filter(|(a, _)| !a.is_zero())
            .map(|(a, b)| b.as_secs_f64() / a.as_secs_f64())
            .collect()
    }

    /// The estimate and its interval; `seed` makes the bootstrap
    /// reproducible. `None` without pairs.
    pub fn summary(&self, seed: u64) -> Option<Summary> {
        let ratios = self.ratios();
        if ratios.is_empty() {
            return None;
        }
        let ratio = median_f64(&ratios);
        let groups = self.groups();
        let mut rng = SplitMix(seed);
        let mut medians = Vec::with_capacity(RESAMPLES);
        let mut sample = Vec::with_capacity(ratios.len());
        for _ in 0..RESAMPLES {
            sample.clear();
            for _ in 0..groups.len() {
                let group = &groups[rng.below(groups.len())];
                for _ in 0..group.len() {
                    sample.push(group[rng.below(group.len())]);
                }
            }
            medians.push(median_f64(&sample));
        }
        let interval = (
            quantile(&medians, 0.025).unwrap_or(f64::NAN),
            quantile(&medians, 0.975).unwrap_or(f64::NAN),
        );
        Some(Summary {
            pairs: ratios.len(),
            a_median: median(&self.a),
            b_median: median(&self.b),
            ratio,
            interval,
            per_group: groups.iter().map(|g| median_f64(g)).collect(),
        })
    }
}

/// SplitMix64: a small, good-enough generator for resampling indices (no
/// dependency for one loop).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is negligible for the
    /// few thousand pairs a run has.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1000.0)
    }

    #[test]
    fn drift_common_to_both_sides_cancels() {
        // B is 3 % slower than A; the machine's speed swings by a factor
        // of two from pair to pair, as on a shared VM.
        let mut pairs = Pairs::default();
        for i in 0..400 {
            let load = 1.0 + (i % 7) as f64 / 7.0 + (i % 3) as f64 * 0.2;
            pairs.push(ms(5.0 * load), ms(5.0 * load * 1.03));
        }
        let s = pairs.summary(7).unwrap();
        assert!((s.ratio - 1.03).abs() < 1e-9, "{s:?}");
        assert!(s.interval.0 <= s.ratio && s.ratio <= s.interval.1);
        assert!(s.interval.1 - s.interval.0 < 1e-6, "{s:?}");
        assert_eq!(s.pairs, 400);
    }

    #[test]
    fn the_interval_widens_with_noise_and_holds_the_truth() {
        let mut pairs = Pairs::default();
        let mut rng = SplitMix(1);
        for _ in 0..300 {
            let noise = 1.0 + (rng.next() % 1000) as f64 / 2500.0; // up to +40 %
            let other = 1.0 + (rng.next() % 1000) as f64 / 2500.0;
            pairs.push(ms(10.0 * noise), ms(10.0 * other));
        }
        let s = pairs.summary(3).unwrap();
        assert!(s.interval.0 < 1.0 && 1.0 < s.interval.1, "{s:?}");
        assert!(s.interval.1 - s.interval.0 > 0.01, "{s:?}");
        assert!(Pairs::default().summary(1).is_none());
    }

    #[test]
    fn a_difference_between_starts_widens_the_interval() {
        // Each start of the farms has its own bias (+-4 %), the pairs
        // within a start agree closely.
        let mut pairs = Pairs::default();
        for (g, bias) in [1.04, 0.96, 1.03, 0.97].iter().enumerate() {
            pairs.next_group();
            for i in 0..100 {
                let jitter = 1.0 + (i % 5) as f64 * 0.001;
                pairs.push(ms(5.0), ms(5.0 * bias * jitter));
            }
            assert_eq!(pairs.group.last(), Some(&g));
        }
        let s = pairs.summary(11).unwrap();
        assert_eq!(s.per_group.len(), 4);
        assert!(s.interval.1 - s.interval.0 > 0.04, "{s:?}");
        assert!(s.interval.0 < 1.0 && 1.0 < s.interval.1, "{s:?}");
    }
}
