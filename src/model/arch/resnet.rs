//! ResNet-18/34 (basic blocks) and ResNet-50 (bottlenecks), He et al. 2016, with
//! torchvision's module names. Every conv's batch-norm is folded into it; a block's output
//! is `relu(branch + shortcut)`, the shortcut being the block's input or its `downsample`
//! (1×1 conv + BN) where the shape changes. The Caffe flavor is the original ResNet's
//! layout (open_nsfw's ResNet-50-1by2).

use super::{Builder, ConvSpec, Tail};
use crate::model::geometry::Window;
use crate::model::layer::Op;
use anyhow::Result;

/// Where the two ResNet-50 lineages differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// torchvision's (v1.5): stride on the 3×3 conv, batch-norm after every conv.
    Torchvision,
    /// The original Caffe model's (v1), as in open_nsfw's ResNet-50-1by2: stride on the
    /// first 1×1 conv, convs with biases and their batch-norm already folded (by
    /// `lrprune fetch`), and a max-pool padded only at the bottom and right (113 → 56).
    Caffe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    R18,
    R34,
    R50,
}

impl Depth {
    fn blocks(self) -> [usize; 4] {
        match self {
            Depth::R18 => [2, 2, 2, 2],
            Depth::R34 | Depth::R50 => [3, 4, 6, 3],
        }
    }
    fn bottleneck(self) -> bool {
        self == Depth::R50
    }
}

/// A conv as `flavor` stores it: with its batch-norm, or folded with a bias.
fn conv_spec<'n>(
    flavor: Flavor,
    name: &'n str,
    bn: &'n str,
    out: usize,
    k: usize,
    stride: usize,
) -> ConvSpec<'n> {
    let spec = ConvSpec::bn(name, bn, out, k, stride);
    match flavor {
        Flavor::Torchvision => spec,
        Flavor::Caffe => ConvSpec {
            bias: true,
            bn: None,
            ..spec
        },
    }
}

pub fn build(b: &mut Builder, depth: Depth, flavor: Flavor, tail: Tail) -> Result<()> {
    let mut x = b.conv(0, conv_spec(flavor, "conv1", "bn1", 64, 7, 2))?;
    x = b.relu(x, "relu");
    x = match flavor {
        Flavor::Torchvision => b.max_pool(x, "maxpool", 3, 2, 1),
        Flavor::Caffe => {
            let win = Window {
                kernel: 3,
                stride: 2,
                padding: (0, 1),
            };
            b.op(x, "maxpool", Op::MaxPool(win))
        }
    };
    for (stage, &n) in depth.blocks().iter().enumerate() {
        let planes = 64 << stage;
        for i in 0..n {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            let p = format!("layer{}.{i}", stage + 1);
            x = block(b, x, &p, planes, stride, depth.bottleneck(), flavor)?;
        }
    }
    if tail == Tail::Classifier {
        x = b.op(x, "avgpool", Op::GlobalAvgPool);
        b.linear(x, "fc", 1000)?;
    }
    Ok(())
}

/// One residual block `p` reading `x`; returns its output value.
fn block(
    b: &mut Builder,
    x: usize,
    p: &str,
    planes: usize,
    stride: usize,
    bottleneck: bool,
    flavor: Flavor,
) -> Result<usize> {
    let n = |s: &str| format!("{p}.{s}");
    let expansion = if bottleneck { 4 } else { 1 };
    let in_c = b.channels(x);
    let mut y = x;
    let c = |conv: &str, bn: &str| (n(conv), n(bn));
    let ((c1, b1), (c2, b2), (c3, b3)) = (c("conv1", "bn1"), c("conv2", "bn2"), c("conv3", "bn3"));
    if bottleneck {
        let (s1, s2) = match flavor {
            Flavor::Torchvision => (1, stride),
            Flavor::Caffe => (stride, 1),
        };
        y = b.conv(y, conv_spec(flavor, &c1, &b1, planes, 1, s1))?;
        y = b.relu(y, &n("relu1"));
        y = b.conv(y, conv_spec(flavor, &c2, &b2, planes, 3, s2))?;
        y = b.relu(y, &n("relu2"));
        y = b.conv(y, conv_spec(flavor, &c3, &b3, planes * 4, 1, 1))?;
    } else {
        y = b.conv(y, conv_spec(flavor, &c1, &b1, planes, 3, stride))?;
        y = b.relu(y, &n("relu1"));
        y = b.conv(y, conv_spec(flavor, &c2, &b2, planes, 3, 1))?;
    }
    // torchvision adds a downsample where the shape changes; a checkpoint says for itself.
    let needs = stride != 1 || in_c != planes * expansion;
    let shortcut = if b.has(&n("downsample.0.weight")).unwrap_or(needs) {
        let (conv, bn) = (n("downsample.0"), n("downsample.1"));
        b.conv(
            x,
            conv_spec(flavor, &conv, &bn, planes * expansion, 1, stride),
        )?
    } else {
        x
    };
    let sum = b.add(y, shortcut, &n("add"))?;
    Ok(b.relu(sum, &n("relu")))
}
