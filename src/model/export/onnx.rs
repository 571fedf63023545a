//! A network as an ONNX model (opset 13): the graph a user takes home from
//! `lrprune export --rate`, runnable in onnxruntime, PyTorch (`onnx2torch`) or tract.
//!
//! It reads the same preprocessed (N, C, H, W) images lrprune does (`input`) and returns the
//! head's logits (`logits`); the batch size is left open. Each op maps to ONNX's own so the
//! file is read without custom operators: batch-norm is already folded into the convs, the
//! head's standardisation is a `Sub` and a `Mul`, and an adaptive average pool (whose bins
//! ONNX cannot express for sizes that do not divide) is a `MatMul` by its averaging matrix.

use super::super::layer::Op;
use super::super::network::{Network, UniqueNames};
use super::super::pool::adaptive_bin;
use crate::assets::protobuf::{
    OnnxAttribute, OnnxDim, OnnxGraph, OnnxModel, OnnxNode, OnnxOpset, OnnxShape, OnnxTensor,
    OnnxTensorType, OnnxType, OnnxValueInfo, ONNX_ATTR_INT, ONNX_ATTR_INTS, ONNX_FLOAT, ONNX_INT64,
};
use crate::model::geometry::Shape;
use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use prost::Message;

/// The operator set the exported graph declares (every op used is unchanged since).
pub const OPSET: i64 = 13;
/// ONNX IR version 7 is the one opset 13 came with.
const IR_VERSION: i64 = 7;
pub const INPUT: &str = "input";
pub const OUTPUT: &str = "logits";

