//! The five comparison figures of a sweep, per (model, dataset):
//! top-1 and balanced accuracy vs rate (mean ± sd band over seeds), per-class accuracy vs rate
//! (where cascading collapse shows), the per-layer filter profile, and accuracy vs FLOPs.

use super::curve;
use super::plots::{render, Chart, Line};
use anyhow::{Context, Result};
use polars::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The most legend entries a chart shows.
const LEGEND_MAX: usize = 16;

/// One run's curves, pulled out of the step rows.
pub struct RunCurve {
    pub run_id: String,
    pub model: String,
    pub dataset: String,
    /// `method` or `method/variant`.
    pub curve: String,
    pub seed: i64,
    pub rates: Vec<f64>,
    pub top1: Vec<f64>,
    pub balanced: Vec<f64>,
    pub flops_frac: Vec<f64>,
    pub class_acc: Vec<Vec<f64>>,
    pub layer_frac: Vec<Vec<f64>>,
}

fn f64s(s: &Series) -> Result<Vec<f64>> {
    Ok(s.cast(&DataType::Float64)?
        .f64()?
        .into_no_null_iter()
        .collect())
}

/// A list column as nested `f64` vectors (one per row).
pub(crate) fn nested(s: &Series) -> Result<Vec<Vec<f64>>> {
    let l = s.list()?;
    (0..l.len())
        .map(|i| f64s(&l.get_as_series(i).context("null list")?))
        .collect()
}

pub fn run_curves(steps: &DataFrame) -> Result<Vec<RunCurve>> {
    let per_run = steps
        .clone()
        .lazy()
        .group_by_stable([col("run_id")])
        .agg([
            col("model").first(),
            col("dataset").first(),
            col("method").first(),
            col("variant").first(),
            col("seed").first(),
            col("pruning_rate").implode(true),
            col("top1").implode(true),
            col("balanced_acc").implode(true),
            col("flops").implode(true),
            col("class_acc").implode(true),
            col("layer_filters").implode(true),
        ])
        .collect()?;
    let s = |c: &str| -> Result<StringChunked> { Ok(per_run.column(c)?.str()?.clone()) };
    let (model, dataset, method, variant) =
        (s("model")?, s("dataset")?, s("method")?, s("variant")?);
    let run_id = s("run_id")?;
    let seed = per_run.column("seed")?.i64()?.clone();
    let list = |c: &str, i: usize| -> Result<Series> {
        per_run
            .column(c)?
            .list()?
            .get_as_series(i)
            .context("null list")
    };
    let mut out = Vec::new();
    for i in 0..per_run.height() {
        let flops = f64s(&list("flops", i)?)?;
        let layers = nested(&list("layer_filters", i)?)?;
        let first_layers = layers.first().cloned().unwrap_or_default();
        let (m, v) = (method.get(i).unwrap_or(""), variant.get(i).unwrap_or(""));
        out.push(RunCurve {
            run_id: run_id.get(i).unwrap_or("").into(),
            model: model.get(i).unwrap_or("").into(),
            dataset: dataset.get(i).unwrap_or("").into(),
            curve: if v.is_empty() {
                m.into()
            } else {
                format!("{m}/{v}")
            },
            seed: seed.get(i).unwrap_or(0),
            rates: f64s(&list("pruning_rate", i)?)?,
            top1: f64s(&list("top1", i)?)?,
            balanced: f64s(&list("balanced_acc", i)?)?,
            flops_frac: flops.iter().map(|f| f / flops[0]).collect(),
            class_acc: nested(&list("class_acc", i)?)?,
            layer_frac: layers
                .iter()
                .map(|row| row.iter().zip(&first_layers).map(|(a, b)| a / b).collect())
                .collect(),
        });
    }
    Ok(out)
}

