//! The intact network's layer inputs on one fixed split, reused by pruned networks.
//!
//! Pruning conv k changes nothing before it: every layer up to and including conv k sees
//! exactly the input the intact network gave it. A sweep evaluates the same test images
//! (and computes relevance on the same reference images) at every step, and relevance-based
//! methods leave the first convs intact for a long time, so starting each pass at the first
//! pruned conv from these stored inputs skips the most expensive layers at 32² (the 64-wide
//! convs on full-resolution maps) for free.

use super::network::batch_ranges;
use super::Network;
use crate::prune::FilterMask;
use candle_core::{Result, Tensor};

/// Default memory for one split's cache; layers are stored front to back until it is spent.
pub const DEFAULT_BUDGET: usize = 1 << 30;

pub struct PrefixCache {
    /// `inputs[i]`: input of layer i of the intact network on the whole split.
    inputs: Vec<Tensor>,
    /// Layer index of every conv of the intact network.
    conv_at: Vec<usize>,
}

impl PrefixCache {
    /// Run the intact `net` over `images` in batches and keep layer inputs, front to back,
    /// within `budget` bytes (at least the input images themselves).
    pub fn build(net: &Network, images: &Tensor, batch: usize, budget: usize) -> Result<Self> {
        let n = images.dim(0)?;
        let conv_at = net.conv_layer_indices();
        let last_conv = conv_at.last().copied().unwrap_or(0);
        let mut per_layer: Vec<Vec<Tensor>> = vec![Vec::new(); last_conv + 1];
        for (start, len) in batch_ranges(n, batch) {
            let acts = net.trace(&images.narrow(0, start, len)?)?;
            for (i, a) in acts.into_iter().take(last_conv + 1).enumerate() {
                per_layer[i].push(a);
            }
        }
        let mut inputs: Vec<Tensor> = Vec::new();
        let mut used = 0usize;
        let mut prev_ids = Vec::new();
        for parts in per_layer {
            let ids: Vec<_> = parts.iter().map(|t| t.id()).collect();
            // A fused conv + ReLU records one tensor as two layers' inputs: share it.
            if ids == prev_ids {
                inputs.push(inputs.last().expect("previous layer").clone());
                continue;
            }
            let bytes = parts.iter().map(|t| t.elem_count() * 4).sum::<usize>();
            if !inputs.is_empty() && used + bytes > budget {
                break;
            }
            used += bytes;
            inputs.push(Tensor::cat(&parts, 0)?);
            prev_ids = ids;
        }
        Ok(Self { inputs, conv_at })
    }

    /// The layer a network pruned by `mask` can start from: the first conv with a pruned
    /// filter (its input is still the intact one), or the deepest stored layer before it.
    pub fn start(&self, mask: &FilterMask) -> usize {
        let first_pruned = mask
            .keep
            .iter()
            .position(|layer| layer.iter().any(|alive| !alive));
        let limit = first_pruned.map_or(usize::MAX, |k| self.conv_at[k]);
        limit.min(self.inputs.len() - 1)
    }

    /// Input of layer `layer` for images `start..start + len` of the split.
    pub fn input(&self, layer: usize, start: usize, len: usize) -> Result<Tensor> {
        self.inputs[layer].narrow(0, start, len)
    }

    /// Inputs of layers `0..layer` for images `start..start + len` (what a trace from
    /// `layer` is missing).
    pub fn inputs_before(&self, layer: usize, start: usize, len: usize) -> Result<Vec<Tensor>> {
        (0..layer).map(|i| self.input(i, start, len)).collect()
    }

    /// Number of layers whose input is stored.
    pub fn depth(&self) -> usize {
        self.inputs.len()
    }
}

/// Where a pass over the cached split begins: the stored prefix and the first layer to run.
#[derive(Clone, Copy)]
pub struct Start<'a> {
    pub cache: &'a PrefixCache,
    pub layer: usize,
}

impl<'a> Start<'a> {
    /// Start for a network pruned by `mask`.
    pub fn for_mask(cache: &'a PrefixCache, mask: &FilterMask) -> Self {
        Self {
            cache,
            layer: cache.start(mask),
        }
    }

    /// Output of `net` on images `start..start + len` of the split.
    pub fn forward(&self, net: &Network, start: usize, len: usize) -> Result<Tensor> {
        net.forward_from(self.layer, &self.cache.input(self.layer, start, len)?)
    }

    /// Every layer's input and the output of `net` on images `start..start + len`, as
    /// [`Network::trace`] gives them.
    pub fn trace(&self, net: &Network, start: usize, len: usize) -> Result<Vec<Tensor>> {
        let mut acts = self.cache.inputs_before(self.layer, start, len)?;
        acts.extend(net.trace_from(self.layer, &self.cache.input(self.layer, start, len)?)?);
        Ok(acts)
    }
}

/// `net`'s trace ([`Network::trace`]) on images `start..start + len` of `images`, from the
/// stored prefix when `from` is given (`images` is then the split the cache was built on).
pub fn trace(
    net: &Network,
    images: &Tensor,
    from: Option<Start>,
    start: usize,
    len: usize,
) -> Result<Vec<Tensor>> {
    match from {
        Some(f) => f.trace(net, start, len),
        None => net.trace(&images.narrow(0, start, len)?),
    }
}

/// `net`'s output on images `start..start + len` of `images`, as [`trace`] does it.
pub fn forward(
    net: &Network,
    images: &Tensor,
    from: Option<Start>,
    start: usize,
    len: usize,
) -> Result<Tensor> {
    match from {
        Some(f) => f.forward(net, start, len),
        None => net.forward(&images.narrow(0, start, len)?),
    }
}
