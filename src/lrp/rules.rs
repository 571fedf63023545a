//! LRP rules for affine layers (conv and linear), written once over an [`Affine`] operator.
//!
//! Each rule maps the relevance `R` at a layer's output to relevance at its input, given the
//! layer's stored input `x`. The forms follow zennit (Anders et al. 2021), so that our numbers
//! can be checked against it: stabiliser `z + ε·(sign(z) + [z = 0])`, z⁺ splitting inputs and
//! weights by sign.

use super::fused::{has_negative, ratio};
use crate::model::conv::depthwise::{Depthwise, DepthwiseTranspose};
use crate::model::conv::reuse::derived;
use crate::model::conv::transpose::flipped_swapped;
use crate::model::conv::{conv2d_full, conv2d_full_then, conv2d_then, Epilogue};
use crate::model::cpu_op;
use crate::model::geometry::Pad2d;
use crate::model::layer::Conv;
use candle_core::{Result, Tensor};

/// An affine operator `x ↦ A(x; W) + b` with its transpose, enough to express every rule.
pub trait Affine {
    fn forward(&self, x: &Tensor, w: &Tensor) -> Result<Tensor>;
    /// The transpose (gradient w.r.t. the input) of `forward` applied to `s`.
    fn transpose(&self, s: &Tensor, w: &Tensor, input: &Tensor) -> Result<Tensor>;
    /// Broadcast a bias `(out,)` onto an output.
    fn add_bias(&self, z: &Tensor, b: &Tensor) -> Result<Tensor>;
    /// `forward(x, w) + b`, fused where the operator can.
    fn forward_bias(&self, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.add_bias(&self.forward(x, w)?, b)
    }
    /// `r / stab(forward(x, w) + b)`, fused where the operator can (the same values).
    fn forward_ratio(&self, x: &Tensor, w: &Tensor, b: &Tensor, r: &Tensor) -> Result<Tensor> {
        ratio(r, &self.forward_bias(x, w, b)?, STAB)
    }
    /// `m ⊙ transpose(s, w, input)`, fused where the operator can (the same values).
    fn transpose_times(
        &self,
        s: &Tensor,
        w: &Tensor,
        input: &Tensor,
        m: &Tensor,
    ) -> Result<Tensor> {
        m * self.transpose(s, w, input)?
    }
}

/// A conv as an affine operator: any padding, grouped or depthwise.
pub struct ConvOp {
    pub padding: Pad2d,
    pub stride: usize,
    pub groups: usize,
}

impl ConvOp {
    pub fn of(c: &Conv) -> Self {
        Self {
            padding: c.padding,
            stride: c.stride,
            groups: c.groups,
        }
    }

    /// The transpose of this conv applied to `s`, onto `input`'s size, then `then`.
    fn transpose_then(
        &self,
        s: &Tensor,
        w: &Tensor,
        input: &Tensor,
        then: Epilogue,
    ) -> Result<Tensor> {
        let (_, _, h, wd) = input.dims4()?;
        let Some(p) = self.padding.symmetric() else {
            // Asymmetric padding: transpose onto the padded input, then crop the padding.
            let (t, l) = (self.padding.h.0, self.padding.w.0);
            let padded = (h + t + self.padding.h.1, wd + l + self.padding.w.1);
            let full = transpose_sym(s, w, 0, self.stride, self.groups, padded, Epilogue::Bias)?;
            return then.apply(full.narrow(2, t, h)?.narrow(3, l, wd)?);
        };
        transpose_sym(s, w, p, self.stride, self.groups, (h, wd), then)
    }
}

impl Affine for ConvOp {
    fn forward(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        conv2d_full(x, w, None, self.padding, self.stride, self.groups, false)
    }
    fn forward_bias(&self, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
        conv2d_full(x, w, Some(b), self.padding, self.stride, self.groups, false)
    }
    fn forward_ratio(&self, x: &Tensor, w: &Tensor, b: &Tensor, r: &Tensor) -> Result<Tensor> {
        let then = Epilogue::Ratio {
            r: r.clone(),
            eps: STAB as f32,
        };
        conv2d_full_then(x, w, Some(b), self.padding, self.stride, self.groups, then)
    }
    fn transpose_times(
        &self,
        s: &Tensor,
        w: &Tensor,
        input: &Tensor,
        m: &Tensor,
    ) -> Result<Tensor> {
        self.transpose_then(s, w, input, Epilogue::Times(m.clone()))
    }
    fn transpose(&self, s: &Tensor, w: &Tensor, input: &Tensor) -> Result<Tensor> {
        self.transpose_then(s, w, input, Epilogue::Bias)
    }
    fn add_bias(&self, z: &Tensor, b: &Tensor) -> Result<Tensor> {
        z.broadcast_add(&b.reshape((1, b.dims()[0], 1, 1))?)
    }
}

