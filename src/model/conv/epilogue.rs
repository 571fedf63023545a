//! What a conv does with its output after adding the bias: ReLU, or a product or quotient
//! with a tensor of the output's shape. The last two are LRP's element-wise steps around a
//! rule's convolutions (`s = R / stab(z)` after z⁺, `x ⊙ c` after the transpose): applied
//! in place on the conv's output, no second activation-sized tensor is allocated, written
//! and read again.

use crate::model::cpu_op::with_f32;
use candle_core::{Result, Tensor};

/// What happens to `conv(x, W) + b` before it is stored.
#[derive(Clone, Debug)]
pub enum Epilogue {
    /// Stored as is.
    Bias,
    /// `max(0, ·)`.
    Relu,
    /// `· × m`, `m` of the output's shape.
    Times(Tensor),
    /// `r / stab(·)` with zennit's stabiliser (see [`stab_div`]), `r` of the output's shape.
    Ratio { r: Tensor, eps: f32 },
}

/// zennit's stabilised quotient `r / (z + ε·(sign(z) + [z = 0]))`: never a division by
/// zero, same sign as z (0 counts as +). The one definition the fused and unfused paths use.
#[inline(always)]
pub fn stab_div(r: f32, z: f32, eps: f32) -> f32 {
    r / if z >= 0.0 { z + eps } else { z - eps }
}

/// [`stab_div`] with Candle ops (other devices and dtypes).
pub fn stab_div_ops(r: &Tensor, z: &Tensor, eps: f64) -> Result<Tensor> {
    let sign = z.ge(0.0)?.to_dtype(z.dtype())?.affine(2.0, -1.0)?;
    r / (z + (sign * eps)?)?
}

impl Epilogue {
    /// The operand besides the output, if any.
    pub fn operand(&self) -> Option<&Tensor> {
        match self {
            Epilogue::Times(t) | Epilogue::Ratio { r: t, .. } => Some(t),
            _ => None,
        }
    }

    /// Applied with Candle ops to `y = conv + b` (the paths without a fused store).
    pub fn apply_ops(&self, y: Tensor) -> Result<Tensor> {
        match self {
            Epilogue::Bias => Ok(y),
            Epilogue::Relu => y.relu(),
            Epilogue::Times(m) => m * y,
            Epilogue::Ratio { r, eps } => stab_div_ops(r, &y, *eps as f64),
        }
    }
}

/// An [`Epilogue`] on raw CPU data.
#[derive(Clone, Copy)]
pub enum Store<'a> {
    Plain { relu: bool },
    Times(&'a [f32]),
    Ratio(&'a [f32], f32),
}

impl Store<'_> {
    pub fn relu(&self) -> bool {
        matches!(self, Store::Plain { relu: true })
    }

    /// Whether the conv's output is kept as computed (after the bias and any ReLU).
    pub fn is_plain(&self) -> bool {
        matches!(self, Store::Plain { .. })
    }

    /// The value at output index `at` for `v = conv + b` (ReLU already applied).
    #[inline(always)]
    pub fn value(&self, v: f32, at: usize) -> f32 {
        match self {
            Store::Plain { .. } => v,
            Store::Times(m) => m[at] * v,
            Store::Ratio(r, eps) => stab_div(r[at], v, *eps),
        }
    }

    /// Applied in place to a whole output `y`.
    pub fn apply_all(&self, y: &mut [f32]) {
        use rayon::prelude::*;
        if self.is_plain() {
            return;
        }
        y.par_iter_mut()
            .enumerate()
            .with_min_len(1 << 14)
            .for_each(|(i, v)| *v = self.value(*v, i));
    }
}

/// Run `f` with the [`Store`] of `e`, its operand read from CPU memory and checked to have
/// `len` values.
pub fn with_store<T>(e: &Epilogue, len: usize, f: impl FnOnce(Store) -> Result<T>) -> Result<T> {
    let Some(t) = e.operand() else {
        return f(Store::Plain {
            relu: matches!(e, Epilogue::Relu),
        });
    };
    with_f32(t, "epilogue operand", |data| {
        if data.len() != len {
            candle_core::bail!(
                "conv epilogue: operand has {} values, the output {len}",
                data.len()
            );
        }
        f(match e {
            Epilogue::Ratio { eps, .. } => Store::Ratio(data, *eps),
            _ => Store::Times(data),
        })
    })
}
