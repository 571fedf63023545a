//! The layer kinds a sequential CNN needs, each with its eval-mode forward pass.

use candle_core::{Result, Tensor, D};

/// A 2-D convolution with bias. Batch-norm is folded in at load time, so pruning a filter is
/// exactly zeroing (or removing) one output channel of one tensor pair.
#[derive(Debug, Clone)]
pub struct Conv {
    /// (out, in, kh, kw)
    pub weight: Tensor,
    /// (out,)
    pub bias: Tensor,
    pub padding: usize,
    pub stride: usize,
}

impl Conv {
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }
    pub fn in_channels(&self) -> usize {
        self.weight.dims()[1]
    }
    pub fn kernel(&self) -> (usize, usize) {
        let d = self.weight.dims();
        (d[2], d[3])
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        super::conv::conv2d(
            x,
            &self.weight,
            Some(&self.bias),
            self.padding,
            self.stride,
            false,
        )
    }

    /// `relu(conv(x) + b)` in one pass (the CPU kernels fuse bias and ReLU).
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        super::conv::conv2d(
            x,
            &self.weight,
            Some(&self.bias),
            self.padding,
            self.stride,
            true,
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

#[derive(Debug, Clone)]
pub enum Layer {
    Conv(Conv),
    Relu,
    /// Max-pool with a square window.
    MaxPool {
        kernel: usize,
        stride: usize,
    },
    /// (N, C, H, W) → (N, C): the mean over space.
    GlobalAvgPool,
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
    /// Identity in eval mode; kept so layer indices match torchvision's.
    Dropout,
}

impl Layer {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Layer::Conv(c) => c.forward(x),
            Layer::Relu => x.relu(),
            Layer::MaxPool { kernel, stride } => super::pool::max_pool(x, *kernel, *stride),
            Layer::GlobalAvgPool => x.mean(D::Minus1)?.mean(D::Minus1),
            Layer::Flatten => x.flatten_from(1),
            Layer::Linear(l) => l.forward(x),
            Layer::Standardize { mean, inv_std } => x.broadcast_sub(mean)?.broadcast_mul(inv_std),
            Layer::Dropout => Ok(x.clone()),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Conv(_) => "conv",
            Layer::Relu => "relu",
            Layer::MaxPool { .. } => "maxpool",
            Layer::GlobalAvgPool => "gap",
            Layer::Flatten => "flatten",
            Layer::Linear(_) => "linear",
            Layer::Standardize { .. } => "standardize",
            Layer::Dropout => "dropout",
        }
    }
}
