//! `lrprune bench --search`: the layer search's cost against plain `lrp`, per task of
//! --spec (the first seed of every model × dataset that has an `lrp` run), every method of
//! kind `aa-lrp` in the spec beside it (the default `aa-lrp` when it has none). Each task is
//! prepared once (loading, head training and the intact relevance shared and not timed);
//! the runs alternate, median of the repeats, each with the process's peak resident memory
//! while it ran. Written between markers into docs/performance.md.

use crate::runner;
use crate::spec::{ControlSettings, MethodKind, MethodSpec, RunConfig};
use crate::sysmem;
use anyhow::{bail, Result};
use std::fmt::Write;
use std::time::Instant;

pub const START: &str = "<!-- lrprune bench --search: start -->";
pub const END: &str = "<!-- lrprune bench --search: end -->";

/// `cfg` running the default `aa-lrp`, the measured search ([`ControlSettings::chosen`]).
pub fn search_config(cfg: &RunConfig) -> RunConfig {
    let control = ControlSettings::chosen();
    let mut c = cfg.clone();
    c.method = MethodSpec {
        name: "aa-lrp".into(),
        kind: MethodKind::AaLrp,
        lrp: None,
        control: Some(control.clone()),
        normalize: None,
        schedule: Default::default(),
    };
    c.control = Some(control);
    c
}

/// One timed method on one task.
struct Row {
    model: String,
    input: usize,
    groups: usize,
    control_images: usize,
    method: String,
    screen: usize,
    steps: usize,
    seconds: f64,
    ratio: f64,
    peak_gib: Option<f64>,
}

/// The runs to time: per task, its `lrp` run and the `aa-lrp` runs of the same task.
fn tasks(runs: &[RunConfig]) -> Vec<(RunConfig, Vec<RunConfig>)> {
    let same_task = |a: &RunConfig, b: &RunConfig| {
        a.model.name == b.model.name && a.dataset.name == b.dataset.name && a.seed == b.seed
    };
    let mut out: Vec<(RunConfig, Vec<RunConfig>)> = Vec::new();
    for lrp in runs.iter().filter(|r| r.method.kind == MethodKind::Lrp) {
        let task_seen = out
            .iter()
            .any(|(l, _)| l.model.name == lrp.model.name && l.dataset.name == lrp.dataset.name);
        if task_seen {
            continue;
        }
        let mut searches: Vec<RunConfig> = runs
            .iter()
            .filter(|r| r.method.kind == MethodKind::AaLrp && same_task(r, lrp))
            .cloned()
            .collect();
        if searches.is_empty() {
            searches.push(search_config(lrp));
        }
        out.push((lrp.clone(), searches));
    }
    out
}

/// The section: per task, per-run wall time of `lrp` and of each search method, `reps` each.
pub fn run(spec_path: &std::path::Path, reps: usize) -> Result<String> {
    let spec = crate::spec::load(spec_path)?;
    let tasks = tasks(&spec.runs);
    if tasks.is_empty() {
        bail!(
            "{}: no `lrp` run to compare with (fix: add \"lrp\" to [experiment] methods)",
            spec_path.display()
        );
    }
    let bar = indicatif::ProgressBar::hidden();
    let mut rows = Vec::new();
    let peaks_readable = sysmem::reset_peak();
    for (lrp, searches) in &tasks {
        let task = runner::prepare_task(lrp, &candle_core::Device::Cpu)?;
        let methods: Vec<&RunConfig> = std::iter::once(lrp).chain(searches).collect();
        let mut times = vec![Vec::new(); methods.len()];
        let mut peaks = vec![0u64; methods.len()];
        let mut steps = vec![0; methods.len()];
        for rep in 0..reps.max(1) {
            for (k, cfg) in methods.iter().enumerate() {
                eprintln!(
                    "bench: {} on {} (repeat {})…",
                    cfg.method.name,
                    cfg.model.name,
                    rep + 1
                );
                sysmem::reset_peak();
                let t = Instant::now();
                // The first step computes the intact relevance the search reads; a later
                // run of the same task would too, so it is timed.
                steps[k] = runner::run_one(cfg, &task, &bar)?.len() - 1;
                times[k].push(t.elapsed().as_secs_f64());
                peaks[k] = peaks[k].max(sysmem::peak_resident().unwrap_or(0));
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let medians: Vec<f64> = times.iter_mut().map(median).collect();
        for (k, cfg) in methods.iter().enumerate() {
            rows.push(Row {
                model: cfg.model.name.clone(),
                input: cfg.model.input_size,
                groups: task.plan.groups.len(),
                control_images: task
                    .data
                    .control
                    .as_ref()
                    .unwrap_or(&task.data.train)
                    .labels
                    .len(),
                method: cfg.method.name.clone(),
                screen: cfg.control.as_ref().map_or(0, |c| c.search_screen),
                steps: steps[k],
                seconds: medians[k],
                ratio: medians[k] / medians[0],
                peak_gib: peaks_readable.then(|| peaks[k] as f64 / (1u64 << 30) as f64),
            });
        }
    }
    table(spec_path, reps.max(1), &rows)
}

fn table(spec_path: &std::path::Path, reps: usize, rows: &[Row]) -> Result<String> {
    let mut out = String::new();
    writeln!(out, "{START}\n")?;
    writeln!(out, "## Measured layer search vs `lrp`\n")?;
    writeln!(
        out,
        "`lrprune bench --search --spec {} --out docs/performance.md`: per task (model × dataset, first seed), `lrp` and every `aa-lrp` method of the spec, each run `run_one` in this process on the task prepared once (pruning, the controller's measurements and the test evaluation of every step), median of {reps} alternating repeat(s); peak = the process's peak resident memory while the run ran (the prepared task included). `screen` = `control.search_screen` (0: the exact search, every offer measured each round; k: the k offers that look cheapest, by a first-order estimate, by a few images a class (`search_screen_images`) or, under `search_take = \"lazy\"`, by their last measured costs; docs/method.md).\n",
        spec_path.display()
    )?;
    writeln!(
        out,
        "| model | input | groups | control images | method | screen | steps | s per run | × `lrp` | peak GiB |\n|---|---|---|---|---|---|---|---|---|---|"
    )?;
    for r in rows {
        let peak = r.peak_gib.map_or("–".to_string(), |g| format!("{g:.1}"));
        writeln!(
            out,
            "| {} | {}² | {} | {} | `{}` | {} | {} | {:.1} | {:.2}× | {peak} |",
            r.model,
            r.input,
            r.groups,
            r.control_images,
            r.method,
            r.screen,
            r.steps,
            r.seconds,
            r.ratio
        )?;
    }
    writeln!(out, "\n{END}")?;
    Ok(out)
}
