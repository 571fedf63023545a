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
                    let t = keep_tensor(keep, 1, c.weight.device())?;
                    c.weight =
                        c.weight
                            .broadcast_mul(&t.reshape((c.out_channels(), 1, 1, 1))?)?;
                    c.bias = (&c.bias * &t)?;
                }
                Member::Standardize { node, hw } => {
                    if let Op::Standardize { mean, inv_std } = &mut out.nodes[node].op {
                        let t = keep_tensor(keep, hw, mean.device())?;
                        *mean = (&*mean * &t)?;
                        *inv_std = (&*inv_std * &t)?;
                    }
                }
                // Readers of a zeroed channel see zeros: nothing to change.
                Member::ConvIn(_) | Member::LinearIn { .. } => {}
            }
        }
    }
    Ok(out)
}

/// 1.0 / 0.0 per channel, each repeated `hw` times.
fn keep_tensor(keep: &[bool], hw: usize, device: &candle_core::Device) -> Result<Tensor> {
    let v: Vec<f32> = keep
        .iter()
        .flat_map(|&b| std::iter::repeat_n(if b { 1.0 } else { 0.0 }, hw))
        .collect();
    Tensor::from_vec(v, keep.len() * hw, device)
}
