//! Architectures, one file each, built as graphs from torchvision-named tensors.
//!
//! Every builder reads its tensors through a [`Builder`] by module name (`layer1.0.conv1`,
//! `features.3.conv.1.0`), never by index arithmetic, and folds each batch-norm into its
//! conv as it goes. Channel widths come from the tensors themselves, so a checkpoint of the
//! same structure with other widths (the small test fixtures) loads too; the widths written
//! in the builders are torchvision's, used to make zero weights when only the structure is
//! wanted (parameter and MAC counts).

pub mod alexnet;
pub mod builder;
pub mod efficientnet_lite;
pub mod mobilenet_v1;
pub mod mobilenet_v2;
pub mod onnx;
pub mod onnx_fold;
pub mod resnet;
pub mod vgg;

pub use builder::{Builder, ConvSpec, Source};

use super::network::Network;
use crate::spec::{Arch, CfgItem};
use anyhow::Result;
use resnet::Flavor::{Caffe, Torchvision};

/// Add the classifier torchvision puts after the features (for checking logits and
/// counting parameters); without it, the graph ends at the last feature map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    Features,
    Classifier,
}

/// Build `arch` from `src`. `cfg` and `batch_norm` describe a `custom` (VGG-style) net.
pub fn build(
    arch: Arch,
    cfg: &[CfgItem],
    batch_norm: bool,
    src: Source,
    input_shape: (usize, usize, usize),
    tail: Tail,
) -> Result<Network> {
    let mut b = Builder::new(src, input_shape);
    match arch {
        Arch::Custom => vgg::build(&mut b, &vgg::custom_config(cfg)?, batch_norm, tail)?,
        Arch::Alexnet => alexnet::build(&mut b, tail)?,
        Arch::Resnet18 => resnet::build(&mut b, resnet::Depth::R18, Torchvision, tail)?,
        Arch::Resnet34 => resnet::build(&mut b, resnet::Depth::R34, Torchvision, tail)?,
        Arch::Resnet50 => resnet::build(&mut b, resnet::Depth::R50, Torchvision, tail)?,
        Arch::Resnet50Caffe => resnet::build(&mut b, resnet::Depth::R50, Caffe, tail)?,
        Arch::MobilenetV1 => mobilenet_v1::build(&mut b, tail)?,
        Arch::MobilenetV2 => mobilenet_v2::build(&mut b, tail)?,
        Arch::EfficientnetLite0 => efficientnet_lite::build(&mut b, tail)?,
        Arch::Onnx => anyhow::bail!(
            "an ONNX model is read from its file (`onnx::load`), not built from tensors"
        ),
        vgg_arch => {
            let (cfg, bn) = vgg::named(vgg_arch).expect("every other arch is a VGG");
            vgg::build(&mut b, &cfg, bn || batch_norm, tail)?
        }
    };
    Ok(b.finish())
}
