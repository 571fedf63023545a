//! Any standard CNN as an ONNX file (`[[model]] weights = "model.onnx"`): the graph read
//! node by node into lrprune's own ops, batch-norm and per-channel constants folded into the
//! conv before them (a batch-norm no conv precedes, as DenseNet's pre-activation ones, kept
//! as a per-channel affine), channel `Concat`s kept, so a network from PyTorch
//! (`torch.onnx.export`) or any other exporter prunes, explains and exports like the
//! built-in ones. A TensorFlow-converted graph's NHWC maps between the transposes around its
//! convs are followed (`layout_node`), its `Pad`s folded into the conv or max-pool after
//! them, and the shape arithmetic of its SAME padding evaluated at import (`onnx_fold`).
//!
//! The graph is cut where the backbone ends — at the first node that leaves the feature
//! maps (a global pool, a flatten, a linear layer) — and the project's own head is trained
//! on it; with [`Tail::Classifier`] the whole graph is read (to check logits against the
//! file's own). An op or attribute outside what is read here is refused naming the node, the
//! op and what is supported — never guessed.
//!
//! Node names: the PyTorch exporter names a node `/layer1/layer1.0/conv1/Conv`; the module
//! path's last part (`layer1.0.conv1`, torchvision's name) is taken, so group names, the
//! relevance files and exported checkpoints read as torchvision's do. Other names are kept.

use super::builder::{fold_batch_norm, tf_same};
use super::onnx_fold::{self, Small};
use super::Tail;
use crate::assets::protobuf::{
    OnnxAttribute, OnnxGraph, OnnxModel, OnnxNode, OnnxTensor, ONNX_FLOAT,
};
use crate::model::geometry::{Pad2d, Shape, Window};
use crate::model::layer::{Affine, Conv, Linear, Op};
use crate::model::network::{Network, UniqueNames};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// ONNX files larger than this are refused (the largest ImageNet CNNs are ~600 MB).
const MAX_BYTES: u64 = 2 << 30;

/// What the importer reads, for the refusal message.
const SUPPORTED: &str = "Conv (dilation 1; groups 1 or depthwise), BatchNormalization (folded into the Conv before it, else kept as a per-channel affine), Mul/Add by a per-channel constant after a Conv or Gemm, Relu, Clip(0, 6), Add of two values, Concat of maps along the channels, MaxPool, AveragePool over the whole map or with windows that tile it, GlobalAveragePool, ReduceMean over the map, Flatten, Reshape to a vector, Gemm, MatMul by a constant, Dropout, Identity, Constant; on an NHWC map (a TensorFlow-converted graph): Transpose NCHW ↔ NHWC, Cast to float, Pad (zeros before a Conv, edge of 1 before a MaxPool), element-wise ops, ReduceMean over the map; on constants: Shape, Gather, Cast, Add/Sub/Mul/Div, Concat, Slice, Reshape, Transpose, (Un)Squeeze, ConstantOfShape (folded)";

/// The ops read on an NHWC map as they are on an NCHW one (their output keeps the layout).
const ELEMENTWISE: &[&str] = &["Relu", "Clip", "Add", "Sub", "Mul"];

/// The network in the ONNX file at `path`, for `input` (C, H, W) images.
pub fn load(
    path: &Path,
    input: (usize, usize, usize),
    tail: Tail,
    device: &Device,
) -> Result<Network> {
    let bytes = crate::fsio::read_capped(path, "ONNX model", MAX_BYTES)?;
    let model = OnnxModel::decode(&bytes[..]).map_err(|e| {
        anyhow!(
            "{}: not an ONNX model ({e}) (fix: give a .onnx file written by an ONNX exporter)",
            path.display()
        )
    })?;
    let graph = model
        .graph
        .with_context(|| format!("{}: the ONNX model holds no graph", path.display()))?;
    Importer::new(path, &graph, input, device)?.run(&graph, tail)
}

struct Importer {
    path: String,
    device: Device,
    /// Initialisers and `Constant` outputs, by name.
    consts: HashMap<String, OnnxTensor>,
    /// The network value each ONNX value is (aliases share one).
    values: HashMap<String, usize>,
    /// How many nodes read each ONNX value (a fold needs the conv's output to itself).
    readers: HashMap<String, usize>,
    net: Network,
    shapes: Vec<Shape>,
    names: UniqueNames,
    /// The index of the graph's last Conv: a whole-map average pool before it (a DenseNet
    /// transition on a small input) pools a map, one after it ends the backbone.
    last_conv: Option<usize>,
    /// ONNX values laid out (N, H, W, C), as a TensorFlow-converted graph keeps its maps
    /// between the transposes around each conv (lrprune's own value is NCHW all the same).
    nhwc: HashSet<String>,
    /// ONNX values that are a network value with spatial padding still to apply (top,
    /// left, bottom, right; `true`: edge padding): a `Pad` waiting for the conv or
    /// max-pool that reads it, which takes the padding as its own.
    padded: HashMap<String, ([usize; 4], bool)>,
    /// `Shape` outputs only ever indexed past the batch axis (SAME-padding arithmetic):
    /// folded to constants.
    spatial_shapes: HashSet<String>,
}

