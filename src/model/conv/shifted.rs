//! Depthwise convolution and its transpose as k² shifted multiply-adds of whole tensors.
//!
//! This is the path for devices without lrprune's CPU kernel (CUDA) and for tensors on an
//! autograd tape. Candle runs a grouped conv as one conv per group: a depthwise layer of 960
//! channels became 960 cuDNN calls (and as many in the backward pass). Here a 3×3 depthwise
//! layer costs 9 broadcast multiplies and adds over the whole batch, on any device, and
//! stays differentiable.

use candle_core::{Result, Tensor};

/// Depthwise `conv(x, w)` with stride `stride`, no padding (pad `x` first): `x` is
/// (N, C, H, W), `w` is (C, 1, kh, kw).
pub fn depthwise(x: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
    let (_, c, h, wd) = x.dims4()?;
    let (_, _, kh, kw) = w.dims4()?;
    if h < kh || wd < kw || stride == 0 {
        candle_core::bail!("depthwise conv: a {kh}×{kw} kernel does not fit a {h}×{wd} input");
    }
    // Stride-1 output first; a strided conv keeps every `stride`-th row and column of it.
    let (h1, w1) = (h - kh + 1, wd - kw + 1);
    let mut acc: Option<Tensor> = None;
    for i in 0..kh {
        for j in 0..kw {
            let k = w.narrow(2, i, 1)?.narrow(3, j, 1)?.reshape((1, c, 1, 1))?;
            let term = x.narrow(2, i, h1)?.narrow(3, j, w1)?.broadcast_mul(&k)?;
            acc = Some(match acc {
                None => term,
                Some(a) => (a + term)?,
            });
        }
    }
    let y = acc.expect("a kernel has at least one tap");
    if stride == 1 {
        return Ok(y);
    }
    let keep = |n: usize| {
        let idx: Vec<u32> = (0..n.div_ceil(stride))
            .map(|i| (i * stride) as u32)
            .collect();
        Tensor::new(idx.as_slice(), x.device())
    };
    y.index_select(&keep(h1)?, 2)?.index_select(&keep(w1)?, 3)
}

/// The transpose (adjoint) of [`depthwise`] after symmetric zero padding `p`: maps a
/// (N, C, Ho, Wo) output-side tensor onto the (N, C, h, w) input `in_hw` of the conv.
pub fn depthwise_transpose(
    s: &Tensor,
    w: &Tensor,
    p: usize,
    stride: usize,
    in_hw: (usize, usize),
) -> Result<Tensor> {
    let (_, _, kh, kw) = w.dims4()?;
    // Put the outputs back on the stride-1 grid (zeros between them) ...
    let u = spread(&spread(s, 3, stride)?, 2, stride)?;
    // ... then a full correlation with the flipped kernel gives the padded input's share.
    let full = u
        .pad_with_zeros(2, kh - 1, kh - 1)?
        .pad_with_zeros(3, kw - 1, kw - 1)?;
    let g = depthwise(&full, &flip(w)?, 1)?;
    // Rows and columns the strided conv never read get nothing; then drop the padding.
    let (ph, pw) = (in_hw.0 + 2 * p, in_hw.1 + 2 * p);
    let g = g
        .pad_with_zeros(2, 0, ph.saturating_sub(g.dim(2)?))?
        .pad_with_zeros(3, 0, pw.saturating_sub(g.dim(3)?))?;
    g.narrow(2, p, in_hw.0)?.narrow(3, p, in_hw.1)
}

/// `t` with `stride - 1` zeros inserted between neighbours along `dim` (2 or 3 of NCHW).
fn spread(t: &Tensor, dim: usize, stride: usize) -> Result<Tensor> {
    if stride == 1 {
        return Ok(t.clone());
    }
    let n = t.dim(dim)?;
    let mut parts = vec![t.clone()];
    parts.extend(std::iter::repeat_n(t.zeros_like()?, stride - 1));
    let mut dims = t.dims().to_vec();
    dims[dim] = n * stride;
    Tensor::stack(&parts, dim + 1)?
        .reshape(dims)?
        .narrow(dim, 0, (n - 1) * stride + 1)
}

/// The kernel rotated by 180° in space.
fn flip(w: &Tensor) -> Result<Tensor> {
    let rev = |n: usize| Tensor::new((0..n as u32).rev().collect::<Vec<_>>(), w.device());
    w.index_select(&rev(w.dim(2)?)?, 2)?
        .index_select(&rev(w.dim(3)?)?, 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn matches_candle_grouped_conv_and_its_gradient() {
        let d = Device::Cpu;
        for (k, stride, p, hw) in [(3, 1, 1, 9), (3, 2, 1, 9), (3, 2, 1, 8), (5, 2, 2, 11)] {
            let x = Tensor::randn(0f32, 1.0, (2, 4, hw, hw), &d).unwrap();
            let w = Tensor::randn(0f32, 1.0, (4, 1, k, k), &d).unwrap();
            let want = x.conv2d(&w, p, stride, 1, 4).unwrap();
            let padded = x
                .pad_with_zeros(2, p, p)
                .unwrap()
                .pad_with_zeros(3, p, p)
                .unwrap();
            let got = depthwise(&padded, &w, stride).unwrap();
            assert_eq!(got.dims(), want.dims(), "k{k} s{stride} {hw}²");
            assert!(max_diff(&got, &want) < 1e-4, "k{k} s{stride} {hw}²");

            // The transpose is the gradient of ⟨conv(x), s⟩ with respect to x.
            let s = Tensor::randn(0f32, 1.0, want.dims(), &d).unwrap();
            let v = Var::from_tensor(&x).unwrap();
            let y = v.as_tensor().conv2d(&w, p, stride, 1, 4).unwrap();
            let g = (y * &s).unwrap().sum_all().unwrap().backward().unwrap();
            let grad = g.get(v.as_tensor()).unwrap();
            let got = depthwise_transpose(&s, &w, p, stride, (hw, hw)).unwrap();
            assert_eq!(got.dims(), grad.dims());
            assert!(
                max_diff(&got, grad) < 1e-4,
                "transpose k{k} s{stride} {hw}²"
            );
        }
    }
}
