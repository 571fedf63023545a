//! Per-filter relevance: each conv output's relevance summed over space and reference images,
//! kept per true class (the accuracy-aware controller weighs classes). The pruning
//! criterion built on it (groups, normalisation) lives in `prune::relevance`.

use super::composite::Composite;
use super::propagate::{per_sample_filter_relevance, reverse};
use crate::data::split::Split;
use crate::model::network::batch_ranges;
use crate::model::prefix::{self, Start};
use crate::model::Network;
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

/// `per_class[k][class][filter]`: relevance summed over the class's reference images, per
/// conv (or, once grouped by the pruning plan, per group).
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
