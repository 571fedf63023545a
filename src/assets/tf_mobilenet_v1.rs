//! One-time conversion of TF-slim's frozen MobileNet-V1 graph (a `GraphDef` protobuf) to
//! safetensors in PyTorch's layouts, named by TF-slim scope (`src/model/arch/mobilenet_v1.rs`
//! reads them):
//!
//! | in the graph (`MobilenetV1/…`, `Const` nodes) | written as |
//! |---|---|
//! | `S/weights` (kh, kw, in, out) | `S.weight` (out, in, kh, kw) |
//! | `S/depthwise_weights` (kh, kw, C, 1) | `S.weight` (C, 1, kh, kw) |
//! | `S/BatchNorm/{gamma,beta,moving_mean,moving_variance}` | `S.bn.{weight,bias,running_mean,running_var}` |
//! | `Logits/Conv2d_1c_1x1/{weights,biases}` (1, 1, 1024, 1001) | `Logits.{weight,bias}` (1001, 1024) |

use super::protobuf::{f32_le, GraphDef, TfTensor, TF_FLOAT};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;

fn dims(t: &TfTensor) -> Vec<usize> {
    t.tensor_shape
        .as_ref()
        .map(|s| s.dim.iter().map(|d| d.size.max(0) as usize).collect())
        .unwrap_or_default()
}

/// A `Const` tensor's values: raw `tensor_content`, or `float_val` (one value filling the
/// whole shape, as TensorFlow stores constant tensors).
fn values(t: &TfTensor) -> Result<Vec<f32>> {
    let n: usize = dims(t).iter().product();
    let v = if !t.tensor_content.is_empty() {
        f32_le(&t.tensor_content)
    } else if t.float_val.len() == 1 {
        vec![t.float_val[0]; n]
    } else {
        t.float_val.clone()
    };
    if v.len() != n {
        bail!("a constant of shape {:?} holds {} values", dims(t), v.len());
    }
    Ok(v)
}

pub fn to_safetensors(pb: &Path, out: &Path) -> Result<()> {
    let bytes = std::fs::read(pb).with_context(|| format!("reading {}", pb.display()))?;
    let graph = GraphDef::decode(bytes.as_slice())
        .with_context(|| format!("{}: not a TensorFlow GraphDef", pb.display()))?;
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for node in &graph.node {
        let Some(path) = node.name.strip_prefix("MobilenetV1/") else {
            continue;
        };
        if node.op != "Const" {
            continue;
        }
        let Some(t) = node.attr.get("value").and_then(|a| a.tensor.as_ref()) else {
            continue;
        };
        if t.dtype != TF_FLOAT {
            continue;
        }
        let (scope, leaf) = path.rsplit_once('/').unwrap_or(("", path));
        let v = values(t).with_context(|| format!("{}: node {}", pb.display(), node.name))?;
        let tensor = Tensor::from_vec(v, dims(t), &Device::Cpu)?;
        let (name, tensor) = match leaf {
            "weights" | "biases" if scope == "Logits/Conv2d_1c_1x1" => {
                let t = if leaf == "weights" {
                    tensor.squeeze(0)?.squeeze(0)?.t()?.contiguous()?
                } else {
                    tensor
                };
                (
                    format!(
                        "Logits.{}",
                        if leaf == "weights" { "weight" } else { "bias" }
                    ),
                    t,
                )
            }
            // HWIO → OIHW.
            "weights" => (
                format!("{scope}.weight"),
                tensor.permute((3, 2, 0, 1))?.contiguous()?,
            ),
            // A depthwise kernel's (kh, kw, C, 1) → (C, 1, kh, kw).
            "depthwise_weights" => (
                format!("{scope}.weight"),
                tensor.permute((2, 3, 0, 1))?.contiguous()?,
            ),
            "gamma" | "beta" | "moving_mean" | "moving_variance" => {
                let Some(conv) = scope.strip_suffix("/BatchNorm") else {
                    continue;
                };
                let field = match leaf {
                    "gamma" => "weight",
                    "beta" => "bias",
                    "moving_mean" => "running_mean",
                    _ => "running_var",
                };
                (format!("{conv}.bn.{field}"), tensor)
            }
            _ => continue,
        };
        map.insert(name, tensor);
    }
    // TF-slim without `scale=True` has no γ: a γ of one is what it computes.
    let missing: Vec<(String, usize)> = map
        .iter()
        .filter_map(|(k, t)| {
            let conv = k.strip_suffix(".bn.bias")?;
            (!map.contains_key(&format!("{conv}.bn.weight")))
                .then(|| (conv.to_string(), t.dims()[0]))
        })
        .collect();
    for (conv, n) in missing {
        map.insert(
            format!("{conv}.bn.weight"),
            Tensor::ones(n, candle_core::DType::F32, &Device::Cpu)?,
        );
    }
    if !map.contains_key("Conv2d_0.weight") || !map.contains_key("Logits.weight") {
        bail!(
            "{}: no MobilenetV1 weights found (expected `MobilenetV1/Conv2d_0/weights` … `MobilenetV1/Logits/Conv2d_1c_1x1/weights`)",
            pb.display()
        );
    }
    candle_core::safetensors::save(&map, out)?;
    Ok(())
}
