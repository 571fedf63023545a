//! The reverse pass's element-wise steps as one CPU pass each: the stabilised quotient
//! `S = R / stab(Z)` (defined with the conv epilogues, `model::conv::epilogue`), the
//! negative-input check and winner-take-all relevance through a max-pool. Written with
//! Candle ops each is several passes over an activation-sized tensor; elsewhere than the
//! CPU (f32, contiguous) the Candle ops run.

use crate::model::cpu_op::{self, f32_slice};
use crate::model::geometry::Window;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Whether `x` holds a value below zero: after a ReLU it holds none, and a rule may skip
/// the negative part. One parallel pass on the CPU (Candle's `min_all` is a serial one).
pub fn has_negative(x: &Tensor) -> Result<bool> {
    if cpu_op::applies(&[x]) {
        return cpu_op::with_f32(x, "input", |v| {
            Ok(v.par_iter().with_min_len(1 << 16).any(|v| *v < 0.0))
        });
    }
    Ok(x.min_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?
        < 0.0)
}

/// `r / stab(z)` (the stabilised quotient lives with the conv epilogues that fuse it).
pub use crate::model::conv::epilogue::stabilized_ratio as ratio;

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
        let mut out = vec![0f32; x.len()];
        let fast = k == 2 && stride == 2 && p == 0;
        out.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w))
            .zip(r.par_chunks(oh * ow))
            .for_each(|((o, xp), rp)| {
                let plane = Plane {
                    o,
                    x: xp,
                    r: rp,
                    h,
                    w,
                };
                if fast {
                    plane.wta_2x2();
                } else {
                    plane.wta(self.win);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// One (image, channel) plane of [`Wta`]: `o` (zeros on entry) and `x` are H×W, `r` the
/// pool's output plane.
struct Plane<'a> {
    o: &'a mut [f32],
    x: &'a [f32],
    r: &'a [f32],
    h: usize,
    w: usize,
}

impl Plane<'_> {
    fn wta(self, win: Window) {
        let Plane { o, x, r, h, w } = self;
        let Window {
            kernel: k,
            stride,
            padding: (p, _),
        } = win;
        let (oh, ow) = (win.out_size(h), win.out_size(w));
        // The valid input rows (or columns) of window `i`: padded positions never win.
        let span = |i: usize, n: usize| {
            let start = (i * stride).saturating_sub(p);
            let end = (i * stride + k).saturating_sub(p).min(n);
            start..end
        };
        let overlap = stride < k;
        for i in 0..oh {
            for j in 0..ow {
                let (rows, cols) = (span(i, h), span(j, w));
                let mut best = f32::NEG_INFINITY;
                let mut ties = 0usize;
                for a in rows.clone() {
                    for &v in &x[a * w + cols.start..a * w + cols.end] {
                        if v > best {
                            best = v;
                            ties = 1;
                        } else if v == best {
                            ties += 1;
                        }
                    }
                }
                let share = r[i * ow + j] / ties.max(1) as f32;
                for a in rows {
                    for b in cols.clone() {
                        if x[a * w + b] == best {
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
    }

    /// [`Plane::wta`] for VGG's 2×2 stride-2 unpadded pools, unrolled (the generic loop was
    /// a fifth of the reverse pass's time outside the convs at 224²): the same winners,
    /// ties and shares, bit for bit.
    fn wta_2x2(self) {
        let Plane { o, x, r, h, w } = self;
        let (oh, ow) = (h / 2, w / 2);
        for i in 0..oh {
            let (r0, r1) = (2 * i * w, (2 * i + 1) * w);
            for j in 0..ow {
                let at = [r0 + 2 * j, r0 + 2 * j + 1, r1 + 2 * j, r1 + 2 * j + 1];
                let v = at.map(|a| x[a]);
                // f32::max skips NaN as the generic `v > best` does; an all-NaN window
                // has no winner in both.
                let best = v[0].max(v[1]).max(v[2].max(v[3]));
                let ties = v.iter().filter(|u| **u == best).count();
                let share = r[i * ow + j] / ties.max(1) as f32;
                for (a, u) in at.iter().zip(v) {
                    if u == best {
                        o[*a] = share;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unrolled_2x2_pool_equals_the_generic_loop_bit_for_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let specials = [0.0, -0.0, 1.0, f32::NAN, f32::NEG_INFINITY, f32::INFINITY];
        for (h, w) in [(7, 9), (8, 8), (2, 3), (3, 2)] {
            let x: Vec<f32> = (0..h * w)
                .map(|_| match rng.random_range(0..4) {
                    0 => specials[rng.random_range(0..specials.len())],
                    1 => 1.0, // exact ties
                    _ => rng.random_range(-2.0..2.0),
                })
                .collect();
            let (oh, ow) = (h / 2, w / 2);
            let r: Vec<f32> = (0..oh * ow).map(|_| rng.random_range(-1.0..1.0)).collect();
            let (mut a, mut b) = (vec![0f32; h * w], vec![0f32; h * w]);
            let plane = |o| Plane {
                o,
                x: &x,
                r: &r,
                h,
                w,
            };
            plane(&mut a).wta(Window::new(2, 2, 0));
            plane(&mut b).wta_2x2();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{h}×{w}: {x:?}");
        }
    }
}
