//! The controller's signal A: the harmonic mean of per-class scores on the **control split**
//! (the small training split; never the test split).
//!
//! The controller's A (docs/method.md) uses per-class accuracy. On the control split the head is usually 100%
//! right at rate 0, so accuracy stays flat until damage is already done; `confidence`
//! (per-class mean softmax probability of the true class) is a smoothed A that moves with
//! the first small losses of margin. Which one the controller reads is `control.signal`.

use super::{FilterMask, Plan};
use crate::data::split::Split;
use crate::eval::{self, harmonic_mean};
use crate::model::prefix::PrefixCache;
use crate::model::Network;
use crate::spec::Signal;
use anyhow::{bail, Result};
use candle_core::{Tensor, D};

/// Per-class scores from `(N, classes)` logits: accuracy or mean true-class probability.
pub fn class_scores(
    logits: &Tensor,
    labels: &[u32],
    n_classes: usize,
    signal: Signal,
) -> Result<Vec<f64>> {
    let per_sample: Vec<f64> = match signal {
        Signal::Accuracy => logits
            .argmax(D::Minus1)?
            .to_vec1::<u32>()?
            .iter()
            .zip(labels)
            .map(|(p, y)| (p == y) as u8 as f64)
            .collect(),
        Signal::Confidence => {
            let p = candle_nn::ops::softmax_last_dim(logits)?.to_vec2::<f32>()?;
            p.iter()
                .zip(labels)
                .map(|(row, &y)| row[y as usize] as f64)
                .collect()
        }
    };
    if per_sample.iter().any(|v| !v.is_finite()) {
        bail!("the network produced NaN/Inf logits on the control split");
    }
    let mut sum = vec![0.0; n_classes];
    let mut count = vec![0usize; n_classes];
    for (v, &y) in per_sample.iter().zip(labels) {
        sum[y as usize] += v;
        count[y as usize] += 1;
    }
    Ok(sum
        .iter()
        .zip(&count)
        .map(|(s, &c)| if c == 0 { 0.0 } else { s / c as f64 })
        .collect())
}

/// A and its per-class scores, from logits of the control split.
pub fn from_logits(
    logits: &Tensor,
    control: &Split,
    n_classes: usize,
    signal: Signal,
    floor: f64,
) -> Result<(f64, Vec<f64>)> {
    let class = class_scores(logits, &control.labels, n_classes, signal)?;
    let present: Vec<f64> = class
        .iter()
        .enumerate()
        .filter(|(c, _)| control.labels.contains(&(*c as u32)))
        .map(|(_, a)| *a)
        .collect();
    Ok((harmonic_mean(&present, floor), class))
}

/// How A is read: on which split, which score per class, its floor, and how to run it.
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    /// The control split (never the test split).
    pub control: &'a Split,
    pub signal: Signal,
    pub floor: f64,
    pub n_classes: usize,
    pub batch: usize,
    /// The intact network's stored prefix on the control split, if kept.
    pub prefix: Option<&'a PrefixCache>,
    pub plan: &'a Plan,
}

impl Reader<'_> {
    /// A and the per-class scores of `net` (pruned by `mask`) on the control split.
    pub fn measure(&self, net: &Network, mask: &FilterMask) -> Result<(f64, Vec<f64>)> {
        let from = self.prefix.map(|c| self.plan.start(c, mask));
        let logits = eval::logits(net, self.control, self.batch, from)?;
        self.read(&logits)
    }

    /// A and the per-class scores from logits on the control split.
    pub fn read(&self, logits: &Tensor) -> Result<(f64, Vec<f64>)> {
        from_logits(
            logits,
            self.control,
            self.n_classes,
            self.signal,
            self.floor,
        )
    }
}
