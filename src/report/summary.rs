//! From step rows to one row per run (`summary.parquet`) and to mean ± sd over seeds.
//!
//! Polars does the work: a lazy scan of every steps file, per-run AUCs as group-by
//! expressions, and the aggregation over seeds as a second group-by.

use super::curve;
use anyhow::{bail, Context, Result};
use polars::prelude::*;
use std::path::{Path, PathBuf};

/// Columns that identify a curve; seeds are aggregated over everything else.
pub const GROUP: [&str; 4] = ["model", "dataset", "variant", "method"];
/// Rates at which accuracy is reported.
pub const RATES: [f64; 3] = [0.5, 0.7, 0.9];
/// Per-run metrics aggregated over seeds, in table order.
pub const METRICS: [&str; 11] = [
    "auc_class",
    "auc_top1",
    "auc_harmonic",
    "auc_worst",
    "balanced_at_0.5",
    "balanced_at_0.7",
    "balanced_at_0.9",
    "top1_at_0.9",
    "safe_rate",
    "params_frac",
    "flops_frac",
];

/// Every finished run's steps file, sorted; a clear error when there are none.
pub fn step_files(results: &Path) -> Result<Vec<PathBuf>> {
    let dir = results.join("steps");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("{}: no steps/ folder (fix: run `lrprune run SPEC` first, or point at results/<experiment>)", results.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "{}: no .parquet step files (fix: run `lrprune run SPEC` first)",
            dir.display()
        );
    }
    Ok(files)
}

/// The steps files of several results folders, one per run: a run found in more than one
/// folder (a shard copied twice) is taken once when its step rows agree, and is an error
/// naming both files when they differ.
pub fn merged_step_files(folders: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut by_run: std::collections::BTreeMap<String, PathBuf> = Default::default();
    for folder in folders {
        for f in step_files(folder)? {
            let id = f
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            match by_run.get(&id) {
                None => {
                    by_run.insert(id, f);
                }
                Some(first) => {
                    let (a, b) = (
                        crate::results::step_digest(first)?,
                        crate::results::step_digest(&f)?,
                    );
                    if a != b {
                        bail!(
                            "run {id} has different results in {} and {} (fix: keep the one you trust and delete the other)",
                            first.display(),
                            f.display()
                        );
                    }
                }
            }
        }
    }
    Ok(by_run.into_values().collect())
}

