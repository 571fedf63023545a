//! The plain gradient as a reverse pass over the stored trace: the chain rule where LRP
//! applies a rule, on the same walk and the same fast transposed convolutions
//! ([`super::rules::Affine::transpose`]).
//!
//! Why not Candle's autograd: it would record the forward on a tape and run every conv on
//! Candle's own (slower) kernels; the layer search already holds every value of the network
//! on the control split, so the reverse pass alone is needed (`prune/screen.rs` reads it).

use super::propagate::max_pool_wta;
use super::rules::{Affine, ConvOp};
use crate::model::cpu_op::{self, f32_slice};
use crate::model::pool::adaptive_bin;
use crate::model::{Network, Op};
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
        let x = &acts[node.inputs[0]];
        let g_in = match &node.op {
            Op::Conv(c) => ConvOp::of(c).transpose(&g, &c.weight, x)?,
            Op::Linear(l) => g.matmul(&l.weight)?,
            Op::Relu => pass_inside(&g, &acts[i + 1], 0.0, f32::INFINITY)?,
            Op::Relu6 => pass_inside(&g, x, 0.0, 6.0)?,
            Op::Dropout => g,
            Op::Affine(a) => {
                g.broadcast_mul(&crate::model::layer::Affine::per_channel(&a.scale)?)?
            }
            Op::Standardize { inv_std, .. } => g.broadcast_mul(inv_std)?,
            // Every window's gradient goes to its maximum (split on exact ties), as LRP's
            // winner-take-all does.
            Op::MaxPool(win) => max_pool_wta(x, &g, *win)?,
            Op::Flatten => g.reshape(x.shape())?,
            Op::GlobalAvgPool => {
                let (_, _, h, w) = x.dims4()?;
                g.affine(1.0 / (h * w) as f64, 0.0)?
                    .unsqueeze(2)?
                    .unsqueeze(3)?
                    .broadcast_as(x.shape())?
                    .contiguous()?
            }
            Op::AdaptiveAvgPool { .. } => adaptive_avg_backward(x, &g)?,
            Op::Add => {
                for &v in &node.inputs {
                    accumulate(&mut grad[v], g.clone())?;
                }
                continue;
            }
            Op::Concat => {
                for (v, part) in super::propagate::split_channels(&g, &node.inputs, acts)? {
                    accumulate(&mut grad[v], part)?;
                }
                continue;
            }
        };
        accumulate(&mut grad[node.inputs[0]], g_in)?;
    }
    if lowest == 0 {
        if let Some(g) = grad[0].take() {
            visit(0, &g)?;
        }
    }
    Ok(())
}

fn accumulate(slot: &mut Option<Tensor>, g: Tensor) -> Result<()> {
    *slot = Some(match slot.take() {
        Some(prev) => (prev + g)?,
        None => g,
    });
    Ok(())
}

/// Each adaptive bin's gradient spread evenly over its input positions (bins may overlap).
fn adaptive_avg_backward(x: &Tensor, g: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (oh, ow) = (g.dims()[2], g.dims()[3]);
    let mut out = x.zeros_like()?;
    for i in 0..oh {
        let (h0, h1) = adaptive_bin(i, h, oh);
        for j in 0..ow {
            let (w0, w1) = adaptive_bin(j, w, ow);
            let area = ((h1 - h0) * (w1 - w0)) as f64;
            let share = g
                .narrow(2, i, 1)?
                .narrow(3, j, 1)?
                .affine(1.0 / area, 0.0)?
                .broadcast_as((x.dims()[0], x.dims()[1], h1 - h0, w1 - w0))?
                .pad_with_zeros(2, h0, h - h1)?
                .pad_with_zeros(3, w0, w - w1)?;
            out = (out + share)?;
        }
    }
    Ok(out)
}

/// `g` where `lo < x < hi`, 0 elsewhere: the gradient through a clamp, read from its input
/// (or, for ReLU, its output: positive exactly where the input is). One parallel pass on
/// the CPU; Candle's ops elsewhere (on the CPU they take five single-threaded passes, which
/// made ReLU6 masks most of a MobileNet's reverse pass).
fn pass_inside(g: &Tensor, x: &Tensor, lo: f32, hi: f32) -> Result<Tensor> {
    if cpu_op::applies(&[g, x]) && g.shape() == x.shape() {
        return g
            .contiguous()?
            .apply_op2_no_bwd(&x.contiguous()?, &Inside { lo, hi });
    }
    let dtype = x.dtype();
    let mask = (x.gt(lo as f64)?.to_dtype(dtype)? * x.lt(hi as f64)?.to_dtype(dtype)?)?;
    g * mask
}

struct Inside {
    lo: f32,
    hi: f32,
}

impl CustomOp2 for Inside {
    fn name(&self) -> &'static str {
        "lrprune-gradient-inside"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, x) = (f32_slice(s1, l1, "gradient")?, f32_slice(s2, l2, "input")?);
        let (lo, hi) = (self.lo, self.hi);
        let out: Vec<f32> = g
            .par_iter()
            .zip(x.par_iter())
            .with_min_len(1 << 14)
            .map(|(&g, &x)| if x > lo && x < hi { g } else { 0.0 })
            .collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
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
