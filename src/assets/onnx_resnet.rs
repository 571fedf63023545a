//! One-time conversion of open_nsfw's ResNet-50-1by2 (an ONNX graph exported from a Caffe
//! model through TensorFlow: NHWC tensors, a transpose around every conv, each batch-norm
//! spelled out as `Add`/`Sub`/`Mul` by constants) to safetensors with torchvision's ResNet
//! names, batch-norm already folded: `conv1`, `layerS.B.conv{1,2,3}`,
//! `layerS.0.downsample.0` (each `.weight` OIHW and `.bias`), `fc.{weight,bias}`.
//!
//! Each conv's per-channel affine tail is followed through the layout-only nodes after it
//! (`Transpose`, `Cast`, `Identity`) and folded: y = a ⊙ conv(x) + c. Convs are named by
//! their place in the bottleneck structure ([3, 4, 6, 3] blocks; a block's projection is the
//! conv that reads the block input and writes its output width).

use super::protobuf::{OnnxModel, OnnxNode, ONNX_FLOAT};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;

/// A conv with its folded affine tail: weight (out, in, kh, kw) and bias.
struct Folded {
    weight: Tensor,
    bias: Vec<f32>,
}

/// A bottleneck's convs in any order → (conv1, conv2, conv3) and its projection, if any:
/// conv2 is the 3×3; of the 1×1s reading the block input (`width` channels), the narrower
/// is conv1 and the wider the projection; the last 1×1 is conv3.
fn bottleneck(convs: Vec<&Folded>, width: usize) -> Option<([&Folded; 3], Option<&Folded>)> {
    let k = |f: &Folded| f.weight.dims()[2];
    let (out, inp) = (
        |f: &Folded| f.weight.dims()[0],
        |f: &Folded| f.weight.dims()[1],
    );
    let conv2 = *convs.iter().find(|f| k(f) == 3)?;
    let mut reading: Vec<&Folded> = convs
        .iter()
        .copied()
        .filter(|f| k(f) == 1 && inp(f) == width)
        .collect();
    reading.sort_by_key(|f| out(f));
    let conv3 = *convs
        .iter()
        .find(|f| k(f) == 1 && inp(f) == out(conv2) && !std::ptr::eq(**f, reading[0]))?;
    match reading.as_slice() {
        [conv1] if convs.len() == 3 => Some(([conv1, conv2, conv3], None)),
        [conv1, proj] if convs.len() == 4 => Some(([conv1, conv2, conv3], Some(proj))),
        _ => None,
    }
}

