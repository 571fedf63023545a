//! The rules' element-wise step `S = R / stab(Z)` as one pass.
//!
//! Written with Candle ops it is five passes over an activation-sized tensor (compare, cast,
//! scale, add, divide), which made element-wise work a fifth of a relevance pass on CPU.
//! On the CPU (f32, contiguous) this is one parallel loop; elsewhere the Candle ops run.

use crate::model::conv::epilogue::{stab_div, stab_div_ops};
use crate::model::cpu_op::{self, f32_slice};
use crate::model::layer::Window;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// zennit's stabiliser `z + ε·(sign(z) + [z = 0])`: never zero, same sign as z (0 → +).
pub fn stabilize(z: &Tensor, eps: f64) -> Result<Tensor> {
    let sign = z.ge(0.0)?.to_dtype(z.dtype())?.affine(2.0, -1.0)?;
    z + (sign * eps)?
}

/// `r / stabilize(z, eps)`.
pub fn ratio(r: &Tensor, z: &Tensor, eps: f64) -> Result<Tensor> {
    if !(cpu_op::applies(&[r, z]) && r.shape() == z.shape()) {
        return stab_div_ops(r, z, eps);
    }
    r.contiguous()?
        .apply_op2_no_bwd(&z.contiguous()?, &Ratio { eps: eps as f32 })
}

struct Ratio {
    eps: f32,
}

impl CustomOp2 for Ratio {
    fn name(&self) -> &'static str {
        "lrprune-stabilized-ratio"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (r, z) = (f32_slice(s1, l1, "relevance")?, f32_slice(s2, l2, "z")?);
        let eps = self.eps;
        let r: Vec<f32> = r
            .par_iter()
            .zip(z.par_iter())
            .with_min_len(1 << 14)
            .map(|(r, z)| stab_div(*r, *z, eps))
            .collect();
        Ok((CpuStorage::F32(r), l1.shape().clone()))
    }
}

/// Winner-take-all relevance through a max-pool on the CPU in one pass: each window's
/// relevance goes to the position(s) holding its maximum, split evenly on exact ties
/// (padded positions never win); overlapping windows add up, and positions outside every
/// window get none. `x`: the pool's input (N, C, H, W); `r`: relevance at its output.
/// `None` if this fast path does not apply (device, dtype, shapes).
pub fn max_pool_wta(x: &Tensor, r: &Tensor, win: Window) -> Result<Option<Tensor>> {
    if !(cpu_op::applies(&[x, r]) && x.rank() == 4 && r.rank() == 4) {
        return Ok(None);
    }
    Ok(Some(
        x.contiguous()?
            .apply_op2_no_bwd(&r.contiguous()?, &Wta { win })?,
    ))
}

struct Wta {
    win: Window,
}

impl CustomOp2 for Wta {
    fn name(&self) -> &'static str {
        "lrprune-maxpool-wta"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, r) = (f32_slice(s1, l1, "input")?, f32_slice(s2, l2, "relevance")?);
        let (n, c, h, w) = l1.shape().dims4()?;
        let (n2, c2, oh, ow) = l2.shape().dims4()?;
        let Window {
            kernel: k,
            stride,
            padding: (p, _),
        } = self.win;
        if n != n2 || c != c2 || oh != self.win.out_size(h) || ow != self.win.out_size(w) {
            candle_core::bail!(
                "max-pool WTA: input {:?} vs relevance {:?}",
                l1.shape(),
                l2.shape()
            );
        }
        // The valid input rows (or columns) of window `i`: padded positions never win.
        let span = |i: usize, n: usize| {
            let start = (i * stride).saturating_sub(p);
            let end = (i * stride + k).saturating_sub(p).min(n);
            start..end
        };
        let overlap = stride < k;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w))
            .zip(r.par_chunks(oh * ow))
            .for_each(|((o, xp), rp)| {
                for i in 0..oh {
                    for j in 0..ow {
                        let (rows, cols) = (span(i, h), span(j, w));
                        let mut best = f32::NEG_INFINITY;
                        let mut ties = 0usize;
                        for a in rows.clone() {
                            for &v in &xp[a * w + cols.start..a * w + cols.end] {
                                if v > best {
                                    best = v;
                                    ties = 1;
                                } else if v == best {
                                    ties += 1;
                                }
                            }
                        }
                        let share = rp[i * ow + j] / ties.max(1) as f32;
                        for a in rows {
                            for b in cols.clone() {
                                if xp[a * w + b] == best {
                                    // Assign where windows cannot overlap, so a −0.0 share
                                    // stays −0.0 (scores keep their exact ties).
                                    if overlap {
                                        o[a * w + b] += share;
                                    } else {
                                        o[a * w + b] = share;
                                    }
                                }
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}
