//! The operations a graph node can hold, each with its eval-mode forward pass.
//!
//! Batch-norm never appears here: it is folded into the preceding conv when a model is
//! loaded (a canonizer step, as zennit does before LRP), so pruning a filter is exactly
//! zeroing (or removing) one output channel of one weight/bias pair.

use super::geometry::{Pad2d, Shape, Window};
use candle_core::{Result, Tensor, D};

/// A 2-D convolution with bias (BN folded in), optionally grouped (depthwise when
/// `groups` equals the channel count).
#[derive(Debug, Clone)]
pub struct Conv {
    /// (out, in / groups, kh, kw)
    pub weight: Tensor,
    /// (out,)
    pub bias: Tensor,
    pub padding: Pad2d,
    pub stride: usize,
    pub groups: usize,
    /// Parameters per output channel besides the kernel, as the original model counts
    /// them: 1 for a conv bias, 2 more for a folded batch-norm's γ and β. Only for counting:
    /// the folded network has one bias whatever the original had.
    pub extra_params: usize,
}

impl Conv {
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }
    /// Input channels the conv reads (all groups together).
    pub fn in_channels(&self) -> usize {
        self.weight.dims()[1] * self.groups
    }
    pub fn kernel(&self) -> (usize, usize) {
        let d = self.weight.dims();
        (d[2], d[3])
    }
    /// One output channel per input channel, each its own group.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.weight.dims()[1] == 1 && self.groups == self.out_channels()
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, false)
    }
    /// `relu(conv(x) + b)` in one pass (the CPU kernels fuse bias and ReLU).
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, true)
    }
    fn run(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        super::conv::conv2d_full(
            x,
            &self.weight,
            Some(&self.bias),
            self.padding,
            self.stride,
            self.groups,
            relu,
        )
    }
}

/// A fully connected layer, `y = x Wᵀ + b`.
#[derive(Debug, Clone)]
pub struct Linear {
    /// (out, in)
    pub weight: Tensor,
    /// (out,)
    pub bias: Tensor,
}

impl Linear {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
    }
}

/// A per-channel affine map `y = x · scale + shift` of a feature map: a batch-norm that no
/// conv precedes, so it cannot be folded (DenseNet's pre-activation `norm1` reads a
/// concatenation). Relevance passes through it unchanged (zennit's `Pass` for batch-norm).
#[derive(Debug, Clone)]
pub struct Affine {
    /// (C,)
    pub scale: Tensor,
    /// (C,)
    pub shift: Tensor,
}

impl Affine {
    /// The batch-norm `γ (x − μ) / √(σ² + ε) + β` as a scale and shift.
    pub fn from_batch_norm(
        gamma: &Tensor,
        beta: &Tensor,
        mean: &Tensor,
        var: &Tensor,
        eps: f64,
    ) -> Result<Self> {
        let scale = (gamma / (var + eps)?.sqrt()?)?;
        let shift = (beta - (mean * &scale)?)?;
        Ok(Self { scale, shift })
    }
    /// `t` (C,) shaped to broadcast over (N, C, H, W).
    pub fn per_channel(t: &Tensor) -> Result<Tensor> {
        t.reshape((1, t.elem_count(), 1, 1))
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.broadcast_mul(&Self::per_channel(&self.scale)?)?
            .broadcast_add(&Self::per_channel(&self.shift)?)
    }
}

#[derive(Debug, Clone)]
pub enum Op {
    Conv(Conv),
    Relu,
    /// `min(max(x, 0), 6)` (MobileNet).
    Relu6,
    /// Max-pool; padded positions never win.
    MaxPool(Window),
    /// Average over adaptive bins to a fixed (h, w) output, as `nn.AdaptiveAvgPool2d`.
    AdaptiveAvgPool {
        h: usize,
        w: usize,
    },
    /// (N, C, H, W) → (N, C): the mean over space.
    GlobalAvgPool,
    /// Element-wise sum of all inputs (a residual connection).
    Add,
    /// All inputs side by side along the channel axis, in input order (DenseNet's dense
    /// connections).
    Concat,
    /// A batch-norm no conv precedes ([`Affine`]).
    Affine(Affine),
    /// (N, C, H, W) → (N, C·H·W).
    Flatten,
    Linear(Linear),
    /// Per-feature standardisation `(x − mean) · inv_std` of the head's input, with the
    /// training split's statistics. A pruned feature has mean = inv_std = 0 in the masked
    /// network, i.e. it is removed from the head (not imputed as a raw zero).
    Standardize {
        mean: Tensor,
        inv_std: Tensor,
    },
    /// Identity in eval mode; kept so node names match torchvision's.
    Dropout,
}