/// The runs' metadata files (`runs/`) of several results folders: a run found in more than
/// one must have the same metadata (all but its wall time), as [`merged_step_files`] holds
/// its step rows to, else the error names both files.
pub fn check_merged_runs(folders: &[PathBuf]) -> Result<()> {
    let mut by_run: std::collections::BTreeMap<std::ffi::OsString, PathBuf> = Default::default();
    for folder in folders {
        let Ok(dir) = std::fs::read_dir(folder.join("runs")) else {
            continue;
        };
        let mut files: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect();
        files.sort();
        for f in files {
            let id = f.file_name().unwrap_or_default().to_os_string();
            match by_run.get(&id) {
                None => {
                    by_run.insert(id, f);
                }
                Some(first) => {
                    if crate::results::run_digest(first)? != crate::results::run_digest(&f)? {
                        bail!(
                            "run {} has different metadata in {} and {} (fix: keep the one you trust and delete the other, with its steps file)",
                            Path::new(&id).with_extension("").display(),
                            first.display(),
                            f.display()
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// Damaged step rows would bend a curve or its AUC without a word: an accuracy that is NaN
/// or infinite, a pruning rate outside [0, 1], or a step twice in one run are refused,
/// naming the file and the row.
fn check_rows(steps: &DataFrame, files: &[PathBuf]) -> Result<()> {
    let f64s = |name: &str| -> Result<Float64Chunked> {
        Ok(steps.column(name)?.cast(&DataType::Float64)?.f64()?.clone())
    };
    let ids = steps.column("run_id")?.str()?.clone();
    let step = steps.column("step")?.cast(&DataType::Int64)?.i64()?.clone();
    let rate = f64s("pruning_rate")?;
    let accs: Vec<(&str, Float64Chunked)> = ["top1", "balanced_acc", "harmonic_acc"]
        .into_iter()
        .filter(|c| steps.column(c).is_ok())
        .map(|c| Ok((c, f64s(c)?)))
        .collect::<Result<_>>()?;
    for i in 0..steps.height() {
        let (id, k) = (ids.get(i).unwrap_or(""), step.get(i));
        let problem = match rate.get(i) {
            Some(r) if (0.0..=1.0).contains(&r) => {
                accs.iter().find_map(|(name, c)| match c.get(i) {
                    Some(v) if v.is_finite() => None,
                    v => Some(format!(
                        "{name} = {}",
                        v.map_or("null".into(), |v| v.to_string())
                    )),
                })
            }
            r => Some(format!(
                "pruning_rate = {} (outside [0, 1])",
                r.map_or("null".into(), |r| r.to_string())
            )),
        }
        .or_else(|| {
            // Rows are sorted by run and step: a repeated step is the next row.
            (i > 0 && ids.get(i - 1) == Some(id) && step.get(i - 1) == k)
                .then(|| "the step appears twice".to_string())
        });
        if let Some(problem) = problem {
            let file = files
                .iter()
                .find(|f| f.file_stem().is_some_and(|s| s == id))
                .map_or(format!("run {id}"), |f| f.display().to_string());
            let k = k.map_or("null".into(), |k| k.to_string());
            bail!("{file}: the row of step {k}: {problem} (fix: delete the file and rerun the spec with --resume)");
        }
    }
    Ok(())
}

/// All step rows of `folders` (merged: [`merged_step_files`]), sorted by run and step.
/// Files whose schema differs are named in the error.
pub fn load_steps(
    folders: &[PathBuf],
    only: Option<&std::collections::HashSet<String>>,
    progress: &indicatif::ProgressBar,
) -> Result<DataFrame> {
    let results = folders.first().context("no results folder")?;
    let mut files = merged_step_files(folders)?;
    if let Some(ids) = only {
        files.retain(|f| {
            f.file_stem()
                .is_some_and(|s| ids.contains(s.to_string_lossy().as_ref()))
        });
        if files.is_empty() {
            bail!(
                "{}: none of the spec's runs has results yet",
                results.display()
            );
        }
    }
    progress.set_length(files.len() as u64);
    let mut first: Option<(PathBuf, Schema)> = None;
    for f in &files {
        use crate::results::parquet_read;
        let schema = parquet_read(f, |f| ParquetReader::new(f).schema())?;
        let schema = Schema::from_arrow_schema(&schema);
        // A run has step 0 and at least one pruned step: fewer rows are a damaged file,
        // which would silently drop the run (0 rows) or give it a NaN AUC (1 row).
        let rows = parquet_read(f, |f| ParquetReader::new(f).num_rows())?;
        if rows < 2 && schema.contains("pruning_rate") {
            bail!(
                "{}: a steps file with {rows} row(s) is damaged (a run has step 0 and at least one pruned step) (fix: delete it and rerun the spec with --resume)",
                f.display()
            );
        }
        match &first {
            None => first = Some((f.clone(), schema)),
            Some((f0, s0)) if *s0 != schema => {
                let cols = |s: &Schema| {
                    s.iter_names()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                bail!(
                    "mixed schemas in {}: {} has [{}] but {} has [{}] (fix: keep one experiment's results per folder, or re-run the old runs with this version)",
                    results.display(),
                    f0.display(),
                    cols(s0),
                    f.display(),
                    cols(&schema)
                );
            }
            _ => {}
        }
        progress.inc(1);
    }
    // File by file, not one scan of them all: an error (or a panic of the reader, which
    // has some on damaged pages) then names its file.
    let mut frames = files
        .iter()
        .map(|f| crate::results::read_parquet(f))
        .collect::<Result<Vec<_>>>()
        .map_err(|e| {
            anyhow::anyhow!("{e:#} (fix: delete the file and rerun the spec with --resume)")
        })?
        .into_iter();
    let mut df = frames.next().context("no step files")?;
    for f in frames {
        df.vstack_mut(&f)?;
    }
    let df = df.sort(["run_id", "step"], SortMultipleOptions::default())?;
    check_rows(&df, &files)?;
    warn_duplicates(&df)?;
    Ok(df)
}

/// Runs of the same curve and seed under different ids (e.g. left over from an older spec)
/// would be averaged as if they were extra seeds: say so.
fn warn_duplicates(steps: &DataFrame) -> Result<()> {
    let mut keys: Vec<Expr> = GROUP.map(col).to_vec();
    keys.push(col("seed"));
    let dup = steps
        .clone()
        .lazy()
        .group_by(keys)
        .agg([col("run_id").n_unique().alias("runs")])
        .filter(col("runs").gt(lit(1)))
        .collect()?;
    if dup.height() > 0 {
        eprintln!(
            "warning: {} (method, seed) pairs have more than one run in this folder (stale results of an older spec?); they are aggregated as extra seeds. `lrprune run` reports only the spec's current runs.",
            dup.height()
        );
    }
    Ok(())
}

/// Trapezoid AUC of `metric` over `pruning_rate`, normalised by the rate span, per group.
fn auc_expr(metric: &str) -> Expr {
    let r = col("pruning_rate");
    let m = col(metric);
    ((r.clone() - r.clone().shift(lit(1))) * (m.clone() + m.shift(lit(1))) * lit(0.5)).sum()
        / (r.clone().last() - r.first())
}

fn list_f64(df: &DataFrame, name: &str) -> Result<Vec<Vec<f64>>> {
    super::figures::nested(df.column(name)?.as_materialized_series())
}

/// One row per run: AUCs, accuracy at fixed rates, the safe rate, final cost fractions.
pub fn run_summary(steps: &DataFrame) -> Result<DataFrame> {
    let ident = [
        "experiment",
        "model",
        "dataset",
        "method",
        "variant",
        "seed",
    ];
    let mut aggs: Vec<Expr> = ident.iter().map(|c| col(*c).first()).collect();
    aggs.push(auc_expr("top1").alias("auc_top1"));
    aggs.push(auc_expr("balanced_acc").alias("auc_class"));
    aggs.push(col("pruning_rate").last().alias("max_rate"));
    aggs.push(
        (col("params").last().cast(DataType::Float64)
            / col("params").first().cast(DataType::Float64))
        .alias("params_frac"),
    );
    aggs.push(
        (col("flops").last().cast(DataType::Float64)
            / col("flops").first().cast(DataType::Float64))
        .alias("flops_frac"),
    );
    for c in [
        "pruning_rate",
        "top1",
        "balanced_acc",
        "harmonic_acc",
        "class_acc",
    ] {
        aggs.push(col(c).implode(true).alias(format!("{c}_list")));
    }
    let per_run = steps
        .clone()
        .lazy()
        .group_by_stable([col("run_id")])
        .agg(aggs)
        .collect()?;
    // Interpolated points need the whole curve: computed from each run's lists.
    let rates = list_f64(&per_run, "pruning_rate_list")?;
    let top1 = list_f64(&per_run, "top1_list")?;
    let bal = list_f64(&per_run, "balanced_acc_list")?;
    let harmonic = list_f64(&per_run, "harmonic_acc_list")?;
    // The worst class at every step (class accuracies of one run are a list per step).
    let class_lists = per_run.column("class_acc_list")?.list()?.clone();
    let worst: Vec<Vec<f64>> = (0..per_run.height())
        .map(|i| {
            let steps = class_lists.get_as_series(i).context("null class list")?;
            Ok(super::figures::nested(&steps)?
                .iter()
                .map(|c| c.iter().copied().fold(f64::INFINITY, f64::min))
                .collect())
        })
        .collect::<Result<_>>()?;
    let mut out = per_run.drop_many([
        "pruning_rate_list",
        "top1_list",
        "balanced_acc_list",
        "harmonic_acc_list",
        "class_acc_list",
    ]);
    for (name, values) in [("auc_harmonic", &harmonic), ("auc_worst", &worst)] {
        let auc: Vec<f64> = rates
            .iter()
            .zip(values)
            .map(|(r, v)| curve::auc(r, v))
            .collect();
        out.with_column(Column::new(name.into(), auc))?;
    }
    for (name, values) in [("balanced", &bal), ("top1", &top1)] {
        for &x in &RATES {
            let at: Vec<Option<f64>> = rates
                .iter()
                .zip(values)
                .map(|(r, v)| curve::at(r, v, x))
                .collect();
            out.with_column(Column::new(format!("{name}_at_{x}").into(), at))?;
        }
    }
    let safe: Vec<f64> = rates
        .iter()
        .zip(&bal)
        .map(|(r, v)| curve::safe_rate(r, v, crate::eval::SAFE_TOLERANCE))
        .collect();
    out.with_column(Column::new("safe_rate".into(), safe))?;
    Ok(out)
}

/// Each run's class AUC divided by the `baseline` method's on the same model, dataset,
/// variant and seed (`paired_ratio`, null without such a baseline run).
pub fn with_paired_ratio(summary: &DataFrame, baseline: &str) -> Result<DataFrame> {
    let keys = [col("model"), col("dataset"), col("variant"), col("seed")];
    let base = summary
        .clone()
        .lazy()
        .filter(col("method").eq(lit(baseline)))
        .select([
            col("model"),
            col("dataset"),
            col("variant"),
            col("seed"),
            col("auc_class").alias("base_auc_class_seed"),
        ]);
    Ok(summary
        .clone()
        .lazy()
        .join(base, keys.clone(), keys, JoinArgs::new(JoinType::Left))
        .with_column((col("auc_class") / col("base_auc_class_seed")).alias("paired_ratio"))
        .drop(Selector::ByName {
            names: ["base_auc_class_seed".into()].into(),
            strict: true,
        })
        .collect()?)
}

/// Mean ± sd over seeds per curve, with each metric's ratio to the `baseline` method and the
/// paired statistics of `paired_ratio` (mean, wins, losses, bootstrap 95 % interval).
pub fn aggregate(summary: &DataFrame, baseline: &str) -> Result<DataFrame> {
    let mut agg = aggregate_means(summary, baseline)?;
    let ratios = summary
        .clone()
        .lazy()
        .group_by_stable(GROUP.map(col))
        .agg([col("paired_ratio").implode(true)])
        .collect()?;
    let key = |df: &DataFrame, i: usize| -> Result<Vec<String>> {
        GROUP
            .iter()
            .map(|c| Ok(df.column(c)?.str()?.get(i).unwrap_or("").to_string()))
            .collect()
    };
    let lists = ratios.column("paired_ratio")?.list()?.clone();
    let mut by_key = std::collections::HashMap::new();
    for i in 0..ratios.height() {
        let r: Vec<f64> = match lists.get_as_series(i) {
            Some(s) => {
                let c = s.f64()?;
                (0..c.len()).map(|j| c.get(j).unwrap_or(f64::NAN)).collect()
            }
            None => Vec::new(),
        };
        by_key.insert(key(&ratios, i)?, super::paired::summarize(&r));
    }
    let (mut mean, mut wins, mut losses, mut lo, mut hi) = (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..agg.height() {
        let p = by_key.get(&key(&agg, i)?).cloned().flatten();
        mean.push(p.as_ref().map(|p| p.mean));
        wins.push(p.as_ref().map(|p| p.wins as u32));
        losses.push(p.as_ref().map(|p| p.losses as u32));
        lo.push(p.as_ref().and_then(|p| p.ci.map(|c| c.0)));
        hi.push(p.as_ref().and_then(|p| p.ci.map(|c| c.1)));
    }
    agg.with_column(Column::new("paired_ratio_mean".into(), mean))?;
    agg.with_column(Column::new("paired_wins".into(), wins))?;
    agg.with_column(Column::new("paired_losses".into(), losses))?;
    agg.with_column(Column::new("paired_ci_low".into(), lo))?;
    agg.with_column(Column::new("paired_ci_high".into(), hi))?;
    Ok(agg)
}

fn aggregate_means(summary: &DataFrame, baseline: &str) -> Result<DataFrame> {
    let mut aggs = vec![len().alias("seeds")];
    for m in METRICS {
        aggs.push(col(m).mean().alias(format!("{m}_mean")));
        aggs.push(col(m).std(1).alias(format!("{m}_sd")));
    }
    let agg = summary
        .clone()
        .lazy()
        .group_by_stable(GROUP.map(col))
        .agg(aggs);
    let keys = [col("model"), col("dataset"), col("variant")];
    let base = agg.clone().filter(col("method").eq(lit(baseline))).select([
        col("model"),
        col("dataset"),
        col("variant"),
        col("auc_class_mean").alias("base_auc_class"),
        col("auc_top1_mean").alias("base_auc_top1"),
    ]);
    let joined = agg
        .join(base, keys.clone(), keys, JoinArgs::new(JoinType::Left))
        .with_columns([
            (col("auc_class_mean") / col("base_auc_class")).alias("auc_class_ratio"),
            (col("auc_top1_mean") / col("base_auc_top1")).alias("auc_top1_ratio"),
        ])
        .drop(Selector::ByName {
            names: ["base_auc_class".into(), "base_auc_top1".into()].into(),
            strict: true,
        })
        .sort(GROUP, SortMultipleOptions::default())
        .collect()?;
    Ok(joined)
}
