//! PyTorch's legacy (pre-1.6, non-zip) `torch.save` format, which two of the pinned
//! packages ship: a stream of pickles — magic number, protocol version, system info, the
//! saved object (tensors refer to storages by persistent id), the list of storage keys — and
//! then, per storage in that order, its element count (u64, little-endian) and raw data.
//!
//! Candle reads the pickles (`candle_core::pickle`); this file walks the stream and gathers
//! each tensor from its storage honouring offset and strides (some tensors are saved
//! non-contiguous, e.g. HWIO views of OIHW kernels).

use anyhow::{bail, Context, Result};
use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::Path;

fn pickle<R: std::io::BufRead>(r: &mut R) -> Result<Object> {
    let mut stack = Stack::empty();
    stack.read_loop(r)?;
    Ok(stack.finalize()?)
}

/// Whether `path` starts like a legacy `torch.save` file (not a zip archive).
pub fn is_legacy(path: &Path) -> Result<bool> {
    let mut head = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .with_context(|| {
            format!(
                "{}: cannot read its first bytes (fix: give a complete .pth or .safetensors file)",
                path.display()
            )
        })?;
    Ok(head != *b"PK")
}

/// A legacy checkpoint re-saved as safetensors with its own names (EfficientNet-Lite0's).
pub fn to_safetensors(src: &Path, out: &Path) -> Result<()> {
    Ok(candle_core::safetensors::save(&read(src)?, out)?)
}

/// Every float tensor of a legacy `torch.save` state dict, by key, as f32 on the CPU.
pub fn read(path: &Path) -> Result<HashMap<String, Tensor>> {
    let what = || format!("{}: reading a legacy torch.save file", path.display());
    let mut r = BufReader::new(std::fs::File::open(path).with_context(what)?);
    let magic = pickle(&mut r).with_context(what)?;
    // The magic number 0x1950a86a20f9469cfc6c is an 80-bit long, wider than Candle's i64
    // reading of it: its kind is what can be checked.
    if !matches!(magic, Object::Long(_)) {
        bail!(
            "{}: not a legacy torch.save file (no magic number)",
            path.display()
        );
    }
    pickle(&mut r).with_context(what)?; // protocol version
    pickle(&mut r).with_context(what)?; // system info
    let saved = pickle(&mut r).with_context(what)?;
    let keys: Vec<String> = match pickle(&mut r).with_context(what)? {
        Object::List(k) | Object::Tuple(k) => k
            .into_iter()
            .map(|o| {
                o.unicode()
                    .map_err(|o| anyhow::anyhow!("storage key {o:?}"))
            })
            .collect::<Result<_>>()?,
        other => bail!("{}: storage keys are {other:?}", path.display()),
    };
    let entries = match saved {
        Object::Dict(d) => d,
        other => bail!(
            "{}: the saved object is not a dict ({other:?})",
            path.display()
        ),
    };
    // Tensors first (they name their storages and dtypes), then the storages in key order.
    let mut infos = Vec::new();
    for (name, value) in entries {
        if let Some(info) = value.into_tensor_info(name, Path::new(""))? {
            infos.push(info);
        }
    }
    let dtype_of: HashMap<String, DType> = infos
        .iter()
        .map(|i| (i.path.trim_start_matches('/').to_string(), i.dtype))
        .collect();
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for key in keys {
        let mut n = [0u8; 8];
        r.read_exact(&mut n).with_context(what)?;
        let count = u64::from_le_bytes(n) as usize;
        let size = dtype_of.get(&key).map_or(4, |d| d.size_in_bytes());
        let mut data = vec![0u8; count * size];
        r.read_exact(&mut data)
            .with_context(|| format!("{}: storage {key} is truncated", path.display()))?;
        storages.insert(key, data);
    }
    let mut out = HashMap::new();
    for info in infos {
        if info.dtype != DType::F32 {
            continue; // e.g. BN's num_batches_tracked
        }
        let key = info.path.trim_start_matches('/');
        let data = storages.get(key).with_context(|| {
            format!(
                "{}: tensor `{}` has no storage {key}",
                path.display(),
                info.name
            )
        })?;
        let floats = super::protobuf::f32_le(data);
        let layout = &info.layout;
        let dims = layout.shape().dims().to_vec();
        let start = layout.start_offset() / 4;
        let values = gather(&floats, start, &dims, layout.stride()).with_context(|| {
            format!(
                "{}: tensor `{}` reaches past its storage",
                path.display(),
                info.name
            )
        })?;
        out.insert(info.name, Tensor::from_vec(values, dims, &Device::Cpu)?);
    }
    Ok(out)
}

/// The elements of a strided view, in row-major order.
fn gather(data: &[f32], start: usize, dims: &[usize], strides: &[usize]) -> Option<Vec<f32>> {
    let n: usize = dims.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; dims.len()];
    for _ in 0..n {
        let at = start + idx.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
        out.push(*data.get(at)?);
        for d in (0..dims.len()).rev() {
            idx[d] += 1;
            if idx[d] < dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn gathers_a_transposed_view() {
        // A 2×3 matrix stored column-major: strides (1, 2).
        let data = [1., 4., 2., 5., 3., 6.];
        let v = super::gather(&data, 0, &[2, 3], &[1, 2]).unwrap();
        assert_eq!(v, [1., 2., 3., 4., 5., 6.]);
        assert!(super::gather(&data, 4, &[2, 3], &[1, 2]).is_none());
    }
}
