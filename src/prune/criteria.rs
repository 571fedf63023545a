//! Filter-ranking criteria. A criterion sees the current (compacted) network and the
//! reference split, and scores every alive filter; lower scores are pruned first.
//!
//! LRP and Taylor criteria plug in here without touching the schedule or the runner.

use super::plan::Plan;
use crate::data::split::Split;
use crate::model::network::batch_ranges;
use crate::model::prefix::Start;
use crate::model::Network;
use crate::spec::LayerNorm;
use anyhow::Result;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// What a criterion may look at. The reference split is the small training split, never the
/// test split (docs/method.md: test data only draws curves).
pub struct ScoreInput<'a> {
    /// The current network, compacted: each group's convs have exactly its alive channels.
    pub net: &'a Network,
    /// The pruning groups (of the intact network; node indices are shared).
    pub plan: &'a Plan,
    pub reference: &'a Split,
    pub batch_size: usize,
    /// Where a pass over the reference split may start (the intact network's stored
    /// prefix); criteria that run the network on it may use it.
    pub from: Option<Start<'a>>,
}

pub trait Criterion {
    /// One score per alive channel of each pruning group, in compacted order.
    fn score(&mut self, input: &ScoreInput) -> Result<Vec<Vec<f64>>>;
}

/// Filter weight norm (Li et al. 2017): `p = 1` for L1, `p = 2` for L2.
pub struct WeightNorm {
    pub p: u8,
}

impl Criterion for WeightNorm {
    fn score(&mut self, input: &ScoreInput) -> Result<Vec<Vec<f64>>> {
        let per_conv = input
            .net
            .convs()
            .map(|c| {
                let w = c.weight.flatten_from(1)?;
                let norm = if self.p == 1 {
                    w.abs()?.sum(1)?
                } else {
                    w.sqr()?.sum(1)?.sqrt()?
                };
                Ok(norm.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(input.plan.group_scores(&per_conv))
    }
}

/// Another criterion's scores normalised per pruning group (Yeom et al.'s `--norm`):
/// a per-group scale, so the order within a group is the inner criterion's own.
pub struct Normalized {
    pub inner: Box<dyn Criterion>,
    pub norm: LayerNorm,
}

impl Criterion for Normalized {
    fn score(&mut self, input: &ScoreInput) -> Result<Vec<Vec<f64>>> {
        Ok(postprocess(self.inner.score(input)?, false, self.norm))
    }
}

/// Uniform random scores from the run's seeded stream: a random pruning order.
pub struct RandomScores {
    pub rng: ChaCha8Rng,
}

impl Criterion for RandomScores {
    fn score(&mut self, input: &ScoreInput) -> Result<Vec<Vec<f64>>> {
        Ok(input
            .plan
            .sizes_in(input.net)
            .into_iter()
            .map(|n| (0..n).map(|_| self.rng.random::<f64>()).collect())
            .collect())
    }
}

/// First-order Taylor expansion of the loss (Molchanov et al. 2017): a filter's score is
/// |mean over space of activation × ∂loss/∂activation|, averaged over the reference images,
/// then L2-normalised per layer. The gradient at each conv output is read from a zero
/// "probe" variable added to it, since Candle keeps gradients only for variables.
pub struct Taylor;

impl Criterion for Taylor {
    fn score(&mut self, input: &ScoreInput) -> Result<Vec<Vec<f64>>> {
        use candle_core::{DType, Var};
        let net = input.net;
        let refset = input.reference;
        let mut sums: Vec<Vec<f64>> = net
            .filters_per_conv()
            .iter()
            .map(|&n| vec![0.0; n])
            .collect();
        let n = refset.labels.len();
        for (start, len) in batch_ranges(n, input.batch_size) {
            let x = refset.images.narrow(0, start, len)?;
            let labels = candle_core::Tensor::new(&refset.labels[start..start + len], x.device())?;
            let mut taps = Vec::new();
            let logits = net.forward_tapped(&x, |node, y| {
                if !matches!(net.nodes[node].op, crate::model::Op::Conv(_)) {
                    return Ok(y);
                }
                let probe = Var::zeros(y.shape(), y.dtype(), y.device())?;
                let y = (y + probe.as_tensor())?;
                taps.push((y.detach(), probe));
                Ok(y)
            })?;
            let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
            let grads = loss.backward()?;
            for (k, (a, probe)) in taps.iter().enumerate() {
                let g = grads
                    .get(probe.as_tensor())
                    .ok_or_else(|| anyhow::anyhow!("no gradient at conv {k}"))?;
                let per = (a * g)?
                    .mean((2, 3))?
                    .abs()?
                    .sum(0)?
                    .to_dtype(DType::F64)?
                    .to_vec1::<f64>()?;
                for (s, v) in sums[k].iter_mut().zip(per) {
                    *s += v / n as f64;
                }
            }
        }
        let grouped = input.plan.group_scores(&sums);
        Ok(postprocess(grouped, false, LayerNorm::L2))
    }
}

/// Optional |·| then per-group normalisation (Yeom: v / Σ v) of `[group][channel]` scores.
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
