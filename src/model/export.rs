//! Export a prepared task as torchvision-named checkpoint + preprocessed inputs, the format
//! `lrprune explain` (and PyTorch users) read: every backbone conv under its module name
//! (`features.N.*` for a VGG, `layer1.0.conv1.*` for a ResNet, …) with batch-norm folded
//! into its weight and bias, the head as `classifier.N.*`, and `images` / `labels`. The head's input standardisation is written as `standardize.mean` and
//! `standardize.inv_std` (not folded into `classifier.0`: LRP through a folded layer would
//! score the last convs differently from what the pruning criterion sees).

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
        if let Op::Conv(conv) = &node.op {
            map.insert(format!("{}.weight", node.name), conv.weight.clone());
            map.insert(format!("{}.bias", node.name), conv.bias.clone());
        }
    }
    let mut index = 0;
    for node in &net.nodes[net.head_start..] {
        match &node.op {
            Op::Standardize { mean, inv_std } => {
                map.insert("standardize.mean".into(), mean.clone());
                map.insert("standardize.inv_std".into(), inv_std.clone());
            }
            Op::Linear(l) => {
                map.insert(format!("classifier.{index}.weight"), l.weight.clone());
                map.insert(format!("classifier.{index}.bias"), l.bias.clone());
                index += 2; // Linear, ReLU, Linear, … as torchvision numbers them
            }
            Op::Relu | Op::Dropout | Op::Flatten | Op::GlobalAvgPool => {}
            other => bail!("cannot export a `{}` layer in the head", other.kind()),
        }
    }
    save(&map, path)
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

/// `map` to `path` as safetensors, atomically and only over a regular file.
fn save(map: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    crate::fsio::write_atomic(path, |tmp| Ok(candle_core::safetensors::save(map, tmp)?))
}
