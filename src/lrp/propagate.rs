//! The explicit reverse pass: Candle has no backward hooks, so LRP is a walk back over the
//! graph's nodes using each node's stored inputs, each op's rule taken from
//! [`super::steps`].

use super::composite::Composite;
use super::steps;
use crate::model::{Network, Op};
use candle_core::{DType, Result, Tensor};

/// Relevance of one batch.
pub struct Relevance {
    /// Relevance at the output of each conv, in conv order: (N, filters, H, W).
    pub conv_outputs: Vec<Tensor>,
    /// Relevance at the input image: (N, C, H, W), when the pass went down to it.
    pub input: Option<Tensor>,
    /// Total relevance injected at the output (per sample: 1 for a one-hot start).
    pub output_total: Tensor,
}

/// One-hot relevance on `targets` at the output of `net` (docs/method.md: the true label).
pub fn one_hot(targets: &[u32], classes: usize, like: &Tensor) -> Result<Tensor> {
    let mut v = vec![0f32; targets.len() * classes];
    for (i, &t) in targets.iter().enumerate() {
        v[i * classes + t as usize] = 1.0;
    }
    Tensor::from_vec(v, (targets.len(), classes), like.device())?.to_dtype(like.dtype())
}

/// Run the reverse pass for `targets` under `composite`, down to the input image.
pub fn propagate(
    net: &Network,
    x: &Tensor,
    targets: &[u32],
    composite: &Composite,
) -> Result<Relevance> {
    reverse(net, net.trace(x)?, targets, composite, true)
}

/// The reverse pass; without `to_input` it stops at the first conv's output, which is all
/// that filter scores need (the first layer's rule cannot change them).
/// `acts` is the network's trace on the batch ([`Network::trace`]). Relevance reaching a
/// value from several readers (a tensor that fans out) is summed.
pub fn reverse(
    net: &Network,
    acts: Vec<Tensor>,
    targets: &[u32],
    composite: &Composite,
    to_input: bool,
) -> Result<Relevance> {
    let n = net.nodes.len();
    let out = &acts[n];
    let start = one_hot(targets, out.dims()[1], out)?;
    let output_total = start.sum(1)?;
    let conv_nodes = net.conv_nodes();
    let mut conv_outputs = vec![None; conv_nodes.len()];
    let mut rel: Vec<Option<Tensor>> = vec![None; n + 1];
    rel[n] = Some(start);
    for (i, node) in net.nodes.iter().enumerate().rev() {
        let Some(r) = rel[i + 1].take() else {
            continue; // nothing downstream reads this node
        };
        if matches!(node.op, Op::Conv(_)) {
            let k = conv_nodes.iter().position(|&j| j == i).expect("a conv");
            conv_outputs[k] = Some(r.clone());
            if k == 0 && !to_input {
                break;
            }
        }
        let first = conv_nodes.first() == Some(&i);
        steps::relevance(node, &acts, r, composite, first)?.add_to(&mut rel, node.inputs[0])?;
    }
    Ok(Relevance {
        conv_outputs: conv_outputs
            .into_iter()
            .map(|t| t.ok_or_else(|| candle_core::Error::Msg("a conv got no relevance".into())))
            .collect::<Result<_>>()?,
        input: if to_input { rel[0].take() } else { None },
        output_total,
    })
}

/// Per-filter relevance of one batch: each conv's output relevance summed over space,
/// (N, filters) as f64.
pub fn per_sample_filter_relevance(rel: &Relevance) -> Result<Vec<Tensor>> {
    rel.conv_outputs
        .iter()
        .map(|r| r.sum((2, 3))?.to_dtype(DType::F64))
        .collect()
}
