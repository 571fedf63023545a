//! The seeded, class-balanced split: a few training images per class (head training, LRP
//! reference, controller decisions) and a held-out test set (curves only).

use super::preprocess::{self, Fit};
use super::{ImageSource, RawImage, Sources};
use crate::spec::{DataSettings, Preprocess, SettingError};
use anyhow::Result;
use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Preprocessed images and labels of one split; labels are remapped to 0..n_classes.
#[derive(Debug, Clone)]
pub struct Split {
    pub images: Tensor,
    pub labels: Vec<u32>,
}

impl Split {
    pub fn labels_tensor(&self) -> Result<Tensor> {
        Ok(Tensor::new(self.labels.as_slice(), self.images.device())?)
    }

    /// The first `m` images of each class, in split order: the same classes on fewer images.
    pub fn first_per_class(&self, m: usize) -> Result<Split> {
        let mut taken = std::collections::HashMap::new();
        let keep: Vec<u32> = (0..self.labels.len() as u32)
            .filter(|&i| {
                let n = taken.entry(self.labels[i as usize]).or_insert(0usize);
                *n += 1;
                *n <= m
            })
            .collect();
        let ids = Tensor::new(keep.as_slice(), self.images.device())?;
        Ok(Split {
            images: self.images.index_select(&ids, 0)?,
            labels: keep.iter().map(|&i| self.labels[i as usize]).collect(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct TaskData {
    pub train: Split,
    pub test: Split,
    /// The controller's held-out control set (`data.control_per_class > 0`), drawn from the
    /// training pool disjointly from `train` (and from `test` when that is held out too).
    pub control: Option<Split>,
    pub class_names: Vec<String>,
}

impl TaskData {
    pub fn n_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Where the accuracy-aware controller measures A: the held-out control set if drawn,
    /// else the training split.
    pub fn control_split(&self) -> &Split {
        self.control.as_ref().unwrap_or(&self.train)
    }
}

/// Shuffled indices of each chosen class in `labels`.
fn by_class(labels: &[u32], classes: &[u32], rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    classes
        .iter()
        .map(|&c| {
            let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
            idx.shuffle(rng);
            idx
        })
        .collect()
}

fn take(
    src: &dyn ImageSource,
    pools: &mut [Vec<usize>],
    per_class: usize,
    what: &str,
    names: &[String],
) -> Result<(Vec<RawImage>, Vec<u32>)> {
    let (mut imgs, mut labels) = (Vec::new(), Vec::new());
    for (new_label, pool) in pools.iter_mut().enumerate() {
        if pool.len() < per_class {
            return Err(SettingError {
                key: format!("data.{what}_per_class"),
                why: format!(
                    "class `{}` has only {} images left for the {what} split, {per_class} requested (fix: lower data.{what}_per_class)",
                    names[new_label],
                    pool.len()
                ),
            }
            .into());
        }
        for i in pool.drain(..per_class) {
            imgs.push(src.image(i)?);
            labels.push(new_label as u32);
        }
    }
    Ok((imgs, labels))
}

fn classes_error(why: String) -> anyhow::Error {
    SettingError {
        key: "data.classes".into(),
        why: format!("data.classes: {why}"),
    }
    .into()
}

/// Draw the split with `rng`; decode and preprocess only the chosen images.
pub fn make(
    sources: &Sources,
    cfg: &DataSettings,
    size: usize,
    preset: Preprocess,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<TaskData> {
    let all_names = sources.train.class_names();
    let classes: Vec<u32> = if cfg.classes.is_empty() {
        (0..all_names.len() as u32).collect()
    } else {
        cfg.classes
            .iter()
            .map(|c| {
                c.find(all_names).map(|i| i as u32).ok_or_else(|| {
                    classes_error(format!(
                        "class {c} does not exist (the dataset has {}: {})",
                        all_names.len(),
                        all_names.join(", ")
                    ))
                })
            })
            .collect::<Result<_>>()?
    };
    for (i, c) in classes.iter().enumerate() {
        if let Some(j) = classes[..i].iter().position(|d| d == c) {
            return Err(classes_error(format!(
                "class `{}` is listed twice (as {} and {}) (fix: list each class once)",
                all_names[*c as usize], cfg.classes[j], cfg.classes[i]
            )));
        }
    }
    let names: Vec<String> = classes
        .iter()
        .map(|&c| all_names[c as usize].clone())
        .collect();
    let mut train_pools = by_class(sources.train.labels(), &classes, rng);
    let (tr_imgs, tr_labels) = take(
        sources.train.as_ref(),
        &mut train_pools,
        cfg.train_per_class,
        "train",
        &names,
    )?;
    let (te_imgs, te_labels) = match &sources.test {
        Some(test) => {
            let mut pools = by_class(test.labels(), &classes, rng);
            take(
                test.as_ref(),
                &mut pools,
                cfg.test_per_class,
                "test",
                &names,
            )?
        }
        // No official test split: hold out from what the training draw left (disjoint).
        None => take(
            sources.train.as_ref(),
            &mut train_pools,
            cfg.test_per_class,
            "test",
            &names,
        )?,
    };
    // Drawn last, so the train and test draws of a seed do not depend on this setting.
    let control = match cfg.control_per_class {
        0 => None,
        n => {
            let (imgs, labels) = take(
                sources.train.as_ref(),
                &mut train_pools,
                n,
                "control",
                &names,
            )?;
            Some(Split {
                images: preprocess::batch(&imgs, size, preset, Fit::Crop, device)?,
                labels,
            })
        }
    };
    Ok(TaskData {
        control,
        train: Split {
            images: preprocess::batch(&tr_imgs, size, preset, Fit::Crop, device)?,
            labels: tr_labels,
        },
        test: Split {
            images: preprocess::batch(&te_imgs, size, preset, Fit::Crop, device)?,
            labels: te_labels,
        },
        class_names: names,
    })
}
