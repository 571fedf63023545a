//! Parameter and FLOP counts of the effective (compacted) network.
//!
//! FLOPs per image count one multiply-add as 2. Pools, ReLU, adds and biases are not
//! counted in MACs (the usual convention, and what makes VGG16's 15.35 GMACs); a grouped
//! conv costs `in / groups` MACs per output. Parameters are counted as the original model
//! counts them: a conv's folded batch-norm adds its γ and β (torchvision's figures).

use super::geometry::Shape;
use super::layer::{Conv, Linear, Op};
use super::network::Network;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    pub conv_params: u64,
    pub conv_macs: u64,
    pub params: u64,
    pub macs: u64,
}

impl Cost {
    /// FLOPs per image (multiply-add = 2).
    pub fn flops(&self) -> u64 {
        2 * self.macs
    }
}

/// Parameters and MACs of conv node `conv` with output map `h`×`w`: (params, MACs).
pub fn conv_cost(conv: &Conv, h: usize, w: usize) -> (u64, u64) {
    let (kh, kw) = conv.kernel();
    let per_pos = ((conv.in_channels() / conv.groups) * kh * kw * conv.out_channels()) as u64;
    let params = per_pos + (conv.out_channels() * conv.extra_params) as u64;
    (params, per_pos * (h * w) as u64)
}

/// Parameters and MACs of a linear layer.
pub fn linear_cost(lin: &Linear) -> (u64, u64) {
    let d = lin.weight.dims();
    ((d[0] * d[1] + d[0]) as u64, (d[0] * d[1]) as u64)
}

pub fn cost(net: &Network) -> Cost {
    let shapes = net.shapes();
    let mut c = Cost::default();
    for (i, node) in net.nodes.iter().enumerate() {
        match &node.op {
            Op::Conv(conv) => {
                let Shape::Map { h, w, .. } = shapes[i + 1] else {
                    continue;
                };
                let (p, m) = conv_cost(conv, h, w);
                c.conv_params += p;
                c.params += p;
                c.conv_macs += m;
                c.macs += m;
            }
            Op::Linear(lin) => {
                let (p, m) = linear_cost(lin);
                c.params += p;
                c.macs += m;
            }
            // Any other op's learned parameters (a batch-norm's γ and β; no MACs counted,
            // as for a folded one).
            op => {
                let n: usize = op.params().iter().map(|(_, t)| t.elem_count()).sum();
                c.params += n as u64;
            }
        }
    }
    c
}
