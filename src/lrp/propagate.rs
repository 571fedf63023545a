//! The explicit reverse pass: Candle has no backward hooks, so LRP is a walk back over the
//! graph's nodes using each node's stored inputs.

use super::composite::Composite;
use super::rules::{self, ConvOp, LinearOp};
use crate::model::geometry::Window;
use crate::model::{Network, Op};
use candle_core::{DType, Result, Tensor, D};

/// Relevance of one batch.
pub struct Relevance {
    /// Relevance at the output of each conv, in conv order: (N, filters, H, W).
    pub conv_outputs: Vec<Tensor>,
    /// Relevance at the input image: (N, C, H, W), when the pass went down to it.
    pub input: Option<Tensor>,
    /// Total relevance injected at the output (per sample: 1 for a one-hot start).
    pub output_total: Tensor,
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

/// One-hot relevance on `targets` at the output of `net` (docs/method.md: the true label).
pub fn one_hot(targets: &[u32], classes: usize, like: &Tensor) -> Result<Tensor> {
    let mut v = vec![0f32; targets.len() * classes];
    for (i, &t) in targets.iter().enumerate() {
        v[i * classes + t as usize] = 1.0;
    }
    Tensor::from_vec(v, (targets.len(), classes), like.device())?.to_dtype(like.dtype())
}

/// Run the reverse pass for `targets` under `composite`, down to the input image.
pub fn propagate(
    net: &Network,
    x: &Tensor,
    targets: &[u32],
    composite: &Composite,
) -> Result<Relevance> {
    reverse(net, net.trace(x)?, targets, composite, true)
}

/// The reverse pass; without `to_input` it stops at the first conv's output, which is all
/// that filter scores need (the first layer's rule cannot change them).
/// `acts` is the network's trace on the batch ([`Network::trace`]). Relevance reaching a
/// value from several readers (a tensor that fans out) is summed.
pub fn reverse(
    net: &Network,
    acts: Vec<Tensor>,
    targets: &[u32],
    composite: &Composite,
    to_input: bool,
) -> Result<Relevance> {
    let n = net.nodes.len();
    let out = &acts[n];
    let start = one_hot(targets, out.dims()[1], out)?;
    let output_total = start.sum(1)?;
    let conv_nodes = net.conv_nodes();
    let mut conv_outputs = vec![None; conv_nodes.len()];
    let mut rel: Vec<Option<Tensor>> = vec![None; n + 1];
    rel[n] = Some(start);
    for (i, node) in net.nodes.iter().enumerate().rev() {
        let Some(r) = rel[i + 1].take() else {
            continue; // nothing downstream reads this node
        };
        let a = &acts[node.inputs[0]];
        let r_in = match &node.op {
            Op::Conv(c) => {
                let k = conv_nodes.iter().position(|&j| j == i).expect("a conv");
                conv_outputs[k] = Some(r.clone());
                if k == 0 && !to_input {
                    break;
                }
                let rule = composite
                    .rule_for(&node.op, k == 0)
                    .expect("convs have a rule");
                let bounds = composite.bounds.as_ref();
                let op = ConvOp::of(c);
                rules::apply(rule, &op, a, &c.weight, &c.bias, &r, bounds)?
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
                let z = net.nodes[i]
                    .op
                    .forward(&node.inputs.iter().map(|&v| &acts[v]).collect::<Vec<_>>())?;
                let s = super::fused::ratio(&r, &z, 1e-6)?;
                for &v in &node.inputs {
                    accumulate(&mut rel[v], (&acts[v] * &s)?)?;
                }
                continue;
            }
            Op::Concat => {
                // Each input's channels get their own relevance back (conservative).
                for (v, part) in split_channels(&r, &node.inputs, &acts)? {
                    accumulate(&mut rel[v], part)?;
                }
                continue;
            }
        };
        accumulate(&mut rel[node.inputs[0]], r_in)?;
    }
    Ok(Relevance {
        conv_outputs: conv_outputs
            .into_iter()
            .map(|t| t.ok_or_else(|| candle_core::Error::Msg("a conv got no relevance".into())))
            .collect::<Result<_>>()?,
        input: if to_input { rel[0].take() } else { None },
        output_total,
    })
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

/// Add `r` to the relevance gathered at a value (the first contribution is kept as is).
fn accumulate(slot: &mut Option<Tensor>, r: Tensor) -> Result<()> {
    *slot = Some(match slot.take() {
        Some(prev) => (prev + r)?,
        None => r,
    });
    Ok(())
}

/// zennit's Norm rule through `nn.AdaptiveAvgPool2d`: each bin's relevance goes to its
/// input positions in proportion to their values; overlapping bins add up.
fn adaptive_avg_norm(a: &Tensor, r: &Tensor) -> Result<Tensor> {
    use crate::model::pool::adaptive_bin;
    let (_, _, h, w) = a.dims4()?;
    let (oh, ow) = (r.dims()[2], r.dims()[3]);
    let mut out = a.zeros_like()?;
    for i in 0..oh {
        let (h0, h1) = adaptive_bin(i, h, oh);
        for j in 0..ow {
            let (w0, w1) = adaptive_bin(j, w, ow);
            let cell = a.narrow(2, h0, h1 - h0)?.narrow(3, w0, w1 - w0)?;
            let z = cell.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)?;
            let rb = r.narrow(2, i, 1)?.narrow(3, j, 1)?;
            let area = ((h1 - h0) * (w1 - w0)) as f64;
            let s = super::fused::ratio(&rb.contiguous()?, &z.contiguous()?, 1e-6)?
                .affine(1.0 / area, 0.0)?;
            let share = cell.broadcast_mul(&s)?;
            let placed = share
                .pad_with_zeros(2, h0, h - h1)?
                .pad_with_zeros(3, w0, w - w1)?;
            out = (out + placed)?;
        }
    }
    Ok(out)
}

/// Per-filter relevance of one batch: each conv's output relevance summed over space,
/// (N, filters) as f64.
pub fn per_sample_filter_relevance(rel: &Relevance) -> Result<Vec<Tensor>> {
    rel.conv_outputs
        .iter()
        .map(|r| r.sum((2, 3))?.to_dtype(DType::F64))
        .collect()
}