impl Importer {
    fn new(
        path: &Path,
        g: &OnnxGraph,
        input: (usize, usize, usize),
        device: &Device,
    ) -> Result<Self> {
        let consts: HashMap<String, OnnxTensor> = g
            .initializer
            .iter()
            .map(|t| (t.name.clone(), t.clone()))
            .collect();
        let path = path.display().to_string();
        let Some(x) = g.input.iter().find(|i| !consts.contains_key(&i.name)) else {
            bail!("{path}: the graph has no input besides its weights");
        };
        // The images lrprune feeds are (N, 3, H, W): say so if the model reads others.
        let declared = x
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .and_then(|t| t.shape.as_ref())
            .map(|s| s.dim.iter().map(|d| d.dim_value).collect::<Vec<_>>());
        let mut nhwc = HashSet::new();
        if let Some(dims) = &declared {
            let c = Some(input.0 as i64);
            if dims.len() == 4 && dims[3] == c && dims[1] != c {
                // (N, H, W, C): a TensorFlow-converted graph, transposed before its first conv.
                nhwc.insert(x.name.clone());
            }
        }
        if let Some(dims) = declared.filter(|_| nhwc.is_empty()) {
            if dims.len() != 4 || dims[1].is_some_and(|c| c != input.0 as i64) {
                bail!(
                    "{path}: the graph's input `{}` has shape {dims:?} (None: any size); lrprune feeds it (N, {}, H, W) images (fix: export the model for NCHW RGB input)",
                    x.name,
                    input.0
                );
            }
        }
        let mut readers = HashMap::new();
        for n in &g.node {
            for i in &n.input {
                *readers.entry(i.clone()).or_insert(0) += 1;
            }
        }
        let (c, h, w) = input;
        Ok(Self {
            path,
            device: device.clone(),
            consts,
            values: HashMap::from([(x.name.clone(), 0)]),
            readers,
            net: Network {
                nodes: vec![],
                head_start: 0,
                input_shape: input,
            },
            shapes: vec![Shape::Map { c, h, w }],
            names: UniqueNames::default(),
            last_conv: g.node.iter().rposition(|n| n.op_type == "Conv"),
            nhwc,
            padded: HashMap::new(),
            spatial_shapes: spatial_shapes(g),
        })
    }

    fn run(mut self, g: &OnnxGraph, tail: Tail) -> Result<Network> {
        for (k, node) in g.node.iter().enumerate() {
            if tail == Tail::Features && self.leaves_the_maps(node, k) {
                let x = self.value(node, 0)?;
                if x != self.net.nodes.len() {
                    bail!("{}: node `{}` ({}) ends the backbone but does not read the last feature map (fix: export the model without branches after its last conv block)", self.path, node.name, node.op_type);
                }
                return self.finish();
            }
            self.node(node, k).with_context(|| {
                format!("{}: node `{}` ({})", self.path, node.name, node.op_type)
            })?;
        }
        if tail == Tail::Features {
            return self.finish();
        }
        let out = g.output.first().context("the graph has no output")?;
        match self.values.get(&out.name) {
            Some(&v) if v == self.net.nodes.len() => self.finish(),
            _ => bail!(
                "{}: the graph's output `{}` is not its last node's",
                self.path,
                out.name
            ),
        }
    }

    fn finish(mut self) -> Result<Network> {
        if self.net.nodes.is_empty() {
            bail!("{}: no layer before the backbone ends", self.path);
        }
        self.net.head_start = self.net.nodes.len();
        Ok(self.net)
    }

    /// Whether an AveragePool (the `k`-th node) after the last conv covers its whole
    /// (unpadded) input map: a global pool.
    fn pools_whole_map(&self, node: &OnnxNode, k: usize) -> bool {
        let Ok((kernel, _, padding)) = self.window(node) else {
            return false;
        };
        if self.last_conv.is_some_and(|last| k < last) {
            return false;
        }
        let input = node.input.first().and_then(|i| self.values.get(i));
        padding == (0, 0)
            && input.is_some_and(|&v| {
                matches!(self.shapes[v], Shape::Map { h, w, .. } if h == kernel && w == kernel)
            })
    }

    /// A node that takes the backbone's feature maps to vectors: where the backbone ends.
    fn leaves_the_maps(&self, node: &OnnxNode, k: usize) -> bool {
        // `Shape` starts the `x.view(x.size(0), -1)` chain older models flatten with.
        let flat_op = matches!(
            node.op_type.as_str(),
            "GlobalAveragePool"
                | "ReduceMean"
                | "Flatten"
                | "Reshape"
                | "Gemm"
                | "MatMul"
                | "Shape"
        );
        let flat_op = flat_op
            && !(node.op_type == "Shape"
                && node.output.iter().all(|o| self.spatial_shapes.contains(o)));
        let whole_pool = node.op_type == "AveragePool" && self.pools_whole_map(node, k);
        (flat_op || whole_pool)
            && node
                .input
                .first()
                .and_then(|i| self.values.get(i))
                .is_some_and(|&v| matches!(self.shapes[v], Shape::Map { .. }))
    }

