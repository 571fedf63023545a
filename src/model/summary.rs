//! A per-node table of a network: shapes, filters, parameters and MACs.

use super::cost::{conv_cost, linear_cost};
use super::geometry::Shape;
use super::layer::Op;
use super::network::Network;
use std::fmt::Write;

pub fn table(net: &Network) -> String {
    let shapes = net.shapes();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>4} {:24} {:11} {:>16} {:>8} {:>12} {:>16}",
        "idx", "node", "op", "output", "filters", "params", "MACs"
    );
    let (mut tp, mut tm, mut tf) = (0u64, 0u64, 0usize);
    for (i, node) in net.nodes.iter().enumerate() {
        let out = match shapes[i + 1] {
            Shape::Map { c, h, w } => format!("{c}×{h}×{w}"),
            Shape::Flat(n) => format!("{n}"),
        };
        let (filters, params, macs) = match (&node.op, shapes[i + 1]) {
            (Op::Conv(c), Shape::Map { h, w, .. }) => {
                let (p, m) = conv_cost(c, h, w);
                tf += c.out_channels();
                (c.out_channels().to_string(), p, m)
            }
            (Op::Linear(lin), _) => {
                let (p, m) = linear_cost(lin);
                (String::new(), p, m)
            }
            _ => (String::new(), 0, 0),
        };
        tp += params;
        tm += macs;
        if !matches!(node.op, Op::Relu | Op::Relu6 | Op::Dropout) {
            let _ = writeln!(
                s,
                "{i:>4} {:24} {:11} {out:>16} {filters:>8} {params:>12} {macs:>16}",
                node.name,
                node.op.kind()
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
