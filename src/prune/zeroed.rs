//! A mask applied by zeroing instead of removing: the reference compaction is checked
//! against (masked = compacted, tests/compact.rs and tests/graph.rs).

use super::mask::FilterMask;
use super::plan::{Member, Plan};
use crate::model::{Network, Op};
use candle_core::{Result, Tensor};

/// The same network with pruned channels' weights **and** biases zeroed in every conv that
/// produces them (zeroing only the weight would leave ReLU(bias) alive, which is not
/// removal: docs/method.md). Pruned features of a standardised head input get
/// mean = inv_std = 0, which removes them from the head exactly as compaction does.
pub fn zeroed(net: &Network, plan: &Plan, mask: &FilterMask) -> Result<Network> {
    let mut out = net.clone();
    for (g, group) in plan.groups.iter().enumerate() {
        let keep = &mask.keep[g];
        if keep.iter().all(|k| *k) {
            continue;
        }
        for m in &group.members {
            match *m {
                Member::ConvOut(n) => {
                    let Op::Conv(c) = &mut out.nodes[n].op else {
                        continue;
                    };
                    let t = keep_tensor(keep, 1, 0, c.out_channels(), c.weight.device())?;
                    c.weight =
                        c.weight
                            .broadcast_mul(&t.reshape((c.out_channels(), 1, 1, 1))?)?;
                    c.bias = (&c.bias * &t)?;
                }
                Member::Standardize { node, hw, at } => {
                    if let Op::Standardize { mean, inv_std } = &mut out.nodes[node].op {
                        let t = keep_tensor(keep, hw, at, mean.dims()[0], mean.device())?;
                        *mean = (&*mean * &t)?;
                        *inv_std = (&*inv_std * &t)?;
                    }
                }
                // A pruned channel's shift would make its zeros non-zero again.
                Member::Affine { node, at } => {
                    if let Op::Affine(a) = &mut out.nodes[node].op {
                        let t = keep_tensor(keep, 1, at, a.scale.dims()[0], a.scale.device())?;
                        a.scale = (&a.scale * &t)?;
                        a.shift = (&a.shift * &t)?;
                    }
                }
                // Readers of a zeroed channel see zeros: nothing to change.
                Member::ConvIn { .. } | Member::LinearIn { .. } => {}
            }
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
