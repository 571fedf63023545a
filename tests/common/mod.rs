//! Small fixtures the tests make themselves: a tiny VGG-like network with seeded random
//! weights (torchvision names, safetensors) and a tiny IDX dataset of four texture classes.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const TINY_CFG: &str = r#"[8, "M", 16, "M", 16, "M"]"#;
pub const TINY_WIDTHS: [usize; 3] = [8, 16, 16];

/// Seeded He-initialised weights for `[8, M, 16, M, 16, M]` under torchvision names.
pub fn tiny_weights(path: &Path, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cfg: Vec<Option<usize>> = vec![Some(8), None, Some(16), None, Some(16), None];
    let keys = lrprune::model::arch::vgg::conv_keys(&cfg, false);
    let mut map = HashMap::new();
    let mut in_c = 3;
    for (k, &out_c) in keys.iter().zip(TINY_WIDTHS.iter()) {
        let n = out_c * in_c * 9;
        let std = (2.0 / (in_c * 9) as f64).sqrt();
        let w: Vec<f32> = (0..n)
            .map(|_| (rng.random::<f64>() * 2.0 - 1.0) as f32 * std as f32 * 1.7)
            .collect();
        let b: Vec<f32> = (0..out_c)
            .map(|_| (rng.random::<f64>() * 0.2 - 0.1) as f32)
            .collect();
        map.insert(
            format!("features.{k}.weight"),
            Tensor::from_vec(w, (out_c, in_c, 3, 3), &Device::Cpu).unwrap(),
        );
        map.insert(
            format!("features.{k}.bias"),
            Tensor::from_vec(b, out_c, &Device::Cpu).unwrap(),
        );
        in_c = out_c;
    }
    candle_core::safetensors::save(&map, path).unwrap();
}

/// The tiny VGG-like features (`[8, M, 16, M, 16, M]`) from `tiny_weights` at `path`, for
/// `size`×`size` RGB inputs, as the graph the harness builds.
pub fn tiny_backbone(path: &Path, size: usize) -> lrprune::model::Network {
    use lrprune::spec::{Arch, CfgItem};
    let cfg = [8, 0, 16, 0, 16, 0].map(|w| {
        if w == 0 {
            CfgItem::Pool("M".into())
        } else {
            CfgItem::Conv(w)
        }
    });
    lrprune::model::load::from_checkpoint(
        Arch::Custom,
        &cfg,
        false,
        path,
        size,
        lrprune::model::arch::Tail::Features,
        &Device::Cpu,
    )
    .unwrap()
}

fn texture(class: u32, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let phase = rng.random_range(0..4);
    (0..28 * 28)
        .map(|i| {
            let (y, x) = (i / 28, i % 28);
            let on = match class {
                0 => (y + phase) % 4 < 2,
                1 => (x + phase) % 4 < 2,
                2 => ((x + phase) / 3 + y / 3) % 2 == 0,
                _ => (x + y + phase) % 6 < 3,
            };
            let base = if on { 200.0 } else { 40.0 };
            (base + rng.random_range(-30.0..30.0f64)).clamp(0.0, 255.0) as u8
        })
        .collect()
}

pub fn write_idx_gz(path: &Path, dims: &[u32], payload: &[u8]) {
    let mut raw = vec![0u8, 0, 0x08, dims.len() as u8];
    for d in dims {
        raw.extend_from_slice(&d.to_be_bytes());
    }
    raw.extend_from_slice(payload);
    let f = std::fs::File::create(path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    gz.finish().unwrap();
}

/// A four-class texture dataset in IDX format (train: `per_class` each, t10k: same).
pub fn tiny_idx(dir: &Path, per_class: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for prefix in ["train", "t10k"] {
        let (mut px, mut lb) = (Vec::new(), Vec::new());
        for i in 0..4 * per_class {
            let c = (i % 4) as u32;
            px.extend(texture(c, &mut rng));
            lb.push(c as u8);
        }
        let n = lb.len() as u32;
        write_idx_gz(
            &dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
            &[n, 28, 28],
            &px,
        );
        write_idx_gz(
            &dir.join(format!("{prefix}-labels-idx1-ubyte.gz")),
            &[n],
            &lb,
        );
    }
}

/// A spec over the tiny fixtures; `methods` and `seeds` as TOML arrays.
pub fn tiny_spec(dir: &Path, name: &str, methods: &str, seeds: &str) -> PathBuf {
    tiny_weights(&dir.join("tiny.safetensors"), 7);
    tiny_idx(&dir.join("data"), 30, 11);
    let text = format!(
        r#"[experiment]
name = "{name}"
seeds = {seeds}
models = ["tiny"]
datasets = ["textures"]
methods = {methods}
results_dir = "{results}"

[data]
train_per_class = 10
test_per_class = 20
batch_size = 40

[pruning]
step = 0.1
max_rate = 0.9

[head]
epochs = 100

[[model]]
name = "tiny"
arch = "custom"
cfg = {TINY_CFG}
weights = "tiny.safetensors"
input_size = 16

[[dataset]]
name = "textures"
format = "idx"
source = "data"
"#,
        results = dir.join("results").display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

pub fn lrprune() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_lrprune"))
}

/// Run `lrprune ARGS…` and assert it succeeded.
pub fn run_ok(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let out = lrprune().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "lrprune {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every steps file under `results`, sorted by name.
pub fn step_files(results: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(results.join("steps"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// max |a − b| over all elements.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    for (rank, i) in idx.into_iter().enumerate() {
        r[i] = rank as f64;
    }
    r
}

/// Spearman's rank correlation (no tie correction; 1 for fewer than two values).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    if n < 2.0 {
        return 1.0;
    }
    let d2: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - y).powi(2)).sum();
    1.0 - 6.0 * d2 / (n * (n * n - 1.0))
}