impl Op {
    /// The forward pass on the node's inputs (one, except for `Add` and `Concat`).
    pub fn forward(&self, xs: &[&Tensor]) -> Result<Tensor> {
        let x = xs[0];
        match self {
            Op::Conv(c) => c.forward(x),
            Op::Relu => x.relu(),
            Op::Relu6 => x.clamp(0f32, 6f32),
            Op::MaxPool(win) => super::pool::max_pool(x, *win),
            Op::AdaptiveAvgPool { h, w } => super::pool::adaptive_avg_pool(x, *h, *w),
            Op::GlobalAvgPool => x.mean(D::Minus1)?.mean(D::Minus1),
            Op::Add => xs[1..].iter().try_fold(x.clone(), |acc, y| acc + *y),
            Op::Concat => Tensor::cat(xs, 1),
            Op::Affine(a) => a.forward(x),
            Op::Flatten => x.flatten_from(1),
            Op::Linear(l) => l.forward(x),
            Op::Standardize { mean, inv_std } => x.broadcast_sub(mean)?.broadcast_mul(inv_std),
            Op::Dropout => Ok(x.clone()),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv(c) if c.is_depthwise() => "dwconv",
            Op::Conv(_) => "conv",
            Op::Relu => "relu",
            Op::Relu6 => "relu6",
            Op::MaxPool(_) => "maxpool",
            Op::AdaptiveAvgPool { .. } => "avgpool",
            Op::GlobalAvgPool => "gap",
            Op::Add => "add",
            Op::Concat => "concat",
            Op::Affine(_) => "affine",
            Op::Flatten => "flatten",
            Op::Linear(_) => "linear",
            Op::Standardize { .. } => "standardize",
            Op::Dropout => "dropout",
        }
    }

    /// The shape of the op's output for inputs of shapes `ins` (all of them are read by
    /// `Concat` only; an `Add`'s output has its first input's shape).
    pub fn out_shape(&self, ins: &[Shape]) -> Shape {
        let s = ins[0];
        match (self, s) {
            (Op::Concat, Shape::Map { h, w, .. }) => Shape::Map {
                c: ins.iter().map(|s| s.channels()).sum(),
                h,
                w,
            },
            (Op::Conv(conv), Shape::Map { h, w, .. }) => {
                let (kh, kw) = conv.kernel();
                let p = conv.padding;
                Shape::Map {
                    c: conv.out_channels(),
                    h: (h + p.h.0 + p.h.1).saturating_sub(kh) / conv.stride + 1,
                    w: (w + p.w.0 + p.w.1).saturating_sub(kw) / conv.stride + 1,
                }
            }
            (Op::MaxPool(win), Shape::Map { c, h, w }) => Shape::Map {
                c,
                h: win.out_size(h),
                w: win.out_size(w),
            },
            (Op::AdaptiveAvgPool { h, w }, Shape::Map { c, .. }) => Shape::Map { c, h: *h, w: *w },
            (Op::GlobalAvgPool, Shape::Map { c, .. }) => Shape::Flat(c),
            (Op::Flatten, Shape::Map { c, h, w }) => Shape::Flat(c * h * w),
            (Op::Linear(l), _) => Shape::Flat(l.weight.dims()[0]),
            (_, s) => s,
        }
    }

    /// Whether the op acts on each channel independently, so channel `c` of its output is
    /// channel `c` of its input (what the pruning plan follows through it).
    pub fn is_channelwise(&self) -> bool {
        matches!(
            self,
            Op::Relu
                | Op::Relu6
                | Op::MaxPool(_)
                | Op::AdaptiveAvgPool { .. }
                | Op::Dropout
                | Op::Add
                | Op::Affine(_)
        )
    }
}
