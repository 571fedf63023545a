//! The pruned network, taken home: `lrprune export --rate/--step/--safe` writes the compacted
//! network as ONNX, run here in tract (a pure-Rust ONNX runtime that shares no code with
//! lrprune), whose logits must equal lrprune's and whose accuracy on the exported test split
//! must be the step's recorded accuracy.

mod common;
use candle_core::{DType, Device, Tensor};
use lrprune::model::arch::Tail;
use lrprune::model::export::onnx::to_onnx;
use lrprune::model::layer::{Linear, Op};
use lrprune::model::{cost, load, Network};
use lrprune::prune::{compact::compact, Plan};
use lrprune::spec::GroupPolicy;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::ffi::OsStr;
use std::path::Path;
use tract_onnx::prelude::{tvec, DatumExt, Framework, InferenceModelExt, IntoRunnable, IntoTValue};

/// `bytes` (an ONNX model) run by tract on `images` (N, C, H, W): the logits.
fn tract_logits(bytes: &[u8], images: &Tensor) -> Tensor {
    let dims = images.dims().to_vec();
    let model = tract_onnx::onnx()
        .model_for_read(&mut &*bytes)
        .unwrap()
        .with_input_fact(0, f32::fact(&dims).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let data = images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let x = tract_onnx::prelude::Tensor::from_shape(&dims, &data).unwrap();
    let out = model.run(tvec!(x.into_tvalue())).unwrap();
    let y = out[0].to_plain_array_view::<f32>().unwrap();
    let shape = y.shape().to_vec();
    Tensor::from_vec(y.iter().copied().collect::<Vec<_>>(), shape, &Device::Cpu).unwrap()
}

fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    common::max_abs_diff(a, b) / common::max_abs(b).max(1.0)
}

fn random(shape: &[usize], scale: f32, rng: &mut ChaCha8Rng) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// A head as the harness trains one (standardise, linear, ReLU, linear) with random
/// weights, on `net`'s backbone.
fn with_head(mut net: Network, rng: &mut ChaCha8Rng) -> Network {
    let f = net.shapes()[net.output()].elements();
    net.head_start = net.nodes.len();
    let mean = random(&[f], 0.5, rng);
    let inv_std = random(&[f], 1.0, rng).abs().unwrap();
    net.push_chain(Op::Standardize { mean, inv_std });
    for (i, o) in [(f, 6), (6, 3)] {
        if o == 3 {
            net.push_chain(Op::Relu);
        }
        net.push_chain(Op::Linear(Linear {
            weight: random(&[o, i], (1.0 / i as f32).sqrt(), rng),
            bias: random(&[o], 0.1, rng),
        }));
    }
    net
}

