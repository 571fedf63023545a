//! ResNet-18/34 (basic blocks) and ResNet-50 (bottlenecks), He et al. 2016, with
//! torchvision's module names. Every conv's batch-norm is folded into it; a block's output
//! is `relu(branch + shortcut)`, the shortcut being the block's input or its `downsample`
//! (1×1 conv + BN) where the shape changes.

use super::{Builder, ConvSpec, Tail};
use crate::model::layer::Op;
use anyhow::Result;

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

pub fn build(b: &mut Builder, depth: Depth, tail: Tail) -> Result<()> {
    let mut x = b.conv(0, ConvSpec::bn("conv1", "bn1", 64, 7, 2))?;
    x = b.relu(x, "relu");
    x = b.max_pool(x, "maxpool", 3, 2, 1);
    for (stage, &n) in depth.blocks().iter().enumerate() {
        let planes = 64 << stage;
        for i in 0..n {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            let p = format!("layer{}.{i}", stage + 1);
            x = block(b, x, &p, planes, stride, depth.bottleneck())?;
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
) -> Result<usize> {
    let n = |s: &str| format!("{p}.{s}");
    let expansion = if bottleneck { 4 } else { 1 };
    let in_c = b.channels(x);
    let mut y = x;
    if bottleneck {
        y = b.conv(y, ConvSpec::bn(&n("conv1"), &n("bn1"), planes, 1, 1))?;
        y = b.relu(y, &n("relu1"));
        y = b.conv(y, ConvSpec::bn(&n("conv2"), &n("bn2"), planes, 3, stride))?;
        y = b.relu(y, &n("relu2"));
        y = b.conv(y, ConvSpec::bn(&n("conv3"), &n("bn3"), planes * 4, 1, 1))?;
    } else {
        y = b.conv(y, ConvSpec::bn(&n("conv1"), &n("bn1"), planes, 3, stride))?;
        y = b.relu(y, &n("relu1"));
        y = b.conv(y, ConvSpec::bn(&n("conv2"), &n("bn2"), planes, 3, 1))?;
    }
    // torchvision adds a downsample where the shape changes; a checkpoint says for itself.
    let needs = stride != 1 || in_c != planes * expansion;
    let shortcut = if b.has(&n("downsample.0.weight")).unwrap_or(needs) {
        let (conv, bn) = (n("downsample.0"), n("downsample.1"));
        b.conv(x, ConvSpec::bn(&conv, &bn, planes * expansion, 1, stride))?
    } else {
        x
    };
    let sum = b.add(y, shortcut, &n("add"))?;
    Ok(b.relu(sum, &n("relu")))
}
