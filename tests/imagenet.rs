//! The built-in non-VGG models are the real ImageNet networks: on 20 ImageNet validation
//! images (foolbox), EfficientNet-Lite0 and MobileNet-V1 classify with their own ImageNet
//! heads, and every model's outputs equal an independent reference run (PyTorch,
//! TensorFlow, onnxruntime) on the same pixels. JPEG decoders differ by a level or two per
//! pixel, so outputs are compared on the reference's own resized pixels
//! (`inputs224.safetensors`), and lrprune's decoding is checked against it separately.
//! References: `tests/fixtures/imagenet/` (`scripts/imagenet_fixtures.py`, PROVENANCE.md).

mod common;
use candle_core::{Device, Tensor};
use lrprune::data::{image_folder, preprocess};
use lrprune::model::arch::Tail;
use lrprune::model::{load, Network};
use lrprune::spec::{Arch, Preprocess};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The 20 images (sorted by file name) and their labels.
fn images() -> Vec<(PathBuf, u32)> {
    let dir = lrprune::assets::resolve("asset:imagenet-val-20").unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
            let label = stem.rsplit('_').next().unwrap().parse().unwrap();
            (p, label)
        })
        .collect()
}

fn batch(preset: Preprocess) -> Tensor {
    let raw: Vec<_> = images()
        .iter()
        .map(|(p, _)| image_folder::decode(p).unwrap())
        .collect();
    // The fixtures' reference pipeline resized to (224, 224): one of the images is not square.
    preprocess::batch(&raw, 224, preset, preprocess::Fit::Squash, &Device::Cpu).unwrap()
}

/// The reference pipeline's own resized pixels (u8, 20×3×224×224) in `preset`'s convention.
fn reference_batch(preset: Preprocess) -> Tensor {
    let px = reference("inputs224.safetensors")["images"]
        .to_dtype(candle_core::DType::U8)
        .unwrap();
    let raw: Vec<_> = (0..20)
        .map(|i| lrprune::data::RawImage {
            c: 3,
            h: 224,
            w: 224,
            data: px
                .get(i)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<u8>()
                .unwrap(),
        })
        .collect();
    // The fixtures' reference pipeline resized to (224, 224): one of the images is not square.
    preprocess::batch(&raw, 224, preset, preprocess::Fit::Squash, &Device::Cpu).unwrap()
}

fn model(name: &str, tail: Tail) -> Network {
    let (_, arch, weights, _) = lrprune::spec::BUILTIN_MODELS
        .iter()
        .find(|(n, ..)| *n == name)
        .unwrap();
    let path = lrprune::assets::resolve(weights).unwrap();
    load::from_checkpoint(*arch, &[], false, &path, 224, tail, &Device::Cpu).unwrap()
}

fn reference(file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        Path::new("tests/fixtures/imagenet").join(file),
        &Device::Cpu,
    )
    .unwrap()
}

fn top1(logits: &Tensor, offset: u32) -> usize {
    let pred = logits.argmax(1).unwrap().to_vec1::<u32>().unwrap();
    pred.iter()
        .zip(images())
        .filter(|(p, (_, label))| p.checked_sub(offset) == Some(*label))
        .count()
}

/// max |a − b| / max |b|.
fn rel(a: &Tensor, b: &Tensor) -> f32 {
    common::max_abs_diff(a, b) / common::max_abs(b)
}

