//! Bring your own CNN: an ONNX file read as the model (`[[model]] weights = "x.onnx"`).
//!
//! Fixtures: `tests/fixtures/onnx/` (`scripts/onnx_fixtures.py`): the narrow ResNet-18 (its
//! BatchNormalization nodes kept, folded by the importer) and MobileNet-V2 (batch-norm fused
//! by the exporter, ReLU6 as Clip) of `tests/fixtures/graph/`, exported by
//! `torch.onnx.export`, so that fixture's PyTorch logits and zennit relevance are the
//! references here too.

mod common;
use candle_core::{Device, Tensor};
use lrprune::assets::protobuf::{OnnxAttribute, OnnxModel, ONNX_ATTR_INTS};
use lrprune::model::arch::Tail;
use lrprune::model::{load, Network};
use lrprune::prune::Plan;
use lrprune::spec::{Arch, GroupPolicy};
use prost::Message;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const FIXTURES: [&str; 2] = ["resnet18", "mobilenet_v2"];

fn onnx(arch: &str) -> PathBuf {
    Path::new("tests/fixtures/onnx").join(format!("{arch}.onnx"))
}

fn graph_fixture(arch: &str, file: &str) -> HashMap<String, Tensor> {
    let path = Path::new("tests/fixtures/graph").join(arch).join(file);
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn import(path: &Path, size: usize, tail: Tail) -> anyhow::Result<Network> {
    load::from_checkpoint(Arch::Onnx, &[], false, path, size, tail, &Device::Cpu)
}

/// The torchvision-built network of the same fixture (what the importer must agree with).
fn builtin(arch: &str, size: usize) -> Network {
    let path = Path::new("tests/fixtures/graph")
        .join(arch)
        .join("weights.pth");
    let a = Arch::parse(arch).unwrap();
    load::from_checkpoint(a, &[], false, &path, size, Tail::Classifier, &Device::Cpu).unwrap()
}

#[test]
fn imported_fixtures_give_pytorch_logits_zennit_relevance_and_the_same_groups() {
    for arch in FIXTURES {
        let inputs = graph_fixture(arch, "inputs.safetensors");
        let expected = graph_fixture(arch, "expected.safetensors");
        let images = inputs["images"].clone();
        let labels = common::labels(&inputs["labels"]);
        let size = images.dims()[2];
        let net = import(&onnx(arch), size, Tail::Classifier).unwrap();
        let ours = net.forward(&images).unwrap();
        let d = common::max_abs_diff(&ours, &expected["logits"])
            / common::max_abs(&expected["logits"]).max(1.0);
        assert!(d <= 1e-4, "{arch}: relative max |Δlogit| = {d}");
        // Convs named as torchvision names them, each with its zennit reference.
        common::relevance_matches(arch, &net, &images, &labels, &expected);
        // The pruning groups the dependency graph finds are the built-in model's.
        let reference = builtin(arch, size);
        for policy in [GroupPolicy::All, GroupPolicy::Internal] {
            let ours = Plan::build(&net, policy, Default::default()).unwrap();
            let theirs = Plan::build(&reference, policy, Default::default()).unwrap();
            assert_eq!(ours.names(), theirs.names(), "{arch} {policy:?}");
            assert_eq!(ours.sizes(), theirs.sizes(), "{arch} {policy:?}");
        }
    }
}

/// Every built-in backbone, exported by lrprune (`model.onnx`) and read back: the same
/// feature maps (the importer stops where the backbone ends).
#[test]
fn every_builtin_backbone_survives_export_and_import() {
    let dir = tempfile::tempdir().unwrap();
    for (name, arch, weights, _) in lrprune::spec::BUILTIN_MODELS {
        let path = lrprune::assets::resolve(weights).unwrap();
        let net = load::from_checkpoint(*arch, &[], false, &path, 64, Tail::Features, &Device::Cpu)
            .unwrap();
        let file = dir.path().join(format!("{name}.onnx"));
        let bytes = lrprune::model::export::onnx::to_onnx(&net, name).unwrap();
        std::fs::write(&file, bytes).unwrap();
        let back = import(&file, 64, Tail::Features).unwrap();
        assert_eq!(back.conv_nodes().len(), net.conv_nodes().len(), "{name}");
        let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu).unwrap();
        let (a, b) = (net.forward(&x).unwrap(), back.forward(&x).unwrap());
        let d = common::max_abs_diff(&b, &a) / common::max_abs(&a).max(1.0);
        assert!(d <= 1e-5, "{name}: relative {d}");
    }
}

