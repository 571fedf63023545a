//! Which conv filters are alive, in the unpruned network's indexing.

use crate::model::network::Shape;
use crate::model::{Layer, Network};
use candle_core::{Result, Tensor};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterMask {
    /// `keep[layer][filter]`, one row per conv in order.
    pub keep: Vec<Vec<bool>>,
}

impl FilterMask {
    pub fn all_alive(filters: &[usize]) -> Self {
        Self {
            keep: filters.iter().map(|&n| vec![true; n]).collect(),
        }
    }
    pub fn total(&self) -> usize {
        self.keep.iter().map(Vec::len).sum()
    }
    pub fn alive(&self) -> usize {
        self.keep
            .iter()
            .map(|l| l.iter().filter(|k| **k).count())
            .sum()
    }
    /// Fraction of all conv filters removed.
    pub fn rate(&self) -> f64 {
        1.0 - self.alive() as f64 / self.total() as f64
    }
    pub fn alive_in(&self, layer: usize) -> usize {
        self.keep[layer].iter().filter(|k| **k).count()
    }
    pub fn per_layer(&self) -> Vec<usize> {
        (0..self.keep.len()).map(|l| self.alive_in(l)).collect()
    }
    /// Original indices of the alive filters of `layer`, ascending (= compacted order).
    pub fn alive_indices(&self, layer: usize) -> Vec<u32> {
        (0..self.keep[layer].len())
            .filter(|&i| self.keep[layer][i])
            .map(|i| i as u32)
            .collect()
    }
}

/// The same network with pruned filters' weights **and** biases zeroed. Zeroing only the
/// weight would leave ReLU(bias) alive, which is not removal (DESIGN §5). Pruned features of
/// a standardised head input get mean = inv_std = 0, which removes them from the head exactly
/// as compaction does.
pub fn apply(net: &Network, mask: &FilterMask) -> Result<Network> {
    let shapes = net.shapes();
    let mut out = net.clone();
    let mut k = 0;
    // Keep-flags of the channels / flat features currently flowing (None = all alive).
    let mut alive: Option<Vec<bool>> = None;
    for (i, layer) in out.layers.iter_mut().enumerate() {
        match layer {
            Layer::Conv(c) => {
                let m = keep_tensor(&mask.keep[k], c.weight.device())?;
                c.weight = c
                    .weight
                    .broadcast_mul(&m.reshape((c.out_channels(), 1, 1, 1))?)?;
                c.bias = (&c.bias * &m)?;
                alive = Some(mask.keep[k].clone());
                k += 1;
            }
            Layer::Flatten => {
                if let (Some(ch), Shape::Map { h, w, .. }) = (&alive, shapes[i]) {
                    alive = Some(
                        ch.iter()
                            .flat_map(|&a| std::iter::repeat_n(a, h * w))
                            .collect(),
                    );
                }
            }
            Layer::Standardize { mean, inv_std } => {
                if let Some(a) = &alive {
                    let m = keep_tensor(a, mean.device())?;
                    *mean = (&*mean * &m)?;
                    *inv_std = (&*inv_std * &m)?;
                }
            }
            Layer::Linear(_) => alive = None,
            _ => {}
        }
    }
    Ok(out)
}

fn keep_tensor(keep: &[bool], device: &candle_core::Device) -> Result<Tensor> {
    let v: Vec<f32> = keep.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
    Tensor::from_vec(v, keep.len(), device)
}
