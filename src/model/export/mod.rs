//! Export a prepared task as torchvision-named checkpoint + preprocessed inputs, the format
//! `lrprune explain` (and PyTorch users) read: every backbone conv under its module name
//! (`features.N.*` for a VGG, `layer1.0.conv1.*` for a ResNet, …) with batch-norm folded
//! into its weight and bias, the head as `classifier.N.*`, and `images` / `labels`. The head's input standardisation is written as `standardize.mean` and
//! `standardize.inv_std` (not folded into `classifier.0`: LRP through a folded layer would
//! score the last convs differently from what the pruning criterion sees).

pub mod onnx;

use super::layer::Op;
use super::network::Network;
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Write `weights.safetensors` for `net`: each backbone conv under its node's (torchvision
/// module) name.
pub fn write_checkpoint(net: &Network, path: &Path) -> Result<()> {
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for node in &net.nodes[..net.head_start] {
        // A batch-norm no conv precedes as its affine form (running mean 0, variance 1).
        for (suffix, t) in node.op.params() {
            map.insert(format!("{}.{suffix}", node.name), t.clone());
        }
    }
    for (j, node) in net.nodes.iter().enumerate().skip(net.head_start) {
        let name = param_name(net, j);
        match &node.op {
            Op::Standardize { mean, inv_std } => {
                map.insert(format!("{name}.mean"), mean.clone());
                map.insert(format!("{name}.inv_std"), inv_std.clone());
            }
            Op::Linear(l) => {
                map.insert(format!("{name}.weight"), l.weight.clone());
                map.insert(format!("{name}.bias"), l.bias.clone());
            }
            Op::Relu | Op::Dropout | Op::Flatten | Op::GlobalAvgPool => {}
            other => bail!("cannot export a `{}` layer in the head", other.kind()),
        }
    }
    save(&map, path)
}

/// The name node `j`'s parameters are exported under: a backbone node's own (torchvision)
/// name; in the head, `standardize` and `classifier.N` for its linear layers, numbered as
/// torchvision numbers a classifier (Linear, ReLU, Linear, …).
pub fn param_name(net: &Network, j: usize) -> String {
    if j < net.head_start {
        return net.nodes[j].name.clone();
    }
    let linear = |n: &super::network::Node| matches!(n.op, Op::Linear(_));
    match &net.nodes[j].op {
        Op::Standardize { .. } => "standardize".into(),
        Op::Linear(_) => {
            let before = net.nodes[net.head_start..j]
                .iter()
                .filter(|n| linear(n))
                .count();
            format!("classifier.{}", 2 * before)
        }
        _ => net.nodes[j].name.clone(),
    }
}

/// Write `inputs.safetensors` (`images` f32, `labels` i64).
pub fn write_inputs(images: &Tensor, labels: &[u32], path: &Path) -> Result<()> {
    let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    let mut map = HashMap::new();
    map.insert("images".to_string(), images.to_dtype(DType::F32)?);
    map.insert(
        "labels".to_string(),
        Tensor::new(labels.as_slice(), images.device())?,
    );
    save(&map, path)
}

/// Everything a reimplementation needs to rerun a run's task outside lrprune (e.g. the
/// PyTorch reference in `scripts/torch_reference.py`): the checkpoint, both preprocessed
/// splits, and the run's resolved settings with the names of its convs (and, for a VGG,
/// their torchvision `features` indices).
pub fn write_task(
    cfg: &crate::spec::RunConfig,
    net: &Network,
    train: &crate::data::split::Split,
    test: &crate::data::split::Split,
    dir: &Path,
) -> Result<()> {
    write_checkpoint(net, &dir.join("weights.safetensors"))?;
    write_inputs(
        &train.images,
        &train.labels,
        &dir.join("inputs.safetensors"),
    )?;
    write_inputs(&test.images, &test.labels, &dir.join("test.safetensors"))?;
    let conv_names: Vec<&str> = net.nodes[..net.head_start]
        .iter()
        .filter(|n| matches!(n.op, Op::Conv(_)))
        .map(|n| n.name.as_str())
        .collect();
    let meta = serde_json::json!({
        "run_id": cfg.run_id(),
        "conv_keys": super::load::vgg_conv_keys(&cfg.model).unwrap_or_default(),
        "conv_names": conv_names,
        "config": cfg,
    });
    let json = serde_json::to_string_pretty(&meta)?;
    crate::fsio::write_atomic(&dir.join("task.json"), |tmp| {
        Ok(std::fs::write(tmp, &json)?)
    })
}

/// The network a run pruned, taken home (`lrprune export --rate`): `model.onnx` (the whole
/// network, preprocessed images in, logits out), `model.safetensors` (the same weights under
/// torchvision-style names, with the pruned shapes, as [`write_checkpoint`] names them),
/// `model.json` (`meta`: which channels were kept, the step's rate, size and accuracy, the
/// preprocessing) and `test.safetensors` (the test split as the model reads it).
pub fn write_pruned(
    net: &Network,
    test: &crate::data::split::Split,
    meta: &serde_json::Value,
    dir: &Path,
) -> Result<()> {
    let doc = meta["run_id"].as_str().unwrap_or_default();
    let bytes = onnx::to_onnx(net, &format!("lrprune run {doc}"))?;
    crate::fsio::write_atomic(&dir.join("model.onnx"), |tmp| {
        Ok(std::fs::write(tmp, &bytes)?)
    })?;
    write_checkpoint(net, &dir.join("model.safetensors"))?;
    write_inputs(&test.images, &test.labels, &dir.join("test.safetensors"))?;
    let json = serde_json::to_string_pretty(meta)? + "\n";
    crate::fsio::write_atomic(&dir.join("model.json"), |tmp| {
        Ok(std::fs::write(tmp, &json)?)
    })
}

/// `map` to `path` as safetensors, atomically and only over a regular file.
fn save(map: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    crate::fsio::write_atomic(path, |tmp| Ok(candle_core::safetensors::save(map, tmp)?))
}