/// The first row of a list-of-strings column (a runs file's `class_names`, `group_names`).
pub fn str_list(df: &polars::prelude::DataFrame, column: &str) -> Vec<String> {
    let names = df
        .column(column)
        .unwrap()
        .list()
        .unwrap()
        .get_as_series(0)
        .unwrap();
    let names = names.str().unwrap();
    (0..names.len())
        .map(|i| names.get(i).unwrap().to_string())
        .collect()
}

/// max |t| over all elements.
pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Every element's bit pattern (exact comparisons: -0.0 ≠ 0.0, NaNs by payload).
pub fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// A random mask of `plan`'s groups keeping each channel with probability `keep`, and at
/// least one channel of every group.
pub fn random_mask(
    plan: &lrprune::prune::Plan,
    keep: f64,
    rng: &mut ChaCha8Rng,
) -> lrprune::prune::FilterMask {
    let mut m = lrprune::prune::FilterMask::all_alive(&plan.sizes());
    for row in &mut m.keep {
        for k in row.iter_mut() {
            *k = rng.random::<f64>() < keep;
        }
        let one = rng.random_range(0..row.len());
        row[one] = true;
    }
    m
}

/// `net`'s per-filter EpsilonPlus relevance on `images` equals zennit's in `expected`
/// (`rel.<conv name>`, tests/fixtures/graph/): Spearman ρ ≥ 0.999 and median relative error
/// ≤ 1e-3 for every conv, which must all have a reference.
pub fn relevance_matches(
    name: &str,
    net: &lrprune::model::Network,
    images: &Tensor,
    labels: &[u32],
    expected: &HashMap<String, Tensor>,
) {
    use lrprune::spec::Preprocess;
    let comp =
        lrprune::lrp::composite::by_name("epsilon-plus", Preprocess::Torchvision, &Device::Cpu)
            .unwrap();
    let rel = lrprune::lrp::propagate::propagate(net, images, labels, &comp).unwrap();
    let convs = net.conv_nodes();
    assert_eq!(rel.conv_outputs.len(), convs.len());
    for (k, &node) in convs.iter().enumerate() {
        let conv = &net.nodes[node].name;
        let reference = expected
            .get(&format!("rel.{conv}"))
            .unwrap_or_else(|| panic!("{name}: no reference for conv `{conv}`"))
            .to_vec1::<f64>()
            .unwrap();
        let ours: Vec<f64> = rel.conv_outputs[k]
            .sum((0, 2, 3))
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(ours.len(), reference.len(), "{name} {conv}");
        let rho = spearman(&ours, &reference);
        assert!(rho >= 0.999, "{name} {conv}: Spearman ρ = {rho}");
        let scale = reference.iter().fold(0f64, |m, v| m.max(v.abs()));
        let mut errs: Vec<f64> = ours
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3 * scale).max(1e-12))
            .collect();
        errs.sort_by(f64::total_cmp);
        let median = errs[errs.len() / 2];
        assert!(
            median <= 1e-3,
            "{name} {conv}: median relative error {median}\nours {ours:?}\nreference {reference:?}"
        );
    }
}

/// A fixture's `labels` tensor (any integer dtype) as class indices.
pub fn labels(t: &Tensor) -> Vec<u32> {
    let v = t.to_dtype(candle_core::DType::I64).unwrap();
    v.to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|l| l as u32)
        .collect()
}
