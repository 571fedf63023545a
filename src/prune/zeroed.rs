//! A mask applied by zeroing instead of removing: the reference compaction is checked
//! against (masked = compacted, tests/compact.rs and tests/graph.rs).

use super::mask::FilterMask;
use super::plan::Plan;
use crate::model::Network;
use candle_core::{Result, Tensor};

/// The same network with pruned channels' weights **and** biases zeroed in every conv that
/// produces them (zeroing only the weight would leave ReLU(bias) alive, which is not
/// removal: docs/method.md), and every parameter that reads them zeroed too: a per-channel
/// affine's shift would make the zeros non-zero again, and pruned features of a
/// standardised head input get mean = inv_std = 0, which removes them from the head exactly
/// as compaction does (a conv's or linear layer's input column only ever meets zeros).
pub fn zeroed(net: &Network, plan: &Plan, mask: &FilterMask) -> Result<Network> {
    let mut out = net.clone();
    for (g, group) in plan.groups.iter().enumerate() {
        let keep = &mask.keep[g];
        if keep.iter().all(|k| *k) {
            continue;
        }
        for m in &group.members {
            let at = m.at();
            out.nodes[m.node()].op.cut(m.side(), |t, axis| {
                let mut shape = vec![1; t.rank()];
                shape[axis] = t.dims()[axis];
                let on = keep_tensor(keep, m.hw(), at, t.dims()[axis], t.device())?;
                t.broadcast_mul(&on.reshape(shape)?)
            })?;
        }
    }
    Ok(out)
}

/// `total` entries, 1.0 except 0.0 for the pruned channels of the block at channel `at`
/// (`hw` entries per channel).
fn keep_tensor(
    keep: &[bool],
    hw: usize,
    at: usize,
    total: usize,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let mut v = vec![1f32; total];
    for (c, _) in keep.iter().enumerate().filter(|(_, k)| !**k) {
        v[(at + c) * hw..(at + c + 1) * hw].fill(0.0);
    }
    Tensor::from_vec(v, total, device)
}