#[test]
fn decoded_and_resized_inputs_match_the_reference_pipeline() {
    let check = reference("inputs_check.safetensors");
    let x = batch(Preprocess::Rgb128); // (x − 128) / 128: undo it to compare pixels
    let px = ((x * 128.0).unwrap() + 128.0).unwrap();
    let means = px.mean((2, 3)).unwrap();
    let d = common::max_abs_diff(&means, &check["channel_mean"]);
    assert!(
        d < 0.5,
        "per-channel mean differs by {d} levels (JPEG decoders disagree)"
    );
    // Eight probed pixels per image and channel.
    let probes = [
        (0, 0),
        (0, 223),
        (223, 0),
        (223, 223),
        (112, 112),
        (37, 181),
        (150, 60),
        (200, 199),
    ];
    let ours: Vec<Tensor> = probes
        .iter()
        .map(|&(y, x)| {
            px.narrow(2, y, 1)
                .unwrap()
                .narrow(3, x, 1)
                .unwrap()
                .flatten_from(1)
                .unwrap()
        })
        .collect();
    let ours = Tensor::stack(&ours, 2).unwrap();
    let d = common::max_abs_diff(&ours, &check["probe"]);
    assert!(d <= 3.0, "probed pixels differ by {d} levels");
}

/// `net`'s outputs on the reference's own pixels equal the reference's (`file`, `key`) to
/// 1e-3 relative.
fn assert_matches_reference(net: &Network, preset: Preprocess, file: &str, key: &str, who: &str) {
    let ours = net.forward(&reference_batch(preset)).unwrap();
    let r = rel(&ours, &reference(file)[key]);
    assert!(
        r <= 1e-3,
        "{who}: relative difference {r:e} to the reference"
    );
}

#[test]
fn efficientnet_lite0_and_mobilenet_v1_classify_imagenet() {
    let eff = model("efficientnet_lite0", Tail::Classifier);
    let hits = top1(&eff.forward(&batch(Preprocess::Rgb127)).unwrap(), 0);
    assert!(hits >= 15, "EfficientNet-Lite0: {hits}/20 top-1");
    let file = "efficientnet_lite0.safetensors";
    assert_matches_reference(
        &eff,
        Preprocess::Rgb127,
        file,
        "logits",
        "EfficientNet-Lite0 (PyTorch)",
    );

    // 1001 classes, index 0 = background.
    let mn1 = model("mobilenet_v1", Tail::Classifier);
    let hits = top1(&mn1.forward(&batch(Preprocess::Rgb128)).unwrap(), 1);
    assert!(hits >= 15, "MobileNet-V1: {hits}/20 top-1");
    let file = "mobilenet_v1.safetensors";
    assert_matches_reference(
        &mn1,
        Preprocess::Rgb128,
        file,
        "logits",
        "MobileNet-V1 (TensorFlow)",
    );
}

#[test]
fn mobilenet_v2_and_resnet50_half_equal_their_references() {
    let mut mn2 = model("mobilenet_v2", Tail::Features);
    let out = mn2.output();
    mn2.push("avgpool", lrprune::model::Op::GlobalAvgPool, vec![out]);
    let file = "mobilenet_v2.safetensors";
    assert_matches_reference(
        &mn2,
        Preprocess::Torchvision,
        file,
        "features",
        "MobileNet-V2 features (PyTorch)",
    );
    let rn = model("resnet50_half", Tail::Classifier);
    let file = "resnet50_half.safetensors";
    assert_matches_reference(
        &rn,
        Preprocess::CaffeBgrInt,
        file,
        "logits",
        "ResNet-50-1by2 (onnxruntime)",
    );
}

#[test]
fn built_in_models_have_the_original_parameter_counts() {
    // Counted from the original files by the fixture script (PROVENANCE.md): parameters of
    // each network as shipped, batch-norm γ/β included, the classifier where it has one.
    let counts: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("tests/fixtures/imagenet/counts.json").unwrap(),
    )
    .unwrap();
    for name in [
        "mobilenet_v1",
        "mobilenet_v2",
        "efficientnet_lite0",
        "resnet50_half",
    ] {
        let tail = if name == "mobilenet_v2" {
            Tail::Features
        } else {
            Tail::Classifier
        };
        let c = lrprune::model::cost::cost(&model(name, tail));
        assert_eq!(
            c.params,
            counts[name]["params"].as_u64().unwrap(),
            "{name}: params"
        );
        assert_eq!(
            c.macs,
            counts[name]["macs"].as_u64().unwrap(),
            "{name}: MACs at 224²"
        );
    }
    let _ = Arch::Vgg16;
}

