//! Max-pooling with window = stride, parallel over planes on the CPU (Candle's CPU
//! max-pool runs on one thread, which made it a tenth of an evaluation at 32²). Other
//! devices, dtypes and shapes go through Candle's op.

use super::cpu_op;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `max_pool2d` with window `kernel` and `stride` on NCHW `x`.
pub fn max_pool(x: &Tensor, kernel: usize, stride: usize) -> Result<Tensor> {
    let fast = cpu_op::applies(&[x]) && x.rank() == 4 && kernel == stride;
    if !fast {
        return x.max_pool2d_with_stride(kernel, stride);
    }
    x.contiguous()?.apply_op1_no_bwd(&MaxPool { k: kernel })
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
