//! Physical compaction: remove pruned filters and the input channels / head columns that read
//! them, giving a smaller network with the same function as the zero-masked one.
//!
//! Every later step of a sweep runs on the compacted network, so a network at rate r costs
//! roughly (1 − r)² of the original FLOPs instead of all of them.

use super::mask::FilterMask;
use crate::model::network::Shape;
use crate::model::{Layer, Network};
use candle_core::{Result, Tensor};

fn select(t: &Tensor, idx: &[u32], dim: usize) -> Result<Tensor> {
    if idx.len() == t.dims()[dim] {
        return Ok(t.clone());
    }
    let ids = Tensor::new(idx, t.device())?;
    t.index_select(&ids, dim)
}

/// Compact `net` (the unpruned network) to the filters alive in `mask`.
pub fn compact(net: &Network, mask: &FilterMask) -> Result<Network> {
    let shapes = net.shapes();
    let mut out = net.clone();
    // Original indices of the channels (or flat features) currently flowing; None = all.
    let mut kept: Option<Vec<u32>> = None;
    let mut k = 0;
    for (i, layer) in out.layers.iter_mut().enumerate() {
        match layer {
            Layer::Conv(c) => {
                if let Some(in_idx) = &kept {
                    c.weight = select(&c.weight, in_idx, 1)?;
                }
                let keep = mask.alive_indices(k);
                c.weight = select(&c.weight, &keep, 0)?;
                c.bias = select(&c.bias, &keep, 0)?;
                kept = Some(keep);
                k += 1;
            }
            Layer::Flatten => {
                if let (Some(ch), Shape::Map { h, w, .. }) = (&kept, shapes[i]) {
                    let hw = (h * w) as u32;
                    kept = Some(ch.iter().flat_map(|&c| c * hw..(c + 1) * hw).collect());
                }
            }
            Layer::Standardize { mean, inv_std } => {
                if let Some(idx) = &kept {
                    *mean = select(mean, idx, 0)?;
                    *inv_std = select(inv_std, idx, 0)?;
                }
            }
            Layer::Linear(l) => {
                if let Some(in_idx) = &kept {
                    l.weight = select(&l.weight, in_idx, 1)?;
                }
                kept = None;
            }
            _ => {}
        }
    }
    Ok(out)
}