    /// The network value of `node`'s `i`-th input.
    fn value(&self, node: &OnnxNode, i: usize) -> Result<usize> {
        let name = node.input.get(i).context("an input is missing")?;
        self.values.get(name).copied().with_context(|| {
            format!("input `{name}` is neither a value computed before nor a constant")
        })
    }

    fn konst(&self, node: &OnnxNode, i: usize) -> Option<&OnnxTensor> {
        node.input.get(i).and_then(|n| self.consts.get(n))
    }

    /// Node `k` (named by its torch module path where it has one), read into the network.
    fn node(&mut self, node: &OnnxNode, k: usize) -> Result<()> {
        let op = node.op_type.as_str();
        let out = node
            .output
            .first()
            .context("the node has no output")?
            .clone();
        let alias = |s: &mut Self, v: usize| {
            s.values.insert(out.clone(), v);
            Ok(())
        };
        let constant = |i: &String| i.is_empty() || self.consts.contains_key(i);
        if onnx_fold::FOLDED.contains(&op) && node.input.iter().all(constant) {
            let ins: Vec<Option<Small>> = (node.input.iter())
                .map(|i| self.consts.get(i).and_then(Small::of))
                .collect();
            let t = onnx_fold::fold(node, &ins)?;
            self.consts.insert(out.clone(), t.tensor(&out));
            return Ok(());
        }
        if self.layout_node(node, &out)? {
            return Ok(());
        }
        // An element-wise op (pushed or folded into the conv before it) keeps its input's
        // layout.
        if ELEMENTWISE.contains(&op) && node.input.iter().any(|i| self.nhwc.contains(i)) {
            self.nhwc.insert(out.clone());
        }
        match op {
            "Constant" => {
                let t = attr(node, "value")
                    .and_then(|a| a.t.clone())
                    .context("a Constant without a tensor `value`")?;
                self.consts.insert(out, t);
                Ok(())
            }
            "Identity" | "Dropout" => {
                if let Some(t) = self.konst(node, 0) {
                    let t = t.clone();
                    self.consts.insert(out, t);
                    return Ok(());
                }
                let v = self.value(node, 0)?;
                alias(self, v)
            }
            "Conv" => {
                let mut conv = self.conv(node)?;
                if let Some(([t, l, b, r], edge)) = self.padded.get(&node.input[0]).copied() {
                    if edge {
                        bail!(
                            "an edge-mode Pad before a conv; only zero padding is folded into one"
                        );
                    }
                    let p = &mut conv.padding;
                    (p.h.0, p.h.1, p.w.0, p.w.1) = (p.h.0 + t, p.h.1 + b, p.w.0 + l, p.w.1 + r);
                }
                self.push(node, k, Op::Conv(conv), vec![self.value(node, 0)?])
            }
            "BatchNormalization" => {
                if attr(node, "training_mode").is_some_and(|a| a.i != 0) {
                    bail!("a batch-norm in training mode (batch statistics); export the model in eval mode");
                }
                let v = self.value(node, 0)?;
                let Shape::Map { c, .. } = self.shapes[v] else {
                    bail!("a batch-norm of a vector");
                };
                let eps = attr(node, "epsilon").map_or(1e-5, |a| a.f as f64);
                let get = |i| self.vector(node, i, c);
                let (gamma, beta, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
                if !self.folds_into_conv(node, v) {
                    // Pre-activation (DenseNet's norm1 after a Concat): kept as its own op.
                    let affine = Affine::from_batch_norm(&gamma, &beta, &mean, &var, eps)?;
                    return self.push(node, k, Op::Affine(affine), vec![v]);
                }
                let conv = self.conv_to_fold(node, v)?;
                let folded = fold_batch_norm(conv.clone(), &gamma, &beta, &mean, &var, eps)?;
                *conv = Conv {
                    extra_params: conv.extra_params + 2,
                    ..folded
                };
                alias(self, v)
            }
            "Mul" | "Add" | "Sub"
                if self.konst(node, 1).is_some() || self.konst(node, 0).is_some() =>
            {
                let v = self.value(node, usize::from(self.konst(node, 0).is_some()))?;
                match self.fold_constant(node)? {
                    None => alias(self, v),
                    Some(affine) => self.push(node, k, Op::Affine(affine), vec![v]),
                }
            }
            "Add" if node.input.len() == 2 => {
                let (a, b) = (self.value(node, 0)?, self.value(node, 1)?);
                if self.shapes[a] != self.shapes[b] {
                    bail!("adds a {:?} to a {:?}", self.shapes[a], self.shapes[b]);
                }
                self.push(node, k, Op::Add, vec![a, b])
            }
            "Relu" => self.push(node, k, Op::Relu, vec![self.value(node, 0)?]),
            "Clip" => {
                let bound = |i: usize, name: &str| -> Option<f32> {
                    match self.konst(node, i) {
                        Some(t) => t.floats().first().copied(),
                        None => attr(node, name).map(|a| a.f),
                    }
                };
                let op = match (bound(1, "min"), bound(2, "max")) {
                    (Some(lo), Some(hi)) if lo == 0.0 && hi == 6.0 => Op::Relu6,
                    (Some(0.0), None) => Op::Relu,
                    (lo, hi) => {
                        bail!("clips to [{lo:?}, {hi:?}]; only [0, 6] (ReLU6) and [0, ∞) are read")
                    }
                };
                self.push(node, k, op, vec![self.value(node, 0)?])
            }
            "MaxPool" => {
                let (kernel, stride, mut padding) = self.window(node)?;
                if let Some(([t, l, b, r], edge)) = self.padded.get(&node.input[0]).copied() {
                    // Padded positions never win in lrprune's max-pool: the same as edge
                    // padding of at most one row (the row it copies is in the window too),
                    // or zeros after a ReLU.
                    let v = self.value(node, 0)?;
                    let after_relu =
                        (v > 0) && matches!(self.net.nodes[v - 1].op, Op::Relu | Op::Relu6);
                    let fits = if edge {
                        t.max(l).max(b).max(r) <= 1
                    } else {
                        after_relu
                    };
                    if !fits || t != l || b != r || padding != (0, 0) {
                        bail!("a Pad {:?} ({}) before a max-pool; folded are edge padding of at most 1, or zero padding after a ReLU, alike on both axes", [t, l, b, r], if edge { "edge" } else { "zeros" });
                    }
                    padding = (t, b);
                }
                if ints(node, "dilations").iter().any(|&d| d != 1) {
                    bail!("a dilated max-pool");
                }
                let win = Window {
                    kernel,
                    stride,
                    padding,
                };
                self.push(node, k, Op::MaxPool(win), vec![self.value(node, 0)?])
            }
            "AveragePool" | "GlobalAveragePool" | "ReduceMean" => {
                let v = self.value(node, 0)?;
                if op == "ReduceMean" {
                    // Some exporters spell global pooling as a mean over the map's axes.
                    let mut axes = ints(node, "axes");
                    axes.sort_unstable();
                    let map_axes: &[[i64; 2]] = if self.nhwc.contains(&node.input[0]) {
                        &[[1, 2], [-3, -2]]
                    } else {
                        &[[2, 3], [-2, -1]]
                    };
                    if !map_axes.iter().any(|a| axes == a) {
                        bail!(
                            "a mean over axes {axes:?}; only one over the map ({:?}) is read",
                            map_axes[0]
                        );
                    }
                }
                if op == "AveragePool" && !self.pools_whole_map(node, k) {
                    let (kernel, stride, padding) = self.window(node)?;
                    let s = self.shapes[v];
                    let tiles =
                        matches!(s, Shape::Map { h, w, .. } if h % kernel == 0 && w % kernel == 0);
                    if stride != kernel || padding != (0, 0) || !tiles {
                        bail!("an average pool {kernel}×{kernel} with stride {stride} and pads {padding:?} on {s:?}; read are one over the whole map and ones whose windows tile the map (stride = kernel, no pads)");
                    }
                    // Windows that tile the map are exactly the adaptive pool's bins.
                    let Shape::Map { h, w, .. } = s else {
                        unreachable!("checked above")
                    };
                    let pool = Op::AdaptiveAvgPool {
                        h: h / kernel,
                        w: w / kernel,
                    };
                    return self.push(node, k, pool, vec![v]);
                }
                self.push(node, k, Op::GlobalAvgPool, vec![v])
            }
            "Flatten" | "Reshape" => {
                let v = self.value(node, 0)?;
                match self.shapes[v] {
                    Shape::Flat(_) => alias(self, v),
                    Shape::Map { .. }
                        if op == "Flatten" && attr(node, "axis").is_none_or(|a| a.i == 1) =>
                    {
                        self.push(node, k, Op::Flatten, vec![v])
                    }
                    s => bail!("reshapes a {s:?}; only a flatten to (N, features) is read"),
                }
            }
            "Gemm" | "MatMul" => {
                let x = self.value(node, 0)?;
                let linear = self.linear(node)?;
                if !matches!(self.shapes[x], Shape::Flat(n) if n == linear.weight.dims()[1]) {
                    bail!(
                        "multiplies a {:?} by a {:?} matrix",
                        self.shapes[x],
                        linear.weight.dims()
                    );
                }
                self.push(node, k, Op::Linear(linear), vec![x])
            }
            "Concat" => {
                let axis = attr(node, "axis").map_or(i64::MIN, |a| a.i);
                let xs = (0..node.input.len())
                    .map(|i| self.value(node, i))
                    .collect::<Result<Vec<_>>>()?;
                let space = |v: usize| match self.shapes[v] {
                    Shape::Map { h, w, .. } => Some((h, w)),
                    Shape::Flat(_) => None,
                };
                let first = xs.first().and_then(|&v| space(v));
                if axis != 1 || first.is_none() || xs.iter().any(|&v| space(v) != first) {
                    bail!("a Concat along axis {axis} of {:?}; only one along the channels (axis 1) of maps of one size is read", xs.iter().map(|&v| self.shapes[v]).collect::<Vec<_>>());
                }
                self.push(node, k, Op::Concat, xs)
            }
            other => bail!("the op `{other}` is not read; supported: {SUPPORTED}"),
        }
    }

    /// The ops of a TensorFlow-converted graph that only move or pad a map: `Transpose`
    /// between NCHW and NHWC, `Cast` to float, `Identity`, `Pad`, and `Shape` read for its
    /// spatial sizes, each an alias of its input (`true`: handled here). Every other op
    /// reading an NHWC value, or a padded one other than a conv or max-pool, is refused.
    fn layout_node(&mut self, node: &OnnxNode, out: &str) -> Result<bool> {
        let op = node.op_type.as_str();
        let Some(x) = node
            .input
            .first()
            .filter(|i| self.values.contains_key(*i))
            .cloned()
        else {
            return Ok(false);
        };
        let v = self.values[&x];
        let nhwc = self.nhwc.contains(&x);
        let pad = self.padded.get(&x).copied();
        let carry = |s: &mut Self, nhwc: bool| {
            s.values.insert(out.to_string(), v);
            if nhwc {
                s.nhwc.insert(out.to_string());
            }
            if let Some(p) = pad {
                s.padded.insert(out.to_string(), p);
            }
            Ok(true)
        };
        match op {
            "Transpose" => {
                let perm = ints(node, "perm");
                match (perm.as_slice(), nhwc) {
                    ([0, 2, 3, 1], false) => carry(self, true),
                    ([0, 3, 1, 2], true) => carry(self, false),
                    (p, _) => bail!(
                        "a transpose {p:?} of an {} map; only NCHW ↔ NHWC is read",
                        if nhwc { "NHWC" } else { "NCHW" }
                    ),
                }
            }
            "Cast" if attr(node, "to").is_some_and(|a| a.i == 1) => carry(self, nhwc),
            "Cast" => bail!("a cast of a feature map to another type than float"),
            "Identity" | "Dropout" => carry(self, nhwc),
            "Shape" if self.spatial_shapes.contains(out) => {
                if pad.is_some() {
                    bail!(
                        "the shape of a padded map; a Pad is read only before a conv or a max-pool"
                    );
                }
                let dims: Vec<i64> = match (self.shapes[v], nhwc) {
                    // The batch size is never read (`spatial_shapes`): 1 stands for it.
                    (Shape::Map { c, h, w }, false) => vec![1, c as i64, h as i64, w as i64],
                    (Shape::Map { c, h, w }, true) => vec![1, h as i64, w as i64, c as i64],
                    (Shape::Flat(n), _) => vec![1, n as i64],
                };
                let t = Small {
                    dims: vec![dims.len()],
                    data: dims.iter().map(|&d| d as f64).collect(),
                    int: true,
                };
                self.consts.insert(out.to_string(), t.tensor(out));
                Ok(true)
            }
            "Pad" => {
                if pad.is_some() {
                    bail!("a Pad of a padded value");
                }
                let mode = attr(node, "mode").map_or("constant".into(), |a| {
                    String::from_utf8_lossy(&a.s).into_owned()
                });
                let pads: Vec<i64> = match self.konst(node, 1).and_then(Small::of) {
                    Some(t) => t.data.iter().map(|&p| p as i64).collect(),
                    None => ints(node, "pads"),
                };
                let fill = self
                    .konst(node, 2)
                    .map_or(0.0, |t| t.floats().first().copied().unwrap_or(0.0));
                // (N, C, H, W) or (N, H, W, C), begins then ends.
                let (h, w, others) = if nhwc { (1, 2, [0, 3]) } else { (2, 3, [0, 1]) };
                if pads.len() != 8 {
                    bail!("pads {pads:?}: eight values (begins and ends of N, C, H, W) expected");
                }
                let spatial = |i: usize| pads.get(i).copied().filter(|&p| p >= 0);
                let ok_modes = mode == "constant" && fill == 0.0 || mode == "edge";
                let (Some(t), Some(l), Some(b), Some(r)) =
                    (spatial(h), spatial(w), spatial(h + 4), spatial(w + 4))
                else {
                    bail!("pads {pads:?}: eight non-negative values expected");
                };
                if !ok_modes || others.iter().any(|&a| pads[a] != 0 || pads[a + 4] != 0) {
                    bail!("a Pad ({mode}, value {fill}) with pads {pads:?}; read are zero or edge padding of the map's height and width");
                }
                self.padded.insert(
                    out.to_string(),
                    ([t, l, b, r].map(|p| p as usize), mode == "edge"),
                );
                carry(self, nhwc)
            }
            _ => {
                let mixed = (node.input.iter())
                    .any(|i| self.values.contains_key(i) && self.nhwc.contains(i) != nhwc);
                if mixed {
                    bail!("reads an NCHW and an NHWC map together");
                }
                let elementwise = ELEMENTWISE.contains(&op);
                let reads_padded = pad.is_some() && !matches!(op, "Conv" | "MaxPool");
                if reads_padded {
                    bail!("a Pad before a `{op}`; only one before a conv or a max-pool is read");
                }
                if nhwc && !(elementwise || op == "ReduceMean") {
                    bail!("an NHWC map read by `{op}`; only element-wise ops, a global mean and a transpose back to NCHW are read on one");
                }
                Ok(false)
            }
        }
    }

    /// Push `op` reading `inputs` as ONNX node `node` (the `k`-th) and map its output to it.
    fn push(&mut self, node: &OnnxNode, k: usize, op: Op, inputs: Vec<usize>) -> Result<()> {
        let ins: Vec<Shape> = inputs.iter().map(|&v| self.shapes[v]).collect();
        let shape = op.out_shape(&ins);
        let name = self.names.take(
            module_name(&node.name)
                .unwrap_or_else(|| format!("{}{k}", node.op_type.to_lowercase())),
        );
        let v = self.net.push(name, op, inputs);
        self.shapes.push(shape);
        self.values.insert(node.output[0].clone(), v);
        Ok(())
    }

    fn conv(&self, node: &OnnxNode) -> Result<Conv> {
        let x = self.value(node, 0)?;
        let Shape::Map { c: in_c, h, w } = self.shapes[x] else {
            bail!("a conv reading a vector");
        };
        let weight = self.tensor(node, 1)?;
        let d = weight.dims().to_vec();
        if d.len() == 4 && d.contains(&0) {
            bail!("a conv weight of shape {d:?}");
        }
        if d.len() != 4 {
            bail!(
                "a {}-d conv weight; only 2-D convs are read",
                d.len().saturating_sub(2)
            );
        }
        let groups = attr(node, "group").map_or(1, |a| a.i as usize);
        let depthwise = groups == in_c && d[1] == 1 && d[0] == in_c;
        if groups != 1 && !depthwise || d[1] * groups != in_c {
            bail!("groups = {groups} on {in_c} channels with a {d:?} weight; only plain and depthwise convs are read");
        }
        if ints(node, "dilations").iter().any(|&v| v != 1) {
            bail!("a dilated conv (dilations {:?})", ints(node, "dilations"));
        }
        let stride = square(&ints(node, "strides"), 1, "strides")?;
        let padding = match auto_pad(node).as_str() {
            "" | "NOTSET" => match pads(node, (d[2], d[3]))? {
                None => Pad2d::same(0),
                Some([t, l, b, r]) => Pad2d {
                    h: (t, b),
                    w: (l, r),
                },
            },
            "VALID" => Pad2d::same(0),
            "SAME_UPPER" => Pad2d {
                h: tf_same(h, d[2], stride),
                w: tf_same(w, d[3], stride),
            },
            other => bail!("auto_pad = {other}"),
        };
        let (bias, extra) = match self.konst(node, 2) {
            Some(_) => (self.vector(node, 2, d[0])?, 1),
            None => (
                Tensor::zeros(d[0], candle_core::DType::F32, &self.device)?,
                0,
            ),
        };
        Ok(Conv {
            weight,
            bias,
            padding,
            stride,
            groups,
            extra_params: extra,
        })
    }

    /// (kernel, stride, (before, after) padding) of a square pooling window.
    fn window(&self, node: &OnnxNode) -> Result<(usize, usize, (usize, usize))> {
        if attr(node, "ceil_mode").is_some_and(|a| a.i != 0) {
            bail!("ceil_mode = 1");
        }
        if !matches!(auto_pad(node).as_str(), "" | "NOTSET" | "VALID") {
            bail!("auto_pad = {}", auto_pad(node));
        }
        let kernel = square(&ints(node, "kernel_shape"), 0, "kernel_shape")?;
        if kernel == 0 {
            bail!("no kernel_shape");
        }
        let stride = square(&ints(node, "strides"), 1, "strides")?;
        let padding = match pads(node, (kernel, kernel))? {
            None => (0, 0),
            Some([t, l, b, r]) if t == l && b == r => (t, b),
            Some(p) => bail!("pads {p:?}: the same on both axes expected"),
        };
        Ok((kernel, stride, padding))
    }

    fn linear(&self, node: &OnnxNode) -> Result<Linear> {
        let b = self.tensor(node, 1)?;
        if b.dims().len() != 2 {
            bail!("a {:?} matrix", b.dims());
        }
        let gemm = node.op_type == "Gemm";
        let flag = |n: &str, default: i64| attr(node, n).map_or(default, |a| a.i);
        let scale = |n: &str| attr(node, n).map_or(1.0, |a| a.f);
        if gemm && (flag("transA", 0) != 0 || scale("alpha") != 1.0 || scale("beta") != 1.0) {
            bail!("a Gemm with transA, alpha or beta set");
        }
        let weight = if gemm && flag("transB", 0) != 0 {
            b
        } else {
            b.t()?.contiguous()?
        };
        let out = weight.dims()[0];
        let bias = match (gemm, self.konst(node, 2)) {
            (true, Some(_)) => self.vector(node, 2, out)?,
            _ => Tensor::zeros(out, candle_core::DType::F32, &self.device)?,
        };
        Ok(Linear { weight, bias })
    }

    /// Whether `node` (a per-channel affine of value `v`) can be folded into the conv
    /// computing `v`: it is that conv's output's only reader.
    fn folds_into_conv(&self, node: &OnnxNode, v: usize) -> bool {
        let feeds = node
            .input
            .first()
            .map_or(0, |i| self.readers.get(i).copied().unwrap_or(0));
        feeds == 1
            && (self.net.nodes.get(v.wrapping_sub(1))).is_some_and(|n| matches!(n.op, Op::Conv(_)))
    }

    /// The conv whose output `v` is, if this node is its only reader (a fold target).
    fn conv_to_fold(&mut self, node: &OnnxNode, v: usize) -> Result<&mut Conv> {
        let feeds = node
            .input
            .first()
            .map_or(0, |i| self.readers.get(i).copied().unwrap_or(0));
        match self.net.nodes.get_mut(v.wrapping_sub(1)) {
            Some(n) if feeds == 1 => match &mut n.op {
                Op::Conv(c) => Ok(c),
                _ => bail!("a per-channel affine after `{}`, not after a conv; only one right after a conv is read", n.name),
            },
            _ => bail!("a per-channel affine whose input is read elsewhere too, or is not a conv's; only one right after a conv is read"),
        }
    }

    /// `y = x · a`, `x + a` or `x − a` with `a` a per-channel constant (a scalar or C values),
    /// folded into the conv, linear layer or per-channel affine that computes `x` alone, or
    /// else (on a feature map) a new per-channel affine, returned to be added.
    fn fold_constant(&mut self, node: &OnnxNode) -> Result<Option<Affine>> {
        let first_const = self.konst(node, 0).is_some();
        if first_const && node.op_type == "Sub" {
            bail!("subtracts a value from a constant");
        }
        let (xi, ci) = if first_const { (1, 0) } else { (0, 1) };
        let v = self.value(node, xi)?;
        let konst = self.konst(node, ci).context("the constant")?;
        // Right-aligned with the value's (N, C, H, W) or (N, F): 1 everywhere but the channel
        // axis, so that the constant is one number per channel (or one for all).
        let rank = match self.shapes[v] {
            Shape::Map { .. } => 4,
            Shape::Flat(_) => 2,
        };
        let dims = &konst.dims;
        // The channel axis, counted from the right: C of (N, C, H, W) or F of (N, F); the
        // last of an (N, H, W, C) map.
        let channel = if self.nhwc.contains(&node.input[xi]) {
            0
        } else {
            rank - 2
        };
        let spatial = dims.len() > rank
            || (dims.iter().rev().enumerate()).any(|(k, &d)| d != 1 && k != channel);
        if spatial {
            bail!(
                "a constant of shape {dims:?} on a {:?}; only one value per channel is folded",
                self.shapes[v]
            );
        }
        let a = konst.floats();
        let feeds = node
            .input
            .get(xi)
            .map_or(0, |i| self.readers.get(i).copied().unwrap_or(0));
        let n = self
            .net
            .nodes
            .get_mut(v.wrapping_sub(1))
            .filter(|_| feeds == 1);
        let mut fresh = None;
        let (weight, bias) = match n.map(|n| &mut n.op) {
            Some(Op::Conv(c)) => (&mut c.weight, &mut c.bias),
            Some(Op::Linear(l)) => (&mut l.weight, &mut l.bias),
            Some(Op::Affine(a)) => (&mut a.scale, &mut a.shift),
            _ if rank == 4 => {
                let c = self.shapes[v].channels();
                let f = fresh.insert(Affine {
                    scale: Tensor::ones(c, DType::F32, &self.device)?,
                    shift: Tensor::zeros(c, DType::F32, &self.device)?,
                });
                (&mut f.scale, &mut f.shift)
            }
            _ => bail!("a constant {} on a vector that is not a linear layer's alone; only a per-feature affine right after one is read", node.op_type),
        };
        let c = bias.dims()[0];
        let a = match a.len() {
            1 => vec![a[0]; c],
            n if n == c => a,
            n => bail!("a constant of {n} values on {c} channels"),
        };
        let a = Tensor::from_vec(a, c, &self.device)?;
        match node.op_type.as_str() {
            "Mul" => {
                let shape: Vec<usize> = std::iter::once(c)
                    .chain(std::iter::repeat_n(1, weight.rank() - 1))
                    .collect();
                *weight = weight.broadcast_mul(&a.reshape(shape)?)?;
                *bias = (&*bias * &a)?;
            }
            "Add" => *bias = (&*bias + &a)?,
            _ => *bias = (&*bias - &a)?,
        }
        Ok(fresh)
    }

    /// Input `i` of `node`: a constant float tensor.
    fn tensor(&self, node: &OnnxNode, i: usize) -> Result<Tensor> {
        let t = self.konst(node, i).with_context(|| {
            format!("input {i} is not a constant (weights must be initialisers)")
        })?;
        if t.data_type != ONNX_FLOAT {
            bail!("`{}` has ONNX data type {}, not float", t.name, t.data_type);
        }
        let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        let v = t.floats();
        if v.len() != dims.iter().product::<usize>() || v.iter().any(|x| !x.is_finite()) {
            bail!(
                "`{}`: {} values for shape {dims:?}, or NaN/inf among them",
                t.name,
                v.len()
            );
        }
        Ok(Tensor::from_vec(v, dims, &self.device)?)
    }

    /// Input `i`: a constant vector of `n` values.
    fn vector(&self, node: &OnnxNode, i: usize, n: usize) -> Result<Tensor> {
        let t = self.tensor(node, i)?;
        if t.elem_count() != n {
            bail!("input {i} holds {} values, {n} expected", t.elem_count());
        }
        Ok(t.flatten_all()?)
    }
}

/// The outputs of the graph's `Shape` nodes that only `Gather` reads, at constant indices
/// past the batch axis: the SAME-padding arithmetic of a TensorFlow-converted graph, which
/// the importer folds (the batch size, unknown at import, is never among them).
fn spatial_shapes(g: &OnnxGraph) -> HashSet<String> {
    let mut consts: HashMap<&str, &OnnxTensor> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    for n in g.node.iter().filter(|n| n.op_type == "Constant") {
        if let (Some(o), Some(t)) = (
            n.output.first(),
            attr(n, "value").and_then(|a| a.t.as_ref()),
        ) {
            consts.insert(o, t);
        }
    }
    let past_batch = |n: &OnnxNode| {
        n.op_type == "Gather"
            && attr(n, "axis").is_none_or(|a| a.i == 0)
            && (n.input.get(1).and_then(|i| consts.get(i.as_str())))
                .and_then(|t| Small::of(t))
                .is_some_and(|t| t.data.iter().all(|&i| i > 0.0))
    };
    let shapes = g.node.iter().filter(|n| n.op_type == "Shape");
    shapes
        .filter_map(|s| s.output.first())
        .filter(|o| {
            let mut readers = g.node.iter().filter(|n| n.input.contains(o)).peekable();
            readers.peek().is_some() && readers.all(past_batch)
        })
        .cloned()
        .collect()
}

fn attr<'a>(node: &'a OnnxNode, name: &str) -> Option<&'a OnnxAttribute> {
    node.attribute.iter().find(|a| a.name == name)
}

