//! The network as a graph: nodes `{op, inputs}` in topological order, split into a fixed
//! backbone and a head.
//!
//! Values are numbered so that a chain reads like a list of layers: value 0 is the input
//! image and value `i + 1` is the output of node `i`. A VGG is the chain where node `i`
//! reads value `i`; a residual block's `Add` reads two earlier values. Every pass over the
//! network (forward, the trace LRP reads, the stored prefix, compaction, cost) walks this
//! one structure.

use super::geometry::Shape;
use super::layer::{Conv, Op};
use candle_core::{Device, Result, Tensor};

#[derive(Debug, Clone)]
pub struct Node {
    /// torchvision's module name (`features.0`, `layer1.0.conv2`), or a descriptive one.
    pub name: String,
    pub op: Op,
    /// Value ids read, in order (0 = the network input, `j + 1` = output of node `j`).
    pub inputs: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Network {
    pub nodes: Vec<Node>,
    /// Index of the first head node; `nodes[..head_start]` is the fixed backbone, whose
    /// output (value `head_start`) the head reads as a chain.
    pub head_start: usize,
    /// (channels, height, width) of one input image.
    pub input_shape: (usize, usize, usize),
}

impl Network {
    /// A chain of `ops` (node `i` reads value `i`), with default names.
    pub fn chain(ops: Vec<Op>, head_start: usize, input_shape: (usize, usize, usize)) -> Self {
        let mut net = Self {
            nodes: Vec::new(),
            head_start,
            input_shape,
        };
        for op in ops {
            net.push_chain(op);
        }
        net
    }

    /// Append `op` reading `inputs`; returns its output value id.
    pub fn push(&mut self, name: impl Into<String>, op: Op, inputs: Vec<usize>) -> usize {
        self.nodes.push(Node {
            name: name.into(),
            op,
            inputs,
        });
        self.nodes.len()
    }

    /// Append `op` reading the current last value, named `<kind><index>`.
    pub fn push_chain(&mut self, op: Op) -> usize {
        let i = self.nodes.len();
        let name = format!("{}{i}", op.kind());
        self.push(name, op, vec![i])
    }

    /// The value id of the network's output.
    pub fn output(&self) -> usize {
        self.nodes.len()
    }

    pub fn device(&self) -> &Device {
        self.convs()
            .next()
            .map(|c| c.weight.device())
            .unwrap_or(&Device::Cpu)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_from(0, vec![Some(x.clone())])
    }

    /// Output of the backbone (the head's input), e.g. GAP features.
    pub fn backbone_forward(&self, x: &Tensor) -> Result<Tensor> {
        let vals = self.execute(0, self.head_start, vec![Some(x.clone())], false)?;
        take(vals, self.head_start)
    }

    /// Every value of the network on `x`: the input, then each node's output (LRP's
    /// reverse pass reads them). A conv whose only reader is a ReLU runs fused with it, so
    /// the conv's recorded output is the ReLU's: no rule reads a ReLU's input (relevance
    /// passes through it).
    pub fn trace(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        self.trace_from(0, vec![Some(x.clone())])
    }

    /// [`Self::trace`] from node `start`, given the values before it that later nodes read
    /// (`given[v]` for `v ≤ start`; others may be `None`).
    pub fn trace_from(&self, start: usize, given: Vec<Option<Tensor>>) -> Result<Vec<Tensor>> {
        self.execute(start, self.nodes.len(), given, true)?
            .into_iter()
            .enumerate()
            .map(|(v, t)| t.ok_or_else(|| missing(v)))
            .collect()
    }

    /// The output of nodes `start..` given the values before `start` they read.
    pub fn forward_from(&self, start: usize, given: Vec<Option<Tensor>>) -> Result<Tensor> {
        let vals = self.execute(start, self.nodes.len(), given, false)?;
        take(vals, self.nodes.len())
    }

