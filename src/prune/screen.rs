//! The screened layer search (`control.search_screen = k`): a round ranks its offers by a
//! first-order estimate of the A each would cost and measures only the `k` cheapest-looking
//! exactly (docs/method.md, "The screened search").
//!
//! The estimate is a Taylor expansion, as Molchanov et al. (2017) rank filters by the loss,
//! but of the smoothed A itself: give every channel of a group a gate g = 1 on each of the
//! group's conv outputs (the values its removal zeroes); removing channel c is g_c = 0, so
//! A loses about ∂A/∂g_c = Σ value × ∂A/∂value over the gated values, images and positions.
//! One reverse pass over the values the search already holds gives it for every channel of
//! every group at once ([`crate::lrp::gradient::backward`]).
//!
//! A group that feeds the head's standardisation is removed there as a zero standardised
//! feature, not a zero raw one (its mean is subtracted first): the estimate adds the first
//! order effect of that difference, so it stays the estimate of the removal itself.
//!
//! A reads per-class accuracy or per-class confidence (`control.signal`); accuracy has no
//! gradient, so the screen always differentiates the confidence (the smoothed A). The exact
//! measurement of the `k` screened offers reads the run's own signal, so the estimate only
//! decides which offers are measured, never what one costs.

use super::mask::FilterMask;
use super::plan::{Member, Plan};
use super::signal::Reader;
use crate::lrp::gradient::{backward, channel_dot};
use crate::model::network::batch_ranges;
use crate::model::{Network, Op};
use anyhow::Result;
use candle_core::{DType, Tensor};

/// Per group, per channel of `net` (the network compacted to the current mask, in its own
/// channel order): the first-order estimate of the A the channel's removal costs, from
/// `values` (`net`'s values on `reader`'s control split, one list per batch).
pub fn channel_costs(
    net: &Network,
    values: &[Vec<Tensor>],
    reader: &Reader,
) -> Result<Vec<Vec<f64>>> {
    let plan = reader.plan;
    let d_out = signal_gradient(net, values, reader)?;
    let gates = Gates::of(net, plan);
    let mut costs: Vec<Vec<f64>> = plan.groups.iter().map(|_| Vec::new()).collect();
    for (acts, d) in values.iter().zip(d_out) {
        backward(net, acts, d, gates.lowest, |v, g| {
            gates.add(v, &acts[v], g, net, &mut costs)
        })?;
    }
    Ok(costs)
}

/// The estimated A lost per filter by removing `filters` (unpruned indices, alive in
/// `mask`) of group `group`, from [`channel_costs`].
pub fn offer_cost(costs: &[Vec<f64>], mask: &FilterMask, group: usize, filters: &[usize]) -> f64 {
    let keep = &mask.keep[group];
    let position = |f: usize| keep[..f].iter().filter(|&&k| k).count();
    let total: f64 = filters
        .iter()
        .map(|&f| costs[group].get(position(f)).copied().unwrap_or(0.0))
        .sum();
    total / filters.len().max(1) as f64
}

/// Where each group's gates sit: value → group, for conv outputs and the head's
/// standardisation.
struct Gates {
    /// `(value, group)` of every group's conv outputs.
    conv: Vec<(usize, usize)>,
    /// `(value, group, features per channel, first feature, features)` of standardisations
    /// a group feeds.
    standardize: Vec<(usize, usize, usize, usize, usize)>,
    /// The lowest value gated: the reverse pass needs go no further down.
    lowest: usize,
}

impl Gates {
    fn of(net: &Network, plan: &Plan) -> Self {
        let mut conv = Vec::new();
        let mut standardize = Vec::new();
        let sizes = plan.sizes_in(net);
        for (g, group) in plan.groups.iter().enumerate() {
            for m in &group.members {
                match *m {
                    Member::Out(n) => conv.push((n + 1, g)),
                    Member::In { node, hw, .. }
                        if matches!(net.nodes[node].op, Op::Standardize { .. }) =>
                    {
                        let at = plan.offset_in(m, &sizes);
                        standardize.push((node + 1, g, hw, at * hw, sizes[g] * hw))
                    }
                    // A per-channel affine behind a concatenation keeps its shift when the
                    // conv output is gated: the estimate leaves that difference out.
                    Member::In { .. } => {}
                }
            }
        }
        let lowest = conv
            .iter()
            .map(|&(v, _)| v)
            .min()
            .unwrap_or(net.nodes.len());
        Self {
            conv,
            standardize,
            lowest,
        }
    }

