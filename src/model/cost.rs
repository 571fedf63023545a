//! Parameter and FLOP counts of the effective (compacted) network.
//!
//! FLOPs follow DESIGN §6: per image, one multiply-add counts as 2. Pools, ReLU and biases
//! are not counted in MACs (the usual convention, and what makes VGG16's 15.35 GMACs).

use super::layer::Layer;
use super::network::{Network, Shape};

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

pub fn cost(net: &Network) -> Cost {
    let shapes = net.shapes();
    let mut c = Cost::default();
    for (i, l) in net.layers.iter().enumerate() {
        match l {
            Layer::Conv(conv) => {
                let (kh, kw) = conv.kernel();
                let per_pos = (conv.in_channels() * kh * kw * conv.out_channels()) as u64;
                let Shape::Map { h, w, .. } = shapes[i + 1] else {
                    continue;
                };
                let p = per_pos + conv.out_channels() as u64;
                c.conv_params += p;
                c.params += p;
                c.conv_macs += per_pos * (h * w) as u64;
                c.macs += per_pos * (h * w) as u64;
            }
            Layer::Linear(lin) => {
                let d = lin.weight.dims();
                c.params += (d[0] * d[1] + d[0]) as u64;
                c.macs += (d[0] * d[1]) as u64;
            }
            _ => {}
        }
    }
    c
}
