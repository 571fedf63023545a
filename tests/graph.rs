//! Beyond VGG chains: AlexNet, ResNet-18/50 and MobileNet-V2 as graphs, against PyTorch
//! logits, zennit relevance and torchvision's published parameter and MAC counts, and the
//! pruning plan's coupled groups (masked = compacted).
//!
//! Fixtures: `tests/fixtures/graph/` (narrow random-weight copies of each architecture under
//! torchvision's names, made by `scripts/graph_fixtures.py`; provenance in its PROVENANCE.md).

mod common;
use candle_core::{Device, Tensor};
use lrprune::model::arch::{self, Source, Tail};
use lrprune::model::{cost, load, Network};
use lrprune::prune::{compact::compact, zeroed, Plan};
use lrprune::spec::{Arch, GroupPolicy, Preprocess};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const ARCHS: [&str; 4] = ["alexnet", "resnet18", "resnet50", "mobilenet_v2"];

fn dir(arch: &str) -> PathBuf {
    Path::new("tests/fixtures/graph").join(arch)
}

struct Fixture {
    net: Network,
    images: Tensor,
    labels: Vec<u32>,
    expected: HashMap<String, Tensor>,
}

fn fixture(name: &str) -> Fixture {
    let d = dir(name);
    let inputs =
        candle_core::safetensors::load(d.join("inputs.safetensors"), &Device::Cpu).unwrap();
    let images = inputs["images"].clone();
    let labels = common::labels(&inputs["labels"]);
    let size = images.dims()[2];
    let arch = Arch::parse(name).unwrap();
    let net = load::from_checkpoint(
        arch,
        &[],
        false,
        &d.join("weights.pth"),
        size,
        Tail::Classifier,
        &Device::Cpu,
    )
    .unwrap();
    let expected =
        candle_core::safetensors::load(d.join("expected.safetensors"), &Device::Cpu).unwrap();
    Fixture {
        net,
        images,
        labels,
        expected,
    }
}

/// max |a − b| / max(1, max |b|).
fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    common::max_abs_diff(a, b) / common::max_abs(b).max(1.0)
}

#[test]
fn logits_equal_pytorch() {
    for name in ARCHS {
        let f = fixture(name);
        let ours = f.net.forward(&f.images).unwrap();
        let d = rel_diff(&ours, &f.expected["logits"]);
        assert!(d <= 1e-4, "{name}: relative max |Δlogit| = {d}");
    }
}

/// What a GPU runs (Candle's ops, the shifted depthwise conv of src/model/conv/shifted.rs)
/// checked on the CPU: an input on an autograd tape turns lrprune's CPU kernels off.
#[test]
fn device_generic_ops_equal_pytorch() {
    for name in ARCHS {
        let f = fixture(name);
        let x = candle_core::Var::from_tensor(&f.images).unwrap();
        let ours = f.net.forward(x.as_tensor()).unwrap();
        let d = rel_diff(&ours, &f.expected["logits"]);
        assert!(d <= 1e-4, "{name}: relative max |Δlogit| = {d}");
    }
}

#[test]
fn per_filter_relevance_matches_zennit() {
    for name in ARCHS {
        let f = fixture(name);
        common::relevance_matches(name, &f.net, &f.images, &f.labels, &f.expected);
    }
}

#[test]
fn masked_logits_equal_the_compacted_network() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for name in ARCHS {
        let f = fixture(name);
        for policy in [GroupPolicy::All, GroupPolicy::Internal] {
            let plan = Plan::build(&f.net, policy, Default::default()).unwrap();
            for _ in 0..3 {
                let m = common::random_mask(&plan, 0.6, &mut rng);
                let masked = zeroed::zeroed(&f.net, &plan, &m).unwrap();
                let small = compact(&f.net, &plan, &m).unwrap();
                let (a, b) = (
                    masked.forward(&f.images).unwrap(),
                    small.forward(&f.images).unwrap(),
                );
                let d = rel_diff(&b, &a);
                assert!(d <= 1e-4, "{name} {policy:?}: masked vs compacted {d}");
                assert_eq!(plan.sizes_in(&small), m.per_layer());
            }
        }
    }
}

