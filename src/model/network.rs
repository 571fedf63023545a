//! A sequential network split into a fixed backbone and a head.

use super::layer::{Conv, Layer};
use candle_core::{Device, Result, Tensor};

#[derive(Debug, Clone)]
pub struct Network {
    pub layers: Vec<Layer>,
    /// Index of the first head layer; `layers[..head_start]` is the fixed backbone.
    pub head_start: usize,
    /// (channels, height, width) of one input image.
    pub input_shape: (usize, usize, usize),
}

/// The shape flowing between layers: a feature map or a flat vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Map { c: usize, h: usize, w: usize },
    Flat(usize),
}

impl Network {
    pub fn device(&self) -> &Device {
        self.convs()
            .next()
            .map(|c| c.weight.device())
            .unwrap_or(&Device::Cpu)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(run_layers(&self.layers, x, false)?.pop().expect("output"))
    }

    /// Output of the backbone (the head's input), e.g. GAP features.
    pub fn backbone_forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(run_layers(&self.layers[..self.head_start], x, false)?
            .pop()
            .expect("output"))
    }

    /// The input of every layer, plus the final output at the end (LRP's reverse pass reads
    /// them). A conv followed by a ReLU runs fused, so the ReLU's recorded input is its
    /// output: no rule reads a ReLU's input (relevance passes through it).
    pub fn trace(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        run_layers(&self.layers, x, true)
    }

    /// [`Self::trace`] of `layers[start..]` on `x`, the input of layer `start`.
    pub fn trace_from(&self, start: usize, x: &Tensor) -> Result<Vec<Tensor>> {
        run_layers(&self.layers[start..], x, true)
    }

    /// `layers[start..]` on `x`, the input of layer `start`.
    pub fn forward_from(&self, start: usize, x: &Tensor) -> Result<Tensor> {
        Ok(run_layers(&self.layers[start..], x, false)?
            .pop()
            .expect("output"))
    }

    /// Head only, on backbone outputs.
    pub fn head_forward(&self, x: &Tensor) -> Result<Tensor> {
        self.layers[self.head_start..]
            .iter()
            .try_fold(x.clone(), |x, l| l.forward(&x))
    }

    /// Run `f` over `images` in batches of `batch` and concatenate the results on dim 0.
    pub fn batched(
        images: &Tensor,
        batch: usize,
        f: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let outs = batch_ranges(images.dim(0)?, batch)
            .map(|(start, len)| f(&images.narrow(0, start, len)?))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&outs, 0)
    }

    pub fn convs(&self) -> impl Iterator<Item = &Conv> {
        self.layers.iter().filter_map(|l| match l {
            Layer::Conv(c) => Some(c),
            _ => None,
        })
    }

    /// Layer indices of the convolutions, in order.
    pub fn conv_layer_indices(&self) -> Vec<usize> {
        (0..self.layers.len())
            .filter(|&i| matches!(self.layers[i], Layer::Conv(_)))
            .collect()
    }

    /// Output filters of every conv, in order.
    pub fn filters_per_conv(&self) -> Vec<usize> {
        self.convs().map(|c| c.out_channels()).collect()
    }

    /// The input shape of every layer, plus the final output shape at the end.
    pub fn shapes(&self) -> Vec<Shape> {
        let (c, h, w) = self.input_shape;
        let mut s = Shape::Map { c, h, w };
        let mut out = vec![s];
        for l in &self.layers {
            s = match (l, s) {
                (Layer::Conv(conv), Shape::Map { h, w, .. }) => {
                    let (kh, kw) = conv.kernel();
                    let oh = (h + 2 * conv.padding - kh) / conv.stride + 1;
                    let ow = (w + 2 * conv.padding - kw) / conv.stride + 1;
                    Shape::Map {
                        c: conv.out_channels(),
                        h: oh,
                        w: ow,
                    }
                }
                (Layer::MaxPool { kernel, stride }, Shape::Map { c, h, w }) => Shape::Map {
                    c,
                    h: (h - kernel) / stride + 1,
                    w: (w - kernel) / stride + 1,
                },
                (Layer::GlobalAvgPool, Shape::Map { c, .. }) => Shape::Flat(c),
                (Layer::Flatten, Shape::Map { c, h, w }) => Shape::Flat(c * h * w),
                (Layer::Linear(l), _) => Shape::Flat(l.weight.dims()[0]),
                (_, s) => s,
            };
            out.push(s);
        }
        out
    }
}

/// Run `layers` on `x`, fusing each conv with a following ReLU. With `keep`, returns every
/// layer's input and the output; without, only the output (intermediates are dropped as
/// soon as they are consumed).
fn run_layers(layers: &[Layer], x: &Tensor, keep: bool) -> Result<Vec<Tensor>> {
    let mut acts = vec![x.clone()];
    let mut i = 0;
    while i < layers.len() {
        let cur = acts.last().expect("input");
        match (&layers[i], layers.get(i + 1)) {
            (Layer::Conv(c), Some(Layer::Relu)) => {
                let y = c.forward_relu(cur)?;
                if keep {
                    acts.push(y.clone());
                } else {
                    acts.clear();
                }
                acts.push(y);
                i += 2;
            }
            (l, _) => {
                let y = l.forward(cur)?;
                if !keep {
                    acts.clear();
                }
                acts.push(y);
                i += 1;
            }
        }
    }
    Ok(acts)
}

/// `(start, len)` of consecutive batches of at most `batch` (≥ 1) items out of `n`.
pub fn batch_ranges(n: usize, batch: usize) -> impl Iterator<Item = (usize, usize)> {
    let b = batch.max(1);
    (0..n)
        .step_by(b)
        .map(move |start| (start, b.min(n - start)))
}