/// `net` as a serialised ONNX `ModelProto`; `doc` goes into its doc string (e.g. the run id).
pub fn to_onnx(net: &Network, doc: &str) -> Result<Vec<u8>> {
    let mut g = Graph::default();
    let shapes = net.shapes();
    let out = net.output();
    let names = value_names(net);
    for (j, node) in net.nodes.iter().enumerate() {
        // Parameters under the checkpoint's names; nodes under their (unique) value's name,
        // which runtimes such as tract require to be distinct from each other and the input.
        let param = super::param_name(net, j);
        let name = &names[j + 1];
        let xs: Vec<String> = node.inputs.iter().map(|&v| names[v].clone()).collect();
        let y = names[j + 1].clone();
        let x = xs[0].clone();
        match &node.op {
            Op::Conv(c) => {
                let (kh, kw) = c.kernel();
                let w = g.tensor(format!("{param}.weight"), &c.weight)?;
                let b = g.tensor(format!("{param}.bias"), &c.bias)?;
                let attrs = vec![
                    ints("kernel_shape", &[kh, kw]),
                    ints("strides", &[c.stride, c.stride]),
                    ints("dilations", &[1, 1]),
                    ints(
                        "pads",
                        &[c.padding.h.0, c.padding.w.0, c.padding.h.1, c.padding.w.1],
                    ),
                    int("group", c.groups),
                ];
                g.node("Conv", name, vec![x, w, b], &y, attrs);
            }
            Op::Relu => g.node("Relu", name, vec![x], &y, vec![]),
            Op::Relu6 => {
                let lo = g.scalar("relu6.min", 0.0);
                let hi = g.scalar("relu6.max", 6.0);
                g.node("Clip", name, vec![x, lo, hi], &y, vec![]);
            }
            Op::MaxPool(win) => {
                let (k, s, (p0, p1)) = (win.kernel, win.stride, win.padding);
                let attrs = vec![
                    ints("kernel_shape", &[k, k]),
                    ints("strides", &[s, s]),
                    ints("pads", &[p0, p0, p1, p1]),
                ];
                g.node("MaxPool", name, vec![x], &y, attrs);
            }
            Op::AdaptiveAvgPool { h: oh, w: ow } => {
                let Shape::Map { h, w, .. } = shapes[node.inputs[0]] else {
                    bail!("node `{name}`: an adaptive pool reads a feature map");
                };
                if h % oh == 0 && w % ow == 0 {
                    // Bins that tile the map (DenseNet's transitions): a plain AveragePool.
                    let k = [h / oh, w / ow];
                    let window = vec![ints("kernel_shape", &k), ints("strides", &k)];
                    g.node("AveragePool", name, vec![x], &y, window);
                    continue;
                }
                let bins = g.tensor(format!("{param}.bins"), &averaging(h, w, *oh, *ow)?)?;
                let flat_shape = g.int64s(&format!("{param}.flat"), &[0, 0, -1]);
                let map_shape = g.int64s(&format!("{param}.map"), &[0, 0, *oh as i64, *ow as i64]);
                let (flat, pooled) = (format!("{name}/flat"), format!("{name}/pooled"));
                g.node("Reshape", &flat, vec![x, flat_shape], &flat, vec![]);
                g.node("MatMul", &pooled, vec![flat.clone(), bins], &pooled, vec![]);
                g.node("Reshape", name, vec![pooled, map_shape], &y, vec![]);
            }
            Op::GlobalAvgPool => {
                let pooled = format!("{name}/pooled");
                g.node("GlobalAveragePool", &pooled, vec![x], &pooled, vec![]);
                g.node("Flatten", name, vec![pooled], &y, vec![int("axis", 1)]);
            }
            Op::Concat => g.node("Concat", name, xs, &y, vec![int("axis", 1)]),
            Op::Affine(a) => {
                let c = a.scale.elem_count();
                let s = g.tensor(format!("{param}.weight"), &a.scale.reshape((c, 1, 1))?)?;
                let b = g.tensor(format!("{param}.bias"), &a.shift.reshape((c, 1, 1))?)?;
                let scaled = format!("{name}/scaled");
                g.node("Mul", &scaled, vec![x, s], &scaled, vec![]);
                g.node("Add", name, vec![scaled, b], &y, vec![]);
            }
            Op::Add if xs.len() == 2 => g.node("Add", name, xs, &y, vec![]),
            Op::Add => g.node("Sum", name, xs, &y, vec![]),
            Op::Flatten => g.node("Flatten", name, vec![x], &y, vec![int("axis", 1)]),
            Op::Linear(l) => {
                let w = g.tensor(format!("{param}.weight"), &l.weight)?;
                let b = g.tensor(format!("{param}.bias"), &l.bias)?;
                g.node("Gemm", name, vec![x, w, b], &y, vec![int("transB", 1)]);
            }
            Op::Standardize { mean, inv_std } => {
                let m = g.tensor(format!("{param}.mean"), mean)?;
                let s = g.tensor(format!("{param}.inv_std"), inv_std)?;
                let centred = format!("{name}/centred");
                g.node("Sub", &centred, vec![x, m], &centred, vec![]);
                g.node("Mul", name, vec![centred, s], &y, vec![]);
            }
            Op::Dropout => g.node("Identity", name, vec![x], &y, vec![]),
        }
    }
    let (c, h, w) = net.input_shape;
    let classes = shapes[out].elements();
    let model = OnnxModel {
        ir_version: IR_VERSION,
        producer_name: "lrprune".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: doc.into(),
        opset_import: vec![OnnxOpset {
            domain: String::new(),
            version: OPSET,
        }],
        graph: Some(OnnxGraph {
            node: g.nodes,
            name: "lrprune".into(),
            initializer: g.initializers,
            input: vec![value_info(INPUT, &[None, Some(c), Some(h), Some(w)])],
            output: vec![value_info(OUTPUT, &[None, Some(classes)])],
        }),
    };
    Ok(model.encode_to_vec())
}

/// Value `v`'s name (0 = the input, `j + 1` = node j's output): its node's, suffixed where two
/// nodes share one or a node is called `input` or `logits`; the network's output is `logits`.
fn value_names(net: &Network) -> Vec<String> {
    let mut taken = UniqueNames::reserving(&[INPUT, OUTPUT]);
    let mut names = vec![INPUT.to_string()];
    for j in 0..net.nodes.len() {
        names.push(match j + 1 == net.output() {
            true => OUTPUT.into(),
            false => taken.take(super::param_name(net, j)),
        });
    }
    names
}

