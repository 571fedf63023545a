//! Pooling. Max-pooling with window = stride runs parallel over planes on the CPU (Candle's
//! CPU max-pool runs on one thread, which made it a tenth of an evaluation at 32²); other
//! devices, dtypes and shapes go through Candle's op, with padding as −∞ (a padded position
//! never wins, as in PyTorch).

use super::cpu_op;
use super::geometry::Window;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// `max_pool2d` with `win` on NCHW `x`.
pub fn max_pool(x: &Tensor, win: Window) -> Result<Tensor> {
    let Window {
        kernel,
        stride,
        padding,
    } = win;
    if cpu_op::applies(&[x]) && x.rank() == 4 && kernel == stride && padding == (0, 0) {
        return x.contiguous()?.apply_op1_no_bwd(&MaxPool { k: kernel });
    }
    pad_neg_inf(x, padding)?.max_pool2d_with_stride(kernel, stride)
}

/// `x` with `before` rows and columns of −∞ at the top and left, `after` at the bottom and
/// right.
pub fn pad_neg_inf(x: &Tensor, (before, after): (usize, usize)) -> Result<Tensor> {
    if (before, after) == (0, 0) {
        return Ok(x.clone());
    }
    let (n, c, h, w) = x.dims4()?;
    let fill = |shape: (usize, usize, usize, usize)| {
        Tensor::full(f32::NEG_INFINITY, shape, x.device())?.to_dtype(x.dtype())
    };
    let x = Tensor::cat(&[&fill((n, c, before, w))?, x, &fill((n, c, after, w))?], 2)?;
    let hp = h + before + after;
    Tensor::cat(
        &[&fill((n, c, hp, before))?, &x, &fill((n, c, hp, after))?],
        3,
    )
}

/// The input rows `start..end` averaged into adaptive bin `i` of `out` (PyTorch's
/// `floor(i·n/out) .. ceil((i+1)·n/out)`).
pub fn adaptive_bin(i: usize, n: usize, out: usize) -> (usize, usize) {
    (i * n / out, ((i + 1) * n).div_ceil(out))
}

/// `nn.AdaptiveAvgPool2d((oh, ow))` on NCHW `x`.
pub fn adaptive_avg_pool(x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if (oh, ow) == (1, 1) {
        return x.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2);
    }
    let mut rows = Vec::with_capacity(oh);
    for i in 0..oh {
        let (h0, h1) = adaptive_bin(i, h, oh);
        let band = x.narrow(2, h0, h1 - h0)?;
        let cells = (0..ow)
            .map(|j| {
                let (w0, w1) = adaptive_bin(j, w, ow);
                band.narrow(3, w0, w1 - w0)?
                    .mean_keepdim(D::Minus1)?
                    .mean_keepdim(D::Minus2)
            })
            .collect::<Result<Vec<_>>>()?;
        rows.push(Tensor::cat(&cells, 3)?);
    }
    Tensor::cat(&rows, 2)
}

struct MaxPool {
    k: usize,
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "lrprune-maxpool"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_op::f32_slice(s, l, "max-pool input")?;
        let (n, c, h, w) = l.shape().dims4()?;
        let k = self.k;
        let (oh, ow) = (h / k, w / k);
        let mut out = vec![0f32; n * c * oh * ow];
        if oh * ow > 0 {
            out.par_chunks_mut(oh * ow)
                .zip(x.par_chunks(h * w))
                .for_each(|(o, p)| {
                    for i in 0..oh {
                        for j in 0..ow {
                            let mut m = f32::NEG_INFINITY;
                            for a in 0..k {
                                let row = &p[(i * k + a) * w + j * k..][..k];
                                m = row.iter().fold(m, |m, v| m.max(*v));
                            }
                            o[i * ow + j] = m;
                        }
                    }
                });
        }
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}