/// The transpose of a conv with symmetric padding `p` onto an input of size `in_hw`, then
/// `then`.
fn transpose_sym(
    s: &Tensor,
    w: &Tensor,
    p: usize,
    stride: usize,
    groups: usize,
    in_hw: (usize, usize),
    then: Epilogue,
) -> Result<Tensor> {
    let (kh, kw) = (w.dims()[2], w.dims()[3]);
    if groups == 1 && stride == 1 && kh == kw && p < kh {
        // Stride 1: a plain convolution (model::conv::transpose), `then` in place.
        let flipped = derived(w, "flipped-transpose", flipped_swapped)?;
        return conv2d_then(s, &flipped, None, kh - 1 - p, 1, then);
    }
    then.apply(transpose_other(s, w, p, stride, groups, in_hw)?)
}

/// [`transpose_sym`]'s other shapes: strided, grouped, depthwise.
fn transpose_other(
    s: &Tensor,
    w: &Tensor,
    p: usize,
    stride: usize,
    groups: usize,
    in_hw: (usize, usize),
) -> Result<Tensor> {
    let (kh, kw) = (w.dims()[2], w.dims()[3]);
    if groups == 1 {
        let natural = (s.dims()[2] - 1) * stride + kh - 2 * p;
        if natural <= in_hw.0 && in_hw.0 - natural < stride && kh == kw && in_hw.0 == in_hw.1 {
            return s.conv_transpose2d(w, p, in_hw.0 - natural, stride, 1);
        }
    }
    let depthwise = w.dims()[1] == 1 && groups == w.dims()[0];
    if depthwise && cpu_op::applies(&[s, w]) {
        let op = DepthwiseTranspose {
            geometry: Depthwise {
                stride,
                padding: p,
                relu: false,
            },
            in_hw,
        };
        return s.contiguous()?.apply_op2_no_bwd(&w.contiguous()?, &op);
    }
    if depthwise {
        return crate::model::conv::shifted::depthwise_transpose(s, w, p, stride, in_hw);
    }
    transpose_by_gradient(s, w, p, stride, groups, in_hw)
}

/// Any conv's transpose as the gradient of `⟨conv(x), s⟩` with respect to `x`: what the
/// other devices use for grouped convs and non-square shapes.
fn transpose_by_gradient(
    s: &Tensor,
    w: &Tensor,
    p: usize,
    stride: usize,
    groups: usize,
    (h, wd): (usize, usize),
) -> Result<Tensor> {
    let n = s.dims()[0];
    let c = w.dims()[1] * groups;
    let x = candle_core::Var::zeros((n, c, h, wd), s.dtype(), s.device())?;
    let y = x.as_tensor().conv2d(&w.detach(), p, stride, 1, groups)?;
    let grads = (y * s.detach())?.sum_all()?.backward()?;
    grads
        .get(x.as_tensor())
        .cloned()
        .ok_or_else(|| candle_core::Error::Msg("no gradient for the conv transpose".into()))
}

pub struct LinearOp;

impl Affine for LinearOp {
    fn forward(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        x.matmul(&w.t()?)
    }
    fn transpose(&self, s: &Tensor, w: &Tensor, _input: &Tensor) -> Result<Tensor> {
        s.matmul(w)
    }
    fn add_bias(&self, z: &Tensor, b: &Tensor) -> Result<Tensor> {
        z.broadcast_add(b)
    }
}

pub use crate::spec::Rule;

fn pos(t: &Tensor) -> Result<Tensor> {
    t.relu()
}
fn neg(t: &Tensor) -> Result<Tensor> {
    t.minimum(0.0)
}

const STAB: f64 = 1e-6;

