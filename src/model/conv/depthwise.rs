//! Depthwise convolution (one filter per channel, `groups = C`) on the CPU: a direct loop
//! per (image, channel) plane, parallel over planes, and its transpose for LRP.
//!
//! Candle runs a grouped conv as one convolution per group, which for MobileNet's 960-wide
//! depthwise layers is hundreds of tiny calls; a direct loop over each 3×3 window is what
//! this op costs anyway. Other devices take Candle's grouped conv (see [`super::conv2d_full`]).

use crate::model::cpu_op::f32_slice;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape};
use rayon::prelude::*;

/// Geometry shared by the forward pass and its transpose.
#[derive(Clone, Copy)]
pub struct Depthwise {
    pub stride: usize,
    pub padding: usize,
    pub relu: bool,
}

impl Depthwise {
    fn out_hw(&self, h: usize, w: usize, kh: usize, kw: usize) -> (usize, usize) {
        (
            (h + 2 * self.padding - kh) / self.stride + 1,
            (w + 2 * self.padding - kw) / self.stride + 1,
        )
    }

    /// Visit every (output position, kernel tap, input position) of one plane.
    fn taps(
        &self,
        (h, w): (usize, usize),
        (kh, kw): (usize, usize),
        (oh, ow): (usize, usize),
        mut f: impl FnMut(usize, usize, usize),
    ) {
        let p = self.padding as isize;
        for i in 0..oh {
            for j in 0..ow {
                for a in 0..kh {
                    let y = (i * self.stride + a) as isize - p;
                    if y < 0 || y >= h as isize {
                        continue;
                    }
                    for b in 0..kw {
                        let x = (j * self.stride + b) as isize - p;
                        if x < 0 || x >= w as isize {
                            continue;
                        }
                        f(i * ow + j, a * kw + b, y as usize * w + x as usize);
                    }
                }
            }
        }
    }
}

impl CustomOp3 for Depthwise {
    fn name(&self) -> &'static str {
        "lrprune-depthwise"
    }

    /// x (N, C, H, W), weight (C, 1, kh, kw), bias (C,) → (N, C, OH, OW).
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, wt, b) = (
            f32_slice(s1, l1, "input")?,
            f32_slice(s2, l2, "weight")?,
            f32_slice(s3, l3, "bias")?,
        );
        let (n, c, h, w) = l1.shape().dims4()?;
        let (_, _, kh, kw) = l2.shape().dims4()?;
        let (oh, ow) = self.out_hw(h, w, kh, kw);
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(h * w))
            .enumerate()
            .for_each(|(plane, (o, xp))| {
                let ch = plane % c;
                let k = &wt[ch * kh * kw..(ch + 1) * kh * kw];
                o.iter_mut().for_each(|v| *v = b[ch]);
                self.taps((h, w), (kh, kw), (oh, ow), |oi, ki, xi| {
                    o[oi] += k[ki] * xp[xi]
                });
                if self.relu {
                    o.iter_mut().for_each(|v| *v = v.max(0.0));
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

/// The transpose of a depthwise conv: `s` (N, C, OH, OW) back to (N, C, H, W).
pub struct DepthwiseTranspose {
    pub geometry: Depthwise,
    pub in_hw: (usize, usize),
}

impl candle_core::CustomOp2 for DepthwiseTranspose {
    fn name(&self) -> &'static str {
        "lrprune-depthwise-transpose"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (s, wt) = (f32_slice(s1, l1, "s")?, f32_slice(s2, l2, "weight")?);
        let (n, c, oh, ow) = l1.shape().dims4()?;
        let (_, _, kh, kw) = l2.shape().dims4()?;
        let (h, w) = self.in_hw;
        let mut out = vec![0f32; n * c * h * w];
        out.par_chunks_mut(h * w)
            .zip(s.par_chunks(oh * ow))
            .enumerate()
            .for_each(|(plane, (o, sp))| {
                let ch = plane % c;
                let k = &wt[ch * kh * kw..(ch + 1) * kh * kw];
                self.geometry
                    .taps((h, w), (kh, kw), (oh, ow), |oi, ki, xi| {
                        o[xi] += k[ki] * sp[oi]
                    });
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, h, w))))
    }
}