fn ints(node: &OnnxNode, name: &str) -> Vec<i64> {
    attr(node, name).map_or(vec![], |a| a.ints.clone())
}

fn auto_pad(node: &OnnxNode) -> String {
    attr(node, "auto_pad").map_or(String::new(), |a| {
        String::from_utf8_lossy(&a.s).into_owned()
    })
}

/// `pads` (top, left, bottom, right), each below the kernel's size on its axis; `None`
/// when absent.
fn pads(node: &OnnxNode, (kh, kw): (usize, usize)) -> Result<Option<[usize; 4]>> {
    match ints(node, "pads").as_slice() {
        [] => Ok(None),
        &[t, l, b, r] => {
            let fits = |p: i64, k: usize| (0..k as i64).contains(&p);
            if !(fits(t, kh) && fits(b, kh) && fits(l, kw) && fits(r, kw)) {
                bail!(
                    "pads {:?} for a {kh}×{kw} window: each from 0 to the window's size less one",
                    [t, l, b, r]
                );
            }
            Ok(Some([t as usize, l as usize, b as usize, r as usize]))
        }
        p => bail!("pads {p:?}: four values expected"),
    }
}

/// One value from a per-axis pair that must agree (`default` when absent).
fn square(v: &[i64], default: usize, what: &str) -> Result<usize> {
    match v {
        [] => Ok(default),
        [a, b] if a == b && *a > 0 => Ok(*a as usize),
        other => bail!("{what} {other:?}: the same positive value on both axes expected"),
    }
}

