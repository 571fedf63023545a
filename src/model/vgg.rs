//! VGG backbones (Simonyan & Zisserman 2015) with torchvision's layer numbering.

use super::layer::{Conv, Layer};
use crate::spec::CfgItem;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;

/// torchvision's configurations, written as in the VGG paper's table: conv widths, `M` = pool.
const CONFIGS: [(&str, &str); 4] = [
    ("vgg11", "64 M 128 M 256 256 M 512 512 M 512 512 M"),
    ("vgg13", "64 64 M 128 128 M 256 256 M 512 512 M 512 512 M"),
    (
        "vgg16",
        "64 64 M 128 128 M 256 256 256 M 512 512 512 M 512 512 512 M",
    ),
    (
        "vgg19",
        "64 64 M 128 128 M 256 256 256 256 M 512 512 512 512 M 512 512 512 512 M",
    ),
];

/// The layer configuration of a named VGG: conv widths, `None` = 2×2 max-pool.
pub fn config(arch: &str) -> Option<Vec<Option<usize>>> {
    let (_, cfg) = CONFIGS.iter().find(|(name, _)| *name == arch)?;
    Some(cfg.split(' ').map(|t| t.parse().ok()).collect())
}

/// A custom `cfg` from a spec (`[16, "M", 32, "M"]`).
pub fn custom_config(items: &[CfgItem]) -> Result<Vec<Option<usize>>> {
    items
        .iter()
        .map(|i| match i {
            CfgItem::Conv(n) => Ok(Some(*n)),
            CfgItem::Pool(s) if s == "M" => Ok(None),
            CfgItem::Pool(s) => bail!("cfg entry `{s}`: use a conv width or \"M\" for max-pool"),
        })
        .collect()
}

/// torchvision `features.N` indices of the convs for a config: conv, [bn], relu, and "M" pools.
pub fn conv_keys(cfg: &[Option<usize>], batch_norm: bool) -> Vec<usize> {
    let mut idx = 0;
    let mut keys = Vec::new();
    for item in cfg {
        match item {
            Some(_) => {
                keys.push(idx);
                idx += if batch_norm { 3 } else { 2 };
            }
            None => idx += 1,
        }
    }
    keys
}

/// Build the backbone layers from torchvision-named tensors, folding batch-norm into convs.
pub fn build_features(
    cfg: &[Option<usize>],
    batch_norm: bool,
    in_channels: usize,
    tensors: &HashMap<String, Tensor>,
    device: &Device,
) -> Result<Vec<Layer>> {
    let keys = conv_keys(cfg, batch_norm);
    let mut layers = Vec::new();
    let mut convs = keys.iter();
    let mut in_c = in_channels;
    for item in cfg {
        match item {
            None => layers.push(Layer::MaxPool {
                kernel: 2,
                stride: 2,
            }),
            Some(out_c) => {
                let k = *convs.next().expect("one key per conv");
                let get = |name: String| -> Result<Tensor> {
                    tensors
                        .get(&name)
                        .with_context(|| format!("weights file has no tensor `{name}` (fix: torchvision names `features.N.weight`/`.bias` are expected)"))?
                        .to_dtype(candle_core::DType::F32)?
                        .to_device(device)
                        .map_err(Into::into)
                };
                let weight = get(format!("features.{k}.weight"))?;
                let bias = get(format!("features.{k}.bias"))?;
                if weight.dims() != [*out_c, in_c, 3, 3] {
                    bail!(
                        "features.{k}.weight has shape {:?}, the architecture expects {:?} (fix: check `arch`/`batch_norm` against the checkpoint)",
                        weight.dims(),
                        [*out_c, in_c, 3, 3]
                    );
                }
                let mut conv = Conv {
                    weight,
                    bias,
                    padding: 1,
                    stride: 1,
                };
                if batch_norm {
                    let b = k + 1;
                    conv = fold_batch_norm(
                        conv,
                        &get(format!("features.{b}.weight"))?,
                        &get(format!("features.{b}.bias"))?,
                        &get(format!("features.{b}.running_mean"))?,
                        &get(format!("features.{b}.running_var"))?,
                    )?;
                }
                layers.push(Layer::Conv(conv));
                layers.push(Layer::Relu);
                in_c = *out_c;
            }
        }
    }
    Ok(layers)
}

/// BN(conv(x)) = conv'(x) with W' = W·γ/σ and b' = (b − μ)·γ/σ + β, σ = sqrt(var + 1e-5).
pub fn fold_batch_norm(
    conv: Conv,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
) -> Result<Conv> {
    let scale = (gamma / (var + 1e-5)?.sqrt()?)?;
    let o = conv.out_channels();
    let weight = conv.weight.broadcast_mul(&scale.reshape((o, 1, 1, 1))?)?;
    let bias = ((&conv.bias - mean)? * &scale)?.add(beta)?;
    Ok(Conv {
        weight,
        bias,
        ..conv
    })
}
