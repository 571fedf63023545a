//! ImageFolder trees: `<root>/<class>/*.{png,jpg,jpeg,webp}`, with optional `train/` and
//! `test/`.
//!
//! Classes are the sorted sub-folder names (torchvision's convention). Without `train/` and
//! `test/`, the whole tree is one pool and the test images are held out disjointly.
//!
//! Exact duplicates (the same bytes, by sha256) are dropped when a tree is scanned, keeping
//! the first in name order: a photo twice in one pool could land in both the training and
//! the test split, and a class's count would overstate its distinct images. Hashing reads
//! every file once per scan (a few ms for the built-in photo sets); decoding stays lazy.

use super::{ImageSource, RawImage, Sources};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
        Some("png" | "jpg" | "jpeg" | "webp")
    )
}

/// A labelled file.
type Labelled = (PathBuf, u32);
/// A dropped duplicate and the earlier file it repeats.
type Duplicate = (PathBuf, PathBuf);

/// Drop files whose bytes an earlier file already has: (kept, (dropped, the earlier one)).
/// An empty file is refused here by name, since no image is 0 bytes and the decoder's
/// message for it says little.
fn dedup(files: Vec<Labelled>) -> Result<(Vec<Labelled>, Vec<Duplicate>)> {
    let mut first: HashMap<[u8; 32], usize> = HashMap::new();
    let (mut kept, mut dropped): (Vec<Labelled>, _) = (Vec::new(), Vec::new());
    for (p, label) in files {
        let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        if bytes.is_empty() {
            bail!(
                "{}: the file is empty, not an image (fix: delete it or replace it with the image)",
                p.display()
            );
        }
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        match first.get(&digest) {
            Some(&k) => dropped.push((p, kept[k].0.clone())),
            None => {
                first.insert(digest, kept.len());
                kept.push((p, label));
            }
        }
    }
    Ok((kept, dropped))
}

/// Say once per process and tree how many duplicates a scan dropped (a sweep scans the
/// tree once per task).
fn report_duplicates(root: &Path, dropped: &[Duplicate]) {
    static SAID: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if !said
        .get_or_insert_with(HashSet::new)
        .insert(root.to_path_buf())
    {
        return;
    }
    // `class/file`: the root is said once.
    let name = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    let pairs: Vec<String> = dropped
        .iter()
        .map(|(d, k)| format!("{} = {}", name(d), name(k)))
        .collect();
    eprintln!(
        "{}: {} exact duplicate image(s) dropped (same sha256 as an earlier file): {}",
        root.display(),
        dropped.len(),
        pairs.join(", ")
    );
}

impl ImageFolder {
    pub fn scan(root: &Path) -> Result<Self> {
        let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
            .with_context(|| format!("reading {}", root.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        classes.sort();
        let (mut files, mut class_names) = (Vec::new(), Vec::new());
        for (label, dir) in classes.iter().enumerate() {
            let mut imgs: Vec<PathBuf> = std::fs::read_dir(dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_image(p))
                .collect();
            imgs.sort();
            files.extend(imgs.into_iter().map(|p| (p, label as u32)));
            class_names.push(dir.file_name().unwrap().to_string_lossy().into_owned());
        }
        if files.is_empty() {
            bail!(
                "{}: no class folders with .png/.jpg/.webp images (fix: lay out <root>/<class>/*.png)",
                root.display()
            );
        }
        // Across classes too: the same photo under two labels is as much a leak.
        let (files, dropped) = dedup(files)?;
        if !dropped.is_empty() {
            report_duplicates(root, &dropped);
        }
        let (files, labels) = files.into_iter().unzip();
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

/// A JPEG, PNG or WebP file as an RGB image, channels first.
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
