//! `lrprune explain`: per-filter relevance of a checkpoint on a batch, to Parquet, with
//! optional input heatmaps. What a criterion sees, for a researcher to inspect.

use super::composite;
use super::propagate::{per_sample_filter_relevance, propagate};
use crate::model::arch::{self, vgg, Source, Tail};
use crate::model::geometry::Shape;
use crate::model::{classifier, weights, Network, Op};
use crate::spec::{Arch, CfgItem, Preprocess};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use polars::prelude::*;
use std::path::{Path, PathBuf};

pub struct ExplainOptions {
    /// An architecture name (`vgg16`, `resnet18`, …) or a custom cfg like `8 8 M 16 M`.
    pub model: String,
    pub batch_norm: bool,
    pub weights: PathBuf,
    pub inputs: PathBuf,
    pub out: PathBuf,
    pub composite: String,
    pub preprocess: Preprocess,
    pub heatmaps: Option<PathBuf>,
}

/// `--model`: an architecture or built-in model name, else a custom VGG cfg like
/// `8 8 M 16 M`.
fn model_arch(model: &str) -> (Arch, Vec<CfgItem>) {
    if let Some(arch) =
        Arch::parse(model).or_else(|| crate::spec::builtin_model(model).map(|m| m.arch))
    {
        return (arch, Vec::new());
    }
    let items = model
        .split([' ', ','])
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse()
                .map(CfgItem::Conv)
                .unwrap_or(CfgItem::Pool(t.to_string()))
        })
        .collect();
    (Arch::Custom, items)
}

/// The network `explain` reads. A task `lrprune export` wrote, or a VGG-style checkpoint,
/// carries its head as `classifier.N`, joined to the features by global average pooling or
/// flattening, whichever the head's input width fits; a torchvision checkpoint of another
/// architecture is read with its own classifier.
pub fn checkpoint_network(
    opts: &ExplainOptions,
    input: (usize, usize, usize),
    device: &Device,
) -> Result<Network> {
    let (arch, cfg) = model_arch(&opts.model);
    // `asset:NAME` names a built-in model's fetched weights.
    let path = crate::assets::resolve(&opts.weights.to_string_lossy())?;
    crate::fsio::regular_file(&path, "--weights")?;
    let tensors = weights::load(&path, device)?;
    // Half a standardisation would silently feed the head unstandardised features.
    if tensors.contains_key("standardize.mean") != tensors.contains_key("standardize.inv_std") {
        bail!(
            "--weights {}: has only one of `standardize.mean` and `standardize.inv_std` (fix: give both, as `lrprune export` writes them, or neither)",
            path.display()
        );
    }
    let src = || Source::Checkpoint {
        tensors: &tensors,
        path: path.display().to_string(),
        device: device.clone(),
    };
    // A torchvision checkpoint of a non-VGG architecture brings its own classifier; a task
    // `lrprune export` wrote brings the trained head (`standardize.*`, `classifier.N.*`).
    let exported = tensors.contains_key("standardize.mean");
    if arch != Arch::Custom && vgg::named(arch).is_none() && !exported {
        return arch::build(arch, &cfg, opts.batch_norm, src(), input, Tail::Classifier);
    }
    if arch == Arch::Custom {
        vgg::custom_config(&cfg).with_context(|| {
            format!(
                "--model `{}`: not an architecture nor a cfg like \"64 M 128 M\"",
                opts.model
            )
        })?;
    }
    let mut net = arch::build(arch, &cfg, opts.batch_norm, src(), input, Tail::Features)?;
    let head = classifier::from_checkpoint(&tensors, device)
        .with_context(|| format!("--weights {}", path.display()))?;
    let Some(Shape::Map { c, h, w }) = net.shapes().last().copied() else {
        bail!("backbone ends in a flat shape")
    };
    let first_in = match &head[0] {
        Op::Linear(l) => l.weight.dims()[1],
        _ => bail!("the checkpoint's head does not start with a linear layer"),
    };
    net.head_start = net.nodes.len();
    // GAP first: it is what lrprune's own heads use, and on 1×1 maps Flatten would give the
    // same forward pass but route relevance differently (GAP gives a dead feature none).
    if first_in == c {
        net.push_chain(Op::GlobalAvgPool);
    } else if first_in == c * h * w {
        net.push_chain(Op::Flatten);
    } else {
        bail!("classifier.0 expects {first_in} inputs but the features give {c}×{h}×{w} (fix: use inputs of the size the head was trained for)");
    }
    if let (Some(mean), Some(inv_std)) = (
        tensors.get("standardize.mean"),
        tensors.get("standardize.inv_std"),
    ) {
        // Written by `lrprune export`: the head's input standardisation, one value per
        // feature the head reads (a wrong length would fail deep in the forward pass).
        for (name, t) in [("standardize.mean", mean), ("standardize.inv_std", inv_std)] {
            if t.dims() != [first_in] {
                bail!(
                    "--weights {}: `{name}` has shape {:?}, but `classifier.0` reads {first_in} features (fix: vectors of length {first_in}, as `lrprune export` writes them with this head)",
                    path.display(),
                    t.dims()
                );
            }
        }
        net.push_chain(Op::Standardize {
            mean: mean.to_dtype(DType::F32)?.to_device(device)?,
            inv_std: inv_std.to_dtype(DType::F32)?.to_device(device)?,
        });
    }
    for op in head {
        net.push_chain(op);
    }
    Ok(net)
}

