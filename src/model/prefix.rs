//! The intact network's layer inputs on one fixed split, reused by pruned networks.
//!
//! Pruning a conv changes nothing before it: every node up to and including the first
//! changed conv sees exactly the inputs the intact network gave it. A sweep evaluates the same test images
//! (and computes relevance on the same reference images) at every step, and relevance-based
//! methods leave the first convs intact for a long time, so starting each pass at the first
//! pruned conv from these stored inputs skips the most expensive layers at 32² (the 64-wide
//! convs on full-resolution maps) for free.

use super::network::batch_ranges;
use super::Network;
use candle_core::{Result, Tensor};

/// Default memory for one split's cache; layers are stored front to back until it is spent.
pub const DEFAULT_BUDGET: usize = 1 << 30;

pub struct PrefixCache {
    /// `inputs[v]`: value v of the intact network on the whole split (value i = the input
    /// of node i in a chain), for the first values, as far as the budget allows.
    inputs: Vec<Tensor>,
}

impl PrefixCache {
    /// Run the intact `net` over `images` in batches and keep layer inputs, front to back,
    /// within `budget` bytes (at least the input images themselves).
    pub fn build(net: &Network, images: &Tensor, batch: usize, budget: usize) -> Result<Self> {
        let n = images.dim(0)?;
        let last_conv = net.conv_nodes().last().copied().unwrap_or(0);
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
            // A fused conv + ReLU records one tensor as two values: share it.
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
        Ok(Self { inputs })
    }

    /// The node a network whose first changed node is `first_changed` (`None`: intact)
    /// can start from: that node (its inputs are still the intact ones), or the deepest
    /// stored value before it.
    pub fn start(&self, first_changed: Option<usize>) -> usize {
        first_changed
            .unwrap_or(usize::MAX)
            .min(self.inputs.len() - 1)
    }

    /// Input of layer `layer` for images `start..start + len` of the split.
    pub fn input(&self, layer: usize, start: usize, len: usize) -> Result<Tensor> {
        self.inputs[layer].narrow(0, start, len)
    }

    /// Values `0..=layer` for images `start..start + len`, or only those nodes from
    /// `layer` on read (`live`).
    fn given(
        &self,
        net: &Network,
        layer: usize,
        live: bool,
        start: usize,
        len: usize,
    ) -> Result<Vec<Option<Tensor>>> {
        let mut given = vec![None; layer + 1];
        let wanted: Vec<usize> = if live {
            net.live_before(layer)
        } else {
            (0..=layer).collect()
        };
        for v in wanted {
            given[v] = Some(self.input(v, start, len)?);
        }
        Ok(given)
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
    /// Start for a network whose first changed node is `first_changed` (`None`: intact).
    pub fn at(cache: &'a PrefixCache, first_changed: Option<usize>) -> Self {
        Self {
            cache,
            layer: cache.start(first_changed),
        }
    }

    /// Output of `net` on images `start..start + len` of the split.
    pub fn forward(&self, net: &Network, start: usize, len: usize) -> Result<Tensor> {
        let given = self.cache.given(net, self.layer, true, start, len)?;
        net.forward_from(self.layer, given)
    }

    /// Every value of `net` on images `start..start + len`, as [`Network::trace`] gives
    /// them.
    pub fn trace(&self, net: &Network, start: usize, len: usize) -> Result<Vec<Tensor>> {
        let given = self.cache.given(net, self.layer, false, start, len)?;
        net.trace_from(self.layer, given)
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
