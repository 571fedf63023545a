//! MobileNet-V2 (Sandler et al. 2018) with torchvision's module names: inverted residual
//! blocks of 1×1 expansion, 3×3 depthwise and 1×1 linear projection convs (BN folded,
//! ReLU6), the input added back where stride is 1 and the width is unchanged.

use super::{Builder, ConvSpec, Tail};
use crate::model::layer::Op;
use anyhow::Result;

/// (expansion t, width c, repeats n, first stride s), as in the paper's Table 2.
const SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// A `Conv2dNormActivation` (conv `p.0`, BN `p.1`, ReLU6 `p.2`).
fn conv_bn_relu6(
    b: &mut Builder,
    x: usize,
    p: &str,
    out: usize,
    k: usize,
    stride: usize,
    depthwise: bool,
) -> Result<usize> {
    let (conv, bn) = (format!("{p}.0"), format!("{p}.1"));
    let spec = ConvSpec {
        depthwise,
        ..ConvSpec::bn(&conv, &bn, out, k, stride)
    };
    let y = b.conv(x, spec)?;
    Ok(b.op(y, &format!("{p}.2"), Op::Relu6))
}

pub fn build(b: &mut Builder, tail: Tail) -> Result<()> {
    let mut x = conv_bn_relu6(b, 0, "features.0", 32, 3, 2, false)?;
    let mut idx = 1;
    for (t, c, n, s) in SETTINGS {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            x = inverted_residual(b, x, &format!("features.{idx}"), t, c, stride)?;
            idx += 1;
        }
    }
    x = conv_bn_relu6(b, x, &format!("features.{idx}"), 1280, 1, 1, false)?;
    if tail == Tail::Classifier {
        x = b.op(x, "avgpool", Op::GlobalAvgPool);
        x = b.op(x, "classifier.0", Op::Dropout);
        b.linear(x, "classifier.1", 1000)?;
    }
    Ok(())
}

fn inverted_residual(
    b: &mut Builder,
    x: usize,
    p: &str,
    t: usize,
    out: usize,
    stride: usize,
) -> Result<usize> {
    let in_c = b.channels(x);
    let mut y = x;
    let mut i = 0;
    if t != 1 {
        y = conv_bn_relu6(b, y, &format!("{p}.conv.0"), in_c * t, 1, 1, false)?;
        i = 1;
    }
    y = conv_bn_relu6(b, y, &format!("{p}.conv.{i}"), 0, 3, stride, true)?;
    let (proj, bn) = (format!("{p}.conv.{}", i + 1), format!("{p}.conv.{}", i + 2));
    y = b.conv(y, ConvSpec::bn(&proj, &bn, out, 1, 1))?;
    if stride == 1 && in_c == b.channels(y) {
        y = b.add(x, y, &format!("{p}.add"))?;
    }
    Ok(y)
}