    /// The output on `x`, node by node without fusion, passing every node's output through
    /// `tap(node, output)` (the Taylor criterion adds gradient probes after convs).
    pub fn forward_tapped(
        &self,
        x: &Tensor,
        mut tap: impl FnMut(usize, Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let mut vals = vec![x.clone()];
        for (i, node) in self.nodes.iter().enumerate() {
            let ins: Vec<&Tensor> = node.inputs.iter().map(|&v| &vals[v]).collect();
            let y = node.op.forward(&ins)?;
            vals.push(tap(i, y)?);
        }
        Ok(vals.pop().expect("output"))
    }

    /// The backbone's output from node `start`, given the values before it that later
    /// nodes read (as [`Self::forward_from`]).
    pub fn backbone_from(&self, start: usize, given: Vec<Option<Tensor>>) -> Result<Tensor> {
        let vals = self.execute(start, self.head_start, given, false)?;
        take(vals, self.head_start)
    }

    /// The head's ops, in order.
    pub fn head(&self) -> Vec<Op> {
        self.nodes[self.head_start..]
            .iter()
            .map(|n| n.op.clone())
            .collect()
    }

    /// This network with its head replaced by `ops` (a chain on the backbone's output).
    pub fn with_head(&self, ops: Vec<Op>) -> Self {
        let mut net = self.clone();
        net.nodes.truncate(self.head_start);
        for op in ops {
            net.push_chain(op);
        }
        net
    }

    /// Head only, on backbone outputs.
    pub fn head_forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut given = vec![None; self.head_start + 1];
        given[self.head_start] = Some(x.clone());
        self.forward_from(self.head_start, given)
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
        self.nodes.iter().filter_map(|n| match &n.op {
            Op::Conv(c) => Some(c),
            _ => None,
        })
    }