/// `f` applied to the resnet18 fixture's graph, written to `dir`: the file's path.
fn altered(dir: &Path, f: impl FnOnce(&mut OnnxModel)) -> PathBuf {
    let bytes = std::fs::read(onnx("resnet18")).unwrap();
    let mut m = OnnxModel::decode(&bytes[..]).unwrap();
    f(&mut m);
    let path = dir.join("altered.onnx");
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    path
}

#[test]
fn an_unsupported_op_or_attribute_is_refused_naming_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = |m: &mut OnnxModel, name: &str| -> usize {
        let g = m.graph.as_ref().unwrap();
        g.node.iter().position(|n| n.name == name).unwrap()
    };
    type Change = Box<dyn FnOnce(&mut OnnxModel)>;
    let mut cases: Vec<(&str, Change, &str)> = vec![
        (
            "/layer1/layer1.0/Add",
            Box::new(move |m| {
                let i = node(m, "/layer1/layer1.0/Add");
                m.graph.as_mut().unwrap().node[i].op_type = "Concat".into();
            }),
            "Concat",
        ),
        (
            "/layer1/layer1.0/conv1/Conv",
            Box::new(move |m| {
                let i = node(m, "/layer1/layer1.0/conv1/Conv");
                let n = &mut m.graph.as_mut().unwrap().node[i];
                n.attribute.retain(|a| a.name != "dilations");
                n.attribute.push(OnnxAttribute {
                    name: "dilations".into(),
                    ints: vec![2, 2],
                    r#type: ONNX_ATTR_INTS,
                    ..Default::default()
                });
            }),
            "dilated",
        ),
        (
            "/relu/Relu",
            Box::new(move |m| {
                let i = node(m, "/relu/Relu");
                m.graph.as_mut().unwrap().node[i].op_type = "LeakyRelu".into();
            }),
            "`LeakyRelu` is not read",
        ),
    ];
    cases.push((
        "/bn1/BatchNormalization",
        Box::new(move |m| {
            let i = node(m, "/bn1/BatchNormalization");
            m.graph.as_mut().unwrap().node[i]
                .attribute
                .push(OnnxAttribute {
                    name: "training_mode".into(),
                    i: 1,
                    r#type: lrprune::assets::protobuf::ONNX_ATTR_INT,
                    ..Default::default()
                });
        }),
        "training mode",
    ));
    for (at, change, says) in cases {
        let path = altered(dir.path(), change);
        let e = format!("{:#}", import(&path, 64, Tail::Features).unwrap_err());
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(
            e.contains(&format!("node `{at}`")) && e.contains(says),
            "{e}"
        );
        assert!(e.contains("supported:") || says != "Concat", "{e}");
    }
    // A model for grey images: the input's declared channels are named.
    let path = altered(dir.path(), |m| {
        let input = &mut m.graph.as_mut().unwrap().input[0];
        let t = input.r#type.as_mut().unwrap().tensor_type.as_mut().unwrap();
        t.shape.as_mut().unwrap().dim[1].dim_value = Some(1);
    });
    let e = format!("{:#}", import(&path, 64, Tail::Features).unwrap_err());
    assert!(e.contains("lrprune feeds it (N, 3, H, W)"), "{e}");
    // Not ONNX at all.
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"\x0a\xff\xff garbage").unwrap();
    let e = format!("{:#}", import(&junk, 64, Tail::Features).unwrap_err());
    assert!(e.contains("not an ONNX model"), "{e}");
}

