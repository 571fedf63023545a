//! Building a graph node by node from named tensors, with batch-norm folded into convs.

use crate::model::geometry::{Pad2d, Shape, Window};
use crate::model::layer::{Conv, Linear, Op};
use crate::model::network::Network;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;

/// Where a builder's tensors come from.
pub enum Source<'a> {
    /// A checkpoint's tensors by torchvision name; `path` is for error messages.
    Checkpoint {
        tensors: &'a HashMap<String, Tensor>,
        path: String,
        device: Device,
    },
    /// Zeros of torchvision's shapes (batch-norm variances of one): the structure only,
    /// for counting parameters and MACs.
    Shapes,
}

/// One conv module (and the batch-norm after it, if any) as torchvision names them.
pub struct ConvSpec<'n> {
    pub name: &'n str,
    /// torchvision's width (the checkpoint's own width wins).
    pub out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    /// One filter per input channel (`groups = channels`).
    pub depthwise: bool,
    pub bias: bool,
    /// The batch-norm module folded into this conv.
    pub bn: Option<&'n str>,
    /// TensorFlow's "SAME" padding (for the input size at hand; the extra row and column go
    /// bottom and right) instead of `padding`.
    pub tf_same: bool,
}

impl<'n> ConvSpec<'n> {
    /// A `k`×`k` conv with `padding = k / 2`, no bias, followed by batch-norm `bn`.
    pub fn bn(name: &'n str, bn: &'n str, out: usize, kernel: usize, stride: usize) -> Self {
        Self {
            name,
            out,
            kernel,
            stride,
            padding: kernel / 2,
            depthwise: false,
            bias: false,
            bn: Some(bn),
            tf_same: false,
        }
    }
}

pub struct Builder<'a> {
    net: Network,
    src: Source<'a>,
    /// The shape of every value so far.
    shapes: Vec<Shape>,
    /// ε of the batch-norms folded (PyTorch's default 1e-5).
    pub bn_eps: f64,
}

impl<'a> Builder<'a> {
    pub fn new(src: Source<'a>, input_shape: (usize, usize, usize)) -> Self {
        Self {
            net: Network {
                nodes: Vec::new(),
                head_start: 0,
                input_shape,
            },
            src,
            shapes: vec![Shape::Map {
                c: input_shape.0,
                h: input_shape.1,
                w: input_shape.2,
            }],
            bn_eps: 1e-5,
        }
    }

    /// The graph so far; its head starts after the last node.
    pub fn finish(mut self) -> Network {
        self.net.head_start = self.net.nodes.len();
        self.net
    }

    /// The value id of the last node's output.
    pub fn last(&self) -> usize {
        self.net.nodes.len()
    }

    pub fn channels(&self, value: usize) -> usize {
        self.shapes[value].channels()
    }

    fn push(&mut self, name: &str, op: Op, inputs: Vec<usize>) -> usize {
        let ins: Vec<Shape> = inputs.iter().map(|&v| self.shapes[v]).collect();
        self.shapes.push(op.out_shape(&ins));
        self.net.push(name, op, inputs)
    }

