//! Each op's two reverse steps side by side: how LRP's relevance (under a composite) and the
//! plain gradient pass back through it — one table from op to rule, as zennit's layer map
//! is. The walkers ([`super::propagate`], [`super::gradient`]) only route what a step
//! returns between values; an op with new behaviour is taught here, once for both.

use super::composite::Composite;
use super::rules::{self, Affine as _, ConvOp, LinearOp};
use crate::model::cpu_op::{self, f32_slice};
use crate::model::geometry::Window;
use crate::model::pool::adaptive_bin;
use crate::model::{Node, Op};
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// What a node passes back: to its first (only) input, or a share to each input value.
pub enum Back {
    One(Tensor),
    Each(Vec<(usize, Tensor)>),
}

impl Back {
    /// Add it to what the values (`slots`, by value) have gathered, `first` being the node's
    /// first input: a value several nodes read (a tensor that fans out) gets their sum.
    pub fn add_to(self, slots: &mut [Option<Tensor>], first: usize) -> Result<()> {
        let parts = match self {
            Back::One(t) => vec![(first, t)],
            Back::Each(parts) => parts,
        };
        for (v, t) in parts {
            slots[v] = Some(match slots[v].take() {
                Some(prev) => (prev + t)?,
                None => t,
            });
        }
        Ok(())
    }
}

/// The relevance `r` at `node`'s output passed to its inputs (`acts`: the trace; `first`:
/// the node is the network's first conv, which may take its own rule).
pub fn relevance(
    node: &Node,
    acts: &[Tensor],
    r: Tensor,
    composite: &Composite,
    first: bool,
) -> Result<Back> {
    let a = &acts[node.inputs[0]];
    Ok(Back::One(match &node.op {
        Op::Conv(c) => {
            let rule = composite
                .rule_for(&node.op, first)
                .expect("convs have a rule");
            let bounds = composite.bounds.as_ref();
            rules::apply(rule, &ConvOp::of(c), a, &c.weight, &c.bias, &r, bounds)?
        }
        Op::Linear(l) => {
            let rule = composite
                .rule_for(&node.op, false)
                .expect("linear has a rule");
            rules::apply(rule, &LinearOp, a, &l.weight, &l.bias, &r, None)?
        }
        // Element-wise, one input per output: relevance passes (as through ReLU; a
        // batch-norm no conv precedes gets zennit's Pass too).
        Op::Relu | Op::Relu6 | Op::Dropout | Op::Standardize { .. } | Op::Affine(_) => r,
        Op::MaxPool(win) => max_pool_wta(a, &r, *win)?,
        Op::Flatten => r.reshape(a.shape())?,
        Op::GlobalAvgPool => {
            // Average pooling as an affine layer with weights 1/HW (zennit's Norm rule).
            let (_, _, h, w) = a.dims4()?;
            let z = a.mean(D::Minus1)?.mean(D::Minus1)?;
            let s = super::fused::ratio(&r, &z, 1e-6)?.affine(1.0 / (h * w) as f64, 0.0)?;
            a.broadcast_mul(&s.unsqueeze(2)?.unsqueeze(3)?)?
        }
        Op::AdaptiveAvgPool { .. } => adaptive_avg_norm(a, &r)?,
        Op::Add => {
            // zennit's Norm rule on the sum: each term gets its share x_j / Σ x.
            let z = node
                .op
                .forward(&node.inputs.iter().map(|&v| &acts[v]).collect::<Vec<_>>())?;
            let s = super::fused::ratio(&r, &z, 1e-6)?;
            let shares = node.inputs.iter().map(|&v| Ok((v, (&acts[v] * &s)?)));
            return Ok(Back::Each(shares.collect::<Result<_>>()?));
        }
        // Each input's channels get their own relevance back (conservative).
        Op::Concat => return Ok(Back::Each(split_channels(&r, &node.inputs, acts)?)),
    }))
}

/// The gradient `g` at `node`'s output (`out`: its value) passed to its inputs.
pub fn gradient(node: &Node, acts: &[Tensor], out: &Tensor, g: Tensor) -> Result<Back> {
    let x = &acts[node.inputs[0]];
    Ok(Back::One(match &node.op {
        Op::Conv(c) => ConvOp::of(c).transpose(&g, &c.weight, x)?,
        Op::Linear(l) => g.matmul(&l.weight)?,
        Op::Relu => pass_inside(&g, out, 0.0, f32::INFINITY)?,
        Op::Relu6 => pass_inside(&g, x, 0.0, 6.0)?,
        Op::Dropout => g,
        Op::Affine(a) => g.broadcast_mul(&crate::model::layer::Affine::per_channel(&a.scale)?)?,
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
            return Ok(Back::Each(
                node.inputs.iter().map(|&v| (v, g.clone())).collect(),
            ))
        }
        Op::Concat => return Ok(Back::Each(split_channels(&g, &node.inputs, acts)?)),
    }))
}

