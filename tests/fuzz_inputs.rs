//! Fuzzing past the spec parser (tests/fuzz_spec.rs): 10,300 generated cases, seeded
//! (4,500 CLI values, 2,000 models, 2,000 `explain` inputs, 1,500 step files, 300 ONNX
//! models), over what a user hands the harness besides a spec's syntax — CLI values
//! (`--shard`, `--max-memory`, Slurm's array variables), generated tiny custom models (spec →
//! network → pruning groups → memory estimate → a forward pass), `explain` inputs (shapes,
//! dtypes, labels, NaN/inf, damaged checkpoints), damaged step files (the report's reader on
//! mutated Parquet bytes and rows) and mutated ONNX graphs (the importer). Library functions
//! are called directly, not the binary, so a case costs milliseconds. A case fails on a panic
//! (caught), on taking longer than its bound, or on an error that does not name the file, key
//! or argument to fix; a watchdog aborts the test binary when one case hangs.

mod common;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs cases one at a time: panics caught, each timed, a hang aborted by a watchdog.
struct Fuzz {
    name: &'static str,
    bound: Duration,
    current: Arc<Mutex<Option<(String, Instant)>>>,
    cases: usize,
}

impl Fuzz {
    fn new(name: &'static str, bound: Duration) -> Self {
        let current = Arc::new(Mutex::new(None::<(String, Instant)>));
        let watched = Arc::downgrade(&current);
        std::thread::spawn(move || {
            // Ends with the Fuzz (its Arc dropped).
            while let Some(cur) = watched.upgrade() {
                if let Some((what, since)) = cur.lock().unwrap().clone() {
                    if since.elapsed() > 10 * bound {
                        eprintln!("{name}: hung over {:?} on {what}", 10 * bound);
                        std::process::abort();
                    }
                }
                drop(cur);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self {
            name,
            bound,
            current,
            cases: 0,
        }
    }

    /// Case `what`: `f`'s value, or the test fails naming the case.
    fn case<T>(&mut self, what: &str, f: impl FnOnce() -> T) -> T {
        let t0 = Instant::now();
        *self.current.lock().unwrap() = Some((what.to_string(), t0));
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        *self.current.lock().unwrap() = None;
        let Ok(out) = out else {
            panic!("{}: panicked on {what}", self.name)
        };
        let took = t0.elapsed();
        assert!(
            took <= self.bound,
            "{}: {what} took {took:?}, over {:?}",
            self.name,
            self.bound
        );
        self.cases += 1;
        out
    }
}

/// An error `e` of case `what` must contain one of `names`.
fn names_one(what: &str, e: &anyhow::Error, names: &[&str]) {
    let msg = format!("{e:#}");
    assert!(
        names.iter().any(|n| msg.contains(n)),
        "{what}: the error names none of {names:?}: {msg}"
    );
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, xs: &'a [T]) -> &'a T {
    &xs[rng.random_range(0..xs.len())]
}

/// A number-like string: small, at a limit, huge, negative, fractional or garbage.
fn number(rng: &mut ChaCha8Rng) -> String {
    match rng.random_range(0..6) {
        0 => rng.random_range(0..10u64).to_string(),
        1 => rng.random_range(0..2_000_000u64).to_string(),
        2 => pick(
            rng,
            &[
                "1000000",
                "1000001",
                "18446744073709551615",
                "18446744073709551616",
                "2305843009213693952",
                "9223372036854775807",
            ],
        )
        .to_string(),
        3 => format!("-{}", rng.random_range(0..5)),
        4 => pick(
            rng,
            &[
                "", " ", "1.5", "1e3", "0x10", "+2", "nan", "１", "\u{0}", "7 ",
            ],
        )
        .to_string(),
        _ => rng.random::<u64>().to_string(),
    }
}

#[test]
fn cli_values_parse_or_name_the_argument() {
    use lrprune::runner::{memory, shard::Shard, shard::MAX_SHARDS};
    let mut rng = ChaCha8Rng::seed_from_u64(27);
    let mut fz = Fuzz::new("cli", Duration::from_millis(200));
    for case in 0..1500 {
        let s = match rng.random_range(0..3) {
            0 => format!("{}/{}", number(&mut rng), number(&mut rng)),
            1 => (0..rng.random_range(1..5))
                .map(|_| pick(&mut rng, &["1", "/", "0", "//", "x", " ", "3", "-"]).to_string())
                .collect(),
            _ => format!("{}/{}", rng.random_range(0..9), rng.random_range(0..9)),
        };
        let what = format!("case {case}: --shard `{s}`");
        match fz.case(&what, || Shard::parse(&s)) {
            Ok(sh) => assert!(sh.index < sh.count && sh.count <= MAX_SHARDS, "{what}"),
            Err(e) => names_one(&what, &e, &["--shard"]),
        }
    }
    for case in 0..1500 {
        let unit = pick(
            &mut rng,
            &[
                "", "K", "M", "G", "T", "k", "GiB", "MB", "X", "é", "E5", "G G", "iB",
            ],
        );
        let num = match rng.random_range(0..3) {
            0 => number(&mut rng),
            1 => format!(
                "{}",
                rng.random::<f64>() * 10f64.powi(rng.random_range(-12..30))
            ),
            _ => pick(
                &mut rng,
                &["0", "-1", "inf", "1e308", "1e-300", "0.5", ".", "1.2.3"],
            )
            .to_string(),
        };
        let s = format!("{num}{unit}");
        let what = format!("case {case}: --max-memory `{s}`");
        match fz.case(&what, || memory::parse_size(&s)) {
            Ok(bytes) => assert!(bytes >= 1, "{what}: a limit of {bytes} bytes"),
            Err(e) => names_one(&what, &e, &["--max-memory"]),
        }
    }
    const VARS: [&str; 4] = ["ID", "COUNT", "MIN", "STEP"];
    for case in 0..1500 {
        let mut vars = HashMap::new();
        for v in VARS {
            if rng.random_bool(0.15) {
                continue;
            }
            let val = match rng.random_range(0..3) {
                0 => rng.random_range(0..12).to_string(),
                _ => number(&mut rng),
            };
            vars.insert(format!("SLURM_ARRAY_TASK_{v}"), val);
        }
        let what = format!("case {case}: {vars:?}");
        match fz.case(&what, || Shard::from_vars(|n| vars.get(n).cloned())) {
            Ok(sh) => {
                let get = |v: &str, or: usize| {
                    vars.get(&format!("SLURM_ARRAY_TASK_{v}"))
                        .map_or(or, |s| s.trim().parse().unwrap())
                };
                let index = (get("ID", 0) - get("MIN", 0)) / get("STEP", 1);
                assert!(sh.index == index && sh.index < sh.count, "{what}: {sh:?}");
            }
            Err(e) => names_one(&what, &e, &["SLURM_ARRAY_TASK_", "--shard-from-env"]),
        }
    }
    assert_eq!(fz.cases, 4500);
}

/// The widths of a generated custom cfg (0 for a pool), mostly tiny, now and then hostile.
fn cfg_items(rng: &mut ChaCha8Rng) -> Vec<String> {
    (0..rng.random_range(0..6))
        .map(|_| match rng.random_range(0..10) {
            0..=2 => "\"M\"".to_string(),
            3 => pick(rng, &["0", "\"A\"", "\"\"", "-1", "1.5", "100000000"]).to_string(),
            _ => rng.random_range(1..9).to_string(),
        })
        .collect()
}

/// Seeded weights for `cfg` (a conv's width, `None` a pool) under torchvision names, with a
/// batch-norm after each conv when `bn`; with `damage`, one tensor dropped, reshaped or
/// made NaN.
fn cfg_weights(path: &Path, cfg: &[Option<usize>], bn: bool, damage: bool, rng: &mut ChaCha8Rng) {
    let keys = lrprune::model::arch::vgg::conv_keys(cfg, bn);
    let mut map = HashMap::new();
    let mut in_c = 3;
    let t = |shape: &[usize], rng: &mut ChaCha8Rng| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-0.5..0.5)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    };
    for (k, w) in keys.iter().zip(cfg.iter().flatten()) {
        map.insert(format!("features.{k}.weight"), t(&[*w, in_c, 3, 3], rng));
        map.insert(format!("features.{k}.bias"), t(&[*w], rng));
        if bn {
            for p in ["weight", "bias", "running_mean"] {
                map.insert(format!("features.{}.{p}", k + 1), t(&[*w], rng));
            }
            let var = t(&[*w], rng).abs().unwrap();
            map.insert(format!("features.{}.running_var", k + 1), var);
        }
        in_c = *w;
    }
    if damage && !map.is_empty() {
        let mut names: Vec<String> = map.keys().cloned().collect();
        names.sort();
        let k = pick(rng, &names).clone();
        match rng.random_range(0..4) {
            0 => {
                map.remove(&k);
            }
            1 => {
                map.insert(k, t(&[2, 2], rng));
            }
            2 => {
                map.insert(k, Tensor::new(&[1i64, 2, 3], &Device::Cpu).unwrap());
            }
            _ => {
                let n = map[&k].elem_count();
                map.insert(k, t(&[n + 1], rng));
            }
        }
    }
    candle_core::safetensors::save(&map, path).unwrap();
}

#[test]
fn generated_tiny_models_build_or_fail_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(2027);
    let mut fz = Fuzz::new("models", Duration::from_secs(3));
    let spec_path = dir.path().join("fz.toml");
    let (mut built, mut refused) = (0, 0);
    for case in 0..2000 {
        let items = cfg_items(&mut rng);
        let bn = rng.random_bool(0.3);
        let size = *pick(&mut rng, &[1usize, 2, 3, 4, 7, 8, 16, 17, 32, 0, 2000]);
        let hidden: Vec<String> = (0..rng.random_range(0..3))
            .map(|_| pick(&mut rng, &["0", "4", "16", "70000", "-3"]).to_string())
            .collect();
        let weights = dir.path().join(format!("w{}.safetensors", case % 8));
        let text = format!(
            "[experiment]\nname = \"fz\"\nseeds = [0]\nmodels = [\"m\"]\ndatasets = [\"d\"]\nmethods = [\"l1\"]\nresults_dir = \"out\"\n\n[head]\nhidden = [{}]\n\n[[model]]\nname = \"m\"\narch = \"custom\"\ncfg = [{}]\nbatch_norm = {bn}\nweights = \"{}\"\ninput_size = {size}\n\n[[dataset]]\nname = \"d\"\nformat = \"idx\"\nsource = \".\"\n",
            hidden.join(", "),
            items.join(", "),
            weights.display()
        );
        // Weights for what the cfg says where it parses as widths, else any.
        let cfg: Vec<Option<usize>> = items
            .iter()
            .filter_map(|s| match s.as_str() {
                "\"M\"" => Some(None),
                s => s.parse().ok().filter(|w| (1..9).contains(w)).map(Some),
            })
            .collect();
        cfg_weights(&weights, &cfg, bn, rng.random_bool(0.2), &mut rng);
        let what = format!("case {case}:\n{text}");
        let file = weights.display().to_string();
        let outcome = fz.case(&what, || -> anyhow::Result<()> {
            let spec = lrprune::spec::parse(&spec_path, &text)?;
            let r = &spec.runs[0];
            let net = lrprune::model::load::backbone(&r.model, &Device::Cpu)?;
            lrprune::prune::Plan::build(&net, r.pruning.groups, r.pruning.group_reduce)?;
            let e = lrprune::runner::memory::estimate(&net, &[40, 40], 8);
            e.with_head(&net, &r.head.hidden, 4, 40).total();
            let x = Tensor::zeros((1, 3, size, size), DType::F32, &Device::Cpu)?;
            net.forward(&x)?;
            Ok(())
        });
        match outcome {
            Ok(()) => built += 1,
            Err(e) => {
                refused += 1;
                names_one(&what, &e, &["fz.toml:", &file]);
            }
        }
    }
    assert!(
        built > 150 && refused > 150,
        "built {built}, refused {refused}"
    );
}

/// A tensor of `shape` and `dtype` with values around 0 (labels: 0..4, the head's classes;
/// `hostile`: one past either end now and then, and a NaN, an infinity or a huge value).
fn tensor(
    shape: &[usize],
    dtype: DType,
    labels: bool,
    hostile: bool,
    rng: &mut ChaCha8Rng,
) -> Tensor {
    let n: usize = shape.iter().product();
    let lo = if hostile { -1 } else { 0 };
    let mut v: Vec<f64> = (0..n)
        .map(|_| match labels {
            true => rng.random_range(lo..4 - lo) as f64,
            false => rng.random_range(-2.0..2.0),
        })
        .collect();
    if hostile && n > 0 && rng.random_bool(0.2) {
        let i = rng.random_range(0..n);
        v[i] = *pick(
            rng,
            &[f64::NAN, f64::INFINITY, -f64::INFINITY, 1e300, 9.3e18],
        );
    }
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

const DTYPES: [DType; 7] = [
    DType::F32,
    DType::F64,
    DType::F16,
    DType::BF16,
    DType::U8,
    DType::I64,
    DType::U32,
];

/// `valid` for half the cases, else one of `hostile` (which may include it).
fn either<T: Copy>(rng: &mut ChaCha8Rng, hostile: bool, valid: T, others: &[T]) -> T {
    if hostile && rng.random_bool(0.5) {
        *pick(rng, others)
    } else {
        valid
    }
}

#[test]
fn explain_inputs_are_explained_or_refused_by_name() {
    use lrprune::lrp::explain::{explain, ExplainOptions};
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut fz = Fuzz::new("explain", Duration::from_secs(3));
    // The tiny features `8 M 16 M 16 M` with a 4-class head on their pooled features.
    let good = dir.path().join("w.safetensors");
    common::tiny_weights(&good, 5);
    let mut ckpt = candle_core::safetensors::load(&good, &Device::Cpu).unwrap();
    let head = tensor(&[4, 16], DType::F32, false, false, &mut rng);
    ckpt.insert("classifier.0.weight".into(), head);
    let bias = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
    ckpt.insert("classifier.0.bias".into(), bias);
    candle_core::safetensors::save(&ckpt, &good).unwrap();
    let (mut explained, mut refused) = (0, 0);
    for case in 0..2000 {
        // Half the cases valid but for what `either` changes; every choice may be hostile.
        let hostile = rng.random_bool(0.5);
        let weights = if hostile && rng.random_bool(0.2) {
            // A damaged checkpoint: a tensor missing, reshaped or retyped.
            let mut w = ckpt.clone();
            let names = [
                "classifier.0.weight",
                "classifier.0.bias",
                "features.0.bias",
            ];
            let k = *pick(&mut rng, &names);
            match rng.random_range(0..3) {
                0 => drop(w.remove(k)),
                1 => drop(w.insert(
                    k.into(),
                    tensor(&[3, 5], DType::F32, false, false, &mut rng),
                )),
                _ => drop(w.insert(k.into(), tensor(&[4], DType::I64, true, false, &mut rng))),
            }
            let p = dir.path().join("bad.safetensors");
            candle_core::safetensors::save(&w, &p).unwrap();
            p
        } else {
            good.clone()
        };
        let some = rng.random_range(1..4);
        let n = either(&mut rng, hostile, some, &[0usize, 1, 2, 3]);
        let rank = either(&mut rng, hostile, 4, &[4usize, 1, 3, 5]);
        let mut shape = vec![n, either(&mut rng, hostile, 3, &[3usize, 1, 4, 0])];
        for _ in 2..rank {
            let side = *pick(&mut rng, &[8usize, 16]);
            shape.push(either(
                &mut rng,
                hostile,
                side,
                &[16usize, 9, 4, 2, 1, 0, 33],
            ));
        }
        shape.truncate(rank);
        let mut x = HashMap::new();
        if either(&mut rng, hostile, true, &[true, true, false]) {
            let dt = either(&mut rng, hostile, DType::F32, &DTYPES);
            let images = tensor(&shape, dt, false, hostile, &mut rng);
            x.insert("images".to_string(), images);
        }
        if either(&mut rng, hostile, true, &[true, true, false]) {
            let ln = either(&mut rng, hostile, n, &[n, n + 1, n.saturating_sub(1)]);
            let lshape = either(&mut rng, hostile, [ln, 1], &[[ln, 1], [ln, 2]]);
            let lshape = &lshape[..if lshape[1] == 1 { 1 } else { 2 }];
            let dt = either(&mut rng, hostile, DType::I64, &DTYPES);
            let labels = tensor(lshape, dt, true, hostile, &mut rng);
            x.insert("labels".to_string(), labels);
        }
        let inputs = dir.path().join("in.safetensors");
        candle_core::safetensors::save(&x, &inputs).unwrap();
        let models = ["8 M 16 M 16 M", "8 M 16 M", "vgg11", "8 X", ""];
        let model = either(&mut rng, hostile, models[0], &models);
        let composites = [
            "epsilon-plus",
            "epsilon-plus-flat",
            "epsilon-alpha2-beta1",
            "epsilon-plus-zb",
            "zplus",
        ];
        let valid = *pick(&mut rng, &composites[..4]);
        let composite = either(&mut rng, hostile, valid, &composites);
        let opts = ExplainOptions {
            model: model.to_string(),
            batch_norm: false,
            weights: weights.clone(),
            inputs: inputs.clone(),
            out: dir.path().join("r.parquet"),
            composite: composite.to_string(),
            preprocess: lrprune::spec::Preprocess::Torchvision,
            heatmaps: None,
        };
        let tensors: Vec<_> = x
            .iter()
            .map(|(k, t)| (k.clone(), t.dims().to_vec(), t.dtype()))
            .collect();
        let what = format!("case {case}: --model `{model}` --composite {composite}, {tensors:?}");
        let (w, i) = (weights.display().to_string(), inputs.display().to_string());
        let names = ["--inputs", "--weights", "--model", "--composite", &w, &i];
        match fz.case(&what, || explain(&opts, &Device::Cpu)) {
            Ok(df) => {
                explained += 1;
                assert!(df.height() > 0, "{what}: no rows");
            }
            Err(e) => {
                refused += 1;
                names_one(&what, &e, &names);
            }
        }
    }
    assert!(
        explained > 500 && refused > 500,
        "explained {explained}, refused {refused}"
    );
}

/// A steps file with `rows` rows for run `id`, as the runner writes it.
fn steps_file(dir: &Path, id: &str, rows: &[lrprune::results::StepRecord]) -> PathBuf {
    let ident = lrprune::results::RunIdentity {
        run_id: id.into(),
        experiment: "t".into(),
        model: "m".into(),
        dataset: "d".into(),
        method: id.split('-').nth(2).unwrap().into(),
        variant: String::new(),
        seed: 0,
    };
    let mut df = lrprune::results::steps_frame(&ident, rows).unwrap();
    let p = lrprune::results::steps_path(dir, id);
    // Not the runner's durable write: an fsync per case would take the fuzz's whole budget.
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    polars::prelude::ParquetWriter::new(f)
        .finish(&mut df)
        .unwrap();
    p
}

fn step_row(k: i64, rng: &mut ChaCha8Rng) -> lrprune::results::StepRecord {
    let rate = 0.1 * k as f64;
    lrprune::results::StepRecord {
        step: k,
        pruning_rate: rate,
        filters_remaining: 100 - k * 10,
        params: 1000 - k * 90,
        flops: 2000 - k * 180,
        top1: rng.random_range(0.0..1.0),
        balanced_acc: rng.random_range(0.0..1.0),
        harmonic_acc: rng.random_range(0.0..1.0),
        class_acc: vec![0.5, 0.4, 0.9],
        layer_filters: vec![60 - k * 5, 40 - k * 5],
        kept: vec![],
        control_acc: None,
        step_size: 0.1,
        backoffs: 0,
        wall_ms: 1.0,
    }
}

/// One damage to `rows`: a hostile value, a step moved, rows dropped or repeated.
fn damage_rows(rows: &mut Vec<lrprune::results::StepRecord>, rng: &mut ChaCha8Rng) -> String {
    let i = rng.random_range(0..rows.len());
    let v = *pick(rng, &[f64::NAN, f64::INFINITY, -0.5, 1.5, -1e300, 0.0]);
    match rng.random_range(0..7) {
        0 => rows[i].top1 = v,
        1 => rows[i].pruning_rate = v,
        2 => rows[i].harmonic_acc = v,
        3 => rows[i].class_acc = vec![v; rng.random_range(0..4)],
        4 => rows[i].step = *pick(rng, &[0, -1, i64::MAX, rows[0].step]),
        5 => rows.truncate(rng.random_range(0..3)),
        _ => rows.push(rows[i].clone()),
    }
    format!("rows damaged at {i} with {v}")
}

/// One damage to the bytes of `path`: flipped, cut, extended or zeroed.
fn damage_bytes(path: &Path, rng: &mut ChaCha8Rng) -> String {
    let mut b = std::fs::read(path).unwrap();
    let what = match rng.random_range(0..4) {
        0 => {
            for _ in 0..rng.random_range(1..9) {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
            "bits flipped".to_string()
        }
        1 => {
            let n = rng.random_range(0..b.len());
            b.truncate(n);
            format!("cut to {n} bytes")
        }
        2 => {
            let at = rng.random_range(0..b.len());
            let junk: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
            b.splice(at..at, junk);
            format!("junk at {at}")
        }
        _ => {
            let (i, n) = (rng.random_range(0..b.len()), rng.random_range(1..256));
            let end = (i + n).min(b.len());
            b[i..end].fill(0);
            format!("zeroed {i}..{end}")
        }
    };
    std::fs::write(path, b).unwrap();
    what
}

#[test]
fn damaged_step_files_are_summarised_or_refused_by_name() {
    use lrprune::report::summary;
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut fz = Fuzz::new("steps", Duration::from_secs(3));
    let (mut read, mut refused) = (0, 0);
    let bar = indicatif::ProgressBar::hidden();
    for case in 0..1500 {
        let dir = tempfile::tempdir().unwrap();
        let rows = |rng: &mut ChaCha8Rng| (0..6).map(|k| step_row(k, rng)).collect::<Vec<_>>();
        steps_file(dir.path(), "m-d-a-s0", &rows(&mut rng));
        let mut b = rows(&mut rng);
        let how = if rng.random_bool(0.5) {
            let how = damage_rows(&mut b, &mut rng);
            steps_file(dir.path(), "m-d-b-s0", &b);
            how
        } else {
            let p = steps_file(dir.path(), "m-d-b-s0", &b);
            damage_bytes(&p, &mut rng)
        };
        let what = format!("case {case}: run b's steps {how}");
        let folders = [dir.path().to_path_buf()];
        let outcome = fz.case(&what, || -> anyhow::Result<()> {
            let steps = summary::load_steps(&folders, None, &bar)?;
            let per_run = summary::with_paired_ratio(&summary::run_summary(&steps)?, "a")?;
            summary::aggregate(&per_run, "a")?;
            Ok(())
        });
        match outcome {
            Ok(()) => read += 1,
            Err(e) => {
                refused += 1;
                names_one(&what, &e, &["m-d-b-s0"]);
            }
        }
    }
    assert!(
        read > 100 && refused > 500,
        "read {read}, refused {refused}"
    );
}

/// ONNX models a user might hand `[[model]] weights`: the resnet18 fixture's graph with
/// attributes, weights, inputs and op types mutated, and its bytes damaged. Each is imported
/// (then run on a tiny batch) or refused naming the file; nothing panics or hangs.
#[test]
fn onnx_models_are_imported_or_refused_by_name() {
    use lrprune::assets::protobuf::OnnxModel;
    use lrprune::model::arch::Tail;
    use lrprune::spec::Arch;
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read("tests/fixtures/onnx/resnet18.onnx").unwrap();
    let base = OnnxModel::decode(&original[..]).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(25);
    let mut fz = Fuzz::new("onnx", Duration::from_secs(3));
    let (mut imported, mut refused) = (0, 0);
    const OPS: [&str; 13] = [
        "Conv",
        "Relu",
        "Add",
        "MaxPool",
        "Concat",
        "Softmax",
        "Identity",
        "Flatten",
        "Transpose",
        "Pad",
        "Cast",
        "Shape",
        "Gather",
    ];
    const WILD: [i64; 9] = [0, -1, 1, 2, 3, 7, 64, i64::MAX, i64::MIN];
    for case in 0..300 {
        let path = dir.path().join(format!("m{case}.onnx"));
        let bytes = if case % 10 == 9 {
            // Damaged bytes: truncated or flipped.
            let mut b = original.clone();
            let at = rng.random_range(0..b.len());
            match rng.random_range(0..2) {
                0 => b.truncate(at),
                _ => b[at] ^= 1 << rng.random_range(0..8),
            }
            b
        } else {
            let mut m = base.clone();
            let g = m.graph.as_mut().unwrap();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..g.node.len());
                let node = &mut g.node[i];
                match rng.random_range(0..5) {
                    0 => node.op_type = OPS[rng.random_range(0..OPS.len())].into(),
                    1 if !node.attribute.is_empty() => {
                        let a = rng.random_range(0..node.attribute.len());
                        let a = &mut node.attribute[a];
                        a.i = WILD[rng.random_range(0..WILD.len())];
                        for v in &mut a.ints {
                            *v = WILD[rng.random_range(0..WILD.len())];
                        }
                    }
                    2 if !node.input.is_empty() => {
                        let k = rng.random_range(0..node.input.len());
                        node.input[k] = ["", "nope", "input"][rng.random_range(0..3)].into();
                    }
                    3 => {
                        let t = rng.random_range(0..g.initializer.len());
                        let t = &mut g.initializer[t];
                        match rng.random_range(0..3) {
                            0 => t.dims.push(WILD[rng.random_range(0..WILD.len())]),
                            1 => t.raw_data.truncate(t.raw_data.len() / 2),
                            _ => t.raw_data[..4].copy_from_slice(&f32::NAN.to_le_bytes()),
                        }
                    }
                    _ => {
                        g.node.remove(i);
                    }
                }
            }
            m.encode_to_vec()
        };
        std::fs::write(&path, &bytes).unwrap();
        let what = format!("case {case}");
        let got = fz.case(&what, || {
            let net = lrprune::model::load::from_checkpoint(
                Arch::Onnx,
                &[],
                false,
                &path,
                32,
                Tail::Features,
                &Device::Cpu,
            )?;
            let x = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu)?;
            net.forward(&x)?;
            anyhow::Ok(())
        });
        match got {
            Ok(()) => imported += 1,
            Err(e) => {
                names_one(&what, &e, &[&path.display().to_string()]);
                refused += 1;
            }
        }
    }
    assert!(
        imported > 10 && refused > 100,
        "imported {imported}, refused {refused}"
    );
}