/// Every built-in backbone (real ImageNet weights), the graph fixtures' ops (AlexNet's
/// adaptive pool and dropout, ResNet-18's residual adds) and an imported DenseNet
/// (concatenations, batch-norms no conv precedes), pruned to about half, in tract.
#[test]
fn every_builtin_backbone_pruned_to_half_runs_in_tract_with_lrprune_logits() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut nets: Vec<(String, Network)> = Vec::new();
    for (name, arch, weights, _) in lrprune::spec::BUILTIN_MODELS {
        let path = lrprune::assets::resolve(weights).unwrap();
        let mut net =
            load::from_checkpoint(*arch, &[], false, &path, 64, Tail::Features, &Device::Cpu)
                .unwrap();
        let out = net.output();
        net.push("avgpool", Op::GlobalAvgPool, vec![out]);
        nets.push((name.to_string(), with_head(net, &mut rng)));
    }
    for name in ["alexnet", "resnet18"] {
        let arch = lrprune::spec::Arch::parse(name).unwrap();
        let path = Path::new("tests/fixtures/graph")
            .join(name)
            .join("weights.pth");
        let net =
            load::from_checkpoint(arch, &[], false, &path, 64, Tail::Classifier, &Device::Cpu)
                .unwrap();
        nets.push((name.to_string(), net));
    }
    // An imported DenseNet: concatenations and the batch-norms no conv precedes.
    let dense = Path::new("tests/fixtures/onnx/densenet121.onnx");
    let net = load::from_checkpoint(
        lrprune::spec::Arch::Onnx,
        &[],
        false,
        dense,
        64,
        Tail::Classifier,
        &Device::Cpu,
    )
    .unwrap();
    nets.push(("densenet121".to_string(), net));
    for (name, net) in nets {
        let plan = Plan::build(&net, GroupPolicy::All, Default::default()).unwrap();
        let mask = common::random_mask(&plan, 0.5, &mut rng);
        let small = compact(&net, &plan, &mask).unwrap();
        let images = random(&[2, 3, 64, 64], 2.0, &mut rng);
        let ours = small.forward(&images).unwrap();
        let full = to_onnx(&net, name.as_str()).unwrap();
        let bytes = to_onnx(&small, name.as_str()).unwrap();
        let d = rel_diff(&tract_logits(&bytes, &images), &ours);
        eprintln!(
            "{name}: {} → {} parameters, tract vs lrprune {d:.1e}",
            cost::cost(&net).params,
            cost::cost(&small).params
        );
        assert!(d <= 1e-4, "{name}: tract vs lrprune logits, relative {d}");
        // The file shrinks by the parameters removed, 4 bytes each (the graph is the same).
        let (p_full, p_small) = (cost::cost(&net).params, cost::cost(&small).params);
        assert!(p_small < p_full, "{name}");
        let per_param = (full.len() - bytes.len()) as f64 / (p_full - p_small) as f64;
        assert!(
            (per_param - 4.0).abs() < 0.2,
            "{name}: the file shrank by {per_param:.2} bytes a parameter removed"
        );
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// (images, labels) of an exported `test.safetensors`.
fn test_split(dir: &Path) -> (Tensor, Vec<i64>) {
    let t = candle_core::safetensors::load(dir.join("test.safetensors"), &Device::Cpu).unwrap();
    let labels = t["labels"].to_dtype(DType::I64).unwrap().to_vec1().unwrap();
    (t["images"].clone(), labels)
}

/// `lrprune export SOURCE --out OUT EXTRA…`: its model.json, asserting it succeeded.
fn export_ok(source: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args: Vec<&OsStr> = vec!["export".as_ref(), source.as_os_str()];
    args.extend([OsStr::new("--out"), out.as_os_str()]);
    args.extend(extra.iter().map(OsStr::new));
    common::run_ok(&args);
    read_json(&out.join("model.json"))
}

/// The same, failing: its message, asserted to contain `says`.
fn export_err(source: &Path, extra: &[&str], says: &str) -> String {
    let out = std::env::temp_dir().join("lrprune-export-never-written");
    let mut args: Vec<&OsStr> = vec!["export".as_ref(), source.as_os_str()];
    args.extend([OsStr::new("--out"), out.as_os_str()]);
    args.extend(extra.iter().map(OsStr::new));
    let o = common::lrprune().args(&args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success() && err.contains(says), "{args:?}: {err}");
    assert!(
        !out.join("model.onnx").exists(),
        "nothing written on an error"
    );
    err
}

/// A column of the steps file at `step`.
fn recorded(results: &Path, column: &str, step: usize) -> f64 {
    let file = &common::step_files(results)[0];
    let df = lrprune::results::read_parquet(file).unwrap();
    let c = df
        .column(column)
        .unwrap()
        .cast(&polars::prelude::DataType::Float64);
    c.unwrap().f64().unwrap().get(step).unwrap()
}

#[test]
fn an_exported_step_is_the_network_the_curve_describes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::tiny_spec(dir.path(), "exp", r#"["lrp"]"#, "[0]");
    common::run_ok(&["run".as_ref(), "--quiet".as_ref(), spec.as_os_str()]);
    let results = dir.path().join("results");

    // A rate outside [0, 1], an unknown run: refused, saying why.
    export_err(&spec, &["--rate", "1.5"], "from 0 to 1");
    export_err(&spec, &["--run", "nope", "--safe"], "--run nope");

    let pruned = dir.path().join("pruned");
    let meta = export_ok(&spec, &pruned, &["--rate", "0.5"]);
    let step = meta["step"].as_u64().unwrap() as usize;
    // The most pruned step at or below the rate asked for.
    let rate = |s| recorded(&results, "pruning_rate", s);
    assert!(rate(step) <= 0.5 && rate(step + 1) > 0.5, "step {step}");
    assert_eq!(meta["pruning_rate"].as_f64(), Some(rate(step)));
    assert_eq!(
        meta["params"].as_f64(),
        Some(recorded(&results, "params", step))
    );
    assert_eq!(meta["replayed"], false);
    let kept: usize = meta["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["kept"].as_array().unwrap().len())
        .sum();
    assert_eq!(kept as f64, recorded(&results, "filters_remaining", step));

    // The ONNX model's accuracy on the exported test split is the step's recorded top-1.
    let bytes = std::fs::read(pruned.join("model.onnx")).unwrap();
    let (images, labels) = test_split(&pruned);
    let logits = tract_logits(&bytes, &images);
    let pred = logits.argmax(1).unwrap().to_dtype(DType::I64).unwrap();
    let pred: Vec<i64> = pred.to_vec1().unwrap();
    let hits = pred.iter().zip(&labels).filter(|(p, l)| p == l).count();
    let top1 = hits as f64 / labels.len() as f64;
    assert_eq!(top1, recorded(&results, "top1", step));
    assert_eq!(meta["test"]["top1"].as_f64(), Some(top1));
    // The safetensors checkpoint holds the pruned shapes.
    let w = candle_core::safetensors::load(pruned.join("model.safetensors"), &Device::Cpu).unwrap();
    let first = meta["groups"][0]["kept"].as_array().unwrap().len();
    assert_eq!(w["features.0.weight"].dims()[0], first);

    // The results folder alone (its runs files hold the settings) exports the same model.
    let id = common::step_files(&results)[0]
        .file_stem()
        .unwrap()
        .to_owned();
    let id = id.to_str().unwrap();
    let from_results = dir.path().join("from-results");
    export_ok(&results, &from_results, &["--run", id, "--rate", "0.5"]);
    assert_eq!(
        std::fs::read(from_results.join("model.onnx")).unwrap(),
        bytes
    );
    export_err(&results, &["--run", "nope", "--safe"], "does not exist");

    // Without the masks (a steps file from before they were recorded) the run is replayed
    // to the step: the same model, byte for byte.
    let file = &common::step_files(&results)[0];
    let mut df = lrprune::results::read_parquet(file).unwrap();
    df = df.drop("kept").unwrap();
    lrprune::results::write_parquet_atomic(file, &mut df).unwrap();
    let again = dir.path().join("replayed");
    assert_eq!(
        export_ok(&spec, &again, &["--rate", "0.5"])["replayed"],
        true
    );
    assert_eq!(std::fs::read(again.join("model.onnx")).unwrap(), bytes);

    // --safe: within a point of step 0's balanced accuracy.
    let safe = export_ok(&spec, &dir.path().join("safe"), &["--safe"]);
    let k = safe["step"].as_u64().unwrap() as usize;
    let b0 = recorded(&results, "balanced_acc", 0);
    assert!((0..=k).all(|s| recorded(&results, "balanced_acc", s) >= b0 - 0.01));

    // A results file that does not match what the spec forms now is refused.
    let mut df = lrprune::results::read_parquet(file).unwrap();
    let mut params: Vec<i64> = df
        .column("params")
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    params[step] += 1;
    df.with_column(polars::prelude::Column::new("params".into(), params))
        .unwrap();
    lrprune::results::write_parquet_atomic(file, &mut df).unwrap();
    export_err(&spec, &["--step", &step.to_string()], "`params`");
}

/// Node names are not value names: two nodes of one name, or one called `input` or `logits`
/// (an imported graph may have them), still give a valid graph.
#[test]
fn clashing_node_names_give_distinct_onnx_values() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut net = Network {
        nodes: vec![],
        head_start: 0,
        input_shape: (3, 8, 8),
    };
    let conv = |i: usize, o: usize, rng: &mut ChaCha8Rng| {
        Op::Conv(lrprune::model::layer::Conv {
            weight: random(&[o, i, 3, 3], 0.3, rng),
            bias: random(&[o], 0.1, rng),
            padding: lrprune::model::geometry::Pad2d::same(1),
            stride: 1,
            groups: 1,
            extra_params: 1,
        })
    };
    let a = net.push("input", conv(3, 4, &mut rng), vec![0]);
    let a = net.push("relu", Op::Relu, vec![a]);
    let b = net.push("logits", conv(4, 4, &mut rng), vec![a]);
    let b = net.push("relu", Op::Relu, vec![b]);
    let s = net.push("relu", Op::Add, vec![a, b]);
    net.push("pool", Op::GlobalAvgPool, vec![s]);
    let net = with_head(net, &mut rng);
    let images = random(&[2, 3, 8, 8], 1.0, &mut rng);
    let bytes = to_onnx(&net, "clash").unwrap();
    let d = rel_diff(
        &tract_logits(&bytes, &images),
        &net.forward(&images).unwrap(),
    );
    assert!(d <= 1e-4, "relative {d}");
}
