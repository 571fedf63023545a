//! Measured layer search (`control.layer_search`): an order-control variant that chooses
//! *where* to prune by the measured effect on the control signal A, and *which* filters
//! within a layer by relevance.
//!
//! Why: every method's collapse on the quickstart coincides with one layer (conv13, the
//! fixed head's input) being drained; a global relevance ranking cannot see that, because
//! per-layer normalisation makes each filter of a wide layer look cheap. Here each round
//! asks every layer for its `search_fraction` least relevant filters, removes each chunk
//! tentatively, measures A on the control split, and keeps the chunk that costs the least A
//! per filter removed. Rounds repeat until the step's quota is met.
//!
//! Cost: one forward per layer and round, but only from the pruned layer on: the inputs of
//! every conv of the current network on the control split are cached, and removing filters
//! of conv L changes nothing before it.

use super::compact::compact;
use super::mask::FilterMask;
use super::select::Scores;
use super::signal::{self, Reader};
use crate::data::split::Split;
use crate::model::prefix::Start;
use crate::model::Network;
use anyhow::Result;
use candle_core::Tensor;

/// The `q` lowest-scored alive filters of `layer` (original indices; ties: lower index).
fn lowest_in_layer(mask: &FilterMask, scores: &Scores, layer: usize, q: usize) -> Vec<usize> {
    let mut alive: Vec<usize> = (0..mask.keep[layer].len())
        .filter(|&f| mask.keep[layer][f])
        .collect();
    alive.sort_by(|&a, &b| {
        scores[layer][a]
            .total_cmp(&scores[layer][b])
            .then(a.cmp(&b))
    });
    alive.truncate(q);
    alive
}

/// The input of every conv of the current network on the control split, per batch.
struct ConvInputs {
    /// `per_batch[b][k]`: input of conv k on batch b.
    per_batch: Vec<Vec<Tensor>>,
}

impl ConvInputs {
    fn build(net: &Network, mask: &FilterMask, control: &Split, reader: &Reader) -> Result<Self> {
        let n = control.labels.len();
        let batch = reader.batch.max(1);
        let conv_at = net.conv_layer_indices();
        let from = reader.prefix.map(|c| Start::for_mask(c, mask));
        let per_batch = (0..n)
            .step_by(batch)
            .map(|s| {
                let len = batch.min(n - s);
                let acts = match &from {
                    Some(f) => f.trace(net, s, len)?,
                    None => net.trace(&control.images.narrow(0, s, len)?)?,
                };
                Ok(conv_at.iter().map(|&i| acts[i].clone()).collect())
            })
            .collect::<Result<_>>()?;
        Ok(Self { per_batch })
    }

    /// Logits of `net` on the control split, running it from conv `k` on.
    fn logits_from(&self, net: &Network, k: usize) -> Result<Tensor> {
        let start = net.conv_layer_indices()[k];
        let outs = self
            .per_batch
            .iter()
            .map(|acts| net.forward_from(start, &acts[k]))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::cat(&outs, 0)?)
    }
}

/// Remove `n` filters from `mask` by measured layer search (see the module docs): each
/// round, every layer offers its `fraction` (of its original width) least relevant filters
/// and the chunk costing the least A per filter is taken.
#[allow(clippy::too_many_arguments)]
pub fn search(
    original: &Network,
    mask: &FilterMask,
    scores: &Scores,
    n: usize,
    fraction: f64,
    min_per_layer: usize,
    control: &Split,
    reader: &Reader,
) -> Result<FilterMask> {
    let mut mask = mask.clone();
    let mut net = compact(original, &mask)?;
    let (mut a_cur, _) = reader.measure(&net, &mask, control)?;
    let mut removed = 0;
    while removed < n {
        let inputs = ConvInputs::build(&net, &mask, control, reader)?;
        // (damage per filter, layer, chosen filters, network, A after)
        let mut best: Option<(f64, usize, Vec<usize>, Network, f64)> = None;
        for layer in 0..mask.keep.len() {
            let width = mask.keep[layer].len();
            let room = mask.alive_in(layer).saturating_sub(min_per_layer);
            let q = ((fraction * width as f64).round() as usize)
                .max(1)
                .min(room)
                .min(n - removed);
            if q == 0 {
                continue;
            }
            let chosen = lowest_in_layer(&mask, scores, layer, q);
            // The same removal, in the current (compacted) network's indexing.
            let mut rel = FilterMask::all_alive(&net.filters_per_conv());
            let alive_idx = mask.alive_indices(layer);
            for f in &chosen {
                let j = alive_idx
                    .iter()
                    .position(|&i| i as usize == *f)
                    .expect("alive");
                rel.keep[layer][j] = false;
            }
            let cand = compact(&net, &rel)?;
            let logits = inputs.logits_from(&cand, layer)?;
            let (a, _) = signal::from_logits(
                &logits,
                control,
                reader.n_classes,
                reader.signal,
                reader.floor,
            )?;
            let damage = (a_cur - a) / q as f64;
            if best.as_ref().is_none_or(|b| damage < b.0) {
                best = Some((damage, layer, chosen, cand, a));
            }
        }
        let Some((_, layer, chosen, cand, a)) = best else {
            break; // every layer is at its floor
        };
        for f in &chosen {
            mask.keep[layer][*f] = false;
        }
        removed += chosen.len();
        net = cand;
        a_cur = a;
    }
    Ok(mask)
}