pub fn to_safetensors(path: &Path, out: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let model = OnnxModel::decode(bytes.as_slice())
        .with_context(|| format!("{}: not an ONNX model", path.display()))?;
    let g = model.graph.context("the ONNX model has no graph")?;
    // Constant values by name: initializers, `Constant` nodes, and `Identity` of either.
    let mut consts: HashMap<String, (Vec<usize>, Vec<f32>)> = HashMap::new();
    for t in g.initializer.iter().filter(|t| t.data_type == ONNX_FLOAT) {
        consts.insert(
            t.name.clone(),
            (t.dims.iter().map(|&d| d as usize).collect(), t.floats()),
        );
    }
    for n in &g.node {
        match n.op_type.as_str() {
            "Constant" => {
                if let Some(t) = n.attribute.iter().find_map(|a| a.t.as_ref()) {
                    if t.data_type == ONNX_FLOAT {
                        let dims = t.dims.iter().map(|&d| d as usize).collect();
                        consts.insert(n.output[0].clone(), (dims, t.floats()));
                    }
                }
            }
            "Identity" => {
                if let Some(c) = consts.get(&n.input[0]).cloned() {
                    consts.insert(n.output[0].clone(), c);
                }
            }
            _ => {}
        }
    }
    let mut readers: HashMap<&str, Vec<&OnnxNode>> = HashMap::new();
    for n in &g.node {
        for i in &n.input {
            readers.entry(i.as_str()).or_default().push(n);
        }
    }
    let fold = |conv: &OnnxNode| -> Result<Folded> {
        let (dims, w) = consts
            .get(&conv.input[1])
            .with_context(|| format!("conv {} has no constant weight", conv.name))?;
        let o = dims[0];
        let (mut a, mut c) = (vec![1f32; o], vec![0f32; o]);
        if let Some((_, b)) = conv.input.get(2).and_then(|b| consts.get(b)) {
            c.copy_from_slice(b);
        }
        let mut at = conv.output[0].as_str();
        while let Some([next]) = readers.get(at).map(Vec::as_slice) {
            let other = next
                .input
                .iter()
                .find(|i| *i != at)
                .and_then(|i| consts.get(i));
            match (next.op_type.as_str(), other) {
                ("Transpose" | "Cast" | "Identity", _) => {}
                ("Add" | "Sub" | "Mul", Some((_, k))) if k.len() == o => {
                    for ch in 0..o {
                        match next.op_type.as_str() {
                            "Add" => c[ch] += k[ch],
                            "Sub" => c[ch] -= k[ch],
                            _ => {
                                a[ch] *= k[ch];
                                c[ch] *= k[ch];
                            }
                        }
                    }
                }
                _ => break,
            }
            at = next.output[0].as_str();
        }
        let w = Tensor::from_vec(w.clone(), dims.clone(), &Device::Cpu)?;
        let scale = Tensor::from_vec(a, (o, 1, 1, 1), &Device::Cpu)?;
        Ok(Folded {
            weight: w.broadcast_mul(&scale)?,
            bias: c,
        })
    };
    let convs = g
        .node
        .iter()
        .filter(|n| n.op_type == "Conv")
        .map(fold)
        .collect::<Result<Vec<_>>>()?;
    let mut map: HashMap<String, Tensor> = HashMap::new();
    let mut put = |name: String, f: &Folded| -> Result<()> {
        let n = f.bias.len();
        map.insert(format!("{name}.weight"), f.weight.clone());
        map.insert(
            format!("{name}.bias"),
            Tensor::from_vec(f.bias.clone(), n, &Device::Cpu)?,
        );
        Ok(())
    };
    let mut it = convs.iter();
    let stem = it.next().context("no convs in the ONNX graph")?;
    put("conv1".into(), stem)?;
    let mut width = stem.weight.dims()[0];
    for (s, blocks) in [3usize, 4, 6, 3].iter().enumerate() {
        for b in 0..*blocks {
            let p = format!("layer{}.{b}", s + 1);
            let n = if b == 0 { 4 } else { 3 };
            let group: Vec<&Folded> = it.by_ref().take(n).collect();
            if group.len() != n {
                bail!(
                    "{}: fewer convs than ResNet-50's bottlenecks",
                    path.display()
                );
            }
            let (branch, proj) = bottleneck(group, width)
                .with_context(|| format!("{}: block {p} is not a bottleneck", path.display()))?;
            for (k, f) in branch.iter().enumerate() {
                put(format!("{p}.conv{}", k + 1), f)?;
            }
            if let Some(f) = proj {
                put(format!("{p}.downsample.0"), f)?;
            }
            width = branch[2].weight.dims()[0];
        }
    }
    if it.next().is_some() {
        bail!("{}: more convs than ResNet-50 has", path.display());
    }
    // The classifier: MatMul by a (features, classes) constant, then a bias Add.
    let mm = g
        .node
        .iter()
        .find(|n| n.op_type == "MatMul")
        .context("no MatMul (classifier) in the ONNX graph")?;
    let (dims, w) = consts
        .get(&mm.input[1])
        .context("the classifier weight is not constant")?;
    let w = Tensor::from_vec(w.clone(), dims.clone(), &Device::Cpu)?
        .t()?
        .contiguous()?;
    let mut at = mm.output[0].as_str();
    let mut bias = None;
    while let Some([next]) = readers.get(at).map(Vec::as_slice) {
        if next.op_type == "Add" {
            bias = next
                .input
                .iter()
                .find(|i| *i != at)
                .and_then(|i| consts.get(i))
                .map(|(_, b)| b.clone());
            break;
        }
        at = next.output[0].as_str();
    }
    let bias = bias.context("no bias after the classifier's MatMul")?;
    let classes = bias.len();
    map.insert("fc.weight".into(), w);
    map.insert(
        "fc.bias".into(),
        Tensor::from_vec(bias, classes, &Device::Cpu)?,
    );
    candle_core::safetensors::save(&map, out)?;
    Ok(())
}