/// The (h·w, oh·ow) matrix whose column `i·ow + j` averages adaptive bin (i, j) of an h × w
/// map flattened row-major: `x.reshape(n, c, h·w) @ A` is `nn.AdaptiveAvgPool2d((oh, ow))`.
fn averaging(h: usize, w: usize, oh: usize, ow: usize) -> Result<Tensor> {
    let mut a = vec![0f32; h * w * oh * ow];
    for i in 0..oh {
        let (h0, h1) = adaptive_bin(i, h, oh);
        for j in 0..ow {
            let (w0, w1) = adaptive_bin(j, w, ow);
            let share = 1.0 / ((h1 - h0) * (w1 - w0)) as f32;
            for r in h0..h1 {
                for s in w0..w1 {
                    a[(r * w + s) * oh * ow + i * ow + j] = share;
                }
            }
        }
    }
    Ok(Tensor::from_vec(
        a,
        (h * w, oh * ow),
        &candle_core::Device::Cpu,
    )?)
}

/// Nodes and initialisers, in the order they are added (a valid topological order: the
/// network's nodes are).
#[derive(Default)]
struct Graph {
    nodes: Vec<OnnxNode>,
    initializers: Vec<OnnxTensor>,
}

impl Graph {
    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: Vec<String>,
        out: &str,
        a: Vec<OnnxAttribute>,
    ) {
        self.nodes.push(OnnxNode {
            input: inputs,
            output: vec![out.to_string()],
            name: name.to_string(),
            op_type: op.to_string(),
            attribute: a,
        });
    }

    /// `t` as an f32 initialiser named `name`; returns the name.
    fn tensor(&mut self, name: String, t: &Tensor) -> Result<String> {
        let dims = t.dims().iter().map(|&d| d as i64).collect();
        let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        self.initializers.push(OnnxTensor {
            dims,
            data_type: ONNX_FLOAT,
            name: name.clone(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        Ok(name)
    }

    /// A 0-d f32 initialiser, added once under `name`.
    fn scalar(&mut self, name: &str, v: f32) -> String {
        if !self.initializers.iter().any(|t| t.name == name) {
            self.initializers.push(OnnxTensor {
                data_type: ONNX_FLOAT,
                name: name.into(),
                raw_data: v.to_le_bytes().to_vec(),
                ..Default::default()
            });
        }
        name.into()
    }

    /// A 1-d int64 initialiser (a shape).
    fn int64s(&mut self, name: &str, v: &[i64]) -> String {
        self.initializers.push(OnnxTensor {
            dims: vec![v.len() as i64],
            data_type: ONNX_INT64,
            name: name.into(),
            raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.into()
    }
}

fn int(name: &str, v: usize) -> OnnxAttribute {
    OnnxAttribute {
        name: name.into(),
        i: v as i64,
        r#type: ONNX_ATTR_INT,
        ..Default::default()
    }
}

fn ints(name: &str, v: &[usize]) -> OnnxAttribute {
    OnnxAttribute {
        name: name.into(),
        ints: v.iter().map(|&x| x as i64).collect(),
        r#type: ONNX_ATTR_INTS,
        ..Default::default()
    }
}

/// A float tensor input or output; `None` dims are the batch, named `N`.
fn value_info(name: &str, dims: &[Option<usize>]) -> OnnxValueInfo {
    let dim = dims
        .iter()
        .map(|d| OnnxDim {
            dim_value: d.map(|d| d as i64),
            dim_param: d.is_none().then(|| "N".to_string()),
        })
        .collect();
    OnnxValueInfo {
        name: name.into(),
        r#type: Some(OnnxType {
            tensor_type: Some(OnnxTensorType {
                elem_type: ONNX_FLOAT,
                shape: Some(OnnxShape { dim }),
            }),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_averaging_matrix_is_the_adaptive_pool() {
        let x = Tensor::arange(0f32, 2.0 * 3.0 * 5.0 * 4.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 6, 5, 4))
            .unwrap();
        for (oh, ow) in [(7, 7), (2, 3), (5, 4), (1, 1)] {
            let want = crate::model::pool::adaptive_avg_pool(&x, oh, ow).unwrap();
            let got = x
                .reshape((1, 6, 20))
                .unwrap()
                .broadcast_matmul(&averaging(5, 4, oh, ow).unwrap())
                .unwrap()
                .reshape((1, 6, oh, ow))
                .unwrap();
            let d = (want - got).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-4, "{oh}×{ow}");
        }
    }
}