#[test]
fn a_sweep_runs_on_an_imported_model_and_a_wrong_arch_is_named() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_idx(&dir.path().join("data"), 30, 11);
    let model = std::fs::canonicalize(onnx("mobilenet_v2")).unwrap();
    let spec = |model_table: &str| {
        format!(
            r#"[experiment]
name = "onnx"
seeds = [0]
models = ["mine"]
datasets = ["textures"]
methods = ["lrp", "aa-lrp"]
results_dir = "{}"

[data]
train_per_class = 10
test_per_class = 10
batch_size = 40

[pruning]
step = 0.2
max_rate = 0.6
groups = "internal"

[[model]]
name = "mine"
{model_table}
input_size = 32
preprocess = "torchvision"

[[dataset]]
name = "textures"
format = "idx"
source = "data"
"#,
            dir.path().join("out").display()
        )
    };
    let path = dir.path().join("onnx.toml");
    std::fs::write(&path, spec(&format!("weights = \"{}\"", model.display()))).unwrap();
    let out = common::run_ok(&["run".as_ref(), "--quiet".as_ref(), path.as_os_str()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches(": top1 ").count(), 2, "{text}");
    let df =
        lrprune::results::read_parquet(&common::step_files(&dir.path().join("out"))[0]).unwrap();
    assert!(df.height() >= 4, "steps to 0.6 by 0.2");

    // An .onnx file with another arch, a checkpoint without one: named, with the fix.
    for (table, says) in [
        (
            format!("arch = \"resnet18\"\nweights = \"{}\"", model.display()),
            "whose graph is its own architecture",
        ),
        ("weights = \"w.safetensors\"".to_string(), "no `arch` given"),
    ] {
        let e = lrprune::spec::parse(&path, &spec(&table))
            .unwrap_err()
            .to_string();
        assert!(e.contains("arch") && e.contains(says), "{e}");
    }
}

/// Other spellings of the backbone's end: a `ReduceMean` over the map (Keras, tf2onnx) for the
/// global pool, and the `Shape` → … → `Reshape` chain of `x.view(x.size(0), -1)`.
#[test]
fn reduce_mean_pooling_and_a_view_chain_end_the_backbone() {
    use lrprune::assets::protobuf::{OnnxNode, ONNX_ATTR_INT};
    let dir = tempfile::tempdir().unwrap();
    let inputs = graph_fixture("mobilenet_v2", "inputs.safetensors");
    let expected = graph_fixture("mobilenet_v2", "expected.safetensors");
    let images = inputs["images"].clone();
    let bytes = std::fs::read(onnx("mobilenet_v2")).unwrap();
    let mut m = OnnxModel::decode(&bytes[..]).unwrap();
    let g = m.graph.as_mut().unwrap();
    let gap = g
        .node
        .iter()
        .position(|n| n.op_type == "GlobalAveragePool")
        .unwrap();
    let x = g.node[gap].input[0].clone();
    g.node[gap].op_type = "ReduceMean".into();
    g.node[gap].attribute = vec![
        OnnxAttribute {
            name: "axes".into(),
            ints: vec![2, 3],
            r#type: ONNX_ATTR_INTS,
            ..Default::default()
        },
        OnnxAttribute {
            name: "keepdims".into(),
            i: 1,
            r#type: ONNX_ATTR_INT,
            ..Default::default()
        },
    ];
    // What a view chain starts with, reading the last feature map.
    g.node.insert(
        gap,
        OnnxNode {
            input: vec![x],
            output: vec!["shape_of_x".into()],
            name: "/Shape".into(),
            op_type: "Shape".into(),
            attribute: vec![],
        },
    );
    let reduced = dir.path().join("reduce_mean.onnx");
    std::fs::write(&reduced, m.encode_to_vec()).unwrap();
    let size = images.dims()[2];
    let features = import(&reduced, size, Tail::Features).unwrap();
    let reference = import(&onnx("mobilenet_v2"), size, Tail::Features).unwrap();
    assert_eq!(features.nodes.len(), reference.nodes.len());
    // Without the Shape node, the whole graph reads as before (ReduceMean as the pool).
    let g = m.graph.as_mut().unwrap();
    g.node.remove(gap);
    std::fs::write(&reduced, m.encode_to_vec()).unwrap();
    let net = import(&reduced, size, Tail::Classifier).unwrap();
    let d = common::max_abs_diff(&net.forward(&images).unwrap(), &expected["logits"])
        / common::max_abs(&expected["logits"]).max(1.0);
    assert!(d <= 1e-4, "relative {d}");
}
