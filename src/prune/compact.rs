//! Physical compaction: remove pruned channels from every tensor of their group (the
//! producing convs' filters, the reading convs' input channels, the head's columns), giving
//! a smaller network with the same function as the zero-masked one.
//!
//! Every later step of a sweep runs on the compacted network, so a network at rate r costs
//! roughly (1 − r)² of the original FLOPs instead of all of them.

use super::mask::FilterMask;
use super::plan::{Member, Plan};
use crate::model::conv::reuse::{self, Selection};
use crate::model::layer::Side;
use crate::model::Network;
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

/// The indices of a dimension of `total` entries that stay when, of the block of `size`
/// channels at channel `at` (`hw` entries each), only the channels `keep` stay.
fn kept_in(total: usize, at: usize, size: usize, keep: &[u32], hw: usize) -> Vec<u32> {
    let (start, end) = ((at * hw) as u32, ((at + size) * hw) as u32);
    let hw = hw as u32;
    let block = keep
        .iter()
        .flat_map(|&c| start + c * hw..start + (c + 1) * hw);
    (0..start).chain(block).chain(end..total as u32).collect()
}

/// Compact `net` to the channels alive in `mask`: `net` is the unpruned network and `mask`
/// a mask of it, or `net` is a compaction and `mask` is relative to it (each group's row as
/// long as the channels `net` has, [`FilterMask::relative`]).
pub fn compact(net: &Network, plan: &Plan, mask: &FilterMask) -> Result<Network> {
    let mut out = net.clone();
    let sizes: Vec<usize> = mask.keep.iter().map(Vec::len).collect();
    let mut edits: Vec<(Member, Vec<u32>, usize, usize)> = Vec::new();
    for (g, group) in plan.groups.iter().enumerate() {
        let keep = mask.alive_indices(g);
        if keep.len() < sizes[g] {
            edits.extend(
                (group.members.iter())
                    .map(|m| (*m, keep.clone(), sizes[g], plan.offset_in(m, &sizes))),
            );
        }
    }
    // A tensor reading several groups (behind a `Concat`) loses their channels from the
    // highest block down, so that every block's offset still holds when it is cut.
    edits.sort_by_key(|(m, .., at)| std::cmp::Reverse((m.node(), *at)));
    for (m, keep, size, at) in edits {
        let op = &mut out.nodes[m.node()].op;
        op.cut(m.side(), |t, axis| {
            let idx = match m.side() {
                Side::Out => keep.clone(),
                Side::In => kept_in(t.dims()[axis], at, size, &keep, m.hw()),
            };
            select(t, &idx, axis)
        })?;
    }
    Ok(out)
}
