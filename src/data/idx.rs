//! IDX files (MNIST, Fashion-MNIST), gzipped or not.

use super::{numbered_classes, InMemory, Sources};
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Fashion-MNIST's class names, used when the label set has exactly its ten classes.
const FASHION: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "{}: missing {stem}[.gz] (fix: point the dataset source at a folder with train-/t10k- images-idx3-ubyte and labels-idx1-ubyte files)",
        dir.display()
    )
}

/// Read an IDX file's bytes, gunzipping if needed; returns (dims, payload).
pub fn read(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("{}: corrupt gzip", path.display()))?;
        out
    } else {
        raw
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        bail!("{}: not an unsigned-byte IDX file", path.display());
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        bail!("{}: truncated IDX header", path.display());
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    // An image side of 0 would make empty images that fail deep in preprocessing; a count
    // of 0 is an empty file. Both are damaged files, whatever the payload length says.
    if dims.contains(&0) {
        bail!(
            "{}: an IDX dimension of 0 ({dims:?}) (fix: the file is damaged; fetch or copy it again)",
            path.display()
        );
    }
    let expected = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .with_context(|| format!("{}: IDX dimensions {dims:?} overflow", path.display()))?;
    if bytes.len() - header != expected {
        bail!(
            "{}: IDX payload is {} bytes, dims {dims:?} need {expected}",
            path.display(),
            bytes.len() - header
        );
    }
    Ok((dims, bytes[header..].to_vec()))
}

fn load(dir: &Path, prefix: &str) -> Result<InMemory> {
    let (idims, pixels) = read(&find(dir, &format!("{prefix}-images-idx3-ubyte"))?)?;
    let (ldims, labels) = read(&find(dir, &format!("{prefix}-labels-idx1-ubyte"))?)?;
    if idims.len() != 3 || ldims.len() != 1 || idims[0] != ldims[0] {
        bail!(
            "{}: {prefix} images {idims:?} and labels {ldims:?} disagree",
            dir.display()
        );
    }
    let labels: Vec<u32> = labels.into_iter().map(u32::from).collect();
    let n_classes = labels.iter().max().map_or(0, |m| *m as usize + 1);
    let is_fashion = dir.to_string_lossy().contains("fashion") && n_classes == 10;
    Ok(InMemory {
        c: 1,
        h: idims[1],
        w: idims[2],
        pixels,
        labels,
        class_names: if is_fashion {
            FASHION.iter().map(|s| s.to_string()).collect()
        } else {
            numbered_classes(n_classes)
        },
    })
}

pub fn open(dir: &Path) -> Result<Sources> {
    Ok(Sources {
        train: Box::new(load(dir, "train")?),
        test: Some(Box::new(load(dir, "t10k")?)),
    })
}
