//! ImageFolder trees: `<root>/<class>/*.{png,jpg,jpeg}`, with optional `train/` and `test/`.
//!
//! Classes are the sorted sub-folder names (torchvision's convention). Without `train/` and
//! `test/`, the whole tree is one pool and the test images are held out disjointly.

use super::{ImageSource, RawImage, Sources};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub struct ImageFolder {
    files: Vec<PathBuf>,
    labels: Vec<u32>,
    class_names: Vec<String>,
}

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

impl ImageFolder {
    pub fn scan(root: &Path) -> Result<Self> {
        let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
            .with_context(|| format!("reading {}", root.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        classes.sort();
        let (mut files, mut labels, mut class_names) = (Vec::new(), Vec::new(), Vec::new());
        for (label, dir) in classes.iter().enumerate() {
            let mut imgs: Vec<PathBuf> = std::fs::read_dir(dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_image(p))
                .collect();
            imgs.sort();
            labels.extend(std::iter::repeat_n(label as u32, imgs.len()));
            files.extend(imgs);
            class_names.push(dir.file_name().unwrap().to_string_lossy().into_owned());
        }
        if files.is_empty() {
            bail!(
                "{}: no class folders with .png/.jpg images (fix: lay out <root>/<class>/*.png)",
                root.display()
            );
        }
        Ok(Self {
            files,
            labels,
            class_names,
        })
    }
}

impl ImageSource for ImageFolder {
    fn labels(&self) -> &[u32] {
        &self.labels
    }
    fn class_names(&self) -> &[String] {
        &self.class_names
    }
    fn image(&self, i: usize) -> Result<RawImage> {
        decode(&self.files[i])
    }
}

/// A JPEG or PNG file as an RGB image, channels first.
pub fn decode(p: &Path) -> Result<RawImage> {
    let img = image::open(p)
        .with_context(|| format!("decoding {}", p.display()))?
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let hwc = img.into_raw();
    let mut data = vec![0u8; 3 * h * w];
    for (j, px) in hwc.chunks_exact(3).enumerate() {
        for c in 0..3 {
            data[c * h * w + j] = px[c];
        }
    }
    Ok(RawImage { c: 3, h, w, data })
}

pub fn open(root: &Path) -> Result<Sources> {
    let (train, test) = (root.join("train"), root.join("test"));
    if train.is_dir() && test.is_dir() {
        let (tr, te) = (ImageFolder::scan(&train)?, ImageFolder::scan(&test)?);
        if tr.class_names != te.class_names {
            bail!(
                "{}: train/ and test/ have different class folders",
                root.display()
            );
        }
        return Ok(Sources {
            train: Box::new(tr),
            test: Some(Box::new(te)),
        });
    }
    Ok(Sources {
        train: Box::new(ImageFolder::scan(root)?),
        test: None,
    })
}