#[test]
fn residual_and_depthwise_channels_are_coupled() {
    let f = fixture("resnet18");
    let plan = Plan::build(&f.net, GroupPolicy::All, Default::default()).unwrap();
    let names = |g: &lrprune::prune::plan::Group| -> Vec<String> {
        g.producers
            .iter()
            .map(|&n| f.net.nodes[n].name.clone())
            .collect()
    };
    // The stem and every block of layer1 write one residual stream.
    let stem = plan.groups.iter().find(|g| g.producers[0] == 0).unwrap();
    assert_eq!(names(stem), ["conv1", "layer1.0.conv2", "layer1.1.conv2"]);
    assert!(stem.coupled);
    // Inside a block, conv1's channels are their own group.
    assert!(plan
        .groups
        .iter()
        .any(|g| names(g) == ["layer2.0.conv1"] && !g.coupled));
    let internal = Plan::build(&f.net, GroupPolicy::Internal, Default::default()).unwrap();
    assert!(internal.groups.iter().all(|g| !g.coupled));
    assert_eq!(internal.groups.len(), 8, "one conv1 per basic block");

    let m = fixture("mobilenet_v2");
    let plan = Plan::build(&m.net, GroupPolicy::All, Default::default()).unwrap();
    // The stem conv and the first block's depthwise conv share their channels; at the
    // fixture's width (0.25) the first block keeps its width (8 → 8), so torchvision adds
    // its input back and its projection conv writes the same channels too.
    let first = &plan.groups[0];
    let producers: Vec<&str> = first
        .producers
        .iter()
        .map(|&n| m.net.nodes[n].name.as_str())
        .collect();
    assert_eq!(
        producers,
        ["features.0.0", "features.1.conv.0.0", "features.1.conv.1"]
    );
    assert_eq!(first.name, "features.0.0 (+1 coupled)");
    // An expansion conv and the depthwise conv after it: one group, not coupled by an add.
    let expand = plan
        .groups
        .iter()
        .find(|g| m.net.nodes[g.producers[0]].name == "features.2.conv.0.0")
        .unwrap();
    let producers: Vec<&str> = expand
        .producers
        .iter()
        .map(|&n| m.net.nodes[n].name.as_str())
        .collect();
    assert_eq!(producers, ["features.2.conv.0.0", "features.2.conv.1.0"]);
    assert!(!expand.coupled);
}

#[test]
fn params_and_macs_equal_torchvision() {
    let counts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("tests/fixtures/graph/counts.json").unwrap())
            .unwrap();
    let cases = [
        ("alexnet", Arch::Alexnet, Some(61_100_840u64)),
        ("resnet18", Arch::Resnet18, Some(11_689_512)),
        ("resnet34", Arch::Resnet34, None),
        ("resnet50", Arch::Resnet50, Some(25_557_032)),
        ("mobilenet_v2", Arch::MobilenetV2, Some(3_504_872)),
        ("vgg16", Arch::Vgg16, Some(138_357_544)),
    ];
    for (name, arch, published) in cases {
        let net = arch::build(
            arch,
            &[],
            false,
            Source::Shapes,
            (3, 224, 224),
            Tail::Classifier,
        )
        .unwrap();
        let c = cost::cost(&net);
        if let Some(p) = published {
            assert_eq!(c.params, p, "{name}: parameters");
        }
        let Some(reference) = counts.get(name) else {
            continue;
        };
        assert_eq!(
            c.params,
            reference["params"].as_u64().unwrap(),
            "{name}: params"
        );
        assert_eq!(c.macs, reference["macs"].as_u64().unwrap(), "{name}: MACs");
        assert_eq!(
            c.conv_macs,
            reference["conv_macs"].as_u64().unwrap(),
            "{name}: conv MACs"
        );
    }
    // The fixtures' narrow widths at their own input sizes, too.
    for name in ARCHS {
        let f = fixture(name);
        let reference = &counts[format!("fixture_{name}")];
        let c = cost::cost(&f.net);
        assert_eq!(
            c.params,
            reference["params"].as_u64().unwrap(),
            "fixture {name}: params"
        );
        assert_eq!(
            c.macs,
            reference["macs"].as_u64().unwrap(),
            "fixture {name}: MACs"
        );
    }
}

