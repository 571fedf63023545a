//! The convolution every layer and every LRP rule calls: `y = act(conv(x, W) + b)`.
//!
//! On the CPU, f32 tensors that need no gradient take lrprune's own kernels — Winograd
//! F(4,3)/F(2,3) for stride-1 3×3 convs with enough input channels, im2col + GEMM for the
//! rest — with bias and ReLU fused into the output pass. Everything else (CUDA, other
//! dtypes, tensors on an autograd tape such as the Taylor criterion's) goes through Candle's
//! own `conv2d`, so the CUDA path stays on Candle's kernels and gradients keep working.
//! `tests/conv.rs` checks both kernels against `candle_nn::Conv2d` to 1e-4.

#[cfg(feature = "cudnn")]
pub mod cudnn;
#[cfg(feature = "cudnn")]
pub mod cudnn_graph;
pub mod depthwise;
pub mod epilogue;
pub mod im2col;
pub mod lanes;
pub mod reuse;
pub mod shifted;
pub mod transpose;
pub mod winograd;

use super::cpu_op::{self, f32_slice};
use super::geometry::Pad2d;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
pub use epilogue::Epilogue;
use im2col::Window;
use winograd::Geometry;

/// Which implementation ran (or would run) a convolution; `bench` reports it per layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Winograd,
    Im2col,
    Candle,
}

/// Below this many input channels Winograd's GEMMs are too thin to pay for its transforms.
const WINOGRAD_MIN_CHANNELS: usize = 16;

/// The kernel [`conv2d`] picks for these operands.
pub fn kernel_for(x: &Tensor, w: &Tensor, stride: usize) -> Kernel {
    if !cpu_op::applies(&[x, w]) {
        return Kernel::Candle;
    }
    let d = w.dims();
    if d[2] == 3 && d[3] == 3 && stride == 1 && d[1] >= WINOGRAD_MIN_CHANNELS {
        Kernel::Winograd
    } else {
        Kernel::Im2col
    }
}

/// `act(conv2d(x, w) + b)` for NCHW `x`, OIHW `w`, optional bias `(O,)`.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    padding: usize,
    stride: usize,
    relu: bool,
) -> Result<Tensor> {
    let then = if relu { Epilogue::Relu } else { Epilogue::Bias };
    conv2d_then(x, w, b, padding, stride, then)
}

/// `conv2d(x, w) + b`, then `then` (on the CPU: in place on the conv's output).
pub fn conv2d_then(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    padding: usize,
    stride: usize,
    then: Epilogue,
) -> Result<Tensor> {
    let kernel = kernel_for(x, w, stride);
    let operand_on_cpu = then.operand().is_none_or(|t| cpu_op::applies(&[t]));
    if kernel == Kernel::Candle || b.is_some_and(|b| !cpu_op::applies(&[b])) || !operand_on_cpu {
        #[cfg(feature = "cudnn")]
        if cudnn::applies(&[x, w]) && b.is_none_or(|b| cudnn::applies(&[b])) {
            let y = cudnn::conv2d(x, w, b, padding, stride, then.relu())?;
            return if then.relu() { Ok(y) } else { then.apply(y) };
        }
        let mut y = x.conv2d(w, padding, stride, 1, 1)?;
        if let Some(b) = b {
            y = y.broadcast_add(&b.reshape((1, b.dims()[0], 1, 1))?)?;
        }
        return then.apply(y);
    }
    x.contiguous()?.apply_op3_no_bwd(
        &w.contiguous()?,
        &bias_or_zeros(b, w)?,
        &FastConv {
            padding,
            stride,
            then,
            kernel,
            weight_id: w.id(),
        },
    )
}

/// The bias as the CPU kernels take it (contiguous), zeros for a conv without one.
fn bias_or_zeros(b: Option<&Tensor>, w: &Tensor) -> Result<Tensor> {
    match b {
        Some(b) => b.contiguous(),
        None => Tensor::zeros(w.dims()[0], DType::F32, w.device()),
    }
}

/// `x` with zero rows/columns added as `pad` says.
pub fn pad_zeros(x: &Tensor, pad: Pad2d) -> Result<Tensor> {
    x.pad_with_zeros(2, pad.h.0, pad.h.1)?
        .pad_with_zeros(3, pad.w.0, pad.w.1)
}

