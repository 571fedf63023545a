//! Checkpoint loading: safetensors or PyTorch `.pth` (zip format), torchvision key names.

use anyhow::{anyhow, bail, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// All tensors of a checkpoint by name, on `device`. A tensor holding NaN or ±Inf is an error
/// that names the file and the tensor: such weights would silently poison every curve.
pub fn load(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let tensors = load_unchecked(path, device)?;
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let t = &tensors[name];
        if !t.dtype().is_float() {
            continue;
        }
        let finite = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|v| v.is_finite());
        if !finite {
            bail!("{}: tensor `{name}` contains NaN or Inf values (fix: re-export the checkpoint; lrprune will not prune a broken network)", path.display());
        }
    }
    Ok(tensors)
}

fn load_unchecked(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let hint = "(fix: give a .safetensors file or a PyTorch .pth saved with torch.save in the default zip format)";
    match ext {
        "safetensors" => candle_core::safetensors::load(path, device)
            .map_err(|e| anyhow!("{}: cannot read safetensors: {e} {hint}", path.display())),
        "pth" | "pt" | "bin" => {
            let pairs = candle_core::pickle::read_all(path).map_err(|e| {
                anyhow!(
                    "{}: cannot read PyTorch checkpoint: {e} {hint}",
                    path.display()
                )
            })?;
            pairs
                .into_iter()
                .map(|(k, t)| Ok((k, t.to_device(device)?)))
                .collect()
        }
        "onnx" => bail!("{}: an ONNX file holds a whole model, not a checkpoint (fix: as a [[model]]'s weights, with no `arch` or arch = \"onnx\")", path.display()),
        _ => bail!("{}: unknown weights format `.{ext}` {hint}", path.display()),
    }
}
