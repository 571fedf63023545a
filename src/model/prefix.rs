//! The intact network's layer inputs on one fixed split, reused by pruned networks.
//!
//! Pruning a conv changes nothing before it: every node up to and including the first
//! changed conv sees exactly the inputs the intact network gave it. A sweep evaluates the same test images
//! (and computes relevance on the same reference images) at every step, and relevance-based
//! methods leave the first convs intact for a long time, so starting each pass at the first
//! pruned conv from these stored inputs skips the most expensive layers at 32² (the 64-wide
//! convs on full-resolution maps) for free.

use super::network::batch_ranges;
use super::values::Values;
use super::Network;
use candle_core::{Result, Tensor};

/// Default memory for one split's cache; layers are stored front to back until it is spent.
pub const DEFAULT_BUDGET: usize = 1 << 30;

pub struct PrefixCache {
    /// Value v of the intact network on the whole split (one batch), for the first values,
    /// as far as the budget allows.
    inputs: Values,
}

impl PrefixCache {
    /// Run the intact `net` over `images` in batches and keep layer inputs, front to back,
    /// within `budget` bytes (at least the input images themselves).
    pub fn build(net: &Network, images: &Tensor, batch: usize, budget: usize) -> Result<Self> {
        let n = images.dim(0)?;
        let last_conv = net.conv_nodes().last().copied().unwrap_or(0);
        // Which values fit is decided on the first batch (scaled to the split), so that the
        // others are never held: at 224² VGG16's every activation of a 700-image split is
        // ~38 GB, of which the budget keeps the first one or two.
        let mut shared: Vec<bool> = Vec::new();
        let mut per_layer: Vec<Vec<Tensor>> = Vec::new();
        for (start, len) in batch_ranges(n, batch) {
            let acts = net.trace(&images.narrow(0, start, len)?)?;
            if start == 0 {
                shared = fitting(&acts[..=last_conv.min(acts.len() - 1)], len, n, budget);
                per_layer = vec![Vec::new(); shared.len()];
            }
            for (parts, a) in per_layer.iter_mut().zip(acts) {
                parts.push(a);
            }
        }
        let mut inputs: Vec<Tensor> = Vec::new();
        for (parts, shared) in per_layer.into_iter().zip(shared) {
            let t = match (shared, inputs.last()) {
                (true, Some(prev)) => prev.clone(),
                _ => Tensor::cat(&parts, 0)?,
            };
            inputs.push(t);
        }
        Ok(Self {
            inputs: Values::whole_split(inputs),
        })
    }

    /// The node a network whose first changed node is `first_changed` (`None`: intact)
    /// can start from: that node (its inputs are still the intact ones), or the deepest
    /// stored value before it.
    pub fn start(&self, first_changed: Option<usize>) -> usize {
        first_changed
            .unwrap_or(usize::MAX)
            .min(self.inputs.depth() - 1)
    }

    /// Input of layer `layer` for images `start..start + len` of the split.
    pub fn input(&self, layer: usize, start: usize, len: usize) -> Result<Tensor> {
        self.inputs.rows(layer, start, len)
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
        self.inputs.depth()
    }
}

/// The leading values of one batch's trace (`len` images) that fit `budget` bytes for the
/// whole split of `n` images (always the first), each flagged when it is the previous value's
/// tensor (a fused conv + ReLU records one tensor as two values), which costs nothing.
fn fitting(acts: &[Tensor], len: usize, n: usize, budget: usize) -> Vec<bool> {
    let mut used = 0usize;
    let mut shared = Vec::new();
    for (i, a) in acts.iter().enumerate() {
        let same = i > 0 && a.id() == acts[i - 1].id();
        let bytes = if same {
            0
        } else {
            a.elem_count() / len * n * 4
        };
        if i > 0 && used + bytes > budget {
            break;
        }
        used += bytes;
        shared.push(same);
    }
    shared
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

    /// The backbone's output (the head's input) of `net` on images `start..start + len`.
    pub fn features(&self, net: &Network, start: usize, len: usize) -> Result<Tensor> {
        let given = self.cache.given(net, self.layer, true, start, len)?;
        net.backbone_from(self.layer, given)
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

/// Every value of `net` on `images`, in batches of `batch` ([`Values`]), from the stored
/// prefix when `from` is given (`images` is then the split the prefix was stored on).
pub fn values(net: &Network, images: &Tensor, from: Option<Start>, batch: usize) -> Result<Values> {
    let n = images.dim(0)?;
    let per_batch: Vec<Vec<Tensor>> = batch_ranges(n, batch)
        .map(|(start, len)| trace(net, images, from, start, len))
        .collect::<Result<_>>()?;
    Ok(per_batch.into())
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
