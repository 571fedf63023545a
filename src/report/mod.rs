//! Reports: per-run summaries, seed-aggregated tables and comparison plots from the Parquet
//! results of a sweep (`lrprune report`, also run at the end of `lrprune run`).

pub mod curve;
pub mod figures;
pub mod html;
pub mod paired;
pub mod plots;
pub mod summary;
pub mod tables;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use polars::prelude::DataFrame;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub struct ReportOptions {
    /// Output directory; default `<results>/report`.
    pub out: Option<PathBuf>,
    /// Method whose AUCs the ratios divide by.
    pub baseline: String,
    /// Method (or `method/variant`) whose per-class curves and layer profile are drawn;
    /// default: the baseline.
    pub focus: Option<String>,
    pub quiet: bool,
    /// Only these run ids (a spec's current runs); `None` = every steps file in the folder.
    pub only: Option<std::collections::HashSet<String>>,
    /// More results folders merged into this report (shards gathered from other machines);
    /// a run in several of them must have the same step rows.
    pub merge: Vec<PathBuf>,
}

/// What a report wrote.
pub struct Report {
    pub summary: PathBuf,
    pub tables: Vec<PathBuf>,
    pub plots: Vec<PathBuf>,
    /// The Markdown table, for printing.
    pub markdown: String,
}

/// Names for the plots' legends, from the runs' metadata files.
#[derive(Default)]
pub struct Labels {
    /// Class names per `model|dataset`.
    pub classes: BTreeMap<String, Vec<String>>,
    /// Pruning-group names per run id, in `layer_filters` order.
    pub groups: BTreeMap<String, Vec<String>>,
}

/// The first row of list-of-strings column `name`, if the frame has one.
fn str_list(df: &DataFrame, name: &str) -> Option<Vec<String>> {
    let s = df.column(name).ok()?.list().ok()?.get_as_series(0)?;
    let names = s.str().ok()?;
    Some(
        (0..names.len())
            .filter_map(|i| names.get(i))
            .map(String::from)
            .collect(),
    )
}

fn labels(results: &Path) -> Labels {
    let mut out = Labels::default();
    let Ok(dir) = std::fs::read_dir(results.join("runs")) else {
        return out;
    };
    for f in dir.filter_map(|e| e.ok().map(|e| e.path())) {
        let Ok(df) = crate::results::read_parquet(&f) else {
            continue;
        };
        let get = |c: &str| {
            df.column(c)
                .ok()
                .and_then(|c| c.str().ok().and_then(|s| s.get(0).map(String::from)))
        };
        // A list column; runs written before it was one joined the names with `|`.
        let classes = str_list(&df, "class_names")
            .or_else(|| get("class_names").map(|n| n.split('|').map(String::from).collect()));
        if let (Some(m), Some(d), Some(n)) = (get("model"), get("dataset"), classes) {
            out.classes.insert(format!("{m}|{d}"), n);
        }
        // Runs written before pruning groups had names have no `group_names`.
        if let (Some(id), Some(g)) = (get("run_id"), str_list(&df, "group_names")) {
            out.groups.insert(id, g);
        }
    }
    out
}

pub fn report(results: &Path, opts: &ReportOptions) -> Result<Report> {
    let out = opts.out.clone().unwrap_or_else(|| results.join("report"));
    crate::fsio::check_dir_destination(&out).context("--out")?;
    crate::fsio::create_dir_all(&out)?;
    let bar = if opts.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("report: reading {pos}/{len} step files {bar:30}").unwrap(),
    );
    let mut folders = vec![results.to_path_buf()];
    folders.extend(opts.merge.iter().cloned());
    let steps = summary::load_steps(&folders, opts.only.as_ref(), &bar)?;
    summary::check_merged_runs(&folders)?;
    bar.finish_and_clear();
    let opts = &resolve_methods(&steps, opts)?;

    let mut per_run = summary::with_paired_ratio(&summary::run_summary(&steps)?, &opts.baseline)?;
    let summary_path = results.join("summary.parquet");
    crate::results::write_parquet_atomic(&summary_path, &mut per_run)?;
    let agg = summary::aggregate(&per_run, &opts.baseline)?;

    let markdown = tables::markdown(&agg, &opts.baseline)?;
    let mut written = Vec::new();
    for (name, text) in [
        ("summary.md", markdown.clone()),
        ("summary.csv", tables::csv(&agg)?),
        ("summary.tex", tables::latex(&agg, &opts.baseline)?),
    ] {
        let p = out.join(name);
        write_atomic(&p, text.as_bytes())?;
        written.push(p);
    }
    let curves = figures::run_curves(&steps)?;
    let focus = opts.focus.clone().unwrap_or_else(|| opts.baseline.clone());
    let mut names = Labels::default();
    for folder in &folders {
        let more = labels(folder);
        names.classes.extend(more.classes);
        names.groups.extend(more.groups);
    }
    let plots = figures::render_all(&curves, &names, &focus, &out)?;
    let note = tables::note(&opts.baseline);
    written.push(html::write(
        &out,
        &folders,
        &agg,
        &note,
        &plots,
        opts.only.as_ref(),
    )?);
    Ok(Report {
        summary: summary_path,
        tables: written,
        plots,
        markdown,
    })
}

/// The baseline (`""`: `lrp` if present, else the first method) and focus, each checked
/// against the methods the results hold.
fn resolve_methods(steps: &DataFrame, opts: &ReportOptions) -> Result<ReportOptions> {
    let col = steps.column("method")?.str()?.clone();
    let mut methods: Vec<String> = (0..col.len())
        .filter_map(|i| col.get(i))
        .map(String::from)
        .collect();
    methods.sort();
    methods.dedup();
    let baseline = match opts.baseline.as_str() {
        "" if methods.iter().any(|m| m == "lrp") => "lrp".to_string(),
        "" => methods.first().cloned().unwrap_or_default(),
        b => b.to_string(),
    };
    for (flag, name) in [
        ("--baseline", Some(&baseline)),
        ("--focus", opts.focus.as_ref()),
    ] {
        if let Some(name) = name {
            // A focus may name a variant, `method/variant`.
            let method = name.split('/').next().unwrap_or(name);
            if !methods.iter().any(|m| m == method) {
                anyhow::bail!(
                    "{flag} `{name}`: no run of that method in these results (fix: one of {})",
                    methods.join(", ")
                );
            }
        }
    }
    Ok(ReportOptions {
        out: opts.out.clone(),
        baseline,
        focus: opts.focus.clone(),
        quiet: opts.quiet,
        only: opts.only.clone(),
        merge: opts.merge.clone(),
    })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::results::write_atomic(path, |tmp| Ok(std::fs::write(tmp, bytes)?))
}