    /// Add value `v`'s part (its value `a`, its gradient `g`) to its group's channel costs.
    fn add(
        &self,
        v: usize,
        a: &Tensor,
        g: &Tensor,
        net: &Network,
        costs: &mut [Vec<f64>],
    ) -> candle_core::Result<()> {
        for &(_, group) in self.conv.iter().filter(|(at, _)| *at == v) {
            let per = channel_dot(a, g)?;
            add_into(&mut costs[group], &per);
        }
        for &(_, group, hw, first, len) in self.standardize.iter().filter(|(at, ..)| *at == v) {
            let Op::Standardize { mean, inv_std } = &net.nodes[v - 1].op else {
                continue;
            };
            // Removal sets the standardised feature to 0; a zero raw feature would leave
            // −mean·inv_std there, which the conv gates assumed: subtract its effect.
            let shift = (mean.flatten_all()? * inv_std.flatten_all()?)?;
            let per_feature = g.sum(0)?.flatten_all()?.mul(&shift)?;
            let per_feature = per_feature.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            let per: Vec<f64> = per_feature[first..first + len]
                .chunks(hw.max(1))
                .map(|c| -c.iter().sum::<f64>())
                .collect();
            add_into(&mut costs[group], &per);
        }
        Ok(())
    }
}

fn add_into(acc: &mut Vec<f64>, part: &[f64]) {
    if acc.len() < part.len() {
        acc.resize(part.len(), 0.0);
    }
    for (a, p) in acc.iter_mut().zip(part) {
        *a += p;
    }
}

/// ∂A/∂logits of the smoothed A (harmonic mean over the present classes of each class's
/// mean true-class probability, each floored at `reader.floor`), one tensor per batch.
fn signal_gradient(net: &Network, values: &[Vec<Tensor>], reader: &Reader) -> Result<Vec<Tensor>> {
    let labels = &reader.control.labels;
    let out = net.nodes.len();
    let probs: Vec<Vec<Vec<f32>>> = values
        .iter()
        .map(|acts| {
            candle_nn::ops::softmax_last_dim(&acts[out])?
                .to_dtype(DType::F32)?
                .to_vec2()
        })
        .collect::<candle_core::Result<_>>()?;
    let p_true = |i: usize, row: &[f32]| row[labels[i] as usize] as f64;
    let classes = reader.n_classes;
    let (mut sum, mut count) = (vec![0.0; classes], vec![0usize; classes]);
    let rows = probs.iter().flatten();
    for (i, row) in rows.clone().enumerate() {
        sum[labels[i] as usize] += p_true(i, row);
        count[labels[i] as usize] += 1;
    }
    let present: Vec<usize> = (0..classes).filter(|&c| count[c] > 0).collect();
    let score = |c: usize| sum[c] / count[c] as f64;
    let inv_sum: f64 = present
        .iter()
        .map(|&c| 1.0 / score(c).max(reader.floor))
        .sum();
    let m = present.len() as f64;
    let h = m / inv_sum;
    // ∂H/∂s_c = H² / (m s_c²) where s_c is above the floor (0 below it), and s_c is a mean
    // over the class's images.
    let weight = |c: usize| {
        let s = score(c);
        if s > reader.floor {
            h * h / (m * s * s) / count[c] as f64
        } else {
            0.0
        }
    };
    let ranges = batch_ranges(labels.len(), reader.batch);
    let device = net.device();
    ranges
        .zip(&probs)
        .map(|((start, len), batch)| {
            let mut d = Vec::with_capacity(len * classes);
            for (j, row) in batch.iter().enumerate() {
                let y = labels[start + j] as usize;
                let k = weight(y) * row[y] as f64;
                // ∂p_y/∂z_j = p_y (δ_jy − p_j)
                d.extend(
                    row.iter()
                        .enumerate()
                        .map(|(c, &p)| (k * ((c == y) as u8 as f64 - p as f64)) as f32),
                );
            }
            let t = Tensor::from_vec(d, (len, classes), device)?;
            Ok(t.to_dtype(values[0][out].dtype())?)
        })
        .collect()
}

/// `LRPRUNE_SCREEN_CHECK=1`: one round's offers as the screen ranked them (`estimated`)
/// beside what measuring them gave (`measured`, A lost per filter): the rank correlation,
/// and whether the measured cheapest is among the `k` the screen would have measured.
pub fn log_check(asked: &[(usize, usize)], estimated: &[f64], measured: &[f64], k: usize) {
    let rank = |v: &[f64]| -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let mut r = vec![0.0; v.len()];
        for (pos, &i) in idx.iter().enumerate() {
            r[i] = pos as f64;
        }
        r
    };
    let (re, rm) = (rank(estimated), rank(measured));
    let n = re.len() as f64;
    let d2: f64 = re.iter().zip(&rm).map(|(a, b)| (a - b).powi(2)).sum();
    let rho = if n > 1.0 {
        1.0 - 6.0 * d2 / (n * (n * n - 1.0))
    } else {
        1.0
    };
    let best = (0..measured.len()).min_by(|&a, &b| measured[a].total_cmp(&measured[b]));
    let best_rank = best.map_or(0, |b| re[b] as usize);
    eprintln!(
        "screen-check: {} offers, Spearman {rho:.2}, measured best (group {}) ranked {} by the estimate (k = {k}: {})",
        asked.len(),
        best.map_or(0, |b| asked[b].0),
        best_rank + 1,
        if best_rank < k { "found" } else { "missed" }
    );
}