/// Winner-take-all through a max-pool: all relevance of an output goes to the input
/// position(s) holding the maximum of its window (split evenly on exact ties; overlapping
/// windows add up).
pub fn max_pool_wta(x: &Tensor, r: &Tensor, win: Window) -> Result<Tensor> {
    if let Some(fast) = super::fused::max_pool_wta(x, r, win)? {
        return Ok(fast);
    }
    if win.kernel == win.stride && win.padding == (0, 0) {
        return max_pool_wta_ops(x, r, win.kernel, win.stride);
    }
    // Overlapping or padded windows on another device: the CPU pass, and back.
    let cpu = candle_core::Device::Cpu;
    let (xc, rc) = (
        x.to_device(&cpu)?.to_dtype(DType::F32)?,
        r.to_device(&cpu)?.to_dtype(DType::F32)?,
    );
    let out = super::fused::max_pool_wta(&xc, &rc, win)?
        .ok_or_else(|| candle_core::Error::Msg("max-pool WTA: no CPU path".into()))?;
    out.to_dtype(x.dtype())?.to_device(x.device())
}

/// [`max_pool_wta`] from Candle ops, for every device (the CPU takes a fused pass).
pub fn max_pool_wta_ops(x: &Tensor, r: &Tensor, kernel: usize, stride: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (oh, ow) = (r.dims()[2], r.dims()[3]);
    let crop = x.narrow(2, 0, oh * stride)?.narrow(3, 0, ow * stride)?;
    let y = crop.max_pool2d_with_stride(kernel, stride)?;
    let up = |t: &Tensor| t.upsample_nearest2d(oh * stride, ow * stride);
    let winners = crop.eq(&up(&y)?)?.to_dtype(x.dtype())?;
    let count = winners
        .avg_pool2d_with_stride(kernel, stride)?
        .affine((kernel * kernel) as f64, 0.0)?;
    let share = up(&(r / count)?)?;
    let r_in = (winners * share)?;
    // Positions cropped away by the pool (odd sizes) get no relevance.
    r_in.pad_with_zeros(2, 0, h - oh * stride)?
        .pad_with_zeros(3, 0, w - ow * stride)
}

/// `t` (a `Concat`'s output, or its relevance or gradient) cut back into its `inputs`'
/// channel blocks: `(value, part)` per input.
pub fn split_channels(
    t: &Tensor,
    inputs: &[usize],
    acts: &[Tensor],
) -> Result<Vec<(usize, Tensor)>> {
    let mut at = 0;
    inputs
        .iter()
        .map(|&v| {
            let c = acts[v].dims()[1];
            at += c;
            Ok((v, t.narrow(1, at - c, c)?.contiguous()?))
        })
        .collect()
}

/// zennit's Norm rule through `nn.AdaptiveAvgPool2d`: each bin's relevance goes to its
/// input positions in proportion to their values; overlapping bins add up.
fn adaptive_avg_norm(a: &Tensor, r: &Tensor) -> Result<Tensor> {
    spread_bins(a, r, |cell, rb, area| {
        let z = cell.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)?;
        let s = super::fused::ratio(&rb.contiguous()?, &z.contiguous()?, 1e-6)?
            .affine(1.0 / area, 0.0)?;
        cell.broadcast_mul(&s)
    })
}

/// Each adaptive bin's gradient spread evenly over its input positions (bins may overlap).
fn adaptive_avg_backward(x: &Tensor, g: &Tensor) -> Result<Tensor> {
    spread_bins(x, g, |cell, gb, area| {
        gb.affine(1.0 / area, 0.0)?.broadcast_as(cell.shape())
    })
}

/// What reaches an adaptive pool's (oh, ow) bins (`per_bin`, (N, C, oh, ow)) taken back to
/// its input `x`: `share(cell, bin, area)` gives one bin's part over its cell of `x`, and
/// the parts are placed and summed (bins may overlap).
fn spread_bins(
    x: &Tensor,
    per_bin: &Tensor,
    share: impl Fn(&Tensor, &Tensor, f64) -> Result<Tensor>,
) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (oh, ow) = (per_bin.dims()[2], per_bin.dims()[3]);
    let mut out = x.zeros_like()?;
    for i in 0..oh {
        let (h0, h1) = adaptive_bin(i, h, oh);
        for j in 0..ow {
            let (w0, w1) = adaptive_bin(j, w, ow);
            let cell = x.narrow(2, h0, h1 - h0)?.narrow(3, w0, w1 - w0)?;
            let bin = per_bin.narrow(2, i, 1)?.narrow(3, j, 1)?;
            let area = ((h1 - h0) * (w1 - w0)) as f64;
            let placed = share(&cell, &bin, area)?
                .pad_with_zeros(2, h0, h - h1)?
                .pad_with_zeros(3, w0, w - w1)?;
            out = (out + placed)?;
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