fn explain_rows(
    model: &str,
    weights: PathBuf,
    inputs: PathBuf,
    preset: Preprocess,
) -> (usize, usize, f64) {
    let out = tempfile::tempdir().unwrap();
    let heat = out.path().join("heat");
    let opts = lrprune::lrp::explain::ExplainOptions {
        model: model.into(),
        batch_norm: false,
        weights,
        inputs,
        out: out.path().join("r.parquet"),
        composite: "epsilon-plus".into(),
        preprocess: preset,
        heatmaps: Some(heat.clone()),
    };
    let df = lrprune::lrp::explain::explain(&opts, &Device::Cpu).unwrap();
    let rel = df.column("relevance").unwrap().f64().unwrap().clone();
    assert!(
        rel.into_no_null_iter().all(f64::is_finite),
        "{model}: non-finite relevance"
    );
    let total: f64 = rel.into_no_null_iter().map(f64::abs).sum();
    (
        df.height(),
        std::fs::read_dir(&heat).unwrap().count(),
        total,
    )
}

/// `lrprune explain` on every built-in model: the three with an ImageNet (or 2-way) head on
/// two ImageNet images through `asset:` weights, MobileNet-V2 (features only) through a
/// task `lrprune export` wrote with a trained head.
#[test]
fn explain_works_on_every_built_in_model() {
    let dir = tempfile::tempdir().unwrap();
    for (name, preset) in [
        ("mobilenet_v1", Preprocess::Rgb128),
        ("efficientnet_lite0", Preprocess::Rgb127),
        ("resnet50_half", Preprocess::CaffeBgrInt),
    ] {
        let x = batch(preset).narrow(0, 0, 2).unwrap();
        let labels: Vec<u32> = images()[..2].iter().map(|(_, l)| *l).collect();
        let labels: Vec<u32> = if name == "resnet50_half" {
            vec![0, 0] // its 2-way head
        } else if name == "mobilenet_v1" {
            labels.iter().map(|l| l + 1).collect() // index 0 = background
        } else {
            labels
        };
        let inputs = dir.path().join(format!("{name}.safetensors"));
        lrprune::model::export::write_inputs(&x, &labels, &inputs).unwrap();
        let weights = lrprune::spec::builtin_model(name).unwrap().weights;
        let (rows, maps, total) = explain_rows(name, weights.into(), inputs, preset);
        let filters: usize = model(name, Tail::Classifier)
            .filters_per_conv()
            .iter()
            .sum();
        assert_eq!(rows, filters, "{name}: one row per conv filter");
        assert_eq!(maps, 2, "{name}: one heatmap per image");
        assert!(total > 0.0, "{name}: no relevance");
    }

    // MobileNet-V2: export a small task (trained head), then explain it.
    let spec = dir.path().join("mn2.toml");
    std::fs::write(
        &spec,
        r#"[experiment]
name = "mn2"
seeds = [0]
models = ["mobilenet_v2"]
datasets = ["fashion-mnist"]
methods = ["lrp"]

[data]
train_per_class = 2
test_per_class = 2
classes = [0, 1, 2]

[head]
epochs = 20
"#,
    )
    .unwrap();
    let task = dir.path().join("task");
    common::run_ok(&[
        "export".as_ref(),
        spec.as_os_str(),
        "--out".as_ref(),
        task.as_os_str(),
    ]);
    let (rows, maps, total) = explain_rows(
        "mobilenet_v2",
        task.join("weights.safetensors"),
        task.join("inputs.safetensors"),
        Preprocess::Torchvision,
    );
    assert_eq!(rows, 17056, "MobileNet-V2: one row per conv filter");
    assert_eq!(maps, 6, "one heatmap per training image");
    assert!(total > 0.0);
}
