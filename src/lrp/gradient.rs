//! The plain gradient as a reverse pass over the stored trace: the chain rule where LRP
//! applies a rule, on the same walk and the same fast transposed convolutions
//! ([`super::rules::Affine::transpose`]).
//!
//! Why not Candle's autograd: it would record the forward on a tape and run every conv on
//! Candle's own (slower) kernels; the layer search already holds every value of the network
//! on the control split, so the reverse pass alone is needed (`prune/screen.rs` reads it).

use super::steps;
use crate::model::cpu_op::{self, f32_slice};
use crate::model::Network;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Back-propagate `d_out` (the gradient of a scalar with respect to the network's output)
/// over `acts` (the network's trace on one batch, [`Network::trace`]) down to value
/// `lowest`, calling `visit(v, grad)` once for each value `v ≥ lowest` when its gradient
/// is complete (after every reader of it has passed its share back). A value no path from
/// the output reads is not visited.
///
/// A conv fused with its ReLU records the ReLU's output as its own; the ReLU's mask is read
/// from its output, so the gradient at the conv's value is the pre-activation gradient
/// wherever the unit is active and zero elsewhere, and `value × gradient` is the same as
/// for the unfused pair.
pub fn backward(
    net: &Network,
    acts: &[Tensor],
    d_out: Tensor,
    lowest: usize,
    mut visit: impl FnMut(usize, &Tensor) -> Result<()>,
) -> Result<()> {
    let n = net.nodes.len();
    let mut grad: Vec<Option<Tensor>> = vec![None; n + 1];
    grad[n] = Some(d_out);
    for (i, node) in net.nodes.iter().enumerate().rev() {
        let Some(g) = grad[i + 1].take() else {
            continue;
        };
        visit(i + 1, &g)?;
        if node.inputs.iter().all(|&v| v < lowest) {
            continue;
        }
        steps::gradient(node, acts, &acts[i + 1], g)?.add_to(&mut grad, node.inputs[0])?;
    }
    if lowest == 0 {
        if let Some(g) = grad[0].take() {
            visit(0, &g)?;
        }
    }
    Ok(())
}

/// Per channel of two (N, C, H, W) tensors, Σ over images and positions of `a · g`, in
/// f64: one parallel pass on the CPU, Candle's ops elsewhere.
pub fn channel_dot(a: &Tensor, g: &Tensor) -> Result<Vec<f64>> {
    if !(cpu_op::applies(&[a, g]) && a.shape() == g.shape() && a.rank() == 4) {
        return (a * g)?.sum((0, 2, 3))?.to_dtype(DType::F64)?.to_vec1();
    }
    a.contiguous()?
        .apply_op2_no_bwd(&g.contiguous()?, &ChannelDot)?
        .to_vec1()
}

struct ChannelDot;

impl CustomOp2 for ChannelDot {
    fn name(&self) -> &'static str {
        "lrprune-channel-dot"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, g) = (f32_slice(s1, l1, "value")?, f32_slice(s2, l2, "gradient")?);
        let (n, c, h, w) = l1.shape().dims4()?;
        let hw = h * w;
        let out: Vec<f64> = (0..c)
            .into_par_iter()
            .map(|ch| {
                (0..n)
                    .map(|i| {
                        let at = (i * c + ch) * hw;
                        let (a, g) = (&a[at..at + hw], &g[at..at + hw]);
                        a.iter().zip(g).map(|(&a, &g)| (a * g) as f64).sum::<f64>()
                    })
                    .sum()
            })
            .collect();
        Ok((CpuStorage::F64(out), Shape::from(c)))
    }
}