/// `lrprune run` on a `[[model]]` of each architecture from its torchvision `.pth`, with the
/// LRP methods, the controller and two baselines: every run finishes, `layer_filters` has
/// one entry per pruning group and the runs file names the groups after their convs.
#[test]
fn sweeps_run_on_every_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    common::tiny_idx(&d.join("data"), 12, 3);
    let abs = |a: &str| std::fs::canonicalize(dir(a).join("weights.pth")).unwrap();
    let models: String = ARCHS
        .iter()
        .map(|a| {
            let size = if *a == "alexnet" { 64 } else { 32 };
            format!(
                "[[model]]\nname = \"{a}-fx\"\narch = \"{a}\"\nweights = \"{}\"\ninput_size = {size}\npreprocess = \"torchvision\"\n\n",
                abs(a).display()
            )
        })
        .collect();
    let names: Vec<String> = ARCHS.iter().map(|a| format!("\"{a}-fx\"")).collect();
    let spec = format!(
        r#"[experiment]
name = "archs"
seeds = [0]
models = [{}]
datasets = ["textures"]
methods = ["lrp", "lrp-oneshot", "aa-lrp", "l1", "random"]
results_dir = "{}"

[data]
train_per_class = 6
test_per_class = 6
batch_size = 24

[pruning]
step = 0.3
max_rate = 0.6

[head]
epochs = 30

{models}[[dataset]]
name = "textures"
format = "idx"
source = "data"
"#,
        names.join(", "),
        d.join("results").display()
    );
    let path = d.join("archs.toml");
    std::fs::write(&path, spec).unwrap();
    common::run_ok(&["run".as_ref(), "--quiet".as_ref(), path.as_os_str()]);

    let files = common::step_files(&d.join("results"));
    assert_eq!(files.len(), 4 * 5, "one steps file per model and method");
    for f in &files {
        let id = f.file_stem().unwrap().to_str().unwrap();
        let steps = lrprune::results::read_parquet(f).unwrap();
        let runs =
            lrprune::results::read_parquet(&lrprune::results::runs_path(&d.join("results"), id))
                .unwrap();
        let groups = common::str_list(&runs, "group_names");
        let widths = steps
            .column("layer_filters")
            .unwrap()
            .list()
            .unwrap()
            .get_as_series(0)
            .unwrap();
        assert_eq!(widths.len(), groups.len(), "{id}: one width per group");
        let last_rate = steps
            .column("pruning_rate")
            .unwrap()
            .f64()
            .unwrap()
            .into_no_null_iter()
            .last()
            .unwrap();
        assert!(
            (last_rate - 0.6).abs() < 0.02,
            "{id}: ends at rate {last_rate}"
        );
        let arch = ARCHS
            .iter()
            .find(|a| id.starts_with(&format!("{a}-fx")))
            .unwrap();
        let expect = match *arch {
            "alexnet" => "features.0",
            "resnet18" | "resnet50" => "conv1",
            _ => "features.0.0",
        };
        assert!(
            groups[0].starts_with(expect),
            "{id}: first group `{}`",
            groups[0]
        );
    }
    assert!(
        d.join("results/report/layer_profile.png").is_file()
            || std::fs::read_dir(d.join("results/report"))
                .unwrap()
                .any(|e| e
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("layer_profile"))
    );
}

