//! Per-filter relevance: each conv output's relevance summed over space and reference images,
//! kept per true class (the accuracy-aware controller weighs classes), and the LRP pruning
//! criterion built on it.

use super::composite::Composite;
use super::propagate::{per_sample_filter_relevance, reverse};
use crate::data::split::Split;
use crate::model::network::batch_ranges;
use crate::model::prefix::{self, Start};
use crate::model::Network;
use crate::prune::criteria::{Criterion, ScoreInput};
use crate::spec::{LayerNorm, LrpSettings};
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

/// `per_class[conv][class][filter]`: relevance summed over the class's reference images.
#[derive(Debug, Clone)]
pub struct FilterRelevance {
    pub per_class: Vec<Vec<Vec<f64>>>,
}

impl FilterRelevance {
    /// Summed over classes: `[conv][filter]`.
    pub fn total(&self) -> Vec<Vec<f64>> {
        self.per_class
            .iter()
            .map(|classes| {
                let n = classes.first().map_or(0, Vec::len);
                (0..n).map(|f| classes.iter().map(|c| c[f]).sum()).collect()
            })
            .collect()
    }
}

/// Relevance of every filter of `net` on `split`, one-hot on the true labels, in batches.
/// With `from`, each batch starts from the intact network's stored prefix on `split`.
pub fn filter_relevance(
    net: &Network,
    split: &Split,
    composite: &Composite,
    n_classes: usize,
    batch: usize,
    from: Option<Start>,
) -> Result<FilterRelevance> {
    let filters = net.filters_per_conv();
    let mut acc: Vec<Tensor> = Vec::new();
    for (start, len) in batch_ranges(split.labels.len(), batch) {
        let labels = &split.labels[start..start + len];
        let acts = prefix::trace(net, &split.images, from, start, len)?;
        // (classes, N) one-hot of the true labels, times (N, filters) → per-class sums.
        let onehot = super::propagate::one_hot(labels, n_classes, &acts[0])?
            .t()?
            .to_dtype(DType::F64)?;
        let rel = reverse(net, acts, labels, composite, false)?;
        for (k, r) in per_sample_filter_relevance(&rel)?.into_iter().enumerate() {
            let sums = onehot.matmul(&r)?;
            if acc.len() <= k {
                acc.push(sums);
            } else {
                acc[k] = (&acc[k] + sums)?;
            }
        }
    }
    let per_class = acc
        .iter()
        .zip(&filters)
        .map(|(t, _)| Ok(t.to_vec2::<f64>()?))
        .collect::<Result<Vec<_>>>()?;
    for (k, layer) in per_class.iter().enumerate() {
        if layer.iter().flatten().any(|v| !v.is_finite()) {
            bail!("LRP produced NaN/Inf relevance at conv {k} (check the weights and inputs)");
        }
    }
    Ok(FilterRelevance { per_class })
}

/// Optional |·| then per-layer normalisation (Yeom: v / Σ v) of `[conv][filter]` scores.
pub fn postprocess(scores: Vec<Vec<f64>>, abs: bool, norm: LayerNorm) -> Vec<Vec<f64>> {
    scores
        .into_iter()
        .map(|layer| {
            let layer: Vec<f64> = if abs {
                layer.iter().map(|v| v.abs()).collect()
            } else {
                layer
            };
            let d = match norm {
                LayerNorm::None => 1.0,
                LayerNorm::Sum => layer.iter().sum::<f64>(),
                LayerNorm::L2 => layer.iter().map(|v| v * v).sum::<f64>().sqrt(),
            };
            let d = if d.abs() < 1e-30 { 1.0 } else { d.abs() };
            layer.into_iter().map(|v| v / d).collect()
        })
        .collect()
}

/// LRP filter ranking on the reference split.
pub struct LrpCriterion {
    pub composite: Composite,
    pub settings: LrpSettings,
    pub n_classes: usize,
}

impl Criterion for LrpCriterion {
    fn score(&mut self, input: &ScoreInput) -> Result<Vec<Vec<f64>>> {
        let rel = filter_relevance(
            input.net,
            input.reference,
            &self.composite,
            self.n_classes,
            input.batch_size,
            input.from,
        )?;
        Ok(postprocess(
            rel.total(),
            self.settings.abs,
            self.settings.normalize,
        ))
    }
}
