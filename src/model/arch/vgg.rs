//! VGG backbones (Simonyan & Zisserman 2015) with torchvision's module numbering: a chain
//! of 3×3 convs (batch-norm folded for the `_bn` variants), ReLUs and 2×2 max-pools.

use super::{Builder, ConvSpec, Tail};
use crate::model::layer::Op;
use crate::spec::{Arch, CfgItem};
use anyhow::{bail, Result};

/// torchvision's configurations, written as in the VGG paper's table: conv widths, `M` = pool.
const CONFIGS: [(&str, &str); 4] = [
    ("vgg11", "64 M 128 M 256 256 M 512 512 M 512 512 M"),
    ("vgg13", "64 64 M 128 128 M 256 256 M 512 512 M 512 512 M"),
    (
        "vgg16",
        "64 64 M 128 128 M 256 256 256 M 512 512 512 M 512 512 512 M",
    ),
    (
        "vgg19",
        "64 64 M 128 128 M 256 256 256 256 M 512 512 512 512 M 512 512 512 512 M",
    ),
];

/// The layer configuration of a named VGG: conv widths, `None` = 2×2 max-pool.
pub fn config(name: &str) -> Option<Vec<Option<usize>>> {
    let (_, cfg) = CONFIGS.iter().find(|(n, _)| *n == name)?;
    Some(cfg.split(' ').map(|t| t.parse().ok()).collect())
}

/// The configuration and batch-norm flag of a VGG `arch` (`None` for other architectures).
pub fn named(arch: Arch) -> Option<(Vec<Option<usize>>, bool)> {
    let (name, bn) = match arch {
        Arch::Vgg11 => ("vgg11", false),
        Arch::Vgg13 => ("vgg13", false),
        Arch::Vgg16 => ("vgg16", false),
        Arch::Vgg19 => ("vgg19", false),
        Arch::Vgg11Bn => ("vgg11", true),
        Arch::Vgg13Bn => ("vgg13", true),
        Arch::Vgg16Bn => ("vgg16", true),
        Arch::Vgg19Bn => ("vgg19", true),
        _ => return None,
    };
    Some((config(name)?, bn))
}

/// A custom `cfg` from a spec (`[16, "M", 32, "M"]`).
pub fn custom_config(items: &[CfgItem]) -> Result<Vec<Option<usize>>> {
    items
        .iter()
        .map(|i| match i {
            CfgItem::Conv(n) => Ok(Some(*n)),
            CfgItem::Pool(s) if s == "M" => Ok(None),
            CfgItem::Pool(s) => bail!("cfg entry `{s}`: use a conv width or \"M\" for max-pool"),
        })
        .collect()
}

/// torchvision `features.N` indices of the convs for a config: conv, [bn], relu, and "M" pools.
pub fn conv_keys(cfg: &[Option<usize>], batch_norm: bool) -> Vec<usize> {
    let mut idx = 0;
    let mut keys = Vec::new();
    for item in cfg {
        match item {
            Some(_) => {
                keys.push(idx);
                idx += if batch_norm { 3 } else { 2 };
            }
            None => idx += 1,
        }
    }
    keys
}

/// The `features` chain (and torchvision's classifier for [`Tail::Classifier`]).
pub fn build(b: &mut Builder, cfg: &[Option<usize>], batch_norm: bool, tail: Tail) -> Result<()> {
    let mut x = 0;
    let mut idx = 0;
    for item in cfg {
        match item {
            None => {
                x = b.max_pool(x, &format!("features.{idx}"), 2, 2, 0);
                idx += 1;
            }
            Some(width) => {
                let (name, bn) = (format!("features.{idx}"), format!("features.{}", idx + 1));
                x = b.conv(
                    x,
                    ConvSpec {
                        name: &name,
                        out: *width,
                        kernel: 3,
                        stride: 1,
                        padding: 1,
                        depthwise: false,
                        bias: true,
                        bn: batch_norm.then_some(bn.as_str()),
                        tf_same: false,
                    },
                )?;
                if b.channels(x) != *width {
                    bail!(
                        "`{name}.weight` has {} filters, the architecture expects {width} (fix: check `arch`/`cfg` against the checkpoint)",
                        b.channels(x)
                    );
                }
                idx += if batch_norm { 2 } else { 1 };
                x = b.relu(x, &format!("features.{idx}"));
                idx += 1;
            }
        }
    }
    if tail == Tail::Classifier {
        x = b.op(x, "avgpool", Op::AdaptiveAvgPool { h: 7, w: 7 });
        x = b.flatten(x, "flatten");
        x = b.linear(x, "classifier.0", 4096)?;
        x = b.relu(x, "classifier.1");
        x = b.op(x, "classifier.2", Op::Dropout);
        x = b.linear(x, "classifier.3", 4096)?;
        x = b.relu(x, "classifier.4");
        x = b.op(x, "classifier.5", Op::Dropout);
        b.linear(x, "classifier.6", 1000)?;
    }
    Ok(())
}