pub fn explain(opts: &ExplainOptions, device: &Device) -> Result<DataFrame> {
    // Refuse a destination that cannot be written before the work, not after it.
    crate::fsio::check_destination(&opts.out).context("--out")?;
    if let Some(dir) = &opts.heatmaps {
        crate::fsio::check_dir_destination(dir).context("--heatmaps")?;
    }
    let file = opts.inputs.display();
    crate::fsio::regular_file(&opts.inputs, "--inputs")?;
    let x = weights::load(&opts.inputs, device)?;
    let images = x
        .get("images")
        .with_context(|| format!("--inputs {file}: needs an `images` tensor (N,C,H,W)"))?
        .to_dtype(DType::F32)?;
    let (n, c, h, w) = images.dims4().map_err(|_| {
        anyhow::anyhow!(
            "--inputs {file}: `images` has shape {:?} (fix: N,C,H,W images)",
            images.dims()
        )
    })?;
    if n == 0 {
        bail!("--inputs {file}: `images` holds no image (fix: at least one)");
    }
    let labels = x
        .get("labels")
        .with_context(|| format!("--inputs {file}: needs a `labels` tensor (N,)"))?;
    let labels: Vec<i64> = labels.to_dtype(DType::I64)?.to_vec1::<i64>().map_err(|_| {
        anyhow::anyhow!(
            "--inputs {file}: `labels` has shape {:?} (fix: one label per image, shape (N,))",
            labels.dims()
        )
    })?;
    if labels.len() != n {
        bail!(
            "--inputs {file}: {} labels for {n} images (fix: one label per image)",
            labels.len()
        );
    }
    // What the checkpoint cannot read (grey images for an RGB network) is named by the
    // builder; say which inputs it was given.
    let net = checkpoint_network(opts, (c, h, w), device)
        .with_context(|| format!("the checkpoint for `images` of {c}×{h}×{w} (--inputs {file})"))?;
    if let Some(node) = net.too_small_at(net.input_shape) {
        let min = (1..=crate::spec::validate::MAX_INPUT_SIZE)
            .find(|&s| net.too_small_at((c, s, s)).is_none())
            .map_or("larger".to_string(), |s| format!("at least {s}×{s}"));
        bail!(
            "--inputs {file}: `images` are {h}×{w}, too small for the network (its node `{}` gets no input left) (fix: images {min})",
            net.nodes[node].name
        );
    }
    let classes = match net.shapes().last() {
        Some(Shape::Flat(k)) => *k,
        _ => bail!(
            "--weights {}: the network does not end in class scores",
            opts.weights.display()
        ),
    };
    if let Some((i, l)) = labels
        .iter()
        .enumerate()
        .find(|(_, l)| !(0..classes as i64).contains(l))
    {
        bail!(
            "--inputs {file}: `labels`[{i}] = {l}, but the head has {classes} classes (fix: labels in 0..{classes})"
        );
    }
    let labels: Vec<u32> = labels.into_iter().map(|v| v as u32).collect();
    let comp = composite::by_name(&opts.composite, opts.preprocess, device)?;
    let rel = propagate(&net, &images, &labels, &comp)?;
    let conv_names: Vec<String> = net
        .conv_nodes()
        .into_iter()
        .map(|i| net.nodes[i].name.clone())
        .collect();
    let (mut layer, mut name, mut filter, mut value) = (vec![], vec![], vec![], vec![]);
    for (k, r) in per_sample_filter_relevance(&rel)?.into_iter().enumerate() {
        let sums = r.sum(0)?.to_vec1::<f64>()?;
        for (f, v) in sums.into_iter().enumerate() {
            layer.push(k as i64);
            name.push(conv_names[k].clone());
            filter.push(f as i64);
            value.push(v);
        }
    }
    let df = DataFrame::new(
        layer.len(),
        vec![
            Column::new("layer".into(), layer),
            Column::new("name".into(), name),
            Column::new("filter".into(), filter),
            Column::new("relevance".into(), value),
        ],
    )?;
    if let Some(dir) = &opts.heatmaps {
        write_heatmaps(rel.input.as_ref().context("input relevance")?, dir)?;
    }
    Ok(df)
}

/// Input relevance summed over channels, red = positive, blue = negative, one PNG a sample.
fn write_heatmaps(input_rel: &Tensor, dir: &Path) -> Result<()> {
    crate::fsio::create_dir_all(dir).context("--heatmaps")?;
    let maps = input_rel.sum(1)?.to_dtype(DType::F32)?.to_vec3::<f32>()?;
    for (i, m) in maps.iter().enumerate() {
        let (h, w) = (m.len(), m[0].len());
        let scale = m.iter().flatten().fold(1e-12f32, |a, v| a.max(v.abs()));
        let img = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let v = m[y as usize][x as usize] / scale;
            let fade = (255.0 * (1.0 - v.abs())) as u8;
            if v >= 0.0 {
                image::Rgb([255, fade, fade])
            } else {
                image::Rgb([fade, fade, 255])
            }
        });
        let path = dir.join(format!("sample_{i:04}.png"));
        crate::fsio::write_atomic(&path, |tmp| Ok(img.save(tmp)?))?;
    }
    Ok(())
}
