//! A network's values on one split, batch by batch: what the measured layer search
//! (src/prune/search/) holds for the current network and for each candidate.
//!
//! Value v is the input of node v (the output of node v − 1 in a chain), as
//! [`Network::trace`] gives them; `[b][v]` is value v on batch b of the split, in
//! [`batch_ranges`] order. `model::prefix::values` makes them from the intact network's
//! stored prefix, as every other pass over a split starts.

use super::Network;
use candle_core::{Result, Tensor, TensorId};
use std::collections::HashSet;

#[derive(Clone, Default)]
pub struct Values(Vec<Vec<Tensor>>);

impl From<Vec<Vec<Tensor>>> for Values {
    /// `[b][v]`: value v on batch b.
    fn from(per_batch: Vec<Vec<Tensor>>) -> Self {
        Self(per_batch)
    }
}

impl Values {
    /// Every value of `net`, which equals the network of these values before node `start`:
    /// those are shared, the rest computed from them.
    pub fn trace_from(&self, net: &Network, start: usize) -> Result<Self> {
        let per_batch = self
            .0
            .iter()
            .map(|acts| net.trace_from(start, acts[..=start].iter().cloned().map(Some).collect()))
            .collect::<Result<_>>()?;
        Ok(Self(per_batch))
    }

    /// Value `end` of `net` (`backbone`: the backbone's output, else the network's), which
    /// equals the network of these values before node `start`, on every batch
    /// (concatenated); only the values still read from `start` on are handed over.
    pub fn run_to(
        &self,
        net: &Network,
        start: usize,
        end: usize,
        backbone: bool,
    ) -> Result<Tensor> {
        let outs = self
            .0
            .iter()
            .map(|acts| {
                if start >= end {
                    return Ok(acts[end].clone());
                }
                let mut given = vec![None; start + 1];
                for v in net.live_before(start) {
                    given[v] = Some(acts[v].clone());
                }
                if backbone {
                    net.backbone_from(start, given)
                } else {
                    net.forward_from(start, given)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&outs, 0)
    }

    /// Values on the whole split as one batch (the stored prefix: the first values only).
    pub fn whole_split(values: Vec<Tensor>) -> Self {
        Self(vec![values])
    }

    /// How many values each batch holds.
    pub fn depth(&self) -> usize {
        self.0.first().map_or(0, Vec::len)
    }

    /// Value `v` for images `start..start + len` of a store held as one batch
    /// ([`Self::whole_split`]).
    pub fn rows(&self, v: usize, start: usize, len: usize) -> Result<Tensor> {
        self.0[0][v].narrow(0, start, len)
    }

    /// The values batch by batch: `[b][v]`.
    pub fn batches(&self) -> &[Vec<Tensor>] {
        &self.0
    }

    /// Value `v` on the whole split (batches concatenated).
    pub fn at(&self, v: usize) -> Result<Tensor> {
        let parts: Vec<Tensor> = self.0.iter().map(|acts| acts[v].clone()).collect();
        Tensor::cat(&parts, 0)
    }

    /// Values `nodes` keep only the channels at positions `ids` (dim 1), batch by batch; a
    /// tensor recorded as two consecutive values (a conv fused with its ReLU) is selected
    /// once.
    pub fn select_channels(
        &mut self,
        nodes: std::ops::RangeInclusive<usize>,
        ids: &Tensor,
    ) -> Result<()> {
        for acts in self.0.iter_mut() {
            let mut prev: Option<(TensorId, Tensor)> = None;
            for value in &mut acts[nodes.clone()] {
                let selected = match &prev {
                    Some((id, t)) if *id == value.id() => t.clone(),
                    _ => value.index_select(ids, 1)?,
                };
                prev = Some((value.id(), selected.clone()));
                *value = selected;
            }
        }
        Ok(())
    }

    /// Bytes of the tensors not in `seen` (which then holds them): what several stores
    /// that share tensors hold together.
    pub fn distinct_bytes(&self, seen: &mut HashSet<TensorId>) -> usize {
        let tensors = self.0.iter().flatten();
        tensors
            .filter(|t| seen.insert(t.id()))
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }

    /// Bytes the values of `net` after node `first`'s input take on `images` images (as
    /// `net`'s shapes say, in f32).
    pub fn bytes_after(net: &Network, first: usize, images: usize) -> usize {
        net.trace_floats_per_image(first + 1) * images * 4
    }
}