/// Mean ± sd over seeds on a common rate grid, aggregated by Polars.
fn banded(
    runs: &[&RunCurve],
    metric: fn(&RunCurve) -> &Vec<f64>,
    colors: &BTreeMap<String, usize>,
) -> Result<Vec<Line>> {
    let max_rate = runs
        .iter()
        .filter_map(|r| r.rates.last())
        .cloned()
        .fold(0.0, f64::max);
    let grid: Vec<f64> = (0..=60).map(|j| max_rate * j as f64 / 60.0).collect();
    let (mut name, mut xs, mut ys) = (Vec::new(), Vec::new(), Vec::new());
    for r in runs {
        for &x in &grid {
            if let Some(y) = curve::at(&r.rates, metric(r), x) {
                name.push(r.curve.clone());
                xs.push(x);
                ys.push(y);
            }
        }
    }
    let long = DataFrame::new(
        xs.len(),
        vec![
            Column::new("curve".into(), name),
            Column::new("x".into(), xs),
            Column::new("y".into(), ys),
        ],
    )?;
    let agg = long
        .lazy()
        .group_by([col("curve"), col("x")])
        .agg([
            col("y").mean().alias("mean"),
            col("y").std(1).fill_null(lit(0.0)).alias("sd"),
        ])
        .sort(["curve", "x"], SortMultipleOptions::default())
        .collect()?;
    let curve = agg.column("curve")?.str()?.clone();
    let (x, mean, sd) = (
        agg.column("x")?.f64()?.clone(),
        agg.column("mean")?.f64()?.clone(),
        agg.column("sd")?.f64()?.clone(),
    );
    let mut lines: BTreeMap<String, Line> = BTreeMap::new();
    for i in 0..agg.height() {
        let c = curve.get(i).unwrap_or("").to_string();
        let (xv, m, s) = (
            x.get(i).unwrap_or(0.0),
            mean.get(i).unwrap_or(0.0),
            sd.get(i).unwrap_or(0.0),
        );
        let line = lines.entry(c.clone()).or_insert_with(|| Line {
            label: c.clone(),
            points: vec![],
            band: vec![],
            color: colors[&c],
        });
        line.points.push((xv, m));
        line.band.push((xv, m - s, m + s));
    }
    Ok(lines.into_values().collect())
}

fn plain(label: String, xs: &[f64], ys: impl Iterator<Item = f64>, color: usize) -> Line {
    Line {
        label,
        points: xs.iter().cloned().zip(ys).collect(),
        band: vec![],
        color,
    }
}

