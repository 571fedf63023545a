//! A torchvision-style classifier head read from a checkpoint (`classifier.N.weight/bias`).

use super::layer::{Linear, Op};
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;

/// The `classifier.N` linear layers in index order, ReLU between them (dropout is identity
/// in eval mode and carries no tensors, so it needs no layer here).
pub fn from_checkpoint(tensors: &HashMap<String, Tensor>, device: &Device) -> Result<Vec<Op>> {
    let mut idx: Vec<usize> = tensors
        .keys()
        .filter_map(|k| {
            k.strip_prefix("classifier.")?
                .strip_suffix(".weight")?
                .parse()
                .ok()
        })
        .collect();
    idx.sort();
    if idx.is_empty() {
        bail!("the weights file has no `classifier.N.weight` tensors (fix: include the head's Linear layers under torchvision names)");
    }
    let mut layers = Vec::new();
    for (j, i) in idx.iter().enumerate() {
        let get = |s: &str| -> Result<Tensor> {
            let key = format!("classifier.{i}.{s}");
            let t = tensors
                .get(&key)
                .ok_or_else(|| anyhow::anyhow!("missing `{key}`"))?;
            Ok(t.to_dtype(DType::F32)?.to_device(device)?)
        };
        let (weight, bias) = (get("weight")?, get("bias")?);
        // Checked here, where the tensor's name is known, not by a matmul later.
        let fits = match (weight.dims(), layers.last()) {
            ([out, _], _) if bias.dims() != [*out] => false,
            ([_, input], Some(Op::Linear(prev))) => prev.weight.dims()[0] == *input,
            (w, _) => w.len() == 2,
        };
        if !fits {
            bail!(
                "`classifier.{i}.weight` {:?} with `classifier.{i}.bias` {:?} is not a linear layer on the previous one's outputs (fix: weights [out, in] and a bias [out], each layer's in the previous one's out)",
                weight.dims(),
                bias.dims()
            );
        }
        if j > 0 {
            layers.push(Op::Relu);
        }
        layers.push(Op::Linear(Linear { weight, bias }));
    }
    Ok(layers)
}