/// `layer1.0.conv1` from the PyTorch exporter's `/layer1/layer1.0/conv1/Conv`: each scope
/// part is a child's attribute name, except that a `Sequential`'s child (`layer1.0`, and
/// `conv.0` under `conv`) spells its parent's part too, which it then replaces.
fn module_name(onnx_name: &str) -> Option<String> {
    let parts: Vec<&str> = onnx_name.split('/').filter(|p| !p.is_empty()).collect();
    if !onnx_name.starts_with('/') || parts.len() < 2 {
        return None;
    }
    let mut path: Vec<&str> = Vec::new();
    for part in &parts[..parts.len() - 1] {
        match path.last() {
            Some(last) if part.strip_prefix(last).is_some_and(|r| r.starts_with('.')) => {
                *path.last_mut().unwrap() = part;
            }
            _ => path.push(part),
        }
    }
    Some(path.join("."))
}

#[cfg(test)]
mod tests {
    use super::module_name;

    #[test]
    fn torch_scopes_give_module_names() {
        assert_eq!(
            module_name("/layer1/layer1.0/conv1/Conv").as_deref(),
            Some("layer1.0.conv1")
        );
        assert_eq!(
            module_name("/features/features.0/features.0.0/Conv").as_deref(),
            Some("features.0.0")
        );
        let mb = "/features/features.1/conv/conv.0/conv.0.0/Conv";
        assert_eq!(module_name(mb).as_deref(), Some("features.1.conv.0.0"));
        assert_eq!(
            module_name("/layer1/layer1.0/Add").as_deref(),
            Some("layer1.0")
        );
        assert_eq!(module_name("Conv_12"), None);
        assert_eq!(module_name("/Relu"), None);
    }
}
