//! The operations a graph node can hold. Each states here, once, its eval-mode forward
//! pass, its output shape, how its channels relate to its inputs' ([`Op::channels`], what
//! the pruning plan reads) and which parameters a pruning cut reaches ([`Op::params_along`],
//! what compaction and zeroing change); its LRP rule and gradient are in `lrp/steps.rs`.
//!
//! A batch-norm is folded into the conv before it when a model is loaded (a canonizer step,
//! as zennit does before LRP), so pruning a filter is exactly zeroing (or removing) one
//! output channel of one weight/bias pair; one that no conv precedes (DenseNet's
//! pre-activation) stays a per-channel [`Affine`].

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

    /// How the op's output channels relate to its inputs' (read by the pruning plan).
    pub fn channels(&self) -> Channels {
        match self {
            Op::Relu | Op::Relu6 | Op::MaxPool(_) | Op::AdaptiveAvgPool { .. } | Op::Dropout => {
                Channels::Through
            }
            Op::Affine(_) => Channels::Scale,
            Op::Standardize { .. } => Channels::PerFeature,
            Op::GlobalAvgPool | Op::Flatten => Channels::ToFeatures,
            Op::Add => Channels::Merge,
            Op::Concat => Channels::Concat,
            Op::Conv(c) if c.groups == 1 => Channels::Produce { filters: true },
            Op::Conv(c) if c.is_depthwise() => Channels::Depthwise,
            Op::Conv(_) => Channels::Tied,
            Op::Linear(_) => Channels::Produce { filters: false },
        }
    }

    /// Whether channel `c` of the output is channel `c` of the (first) input, on a feature
    /// map (what the layer search's shortcut through a conv's output follows).
    pub fn is_channelwise(&self) -> bool {
        matches!(
            self.channels(),
            Channels::Through | Channels::Scale | Channels::Merge
        )
    }

    /// The parameters a pruning cut reaches on `side`, each with the axis its channels
    /// (or features) run along: what compaction selects and zeroing masks.
    pub fn params_along(&mut self, side: Side) -> Vec<(&mut Tensor, usize)> {
        match (self, side) {
            (Op::Conv(c), Side::Out) => vec![(&mut c.weight, 0), (&mut c.bias, 0)],
            (Op::Conv(c), Side::In) => vec![(&mut c.weight, 1)],
            (Op::Linear(l), Side::Out) => vec![(&mut l.weight, 0), (&mut l.bias, 0)],
            (Op::Linear(l), Side::In) => vec![(&mut l.weight, 1)],
            (Op::Affine(a), _) => vec![(&mut a.scale, 0), (&mut a.shift, 0)],
            (Op::Standardize { mean, inv_std }, _) => vec![(mean, 0), (inv_std, 0)],
            _ => vec![],
        }
    }

    /// Apply `f` (a tensor and its channel axis → its replacement) to every parameter on
    /// `side`; a depthwise conv keeps one group per remaining channel.
    pub fn cut(
        &mut self,
        side: Side,
        mut f: impl FnMut(&Tensor, usize) -> Result<Tensor>,
    ) -> Result<()> {
        for (t, axis) in self.params_along(side) {
            *t = f(t, axis)?;
        }
        if let Op::Conv(c) = self {
            if c.groups > 1 && side == Side::Out {
                c.groups = c.out_channels();
            }
        }
        Ok(())
    }

    /// The learned parameters under their checkpoint suffixes (a batch-norm's as `weight`
    /// and `bias`); the head's standardisation statistics are not among them.
    pub fn params(&self) -> Vec<(&'static str, &Tensor)> {
        match self {
            Op::Conv(Conv { weight, bias, .. }) | Op::Linear(Linear { weight, bias }) => {
                vec![("weight", weight), ("bias", bias)]
            }
            Op::Affine(a) => vec![("weight", &a.scale), ("bias", &a.shift)],
            _ => vec![],
        }
    }
}

/// How an op's output channels relate to its inputs' (Torch-Pruning's dependency rules,
/// stated once per op by [`Op::channels`]); the pruning plan turns each into group members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    /// Output channel `c` is input channel `c` (ReLU, pooling, dropout).
    Through,
    /// As `Through`, with one parameter set per channel, cut with it (a per-channel affine).
    Scale,
    /// A vector's features pass one by one, with one parameter set per feature, cut with its
    /// channel's features (the head's standardisation).
    PerFeature,
    /// Each channel becomes consecutive features of a vector (flatten, global pooling).
    ToFeatures,
    /// The inputs, summed channel by channel, lose their channels together (residual add).
    Merge,
    /// The inputs side by side along channels (DenseNet's concatenation).
    Concat,
    /// New channels from all input channels: the weight's input axis is cut with the input,
    /// its output axis (`filters`: prunable; a linear head's outputs are not) on its own.
    Produce { filters: bool },
    /// One filter per input channel (a depthwise conv): its output is its input's channel.
    Depthwise,
    /// Grouped, not depthwise: channels tied in blocks, left unpruned.
    Tied,
}

/// Which channels of an op a pruning cut reaches: its output channels (a conv's filters)
/// or its input channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Out,
    In,
}
