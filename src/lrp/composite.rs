//! Composites: which rule each layer kind gets. Named, so a spec or `explain --composite`
//! can pick one and the choice is recorded with the results.

use super::rules::Rule;
use crate::model::Op;
use crate::spec::Preprocess;
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};

#[derive(Debug, Clone)]
pub struct Composite {
    pub first_conv: Rule,
    pub conv: Rule,
    pub linear: Rule,
    /// Per-channel (low, high) input bounds, shape (1, C, 1, 1), for the zᴮ rule.
    pub bounds: Option<(Tensor, Tensor)>,
}

impl Composite {
    /// The rule for an affine node (`first`: the network's first conv); `None` for the
    /// other ops, whose rules are fixed (pass, winner-take-all, zennit's `Norm` for average
    /// pools and `Add`: docs/method.md).
    pub fn rule_for(&self, op: &Op, first: bool) -> Option<Rule> {
        match op {
            Op::Conv(_) if first => Some(self.first_conv),
            Op::Conv(_) => Some(self.conv),
            Op::Linear(_) => Some(self.linear),
            _ => None,
        }
    }
}

/// The composites lrprune knows, with what they do (`spec`'s one list, which specs are
/// checked against).
pub use crate::spec::COMPOSITES as NAMES;

const EPS: Rule = Rule::Epsilon { epsilon: 1e-6 };

/// Pixel bounds of an input after `preset`, for zᴮ: (1, 3, 1, 1) low and high.
pub fn input_bounds(preset: Preprocess, device: &Device) -> Result<(Tensor, Tensor)> {
    let (low, high): (Vec<f32>, Vec<f32>) =
        crate::data::preprocess::bounds(preset).into_iter().unzip();
    Ok((
        Tensor::from_vec(low, (1, 3, 1, 1), device)?,
        Tensor::from_vec(high, (1, 3, 1, 1), device)?,
    ))
}

/// The composite `name` from the list, for inputs preprocessed as `preset` (zᴮ's bounds).
pub fn by_name(name: &str, preset: Preprocess, device: &Device) -> Result<Composite> {
    let Some(def) = NAMES.iter().find(|c| c.name == name) else {
        let known: Vec<&str> = NAMES.iter().map(|c| c.name).collect();
        bail!(
            "unknown LRP composite `{name}` (fix: one of {})",
            known.join(", ")
        )
    };
    let bounds = match def.first_conv {
        Rule::ZBox => Some(input_bounds(preset, device)?),
        _ => None,
    };
    Ok(Composite {
        first_conv: def.first_conv,
        conv: def.conv,
        linear: EPS,
        bounds,
    })
}
