//! Convolution as im2col + one GEMM per image, for the shapes Winograd does not fit: few input
//! channels (VGG's first conv reads 3), strides > 1, kernels other than 3×3.
//!
//! Per image, `y (K × HoWo) = W (K × C·kh·kw) · col (C·kh·kw × HoWo)` lands directly in NCHW
//! order, so no output transpose is needed; images run in parallel.

use super::winograd::Geometry;
use rayon::prelude::*;

/// Kernel size and stride on top of a [`Geometry`].
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
}

impl Window {
    pub fn out_hw(&self, g: &Geometry) -> (usize, usize) {
        (
            (g.h + 2 * g.pad - self.kh) / self.stride + 1,
            (g.w + 2 * g.pad - self.kw) / self.stride + 1,
        )
    }
}

/// `y = conv(x, weight) + bias` (then ReLU if `relu`), NCHW, f32.
pub fn conv(
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    g: &Geometry,
    win: &Window,
    relu: bool,
) -> Vec<f32> {
    let (ho, wo) = win.out_hw(g);
    let (plane_in, plane_out) = (g.h * g.w, ho * wo);
    let kdim = g.c * win.kh * win.kw;
    let mut y = vec![0f32; g.batch * g.k * plane_out];
    y.par_chunks_mut(g.k * plane_out)
        .enumerate()
        .for_each(|(b, yb)| {
            let xb = &x[b * g.c * plane_in..(b + 1) * g.c * plane_in];
            let mut col = vec![0f32; kdim * plane_out];
            for c in 0..g.c {
                for i in 0..win.kh {
                    for j in 0..win.kw {
                        let row = &mut col[((c * win.kh + i) * win.kw + j) * plane_out..];
                        for oy in 0..ho {
                            let iy = (oy * win.stride + i) as isize - g.pad as isize;
                            if iy < 0 || iy >= g.h as isize {
                                continue;
                            }
                            for ox in 0..wo {
                                let ix = (ox * win.stride + j) as isize - g.pad as isize;
                                if ix >= 0 && ix < g.w as isize {
                                    row[oy * wo + ox] =
                                        xb[c * plane_in + iy as usize * g.w + ix as usize];
                                }
                            }
                        }
                    }
                }
            }
            // SAFETY: yb is K × HoWo, weight K × kdim, col kdim × HoWo, all row-major.
            unsafe {
                super::matmul(
                    g.k,
                    plane_out,
                    kdim,
                    (yb.as_mut_ptr(), 1, plane_out as isize),
                    (weight.as_ptr(), 1, kdim as isize),
                    (col.as_ptr(), 1, plane_out as isize),
                )
            }
            for (k, plane) in yb.chunks_mut(plane_out).enumerate() {
                for v in plane {
                    *v += bias[k];
                    if relu {
                        *v = v.max(0.0);
                    }
                }
            }
        });
    y
}
