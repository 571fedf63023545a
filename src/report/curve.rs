//! Curve arithmetic on one run's (rate, metric) points, sorted by rate.

/// Area under the piecewise-linear curve, normalised by its rate span:
/// (1/r_K) Σ (r_i − r_{i−1})(m_i + m_{i−1})/2 — exact for the recorded polyline (docs/design-choices.md, "Results").
pub fn auc(rates: &[f64], values: &[f64]) -> f64 {
    let span = rates.last().copied().unwrap_or(0.0) - rates.first().copied().unwrap_or(0.0);
    if rates.len() < 2 || span <= 0.0 {
        return values.first().copied().unwrap_or(f64::NAN);
    }
    let area: f64 = rates
        .windows(2)
        .zip(values.windows(2))
        .map(|(r, v)| (r[1] - r[0]) * (v[0] + v[1]) / 2.0)
        .sum();
    area / span
}

/// Linear interpolation of the curve at `x`; `None` outside the recorded range.
pub fn at(rates: &[f64], values: &[f64], x: f64) -> Option<f64> {
    let last = *rates.last()?;
    // A curve's achieved last rate may fall short of `max_rate` by less than one channel in
    // a thousand (a whole number of channels is removed): that still counts as reaching it.
    if x < rates[0] - 1e-9 || x > last + 1e-3 {
        return None;
    }
    for i in 1..rates.len() {
        if x <= rates[i] + 1e-12 {
            let (r0, r1) = (rates[i - 1], rates[i]);
            if r1 - r0 <= 1e-15 {
                return Some(values[i]);
            }
            let t = ((x - r0) / (r1 - r0)).clamp(0.0, 1.0);
            return Some(values[i - 1] + t * (values[i] - values[i - 1]));
        }
    }
    Some(values[values.len() - 1])
}

/// The highest recorded rate up to which every point stays within `tol` of the first point
/// (the step [`crate::eval::safe_step`] picks).
pub fn safe_rate(rates: &[f64], values: &[f64], tol: f64) -> f64 {
    crate::eval::safe_step(values, tol).map_or(0.0, |k| rates[k])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_uneven_steps() {
        // (0,1) → (0.1,0.8) → (0.4,0.5) → (0.9,0.1): areas .09 + .195 + .15 = .435 over 0.9.
        let r = [0.0, 0.1, 0.4, 0.9];
        let v = [1.0, 0.8, 0.5, 0.1];
        assert!((auc(&r, &v) - 0.435 / 0.9).abs() < 1e-12);
        assert_eq!(at(&r, &v, 0.25), Some(0.65));
        assert_eq!(safe_rate(&r, &v, 0.25), 0.1);
        assert_eq!(at(&r, &v, 0.95), None);
        // A last rate 2e-5 short of 0.9 (8215 of 9128 channels) still reaches 0.9.
        assert_eq!(at(&[0.0, 0.89998], &[1.0, 0.1], 0.9), Some(0.1));
    }
}
