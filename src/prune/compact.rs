//! Physical compaction: remove pruned channels from every tensor of their group (the
//! producing convs' filters, the reading convs' input channels, the head's columns), giving
//! a smaller network with the same function as the zero-masked one.
//!
//! Every later step of a sweep runs on the compacted network, so a network at rate r costs
//! roughly (1 − r)² of the original FLOPs instead of all of them.

use super::mask::FilterMask;
use super::plan::{Member, Plan};
use crate::model::conv::reuse::{self, Selection};
use crate::model::{Network, Op};
use candle_core::{Result, Tensor};
use std::sync::Arc;

fn select(t: &Tensor, idx: &[u32], dim: usize) -> Result<Tensor> {
    if idx.len() == t.dims()[dim] {
        return Ok(t.clone());
    }
    let ids = Tensor::new(idx, t.device())?;
    let out = t.index_select(&ids, dim)?;
    if t.rank() == 4 {
        // A conv's weights: its transformed filters are the same selection of the source's.
        let sel = Selection {
            source: t.id(),
            dim,
            indices: Arc::new(idx.to_vec()),
        };
        reuse::record_selection(out.id(), sel);
    }
    Ok(out)
}

/// Channel indices expanded to feature indices, `hw` features per channel.
fn features(idx: &[u32], hw: usize) -> Vec<u32> {
    let hw = hw as u32;
    idx.iter().flat_map(|&c| c * hw..(c + 1) * hw).collect()
}

/// Compact `net` (the unpruned network) to the channels alive in `mask`.
pub fn compact(net: &Network, plan: &Plan, mask: &FilterMask) -> Result<Network> {
    let mut out = net.clone();
    for (g, group) in plan.groups.iter().enumerate() {
        let keep = mask.alive_indices(g);
        if keep.len() == mask.keep[g].len() {
            continue;
        }
        for m in &group.members {
            match (*m, &mut out.nodes[m.node()].op) {
                (Member::ConvOut(_), Op::Conv(c)) => {
                    c.weight = select(&c.weight, &keep, 0)?;
                    c.bias = select(&c.bias, &keep, 0)?;
                    if c.groups > 1 {
                        // Depthwise: one group per remaining channel.
                        c.groups = keep.len();
                    }
                }
                (Member::ConvIn(_), Op::Conv(c)) => c.weight = select(&c.weight, &keep, 1)?,
                (Member::Standardize { hw, .. }, Op::Standardize { mean, inv_std }) => {
                    let f = features(&keep, hw);
                    *mean = select(mean, &f, 0)?;
                    *inv_std = select(inv_std, &f, 0)?;
                }
                (Member::LinearIn { hw, .. }, Op::Linear(l)) => {
                    l.weight = select(&l.weight, &features(&keep, hw), 1)?
                }
                (m, op) => {
                    candle_core::bail!("plan member {m:?} does not fit a `{}` node", op.kind())
                }
            }
        }
    }
    Ok(out)
}
