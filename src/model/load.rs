//! The one place a model spec becomes a network: its weights resolved and loaded, its
//! architecture built (batch-norm folded), global average pooling appended as the head's
//! input.

use super::arch::{self, vgg, Source, Tail};
use super::layer::Op;
use super::network::Network;
use super::weights;
use crate::assets;
use crate::spec::{Arch, ModelSpec};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use std::path::Path;

/// The backbone a model spec describes, ending in global average pooling, without a head.
pub fn backbone(m: &ModelSpec, device: &Device) -> Result<Network> {
    let path = assets::resolve(&m.weights)?;
    let mut net = from_checkpoint(
        m.arch,
        &m.cfg,
        m.batch_norm,
        &path,
        m.input_size,
        Tail::Features,
        device,
    )
    .with_context(|| format!("building model `{}` from {}", m.name, path.display()))?;
    let out = net.output();
    net.push("avgpool", Op::GlobalAvgPool, vec![out]);
    net.head_start = net.nodes.len();
    Ok(net)
}

/// `arch` built from the checkpoint at `path` for square `input_size` RGB inputs.
pub fn from_checkpoint(
    arch: Arch,
    cfg: &[crate::spec::CfgItem],
    batch_norm: bool,
    path: &Path,
    input_size: usize,
    tail: Tail,
    device: &Device,
) -> Result<Network> {
    if arch == Arch::Onnx {
        let net = arch::onnx::load(path, (3, input_size, input_size), tail, device)?;
        if let Some(node) = net.too_small_at(net.input_shape) {
            bail!(
                "{}: at input_size = {input_size} the feature map is gone by node `{}` (fix: a larger input_size)",
                path.display(),
                net.nodes[node].name
            );
        }
        return Ok(net);
    }
    let tensors = weights::load(path, device)?;
    let src = Source::Checkpoint {
        tensors: &tensors,
        path: path.display().to_string(),
        device: device.clone(),
    };
    arch::build(
        arch,
        cfg,
        batch_norm,
        src,
        (3, input_size, input_size),
        tail,
    )
}

/// torchvision `features.N` indices of a VGG-style model's convs (what `export` writes).
pub fn vgg_conv_keys(m: &ModelSpec) -> Result<Vec<usize>> {
    let (cfg, bn) = match (m.arch, vgg::named(m.arch)) {
        (Arch::Custom, _) => (vgg::custom_config(&m.cfg)?, m.batch_norm),
        (_, Some((cfg, bn))) => (cfg, bn || m.batch_norm),
        (arch, None) => bail!(
            "model `{}`: exporting a task supports VGG-style models only, not `{}`",
            m.name,
            arch.name()
        ),
    };
    Ok(vgg::conv_keys(&cfg, bn))
}
