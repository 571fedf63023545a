//! CIFAR-10 binary batches: each record is 1 label byte + 3072 bytes (R, G, B planes, 32×32).
//!
//! Read directly rather than through candle-datasets, whose network stack (hf-hub, TLS,
//! arrow) costs minutes of build time for a format this small (docs/design-choices.md).

use super::{InMemory, Sources};
use anyhow::{bail, Context, Result};
use std::path::Path;

const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
const RECORD: usize = 1 + 3 * 32 * 32;

fn load(files: &[std::path::PathBuf]) -> Result<InMemory> {
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for f in files {
        let bytes = std::fs::read(f).with_context(|| {
            format!(
                "reading {} (fix: point the source at the extracted cifar-10-batches-bin folder)",
                f.display()
            )
        })?;
        if bytes.len() % RECORD != 0 {
            bail!(
                "{}: size {} is not a multiple of {RECORD}",
                f.display(),
                bytes.len()
            );
        }
        for rec in bytes.chunks_exact(RECORD) {
            if rec[0] >= 10 {
                bail!("{}: label {} out of range", f.display(), rec[0]);
            }
            labels.push(rec[0] as u32);
            pixels.extend_from_slice(&rec[1..]);
        }
    }
    Ok(InMemory {
        c: 3,
        h: 32,
        w: 32,
        pixels,
        labels,
        class_names: CLASSES.iter().map(|s| s.to_string()).collect(),
    })
}

pub fn open(dir: &Path) -> Result<Sources> {
    let train: Vec<_> = (1..=5)
        .map(|i| dir.join(format!("data_batch_{i}.bin")))
        .collect();
    Ok(Sources {
        train: Box::new(load(&train)?),
        test: Some(Box::new(load(&[dir.join("test_batch.bin")])?)),
    })
}
