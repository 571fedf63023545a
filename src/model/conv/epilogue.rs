//! What a conv does with its output after adding the bias: ReLU, or a product or quotient
//! with a tensor of the output's shape. The last two are LRP's element-wise steps around a
//! rule's convolutions (`s = R / stab(z)` after z⁺, `x ⊙ c` after the transpose): on the
//! CPU kernels they run in place on the conv's output, so no second activation-sized tensor
//! is allocated, written and read again.

use crate::model::cpu_op::{self, f32_slice, with_f32};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// What happens to `conv(x, W) + b` before it is returned.
#[derive(Clone, Debug)]
pub enum Epilogue {
    /// Returned as is.
    Bias,
    /// `max(0, ·)` (the kernels fuse it into their stores).
    Relu,
    /// `m × ·`, `m` of the output's shape.
    Times(Tensor),
    /// `r / stab(·)` ([`stab_div`]), `r` of the output's shape.
    Ratio { r: Tensor, eps: f32 },
}

impl Epilogue {
    pub fn relu(&self) -> bool {
        matches!(self, Epilogue::Relu)
    }

    /// The operand besides the output, if any.
    pub fn operand(&self) -> Option<&Tensor> {
        match self {
            Epilogue::Times(t) | Epilogue::Ratio { r: t, .. } => Some(t),
            _ => None,
        }
    }

    /// Applied to `y = conv + b`, ReLU included (the paths without lrprune's kernels).
    pub fn apply(&self, y: Tensor) -> Result<Tensor> {
        match self {
            Epilogue::Bias => Ok(y),
            Epilogue::Relu => y.relu(),
            Epilogue::Times(m) => m * y,
            Epilogue::Ratio { r, eps } => stabilized_ratio(r, &y, *eps as f64),
        }
    }

    /// Applied in place to a CPU kernel's output `y`, whose stores already did any ReLU.
    pub fn apply_in_place(&self, y: &mut [f32]) -> Result<()> {
        let Some(t) = self.operand() else {
            return Ok(());
        };
        with_f32(t, "epilogue operand", |m| {
            if m.len() != y.len() {
                candle_core::bail!(
                    "conv epilogue: operand has {} values, the output {}",
                    m.len(),
                    y.len()
                );
            }
            let pairs = y.par_iter_mut().zip(m.par_iter()).with_min_len(1 << 14);
            match self {
                Epilogue::Ratio { eps, .. } => pairs.for_each(|(v, r)| *v = stab_div(*r, *v, *eps)),
                _ => pairs.for_each(|(v, m)| *v *= *m),
            }
            Ok(())
        })
    }
}

/// zennit's stabilised quotient `r / (z + ε·(sign(z) + [z = 0]))`: never a division by
/// zero, same sign as z (0 counts as +). The one definition every path uses.
#[inline(always)]
pub fn stab_div(r: f32, z: f32, eps: f32) -> f32 {
    r / if z >= 0.0 { z + eps } else { z - eps }
}

/// `r / stab(z)` as a new tensor: one parallel pass on the CPU (with Candle ops it is five
/// passes: compare, cast, scale, add, divide), Candle's ops elsewhere.
pub fn stabilized_ratio(r: &Tensor, z: &Tensor, eps: f64) -> Result<Tensor> {
    if cpu_op::applies(&[r, z]) && r.shape() == z.shape() {
        return r
            .contiguous()?
            .apply_op2_no_bwd(&z.contiguous()?, &Ratio { eps: eps as f32 });
    }
    stabilized_ratio_ops(r, z, eps)
}

/// [`stabilized_ratio`] with Candle ops (other devices and dtypes).
pub fn stabilized_ratio_ops(r: &Tensor, z: &Tensor, eps: f64) -> Result<Tensor> {
    let sign = z.ge(0.0)?.to_dtype(z.dtype())?.affine(2.0, -1.0)?;
    r / (z + (sign * eps)?)?
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