/// Apply `rule` to an affine layer. `bounds` = per-input (low, high) tensors broadcastable to
/// `x`, required by [`Rule::ZBox`].
pub fn apply(
    rule: Rule,
    op: &dyn Affine,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    r: &Tensor,
    bounds: Option<&(Tensor, Tensor)>,
) -> Result<Tensor> {
    match rule {
        Rule::Epsilon { epsilon } => {
            let z = op.add_bias(&op.forward(x, w)?, b)?;
            let s = ratio(r, &z, epsilon)?;
            x * op.transpose(&s, w, x)?
        }
        Rule::ZPlus { bias } => {
            let b = if bias { pos(b)? } else { b.zeros_like()? };
            alpha_beta(op, x, w, &b, &b.zeros_like()?, r, 1.0, 0.0)
        }
        Rule::AlphaBeta { alpha, beta } => alpha_beta(op, x, w, &pos(b)?, &neg(b)?, r, alpha, beta),
        Rule::Flat => {
            let ones_w = derived(w, "ones", |w| w.ones_like())?;
            let z = op.forward(&x.ones_like()?, &ones_w)?;
            let s = ratio(r, &z, STAB)?;
            op.transpose(&s, &ones_w, x)
        }
        Rule::ZBox => {
            let (low, high) = bounds
                .ok_or_else(|| candle_core::Error::Msg("zB rule needs input bounds".into()))?;
            let (low, high) = (
                low.broadcast_as(x.shape())?.contiguous()?,
                high.broadcast_as(x.shape())?.contiguous()?,
            );
            let (wp, wn) = (derived(w, "W+", pos)?, derived(w, "W-", neg)?);
            let z = ((op.forward(x, w)? - op.forward(&low, &wp)?)? - op.forward(&high, &wn)?)?;
            let s = ratio(r, &z, STAB)?;
            let a = (x * op.transpose(&s, w, x)?)?;
            let l = (low * op.transpose(&s, &wp, x)?)?;
            let h = (high * op.transpose(&s, &wn, x)?)?;
            (a - l)? - h
        }
    }
}

/// α·[x⁺W⁺ + x⁻W⁻ share] − β·[x⁺W⁻ + x⁻W⁺ share], with b⁺ / b⁻ in the denominators.
#[allow(clippy::too_many_arguments)]
fn alpha_beta(
    op: &dyn Affine,
    x: &Tensor,
    w: &Tensor,
    b_pos: &Tensor,
    b_neg: &Tensor,
    r: &Tensor,
    alpha: f64,
    beta: f64,
) -> Result<Tensor> {
    // After a ReLU the input has no negative part: x⁺ = x, x⁻ = 0, so skip both copies
    // and half of the convolutions.
    let has_neg = has_negative(x)?;
    let (xp, xn) = if has_neg {
        (pos(x)?, Some(neg(x)?))
    } else {
        (x.clone(), None)
    };
    // W⁻ is read only for a negative input part or a β share.
    // Derived once per weight tensor, so batch after batch the same W⁺ (and its transformed
    // filters) is reused.
    let wp = derived(w, "W+", pos)?;
    let wn = if xn.is_some() || beta != 0.0 {
        Some(derived(w, "W-", neg)?)
    } else {
        None
    };
    let share = |w1: &Tensor, w2: Option<&Tensor>, bias: &Tensor| -> Result<Tensor> {
        let s = match (&xn, w2) {
            (Some(xn), Some(w2)) => {
                let z = op.add_bias(&(op.forward(&xp, w1)? + op.forward(xn, w2)?)?, bias)?;
                ratio(r, &z, STAB)?
            }
            _ => op.forward_ratio(&xp, w1, bias, r)?,
        };
        let mut out = op.transpose_times(&s, w1, x, &xp)?;
        if let (Some(xn), Some(w2)) = (&xn, w2) {
            out = (out + (xn * op.transpose(&s, w2, x)?)?)?;
        }
        Ok(out)
    };
    let mut out = share(&wp, wn.as_ref(), b_pos)?;
    if alpha != 1.0 {
        out = (out * alpha)?;
    }
    if let (Some(wn), true) = (&wn, beta != 0.0) {
        out = (out - (share(wn, Some(&wp), b_neg)? * beta)?)?;
    }
    Ok(out)
}