/// `lrprune explain` reads a torchvision checkpoint of any architecture (with its own
/// classifier) and reports one row per conv filter, named after its conv module.
#[test]
fn explain_works_on_a_resnet_checkpoint() {
    let out = tempfile::tempdir().unwrap();
    let heat = out.path().join("heat");
    let opts = lrprune::lrp::explain::ExplainOptions {
        model: "resnet18".into(),
        batch_norm: false,
        weights: dir("resnet18").join("weights.pth"),
        inputs: dir("resnet18").join("inputs.safetensors"),
        out: out.path().join("r.parquet"),
        composite: "epsilon-plus".into(),
        preprocess: Preprocess::Torchvision,
        heatmaps: Some(heat.clone()),
    };
    let df = lrprune::lrp::explain::explain(&opts, &Device::Cpu).unwrap();
    let f = fixture("resnet18");
    assert_eq!(df.height(), f.net.filters_per_conv().iter().sum::<usize>());
    let names = df.column("name").unwrap().str().unwrap().clone();
    assert_eq!(names.get(0), Some("conv1"));
    assert!((0..names.len()).any(|i| names.get(i) == Some("layer4.1.conv2")));
    // The relevance column is zennit's, conv by conv (checked in detail above): spot-check
    // the stem's total.
    let value = df.column("relevance").unwrap().f64().unwrap().clone();
    let stem: f64 = (0..names.len())
        .filter(|&i| names.get(i) == Some("conv1"))
        .map(|i| value.get(i).unwrap())
        .sum();
    let want: f64 = f.expected["rel.conv1"]
        .to_vec1::<f64>()
        .unwrap()
        .iter()
        .sum();
    assert!(
        (stem - want).abs() <= 1e-3 * want.abs().max(1.0),
        "{stem} vs {want}"
    );
    assert_eq!(
        std::fs::read_dir(&heat).unwrap().count(),
        4,
        "one heatmap per image"
    );
}

/// The explicit gradient pass (`lrp::gradient`, which the screened layer search reads)
/// equals Candle's autograd at every value where Candle can differentiate the network
/// (MobileNet-V2: residual adds, depthwise convs, ReLU6; Candle has no backward for
/// overlapping max-pools), and on every graph architecture its gradient at the input gives
/// the directional derivative a central difference measures (AlexNet's and ResNet's
/// overlapping max-pools, the adaptive pool, the classifier).
#[test]
fn the_gradient_pass_equals_autograd_and_finite_differences() {
    use candle_core::Var;
    for name in ARCHS {
        let f = fixture(name);
        let x = f.images.narrow(0, 0, 4).unwrap();
        let classes = f.net.forward(&x).unwrap().dims()[1];
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let r: Vec<f32> = (0..4 * classes)
            .map(|_| rng.random::<f32>() - 0.5)
            .collect();
        let r = Tensor::from_vec(r, (4, classes), &Device::Cpu).unwrap();
        let acts = f.net.trace(&x).unwrap();
        let mut ours = vec![None; f.net.nodes.len() + 1];
        lrprune::lrp::gradient::backward(&f.net, &acts, r.clone(), 0, |v, g| {
            ours[v] = Some(g.clone());
            Ok(())
        })
        .unwrap();
        assert!(
            ours.iter().all(Option::is_some),
            "{name}: every value visited"
        );
        // f(x) = Σ logits · r along the gradient's own direction (a random one would
        // cancel down to the size of f32 round-off).
        let g0 = ours[0].as_ref().unwrap();
        let dir = (g0 / common::max_abs(g0) as f64).unwrap();
        let f_at = |t: f64| -> f64 {
            let xt = (&x + (&dir * t).unwrap()).unwrap();
            let out = (f.net.forward(&xt).unwrap() * &r).unwrap();
            out.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64
        };
        // Small, since ReLU kinks bend f within a step (at 1e-2 AlexNet's difference is 10%
        // below the limit it converges to).
        let h = 1e-3;
        let measured = (f_at(h) - f_at(-h)) / (2.0 * h);
        let predicted = (ours[0].as_ref().unwrap() * &dir)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let d = (measured - predicted).abs() / measured.abs().max(1e-3);
        assert!(
            d <= 0.03,
            "{name}: directional derivative {predicted} vs {measured}"
        );
        if name != "mobilenet_v2" {
            continue;
        }
        // Autograd: a zero probe added to every node's output holds its gradient.
        let mut probes = Vec::new();
        let logits = f
            .net
            .forward_tapped(&x, |_, y| {
                let probe = Var::zeros(y.shape(), y.dtype(), y.device())?;
                let y = (y + probe.as_tensor())?;
                probes.push(probe);
                Ok(y)
            })
            .unwrap();
        let grads = (logits * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (v, g) in ours.iter().enumerate().skip(1) {
            let want = grads.get(probes[v - 1].as_tensor()).expect("a gradient");
            let g = g.as_ref().unwrap();
            let d = common::max_abs_diff(g, want) / common::max_abs(want).max(1e-6);
            assert!(d <= 1e-4, "{name}: value {v}: relative max |Δgrad| = {d}");
        }
    }
}
