//! Classification metrics, per class first: pruning hurts classes unevenly, and the
//! per-class view is where cascading collapse shows.

use crate::data::split::Split;
use crate::model::network::batch_ranges;
use crate::model::prefix::{self, Start};
use crate::model::Network;
use anyhow::{bail, Result};
use candle_core::D;

/// Floor on each class accuracy inside the harmonic mean, so that one dead class does not
/// make it undefined (docs/method.md). Recorded in every run's metadata.
pub const HARMONIC_FLOOR: f64 = 1e-3;

#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub top1: f64,
    pub class_acc: Vec<f64>,
    /// Mean of per-class accuracies (class-averaged accuracy).
    pub balanced: f64,
    /// Harmonic mean of per-class accuracies, each floored at `HARMONIC_FLOOR`.
    pub harmonic: f64,
}

pub fn from_predictions(pred: &[u32], labels: &[u32], n_classes: usize) -> Metrics {
    let mut hit = vec![0usize; n_classes];
    let mut count = vec![0usize; n_classes];
    for (&p, &y) in pred.iter().zip(labels) {
        count[y as usize] += 1;
        hit[y as usize] += (p == y) as usize;
    }
    let class_acc: Vec<f64> = hit
        .iter()
        .zip(&count)
        .map(|(&h, &c)| if c == 0 { 0.0 } else { h as f64 / c as f64 })
        .collect();
    let present: Vec<f64> = class_acc
        .iter()
        .zip(&count)
        .filter(|(_, &c)| c > 0)
        .map(|(a, _)| *a)
        .collect();
    let k = present.len().max(1) as f64;
    Metrics {
        top1: hit.iter().sum::<usize>() as f64 / pred.len().max(1) as f64,
        balanced: present.iter().sum::<f64>() / k,
        harmonic: harmonic_mean(&present, HARMONIC_FLOOR),
        class_acc,
    }
}

/// The last step of a curve before its first point more than `tol` below the first (`None`
/// for an empty curve): the safe rate's step (`summary.parquet`'s `safe_rate` on balanced
/// accuracy within 1 point, `lrprune export --safe`).
pub fn safe_step(values: &[f64], tol: f64) -> Option<usize> {
    let &v0 = values.first()?;
    Some(values.iter().take_while(|&&v| v >= v0 - tol).count().max(1) - 1)
}

/// Balanced accuracy may fall this far below step 0's and still count as safe.
pub const SAFE_TOLERANCE: f64 = 0.01;

pub fn harmonic_mean(acc: &[f64], floor: f64) -> f64 {
    if acc.is_empty() {
        return 0.0;
    }
    acc.len() as f64 / acc.iter().map(|a| 1.0 / a.max(floor)).sum::<f64>()
}

/// Logits of `net` on `split` in batches; with `from`, each batch starts at the intact
/// network's stored prefix (the split must be the one the cache was built on).
pub fn logits(
    net: &Network,
    split: &Split,
    batch: usize,
    from: Option<Start>,
) -> Result<candle_core::Tensor> {
    let outs = batch_ranges(split.labels.len(), batch)
        .map(|(start, len)| prefix::forward(net, &split.images, from, start, len))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let logits = candle_core::Tensor::cat(&outs, 0)?;
    let flat = logits.flatten_all()?.to_vec1::<f32>()?;
    if flat.iter().any(|v| !v.is_finite()) {
        bail!("the network produced NaN/Inf logits (check the weights file and the preprocessing preset)");
    }
    Ok(logits)
}

/// Predicted classes of `net` on `split`, in batches (from the stored prefix if `from`).
pub fn predict(
    net: &Network,
    split: &Split,
    batch: usize,
    from: Option<Start>,
) -> Result<Vec<u32>> {
    Ok(logits(net, split, batch, from)?
        .argmax(D::Minus1)?
        .to_vec1::<u32>()?)
}

pub fn evaluate(net: &Network, split: &Split, n_classes: usize, batch: usize) -> Result<Metrics> {
    evaluate_from(net, split, n_classes, batch, None)
}

/// [`evaluate`], starting from the intact network's stored prefix when given.
pub fn evaluate_from(
    net: &Network,
    split: &Split,
    n_classes: usize,
    batch: usize,
    from: Option<Start>,
) -> Result<Metrics> {
    let pred = predict(net, split, batch, from)?;
    Ok(from_predictions(&pred, &split.labels, n_classes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_class_balanced_and_harmonic() {
        // class 0: 2/2 right, class 1: 1/2, class 2: 0/1.
        let m = from_predictions(&[0, 0, 1, 0, 1], &[0, 0, 1, 1, 2], 3);
        assert_eq!(m.class_acc, vec![1.0, 0.5, 0.0]);
        assert!((m.top1 - 0.6).abs() < 1e-12);
        assert!((m.balanced - 0.5).abs() < 1e-12);
        let h = 3.0 / (1.0 + 2.0 + 1.0 / HARMONIC_FLOOR);
        assert!((m.harmonic - h).abs() < 1e-12);
    }
}
