//! AlexNet (Krizhevsky et al. 2012) as torchvision defines it: five convs with overlapping
//! 3×3/2 max-pools, then a 6×6 adaptive average pool and three linear layers.

use super::{Builder, ConvSpec, Tail};
use crate::model::layer::Op;
use anyhow::Result;

/// `features.N` convs: (index, torchvision width, kernel, stride, padding); a max-pool
/// follows the ReLU after the convs at 0, 3 and 10.
const CONVS: [(usize, usize, usize, usize, usize); 5] = [
    (0, 64, 11, 4, 2),
    (3, 192, 5, 1, 2),
    (6, 384, 3, 1, 1),
    (8, 256, 3, 1, 1),
    (10, 256, 3, 1, 1),
];

pub fn build(b: &mut Builder, tail: Tail) -> Result<()> {
    let mut x = 0;
    for (idx, out, kernel, stride, padding) in CONVS {
        let name = format!("features.{idx}");
        x = b.conv(
            x,
            ConvSpec {
                name: &name,
                out,
                kernel,
                stride,
                padding,
                depthwise: false,
                bias: true,
                bn: None,
                tf_same: false,
            },
        )?;
        x = b.relu(x, &format!("features.{}", idx + 1));
        if matches!(idx, 0 | 3 | 10) {
            x = b.max_pool(x, &format!("features.{}", idx + 2), 3, 2, 0);
        }
    }
    if tail == Tail::Classifier {
        x = b.op(x, "avgpool", Op::AdaptiveAvgPool { h: 6, w: 6 });
        x = b.flatten(x, "flatten");
        x = b.op(x, "classifier.0", Op::Dropout);
        x = b.linear(x, "classifier.1", 4096)?;
        x = b.relu(x, "classifier.2");
        x = b.op(x, "classifier.3", Op::Dropout);
        x = b.linear(x, "classifier.4", 4096)?;
        x = b.relu(x, "classifier.5");
        b.linear(x, "classifier.6", 1000)?;
    }
    Ok(())
}
