//! EfficientNet-Lite0 (Tan & Le 2019; the "lite" variant for mobile accelerators: ReLU6, no
//! squeeze-excitation, stem and head not scaled) with the names of lukemelas's PyTorch port
//! (`_conv_stem`, `_blocks.N._expand_conv`, …). Convs pad as TensorFlow's "SAME" for the
//! input size at hand (at 224×224 exactly the port's static padding), batch-norm ε = 1e-3.

use super::{Builder, ConvSpec, Tail};
use crate::model::layer::Op;
use anyhow::Result;

/// (repeats, kernel, first stride, expansion, output width), lite0's block strings
/// `r1_k3_s11_e1_i32_o16` … `r1_k3_s11_e6_i192_o320`.
const STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
];

/// A conv with TF "SAME" padding and its batch-norm, then ReLU6 unless `linear`.
struct Unit<'n> {
    conv: &'n str,
    bn: &'n str,
    out: usize,
    kernel: usize,
    stride: usize,
    depthwise: bool,
    linear: bool,
}

fn unit(b: &mut Builder, x: usize, u: Unit) -> Result<usize> {
    let spec = ConvSpec {
        depthwise: u.depthwise,
        tf_same: true,
        ..ConvSpec::bn(u.conv, u.bn, u.out, u.kernel, u.stride)
    };
    let y = b.conv(x, spec)?;
    Ok(if u.linear {
        y
    } else {
        b.op(y, &format!("{}.relu6", u.conv), Op::Relu6)
    })
}

pub fn build(b: &mut Builder, tail: Tail) -> Result<()> {
    b.bn_eps = 1e-3;
    let stem = Unit {
        conv: "_conv_stem",
        bn: "_bn0",
        out: 32,
        kernel: 3,
        stride: 2,
        depthwise: false,
        linear: false,
    };
    let mut x = unit(b, 0, stem)?;
    let mut i = 0;
    for (repeats, kernel, stride, expand, out) in STAGES {
        for r in 0..repeats {
            let s = if r == 0 { stride } else { 1 };
            x = mbconv(b, x, i, kernel, s, expand, out)?;
            i += 1;
        }
    }
    let head = Unit {
        conv: "_conv_head",
        bn: "_bn1",
        out: 1280,
        kernel: 1,
        stride: 1,
        depthwise: false,
        linear: false,
    };
    x = unit(b, x, head)?;
    if tail == Tail::Classifier {
        x = b.op(x, "_avg_pooling", Op::GlobalAvgPool);
        x = b.op(x, "_dropout", Op::Dropout);
        b.linear(x, "_fc", 1000)?;
    }
    Ok(())
}

/// Inverted-residual block `_blocks.i` (no squeeze-excitation in the lite models).
fn mbconv(
    b: &mut Builder,
    x: usize,
    i: usize,
    kernel: usize,
    stride: usize,
    expand: usize,
    out: usize,
) -> Result<usize> {
    let n = |s: &str| format!("_blocks.{i}.{s}");
    let in_c = b.channels(x);
    let mut y = x;
    if expand != 1 {
        let (conv, bn) = (n("_expand_conv"), n("_bn0"));
        let spec = Unit {
            conv: &conv,
            bn: &bn,
            out: in_c * expand,
            kernel: 1,
            stride: 1,
            depthwise: false,
            linear: false,
        };
        y = unit(b, y, spec)?;
    }
    let (dw, bn1) = (n("_depthwise_conv"), n("_bn1"));
    let spec = Unit {
        conv: &dw,
        bn: &bn1,
        out: 0,
        kernel,
        stride,
        depthwise: true,
        linear: false,
    };
    y = unit(b, y, spec)?;
    let (proj, bn2) = (n("_project_conv"), n("_bn2"));
    let spec = Unit {
        conv: &proj,
        bn: &bn2,
        out,
        kernel: 1,
        stride: 1,
        depthwise: false,
        linear: true,
    };
    y = unit(b, y, spec)?;
    if stride == 1 && in_c == b.channels(y) {
        y = b.add(x, y, &n("add"))?;
    }
    Ok(y)
}
