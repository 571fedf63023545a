//! Paired statistics against the baseline method: each seed's AUC ratio to the baseline's
//! run on the same seed (same data split, same head), wins and losses over seeds, and a
//! bootstrap 95 % interval of the mean ratio. Seeds pair the methods, so the spread of the
//! ratio is far smaller than that of either method's AUC across seeds.

use rand::{Rng, SeedableRng};

/// Resamples drawn for the bootstrap interval.
pub const BOOTSTRAP_REPS: usize = 10_000;

/// Percentile bootstrap 95 % interval of the mean of `values` (resampling with
/// replacement, `BOOTSTRAP_REPS` times, from a fixed seed so a report is reproducible).
/// `None` for fewer than two values.
pub fn bootstrap_mean_ci(values: &[f64]) -> Option<(f64, f64)> {
    if values.len() < 2 || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x006c_7270_7275_6e65);
    let n = values.len();
    let mut means: Vec<f64> = (0..BOOTSTRAP_REPS)
        .map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let q = |p: f64| {
        means[((p * (BOOTSTRAP_REPS - 1) as f64).round() as usize).min(BOOTSTRAP_REPS - 1)]
    };
    Some((q(0.025), q(0.975)))
}

/// What the tables show of one curve's paired ratios.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    pub mean: f64,
    pub wins: usize,
    pub losses: usize,
    pub ci: Option<(f64, f64)>,
}

pub fn summarize(ratios: &[f64]) -> Option<Paired> {
    let finite: Vec<f64> = ratios.iter().copied().filter(|r| r.is_finite()).collect();
    if finite.is_empty() {
        return None;
    }
    Some(Paired {
        mean: finite.iter().sum::<f64>() / finite.len() as f64,
        wins: finite.iter().filter(|r| **r > 1.0).count(),
        losses: finite.iter().filter(|r| **r < 1.0).count(),
        ci: bootstrap_mean_ci(&finite),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_interval_on_constructed_cases() {
        // No spread, no interval width.
        assert_eq!(bootstrap_mean_ci(&[1.2, 1.2, 1.2]), Some((1.2, 1.2)));
        // Two values: resampled means are a, (a+b)/2 or b with probabilities 1/4, 1/2, 1/4,
        // so the 2.5 % and 97.5 % quantiles are a and b.
        assert_eq!(bootstrap_mean_ci(&[0.9, 1.1]), Some((0.9, 1.1)));
        // Many values of spread 1: the interval holds the mean, sits inside the range, and
        // is about ±1.96·σ/√n wide (σ = 0.5, n = 100 → ±0.098).
        let v: Vec<f64> = (0..100)
            .map(|i| if i % 2 == 0 { 1.0 } else { 2.0 })
            .collect();
        let (lo, hi) = bootstrap_mean_ci(&v).unwrap();
        assert!(
            lo < 1.5 && hi > 1.5 && lo > 1.35 && hi < 1.65,
            "({lo}, {hi})"
        );
        assert!(
            ((hi - lo) / 2.0 - 0.098).abs() < 0.02,
            "half-width {}",
            (hi - lo) / 2.0
        );
        assert_eq!(bootstrap_mean_ci(&[1.0]), None);
        let p = summarize(&[1.1, 0.9, 1.2, f64::NAN]).unwrap();
        assert_eq!((p.wins, p.losses), (2, 1));
        assert!((p.mean - 1.0667).abs() < 1e-3);
    }
}
