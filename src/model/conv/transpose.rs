//! The transpose of a stride-1 convolution as a convolution: the kernel flipped in space with
//! its input and output channels swapped, so the transpose runs on the fast conv kernels
//! (Candle's direct `conv_transpose2d` is much slower on the CPU). LRP's reverse pass needs
//! it for every conv of every relevance pass.

use crate::model::cpu_op::{self, f32_slice};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `w` (O, I, kh, kw) → (I, O, kh, kw) with `out[i][o][a][b] = w[o][i][kh-1-a][kw-1-b]`.
pub fn flipped_swapped(w: &Tensor) -> Result<Tensor> {
    if cpu_op::applies(&[w]) && w.rank() == 4 {
        // One pass over the weights; two index_selects, a transpose and a copy took as
        // long as the transposed conv itself on 512-channel layers with small maps.
        return w.contiguous()?.apply_op1_no_bwd(&FlipSwap);
    }
    let (kh, kw) = (w.dims()[2], w.dims()[3]);
    let rev = |n: usize| {
        Tensor::new(
            (0..n as u32).rev().collect::<Vec<_>>().as_slice(),
            w.device(),
        )
    };
    let flipped = w.index_select(&rev(kh)?, 2)?.index_select(&rev(kw)?, 3)?;
    flipped.transpose(0, 1)?.contiguous()
}

struct FlipSwap;

impl CustomOp1 for FlipSwap {
    fn name(&self) -> &'static str {
        "lrprune-flip-swap"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let w = f32_slice(s, l, "weight")?;
        let (o, i, kh, kw) = l.shape().dims4()?;
        let k = kh * kw;
        let mut out = vec![0f32; w.len()];
        out.par_chunks_mut(o * k).enumerate().for_each(|(ci, dst)| {
            for oi in 0..o {
                let src = &w[(oi * i + ci) * k..(oi * i + ci + 1) * k];
                // Flipping both spatial axes reverses the kh·kw block.
                for (d, s) in dst[oi * k..(oi + 1) * k].iter_mut().zip(src.iter().rev()) {
                    *d = *s;
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((i, o, kh, kw))))
    }
}