    /// The tensor `name` (f32, on the device), or zeros of `shape` for [`Source::Shapes`].
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        match &self.src {
            Source::Checkpoint {
                tensors,
                path,
                device,
            } => Ok(tensors
                .get(name)
                .with_context(|| {
                    format!(
                        "{path}: weights file has no tensor `{name}` (fix: give a checkpoint of this architecture with torchvision's names)"
                    )
                })?
                .to_dtype(DType::F32)?
                .to_device(device)?),
            Source::Shapes => {
                let fill = if name.ends_with("running_var") { 1.0 } else { 0.0 };
                Ok(Tensor::full(fill as f32, shape, &Device::Cpu)?)
            }
        }
    }

    /// The per-channel tensor `name` (a bias, a batch-norm's parameters) of `len` values;
    /// another shape is refused by name here, not by a kernel or a broadcast later.
    fn vector(&self, name: &str, len: usize) -> Result<Tensor> {
        let t = self.tensor(name, &[len])?;
        if t.dims() != [len] {
            bail!(
                "{}: `{name}` has shape {:?}, the architecture expects [{len}] here (fix: check `arch`/`cfg`/`batch_norm` against the checkpoint)",
                self.path(),
                t.dims()
            );
        }
        Ok(t)
    }

    /// Whether the checkpoint has tensor `name` (`None` without a checkpoint).
    pub fn has(&self, name: &str) -> Option<bool> {
        match &self.src {
            Source::Checkpoint { tensors, .. } => Some(tensors.contains_key(name)),
            Source::Shapes => None,
        }
    }

    fn path(&self) -> &str {
        match &self.src {
            Source::Checkpoint { path, .. } => path,
            Source::Shapes => "torchvision shapes",
        }
    }

    /// A conv reading value `x`, with its batch-norm folded in; returns its output value.
    pub fn conv(&mut self, x: usize, s: ConvSpec) -> Result<usize> {
        let in_c = self.channels(x);
        let (groups, per_group, out_hint) = if s.depthwise {
            (in_c, 1, in_c)
        } else {
            (1, in_c, s.out)
        };
        let wname = format!("{}.weight", s.name);
        let weight = self.tensor(&wname, &[out_hint, per_group, s.kernel, s.kernel])?;
        let d = weight.dims().to_vec();
        let out = d[0];
        if d.len() != 4 || d[1] != per_group || d[2] != s.kernel || d[3] != s.kernel {
            bail!(
                "{}: `{wname}` has shape {d:?}, the architecture expects [out, {per_group}, {k}, {k}] here (fix: check `arch`/`batch_norm` against the checkpoint)",
                self.path(),
                k = s.kernel
            );
        }
        if s.depthwise && out != in_c {
            bail!(
                "{}: depthwise `{wname}` has {out} filters for {in_c} channels",
                self.path()
            );
        }
        // A checkpoint lrprune exported holds the conv with its batch-norm folded in: a
        // bias where the architecture has none, and no batch-norm tensors.
        let bias_name = format!("{}.bias", s.name);
        let folded = match s.bn {
            Some(bn) if !s.bias => {
                self.has(&bias_name) == Some(true)
                    && self.has(&format!("{bn}.running_mean")) == Some(false)
            }
            _ => false,
        };
        let bias = if s.bias || folded {
            self.vector(&bias_name, out)?
        } else {
            Tensor::zeros(out, DType::F32, weight.device())?
        };
        let padding = match (s.tf_same, self.shapes[x]) {
            (true, Shape::Map { h, w, .. }) => Pad2d {
                h: tf_same(h, s.kernel, s.stride),
                w: tf_same(w, s.kernel, s.stride),
            },
            _ => Pad2d::same(s.padding),
        };
        let mut conv = Conv {
            weight,
            bias,
            padding,
            stride: s.stride,
            groups,
            extra_params: usize::from(s.bias),
        };
        if folded {
            conv.extra_params = 2;
        } else if let Some(bn) = s.bn {
            let get = |k: &str| self.vector(&format!("{bn}.{k}"), out);
            conv = fold_batch_norm(
                conv,
                &get("weight")?,
                &get("bias")?,
                &get("running_mean")?,
                &get("running_var")?,
                self.bn_eps,
            )?;
            conv.extra_params += 2;
        }
        Ok(self.push(s.name, Op::Conv(conv), vec![x]))
    }

    /// A tensor-free op reading `x`, keeping its channel count.
    pub fn op(&mut self, x: usize, name: &str, op: Op) -> usize {
        self.push(name, op, vec![x])
    }

    pub fn relu(&mut self, x: usize, name: &str) -> usize {
        self.op(x, name, Op::Relu)
    }

    pub fn max_pool(
        &mut self,
        x: usize,
        name: &str,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> usize {
        self.op(x, name, Op::MaxPool(Window::new(kernel, stride, padding)))
    }

    /// The element-wise sum of `a` and `b` (a residual connection).
    pub fn add(&mut self, a: usize, b: usize, name: &str) -> Result<usize> {
        if self.shapes[a] != self.shapes[b] {
            bail!(
                "{}: `{name}` adds a {:?} to a {:?} value",
                self.path(),
                self.shapes[a],
                self.shapes[b]
            );
        }
        Ok(self.push(name, Op::Add, vec![a, b]))
    }

    /// A linear layer `name` reading `x` (torchvision's width `out`).
    pub fn linear(&mut self, x: usize, name: &str, out: usize) -> Result<usize> {
        let in_f = self.channels(x);
        let weight = self.tensor(&format!("{name}.weight"), &[out, in_f])?;
        let d = weight.dims().to_vec();
        if d.len() != 2 || d[1] != in_f {
            bail!(
                "{}: `{name}.weight` has shape {d:?}, expected [out, {in_f}]",
                self.path()
            );
        }
        let bias = self.vector(&format!("{name}.bias"), d[0])?;
        Ok(self.push(name, Op::Linear(Linear { weight, bias }), vec![x]))
    }

    /// Flatten a map to its `c·h·w` features.
    pub fn flatten(&mut self, x: usize, name: &str) -> usize {
        self.push(name, Op::Flatten, vec![x])
    }
}

/// TensorFlow's "SAME" padding of one dimension `n` for a `k`-wide kernel at stride `s`:
/// the output has ⌈n / s⌉ positions, the odd extra row or column goes after.
pub fn tf_same(n: usize, k: usize, s: usize) -> (usize, usize) {
    let total = ((n.div_ceil(s) - 1) * s + k).saturating_sub(n);
    (total / 2, total - total / 2)
}

/// BN(conv(x)) = conv'(x) with W' = W·γ/σ and b' = (b − μ)·γ/σ + β, σ = sqrt(var + ε).
pub fn fold_batch_norm(
    conv: Conv,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<Conv> {
    let scale = (gamma / (var + eps)?.sqrt()?)?;
    let o = conv.out_channels();
    let weight = conv.weight.broadcast_mul(&scale.reshape((o, 1, 1, 1))?)?;
    let bias = ((&conv.bias - mean)? * &scale)?.add(beta)?;
    Ok(Conv {
        weight,
        bias,
        ..conv
    })
}