/// Render all five figures for every (model, dataset) into `dir`.
pub fn render_all(
    curves: &[RunCurve],
    labels: &super::Labels,
    focus: &str,
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    crate::fsio::create_dir_all(dir)?;
    let names: std::collections::BTreeSet<String> =
        curves.iter().map(|c| c.curve.clone()).collect();
    let colors: BTreeMap<String, usize> =
        names.into_iter().enumerate().map(|(i, n)| (n, i)).collect();
    let mut combos: Vec<(String, String)> = curves
        .iter()
        .map(|c| (c.model.clone(), c.dataset.clone()))
        .collect();
    combos.sort();
    combos.dedup();
    let mut files = Vec::new();
    for (model, dataset) in combos {
        let runs: Vec<&RunCurve> = curves
            .iter()
            .filter(|c| c.model == model && c.dataset == dataset)
            .collect();
        let max_rate = runs
            .iter()
            .filter_map(|r| r.rates.last())
            .cloned()
            .fold(0.0, f64::max)
            .max(1e-6);
        let tag = format!("{model}-{dataset}");
        let chart = |title: &str, x: &str, y: &str, xr: (f64, f64), lines: Vec<Line>| Chart {
            title: format!("{title} — {model} on {dataset}"),
            x_label: x.into(),
            y_label: y.into(),
            x_range: xr,
            y_range: (0.0, 1.0),
            lines,
        };
        let rate = "pruning rate (fraction of conv filters removed)";
        let mut out = |name: &str, c: Chart| -> Result<()> {
            files.extend(render(&c, &dir.join(format!("{name}-{tag}")))?);
            Ok(())
        };
        out(
            "top1_vs_rate",
            chart(
                "Top-1 accuracy",
                rate,
                "top-1 accuracy (test)",
                (0.0, max_rate),
                banded(&runs, |r| &r.top1, &colors)?,
            ),
        )?;
        out(
            "balanced_vs_rate",
            chart(
                "Class-averaged accuracy",
                rate,
                "balanced accuracy (test)",
                (0.0, max_rate),
                banded(&runs, |r| &r.balanced, &colors)?,
            ),
        )?;

        // The focus method's first seed: per-class curves and its layer profile.
        let run = runs
            .iter()
            .filter(|r| r.curve == focus)
            .min_by_key(|r| r.seed)
            .or_else(|| runs.iter().min_by_key(|r| (r.curve.clone(), r.seed)))
            .context("no runs to plot")?;
        let cls = labels
            .classes
            .get(&format!("{}|{}", run.model, run.dataset));
        let groups = labels.groups.get(&run.run_id);
        let n_classes = run.class_acc.first().map_or(0, Vec::len);
        let per_class = (0..n_classes)
            .map(|k| {
                let label = cls
                    .and_then(|c| c.get(k))
                    .cloned()
                    .unwrap_or_else(|| format!("class {k}"));
                plain(label, &run.rates, run.class_acc.iter().map(|a| a[k]), k)
            })
            .collect();
        let what = format!("{} (seed {})", run.curve, run.seed);
        out(
            "class_acc_vs_rate",
            chart(
                &format!("Per-class accuracy, {what}"),
                rate,
                "class accuracy (test)",
                (0.0, max_rate),
                per_class,
            ),
        )?;
        let n_layers = run.layer_frac.first().map_or(0, Vec::len);
        // A legend of more than LEGEND_MAX entries runs off the chart (ResNet-50 has 37
        // groups): then only the groups pruned furthest by the end are named.
        let last = run.layer_frac.last().cloned().unwrap_or_default();
        let mut by_drop: Vec<usize> = (0..n_layers).collect();
        by_drop.sort_by(|&a, &b| last[a].total_cmp(&last[b]).then(a.cmp(&b)));
        let named: std::collections::HashSet<usize> =
            by_drop.into_iter().take(LEGEND_MAX).collect();
        let profile = (0..n_layers)
            .map(|l| {
                let name = groups
                    .and_then(|g| g.get(l))
                    .cloned()
                    .unwrap_or_else(|| format!("conv {}", l + 1));
                let label = if named.contains(&l) {
                    name
                } else {
                    String::new()
                };
                plain(label, &run.rates, run.layer_frac.iter().map(|f| f[l]), l)
            })
            .collect();
        let title = if n_layers > LEGEND_MAX {
            format!("Group widths, {what}, {LEGEND_MAX} most pruned named")
        } else {
            format!("Filters left per pruning group, {what}")
        };
        out(
            "layer_profile",
            chart(
                &title,
                rate,
                "fraction of the group's filters left",
                (0.0, max_rate),
                profile,
            ),
        )?;

        // Accuracy against compute: every run, one colour per method.
        let mut labelled = std::collections::HashSet::new();
        let flops = runs
            .iter()
            .map(|r| {
                let label = if labelled.insert(r.curve.clone()) {
                    r.curve.clone()
                } else {
                    String::new()
                };
                plain(
                    label,
                    &r.flops_frac,
                    r.balanced.iter().cloned(),
                    colors[&r.curve],
                )
            })
            .collect();
        out(
            "balanced_vs_flops",
            chart(
                "Accuracy vs compute",
                "FLOPs fraction of the unpruned network",
                "balanced accuracy (test)",
                (0.0, 1.0),
                flops,
            ),
        )?;
    }
    Ok(files)
}
