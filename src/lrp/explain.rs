//! `lrprune explain`: per-filter relevance of a checkpoint on a batch, to Parquet, with
//! optional input heatmaps. What a criterion sees, for a researcher to inspect.

use super::composite;
use super::propagate::{per_sample_filter_relevance, propagate};
use crate::model::network::Shape;
use crate::model::{classifier, vgg, weights, Layer, Network};
use crate::spec::{CfgItem, Preprocess};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use polars::prelude::*;
use std::path::{Path, PathBuf};

pub struct ExplainOptions {
    /// `vgg11|13|16|19` or a custom cfg like `8 8 M 16 M`.
    pub model: String,
    pub batch_norm: bool,
    pub weights: PathBuf,
    pub inputs: PathBuf,
    pub out: PathBuf,
    pub composite: String,
    pub preprocess: Preprocess,
    pub heatmaps: Option<PathBuf>,
}

fn layer_cfg(model: &str) -> Result<Vec<Option<usize>>> {
    if let Some(cfg) = vgg::config(model) {
        return Ok(cfg);
    }
    let items: Vec<CfgItem> = model
        .split([' ', ','])
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse()
                .map(CfgItem::Conv)
                .unwrap_or(CfgItem::Pool(t.to_string()))
        })
        .collect();
    vgg::custom_config(&items).with_context(|| {
        format!("--model `{model}`: not vgg11/13/16/19 nor a cfg like \"64 M 128 M\"")
    })
}

/// Backbone + checkpoint head: global average pooling when the head's input matches the
/// channel count, Flatten when it matches the whole feature map.
pub fn checkpoint_network(
    opts: &ExplainOptions,
    input: (usize, usize, usize),
    device: &Device,
) -> Result<Network> {
    let tensors = weights::load(&opts.weights, device)?;
    let mut layers = vgg::build_features(
        &layer_cfg(&opts.model)?,
        opts.batch_norm,
        input.0,
        &tensors,
        device,
    )?;
    let head = classifier::from_checkpoint(&tensors, device)?;
    let probe = Network {
        layers: layers.clone(),
        head_start: layers.len(),
        input_shape: input,
    };
    let Some(Shape::Map { c, h, w }) = probe.shapes().last().copied() else {
        bail!("backbone ends in a flat shape")
    };
    let first_in = match &head[0] {
        Layer::Linear(l) => l.weight.dims()[1],
        _ => unreachable!(),
    };
    let head_start = layers.len();
    // GAP first: it is what lrprune's own heads use, and on 1×1 maps Flatten would give the
    // same forward pass but route relevance differently (GAP gives a dead feature none).
    if first_in == c {
        layers.push(Layer::GlobalAvgPool);
    } else if first_in == c * h * w {
        layers.push(Layer::Flatten);
    } else {
        bail!("classifier.0 expects {first_in} inputs but the features give {c}×{h}×{w} (fix: use inputs of the size the head was trained for)");
    }
    if let (Some(mean), Some(inv_std)) = (
        tensors.get("standardize.mean"),
        tensors.get("standardize.inv_std"),
    ) {
        // Written by `lrprune export`: the head's input standardisation.
        layers.push(Layer::Standardize {
            mean: mean.to_dtype(DType::F32)?.to_device(device)?,
            inv_std: inv_std.to_dtype(DType::F32)?.to_device(device)?,
        });
    }
    layers.extend(head);
    Ok(Network {
        layers,
        head_start,
        input_shape: input,
    })
}

pub fn explain(opts: &ExplainOptions, device: &Device) -> Result<DataFrame> {
    let x = weights::load(&opts.inputs, device)?;
    let images = x
        .get("images")
        .context("inputs file needs an `images` tensor (N,C,H,W)")?
        .to_dtype(DType::F32)?;
    let labels = x
        .get("labels")
        .context("inputs file needs a `labels` tensor (N,)")?;
    let labels: Vec<u32> = labels
        .to_dtype(DType::I64)?
        .to_vec1::<i64>()?
        .into_iter()
        .map(|v| v as u32)
        .collect();
    let (_, c, h, w) = images.dims4()?;
    let net = checkpoint_network(opts, (c, h, w), device)?;
    let comp = composite::by_name(&opts.composite, opts.preprocess, device)?;
    let rel = propagate(&net, &images, &labels, &comp)?;
    let conv_names: Vec<String> = {
        let keys = vgg::conv_keys(&layer_cfg(&opts.model)?, opts.batch_norm);
        keys.iter().map(|k| format!("features.{k}")).collect()
    };
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
    let mut df = DataFrame::new(
        layer.len(),
        vec![
            Column::new("layer".into(), layer),
            Column::new("name".into(), name),
            Column::new("filter".into(), filter),
            Column::new("relevance".into(), value),
        ],
    )?;
    crate::results::write_parquet_atomic(&opts.out, &mut df)?;
    if let Some(dir) = &opts.heatmaps {
        write_heatmaps(rel.input.as_ref().context("input relevance")?, dir)?;
    }
    Ok(df)
}

/// Input relevance summed over channels, red = positive, blue = negative, one PNG a sample.
fn write_heatmaps(input_rel: &Tensor, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
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
        img.save(dir.join(format!("sample_{i:04}.png")))?;
    }
    Ok(())
}
