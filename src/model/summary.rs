//! A per-layer table of a network: shapes, filters, parameters and MACs.

use super::layer::Layer;
use super::network::{Network, Shape};
use std::fmt::Write;

pub fn table(net: &Network) -> String {
    let shapes = net.shapes();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>4} {:8} {:>16} {:>8} {:>12} {:>16}",
        "idx", "layer", "output", "filters", "params", "MACs"
    );
    let (mut tp, mut tm, mut tf) = (0u64, 0u64, 0usize);
    for (i, l) in net.layers.iter().enumerate() {
        let out = match shapes[i + 1] {
            Shape::Map { c, h, w } => format!("{c}×{h}×{w}"),
            Shape::Flat(n) => format!("{n}"),
        };
        let (filters, params, macs) = match (l, shapes[i + 1]) {
            (Layer::Conv(c), Shape::Map { h, w, .. }) => {
                let (kh, kw) = c.kernel();
                let per = (c.in_channels() * kh * kw * c.out_channels()) as u64;
                (
                    c.out_channels().to_string(),
                    per + c.out_channels() as u64,
                    per * (h * w) as u64,
                )
            }
            (Layer::Linear(lin), _) => {
                let d = lin.weight.dims();
                (
                    String::new(),
                    (d[0] * d[1] + d[0]) as u64,
                    (d[0] * d[1]) as u64,
                )
            }
            _ => (String::new(), 0, 0),
        };
        if let Layer::Conv(c) = l {
            tf += c.out_channels();
        }
        tp += params;
        tm += macs;
        if params > 0 || !matches!(l, Layer::Relu) {
            let _ = writeln!(
                s,
                "{i:>4} {:8} {out:>16} {filters:>8} {params:>12} {macs:>16}",
                l.kind()
            );
        }
    }
    let _ = writeln!(
        s,
        "total: {tf} conv filters, {tp} params, {tm} MACs ({} FLOPs) per image",
        2 * tm
    );
    s
}
