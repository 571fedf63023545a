//! How the search reads a network on the control split: its logits, under the head policy
//! of the run (`after_step`), from the values it holds.

use crate::model::values::Values;
use crate::model::{head, Network, Op};
use anyhow::Result;
use candle_core::Tensor;

/// The value a measurement reads: the output, or with `restandardize` the backbone's.
fn read_at(net: &Network, restandardize: bool) -> usize {
    if restandardize {
        net.head_start
    } else {
        net.nodes.len()
    }
}

/// The network's outputs on every batch, concatenated: its last values, or with
/// `restandardize` its head re-standardised on these features first.
pub(super) fn logits_of(net: &Network, values: &Values, restandardize: bool) -> Result<Tensor> {
    let outs = values.at(read_at(net, restandardize))?;
    if restandardize {
        restandardized_head(net, &outs)
    } else {
        Ok(outs)
    }
}

/// `net`'s head on its backbone outputs `features`, its input standardisation re-estimated
/// on them: how the search measures a candidate when the run re-standardises or re-fits
/// the head after a step (docs/method.md, "After a step"), with the control split standing
/// in for the training split the step itself reads. A head without a standardisation
/// (`head.input_norm = "none"`) is read as it is.
fn restandardized_head(net: &Network, features: &Tensor) -> Result<Tensor> {
    let head = net.head();
    if !matches!(head.first(), Some(Op::Standardize { .. })) {
        return Ok(net.head_forward(features)?);
    }
    let head = head::restandardize(&head, features)?;
    Ok(net.with_head(head).head_forward(features)?)
}

/// Run `net` from node `start` on every batch, given `base`'s values up to `start` (those
/// are `net`'s too): its logits (`restandardize`: as [`logits_of`]), and with `keep` all
/// its values.
pub(super) fn run_from(
    net: &Network,
    base: &Values,
    start: usize,
    keep: bool,
    restandardize: bool,
) -> Result<(Tensor, Option<Values>)> {
    if keep {
        let values = base.trace_from(net, start)?;
        return Ok((logits_of(net, &values, restandardize)?, Some(values)));
    }
    let outs = base.run_to(net, start, read_at(net, restandardize), restandardize)?;
    if restandardize {
        return Ok((restandardized_head(net, &outs)?, None));
    }
    Ok((outs, None))
}
