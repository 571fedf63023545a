//! MobileNet-V1 1.0 (Howard et al. 2017) as TF-slim builds it: a 3×3 stem and thirteen
//! depthwise-separable blocks (3×3 depthwise + 1×1 pointwise, each with batch-norm
//! ε = 1e-3 and ReLU6), TensorFlow "SAME" padding. Tensor names are TF-slim's scope names
//! without the `MobilenetV1/` prefix, as `lrprune fetch` converts the frozen graph
//! (`Conv2d_0.weight`, `Conv2d_1_depthwise.bn.running_mean`, …, `Logits.weight`).

use super::{Builder, ConvSpec, Tail};
use crate::model::layer::Op;
use anyhow::Result;

/// (pointwise width, depthwise stride) of blocks 1–13.
const BLOCKS: [(usize, usize); 13] = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
];

/// Conv `name` (TF "SAME"), its batch-norm `name.bn`, ReLU6.
fn conv_bn_relu6(
    b: &mut Builder,
    x: usize,
    name: &str,
    out: usize,
    k: usize,
    stride: usize,
    depthwise: bool,
) -> Result<usize> {
    let bn = format!("{name}.bn");
    let spec = ConvSpec {
        depthwise,
        tf_same: true,
        ..ConvSpec::bn(name, &bn, out, k, stride)
    };
    let y = b.conv(x, spec)?;
    Ok(b.op(y, &format!("{name}.relu6"), Op::Relu6))
}

pub fn build(b: &mut Builder, tail: Tail) -> Result<()> {
    b.bn_eps = 1e-3;
    let mut x = conv_bn_relu6(b, 0, "Conv2d_0", 32, 3, 2, false)?;
    for (i, (width, stride)) in BLOCKS.iter().enumerate() {
        let i = i + 1;
        x = conv_bn_relu6(b, x, &format!("Conv2d_{i}_depthwise"), 0, 3, *stride, true)?;
        x = conv_bn_relu6(b, x, &format!("Conv2d_{i}_pointwise"), *width, 1, 1, false)?;
    }
    if tail == Tail::Classifier {
        // TF-slim's 7×7 average pool at 224² is global; the 1×1 logits conv is a linear
        // layer on it (1001 classes, index 0 = background).
        x = b.op(x, "AvgPool_1a", Op::GlobalAvgPool);
        x = b.op(x, "Dropout_1b", Op::Dropout);
        b.linear(x, "Logits", 1001)?;
    }
    Ok(())
}