/// [`conv2d`] with any padding (asymmetric padding is applied to the input first) and
/// grouped / depthwise convs (depthwise: a direct CPU kernel, else shifted multiply-adds;
/// other groupings: Candle's grouped conv).
pub fn conv2d_full(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    pad: Pad2d,
    stride: usize,
    groups: usize,
    relu: bool,
) -> Result<Tensor> {
    let then = if relu { Epilogue::Relu } else { Epilogue::Bias };
    conv2d_full_then(x, w, b, pad, stride, groups, then)
}

/// [`conv2d_full`], then `then`.
pub fn conv2d_full_then(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    pad: Pad2d,
    stride: usize,
    groups: usize,
    then: Epilogue,
) -> Result<Tensor> {
    let (padded, p);
    let x = match pad.symmetric() {
        Some(sym) => {
            p = sym;
            x
        }
        None => {
            p = 0;
            padded = pad_zeros(x, pad)?;
            &padded
        }
    };
    if groups == 1 {
        return conv2d_then(x, w, b, p, stride, then);
    }
    let depthwise = w.dims()[1] == 1 && groups == w.dims()[0] && x.dims()[1] == groups;
    if depthwise && cpu_op::applies(&[x, w]) && b.is_none_or(|b| cpu_op::applies(&[b])) {
        let y = x.contiguous()?.apply_op3_no_bwd(
            &w.contiguous()?,
            &bias_or_zeros(b, w)?,
            &depthwise::Depthwise {
                stride,
                padding: p,
                relu: then.relu(),
            },
        )?;
        return if then.relu() { Ok(y) } else { then.apply(y) };
    }
    let mut y = if depthwise {
        shifted::depthwise(&pad_zeros(x, Pad2d::same(p))?, w, stride)?
    } else {
        x.conv2d(w, p, stride, 1, groups)?
    };
    if let Some(b) = b {
        y = y.broadcast_add(&b.reshape((1, b.dims()[0], 1, 1))?)?;
    }
    then.apply(y)
}

struct FastConv {
    padding: usize,
    stride: usize,
    then: Epilogue,
    kernel: Kernel,
    /// Identity of the weight tensor, for the transformed-filter cache.
    weight_id: candle_core::TensorId,
}

/// A matrix operand for [`matmul`]: base pointer, column stride, row stride (in elements).
type Operand<P> = (P, isize, isize);

/// `dst (m × n) = lhs (m × k) · rhs (k × n)` on the `gemm` crate, overwriting `dst`,
/// single-threaded: both kernels run independent products in parallel themselves.
///
/// # Safety
/// Every operand must cover its whole matrix with the strides given, and `dst` must not
/// overlap the others.
unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: Operand<*mut f32>,
    lhs: Operand<*const f32>,
    rhs: Operand<*const f32>,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst.0,
        dst.1,
        dst.2,
        false,
        lhs.0,
        lhs.1,
        lhs.2,
        rhs.0,
        rhs.1,
        rhs.2,
        0.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

impl CustomOp3 for FastConv {
    fn name(&self) -> &'static str {
        "lrprune-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (
            f32_slice(s1, l1, "input")?,
            f32_slice(s2, l2, "weight")?,
            f32_slice(s3, l3, "bias")?,
        );
        let (batch, c, h, wd) = l1.shape().dims4()?;
        let (k, c2, kh, kw) = l2.shape().dims4()?;
        if c != c2 || b.len() != k {
            candle_core::bail!(
                "fast conv: input has {c} channels, weight {:?}, bias {}",
                l2.shape(),
                b.len()
            );
        }
        let g = Geometry {
            batch,
            c,
            h,
            w: wd,
            k,
            pad: self.padding,
        };
        let win = Window {
            kh,
            kw,
            stride: self.stride,
        };
        let (ho, wo) = win.out_hw(&g);
        let relu = self.then.relu();
        let mut y = match self.kernel {
            Kernel::Winograd => winograd::conv3x3(x, w, Some(self.weight_id), b, &g, relu),
            _ => im2col::conv(x, w, b, &g, &win, relu),
        };
        // After the conv, not in its stores: those scatter over filters, and a product or
        // quotient read at the same scattered places cost more there (measured at 224² on
        // AVX2).
        self.then.apply_in_place(&mut y)?;
        Ok((CpuStorage::F32(y), Shape::from((batch, k, ho, wo))))
    }
}
