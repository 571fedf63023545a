//! The explicit reverse pass: Candle has no backward hooks, so LRP is a walk back over the
//! layers using each layer's stored input.

use super::composite::Composite;
use super::rules::{self, ConvOp, LinearOp};
use crate::model::{Layer, Network};
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

/// Winner-take-all through a max-pool with window = stride: all relevance of an output goes
/// to the input position(s) holding the maximum (split evenly on exact ties).
pub fn max_pool_wta(x: &Tensor, r: &Tensor, kernel: usize, stride: usize) -> Result<Tensor> {
    if kernel != stride {
        candle_core::bail!("LRP max-pool supports kernel == stride only, got {kernel}/{stride}");
    }
    match super::fused::max_pool_wta(x, r, kernel)? {
        Some(fast) => Ok(fast),
        None => max_pool_wta_ops(x, r, kernel, stride),
    }
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

/// One-hot relevance on `targets` at the output of `net` (DESIGN §5: the true label).
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
/// `acts` is the network's trace on the batch ([`Network::trace`]).
pub fn reverse(
    net: &Network,
    acts: Vec<Tensor>,
    targets: &[u32],
    composite: &Composite,
    to_input: bool,
) -> Result<Relevance> {
    let out = acts.last().unwrap();
    let mut r = one_hot(targets, out.dims()[1], out)?;
    let output_total = r.sum(1)?;
    let conv_idx = net.conv_layer_indices();
    let first_conv = conv_idx.first().copied();
    let mut conv_outputs = vec![None; conv_idx.len()];
    for (i, layer) in net.layers.iter().enumerate().rev() {
        let a = &acts[i];
        r = match layer {
            Layer::Conv(c) => {
                let k = conv_idx.iter().position(|&j| j == i).unwrap();
                conv_outputs[k] = Some(r.clone());
                if k == 0 && !to_input {
                    break;
                }
                let rule = if Some(i) == first_conv {
                    composite.first_conv
                } else {
                    composite.conv
                };
                let op = ConvOp {
                    padding: c.padding,
                    stride: c.stride,
                };
                rules::apply(
                    rule,
                    &op,
                    a,
                    &c.weight,
                    &c.bias,
                    &r,
                    composite.bounds.as_ref(),
                )?
            }
            Layer::Linear(l) => {
                rules::apply(composite.linear, &LinearOp, a, &l.weight, &l.bias, &r, None)?
            }
            // Element-wise, one input per output: relevance passes (as through ReLU).
            Layer::Relu | Layer::Dropout | Layer::Standardize { .. } => r,
            Layer::MaxPool { kernel, stride } => max_pool_wta(a, &r, *kernel, *stride)?,
            Layer::Flatten => r.reshape(a.shape())?,
            Layer::GlobalAvgPool => {
                // Average pooling as an affine layer with weights 1/HW (zennit's Norm rule).
                let (_, _, h, w) = a.dims4()?;
                let z = a.mean(D::Minus1)?.mean(D::Minus1)?;
                let s = super::fused::ratio(&r, &z, 1e-6)?.affine(1.0 / (h * w) as f64, 0.0)?;
                a.broadcast_mul(&s.unsqueeze(2)?.unsqueeze(3)?)?
            }
        };
    }
    Ok(Relevance {
        conv_outputs: conv_outputs
            .into_iter()
            .map(|t| t.expect("every conv visited"))
            .collect(),
        input: to_input.then_some(r),
        output_total,
    })
}

/// Per-filter relevance of one batch: each conv's output relevance summed over space,
/// (N, filters) as f64.
pub fn per_sample_filter_relevance(rel: &Relevance) -> Result<Vec<Tensor>> {
    rel.conv_outputs
        .iter()
        .map(|r| r.sum((2, 3))?.to_dtype(DType::F64))
        .collect()
}