    /// Node indices of the convolutions, in order.
    pub fn conv_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| matches!(self.nodes[i].op, Op::Conv(_)))
            .collect()
    }

    /// Output filters of every conv, in order.
    pub fn filters_per_conv(&self) -> Vec<usize> {
        self.convs().map(|c| c.out_channels()).collect()
    }

    /// For every value, the nodes reading it, ascending.
    pub fn readers(&self) -> Vec<Vec<usize>> {
        let mut r = vec![Vec::new(); self.nodes.len() + 1];
        for (i, n) in self.nodes.iter().enumerate() {
            for &v in &n.inputs {
                r[v].push(i);
            }
        }
        r
    }

    /// Whether node `i` (a conv) runs fused with the ReLU at node `i + 1`: that ReLU reads
    /// only the conv's output, and nothing else reads it.
    fn fuses(&self, i: usize, readers: &[Vec<usize>]) -> bool {
        matches!(self.nodes[i].op, Op::Conv(_))
            && self
                .nodes
                .get(i + 1)
                .is_some_and(|n| matches!(n.op, Op::Relu) && n.inputs == [i + 1])
            && readers[i + 1] == [i + 1]
    }

    /// For every value, whether a trace records it as the very tensor of the value before
    /// (a ReLU fused into the conv before it): memory counts it once.
    pub fn same_as_previous(&self) -> Vec<bool> {
        let readers = self.readers();
        let mut same = vec![false; self.nodes.len() + 1];
        for i in 0..self.nodes.len().saturating_sub(1) {
            if self.fuses(i, &readers) {
                same[i + 2] = true;
            }
        }
        same
    }

    /// Floats per image of the values a trace holds from value `first` on (a fused ReLU
    /// counted once): what the layer search keeps of a network on its control split.
    pub fn trace_floats_per_image(&self, first: usize) -> usize {
        let same = self.same_as_previous();
        (self.shapes().iter().enumerate())
            .skip(first)
            .filter(|(v, _)| !same[*v])
            .map(|(_, s)| s.elements())
            .sum()
    }

    /// Values read by nodes `start..` that come from before node `start`.
    pub fn live_before(&self, start: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self.nodes[start..]
            .iter()
            .flat_map(|n| n.inputs.iter().copied())
            .filter(|&v| v <= start)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Run nodes `start..end`. `given` holds (at least) the values before `start` that
    /// these nodes read. With `keep`, every value stays; without, each is dropped after its
    /// last reader (memory stays at the widest cut).
    fn execute(
        &self,
        start: usize,
        end: usize,
        mut vals: Vec<Option<Tensor>>,
        keep: bool,
    ) -> Result<Vec<Option<Tensor>>> {
        let readers = self.readers();
        vals.resize(self.nodes.len() + 1, None);
        let mut i = start;
        while i < end {
            let node = &self.nodes[i];
            let fused = i + 1 < end && self.fuses(i, &readers);
            let ins = node
                .inputs
                .iter()
                .map(|&v| vals[v].as_ref().ok_or_else(|| missing(v)))
                .collect::<Result<Vec<_>>>()?;
            let y = match (&node.op, fused) {
                (Op::Conv(c), true) => c.forward_relu(ins[0])?,
                (op, _) => op.forward(&ins)?,
            };
            let done = if fused { i + 1 } else { i };
            if fused {
                vals[i + 1] = Some(y.clone());
            }
            vals[done + 1] = Some(y);
            if !keep {
                for v in 0..=done {
                    let last = readers[v].last().copied();
                    if v < end && last.is_some_and(|l| l <= done) {
                        vals[v] = None;
                    }
                }
            }
            i = done + 1;
        }
        Ok(vals)
    }

    /// The shape of every value (the input, then each node's output).
    pub fn shapes(&self) -> Vec<Shape> {
        self.shapes_at(self.input_shape)
    }

    /// The first node whose window (a conv's kernel, a max-pool's) is larger than its
    /// padded input, or whose input map is empty, for inputs of `input`'s shape: the
    /// network cannot run on them ([`Op::out_shape`] saturates instead of failing).
    pub fn too_small_at(&self, input: (usize, usize, usize)) -> Option<usize> {
        let shapes = self.shapes_at(input);
        self.nodes.iter().position(|node| {
            let Shape::Map { h, w, .. } = shapes[node.inputs[0]] else {
                return false;
            };
            let ((ph, pw), (kh, kw)) = match &node.op {
                Op::Conv(c) => (
                    (c.padding.h.0 + c.padding.h.1, c.padding.w.0 + c.padding.w.1),
                    c.kernel(),
                ),
                Op::MaxPool(win) => (
                    (win.padding.0 + win.padding.1, win.padding.0 + win.padding.1),
                    (win.kernel, win.kernel),
                ),
                _ => ((0, 0), (1, 1)),
            };
            h == 0 || w == 0 || h + ph < kh || w + pw < kw
        })
    }

    /// [`Network::shapes`] for inputs of shape `input`.
    fn shapes_at(&self, input: (usize, usize, usize)) -> Vec<Shape> {
        let (c, h, w) = input;
        let mut out = vec![Shape::Map { c, h, w }];
        for node in &self.nodes {
            let ins: Vec<Shape> = node.inputs.iter().map(|&v| out[v]).collect();
            let next = node.op.out_shape(&ins);
            out.push(next);
        }
        out
    }
}

/// Names made unique as they are handed out: a name already taken gets `_2`, `_3`, …
/// (an imported graph's repeated module names, the values of an exported one).
#[derive(Debug, Default)]
pub struct UniqueNames(std::collections::HashSet<String>);

impl UniqueNames {
    /// Names that are never handed out (an exported graph's input and output).
    pub fn reserving(names: &[&str]) -> Self {
        Self(names.iter().map(|n| n.to_string()).collect())
    }

    /// `base`, or the first free `base_k`.
    pub fn take(&mut self, base: String) -> String {
        let mut name = base.clone();
        let mut k = 1;
        while !self.0.insert(name.clone()) {
            k += 1;
            name = format!("{base}_{k}");
        }
        name
    }
}

fn missing(v: usize) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "internal: value {v} of the network was not computed"
    ))
}

fn take(mut vals: Vec<Option<Tensor>>, v: usize) -> Result<Tensor> {
    vals.swap_remove(v).ok_or_else(|| missing(v))
}

/// `(start, len)` of consecutive batches of at most `batch` (≥ 1) items out of `n`.
pub fn batch_ranges(n: usize, batch: usize) -> impl Iterator<Item = (usize, usize)> {
    let b = batch.max(1);
    (0..n)
        .step_by(b)
        .map(move |start| (start, b.min(n - start)))
}
