//! The same pruning sweep in lrprune and in PyTorch + zennit, side by side.
//!
//! Both implementations run the quickstart's first task (same trained head, same splits:
//! lrprune exports them and the script reads them back) through plain iterative `lrp`
//! (zennit's EpsilonPlus on the PyTorch side) and `l1`, physically compacting the network
//! after every step and evaluating every step on the test split. Each side times its own
//! sweep loops (file loading excluded); the curves must agree, which is what makes the wall
//! times comparable.

use super::child;
use crate::model::export;
use crate::report::curve;
use crate::runner::{self, StepSplit};
use crate::spec::{RunConfig, Spec};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use std::fmt::Write;
use std::path::Path;
use std::time::Instant;

/// Methods both implementations run.
pub const METHODS: [&str; 2] = ["lrp", "l1"];

/// One method's sweep on both sides.
pub struct Side {
    pub method: String,
    pub lrprune_s: f64,
    pub torch_s: f64,
    pub lrprune_auc: f64,
    pub torch_auc: f64,
    /// Largest |Δ balanced accuracy| between the two curves over the common steps.
    pub max_diff: f64,
    pub steps: usize,
    /// Images of the task's reference (training) and test splits.
    pub n_reference: usize,
    pub n_test: usize,
    /// Where each side's steps (1…) spent their time.
    pub lrprune_split: StepSplit,
    pub torch_split: StepSplit,
}

/// Both methods on both sides, and each side's whole process: PyTorch's child from its
/// start (interpreter, imports, reading the export) to its exit; lrprune's task prepared
/// from the cache (data, weights, the head trained) and both sweeps.
pub struct Comparison {
    pub sides: Vec<Side>,
    pub lrprune_whole_s: f64,
    pub torch_whole_s: f64,
}

/// The first seed's runs of `METHODS` in `spec`.
fn configs(spec: &Spec) -> Result<Vec<RunConfig>> {
    let seed = spec.runs.first().context("the spec has no runs")?.seed;
    METHODS
        .iter()
        .map(|m| {
            spec.runs
                .iter()
                .find(|r| r.seed == seed && r.method.name == *m && r.variant.is_empty())
                .cloned()
                .with_context(|| format!("the spec has no `{m}` run for seed {seed}"))
        })
        .collect()
}

/// Run both sides; `script` is `scripts/torch_reference.py`.
pub fn compare(spec: &Spec, script: &Path) -> Result<Comparison> {
    let cfgs = configs(spec)?;
    let whole = Instant::now();
    let task = runner::prepare_task(&cfgs[0], &Device::Cpu)?;
    let mut lrprune_whole_s = whole.elapsed().as_secs_f64();
    let dir = tempfile::tempdir()?;
    export::write_task(
        &cfgs[0],
        &task.net,
        &task.data.train,
        &task.data.test,
        dir.path(),
    )?;
    let dir_arg = dir.path().to_string_lossy().into_owned();
    let (usage, json) = child::torch(
        script,
        &["sweep", &dir_arg, "--methods", &METHODS.join(",")],
    )?;
    let bar = indicatif::ProgressBar::hidden();
    let mut sides = Vec::new();
    for cfg in &cfgs {
        let name = cfg.method.name.as_str();
        let t = Instant::now();
        // The step-0 evaluation belongs to each sweep on the PyTorch side: time ours too.
        let intact = crate::eval::evaluate(
            &task.net,
            &task.data.test,
            task.data.n_classes(),
            cfg.data.batch_size,
        )?;
        let (rows, lrprune_split) = runner::run_one_timed(cfg, &task, &bar)?;
        let lrprune_s = t.elapsed().as_secs_f64();
        lrprune_whole_s += lrprune_s;
        if (intact.balanced - rows[0].balanced_acc).abs() > 1e-12 {
            bail!("step-0 evaluation differs between passes");
        }
        let theirs = &json["methods"][name];
        let steps = theirs["steps"].as_array().context("torch JSON: no steps")?;
        let their_bal: Vec<f64> = steps
            .iter()
            .filter_map(|s| s["balanced"].as_f64())
            .collect();
        let max_diff = rows
            .iter()
            .zip(&their_bal)
            .map(|(r, b)| (r.balanced_acc - b).abs())
            .fold(0.0, f64::max);
        let rates: Vec<f64> = rows.iter().map(|r| r.pruning_rate).collect();
        let bal: Vec<f64> = rows.iter().map(|r| r.balanced_acc).collect();
        sides.push(Side {
            method: name.into(),
            lrprune_s,
            torch_s: theirs["wall_s"].as_f64().context("torch JSON: no wall_s")?,
            lrprune_auc: curve::auc(&rates, &bal),
            torch_auc: theirs["auc_class"]
                .as_f64()
                .context("torch JSON: no auc_class")?,
            max_diff,
            steps: rows.len() - 1,
            n_reference: task.data.train.labels.len(),
            n_test: task.data.test.labels.len(),
            lrprune_split,
            torch_split: torch_split(&theirs["split"])?,
        });
    }
    Ok(Comparison {
        sides,
        lrprune_whole_s,
        torch_whole_s: usage.wall_s,
    })
}

fn torch_split(j: &serde_json::Value) -> Result<StepSplit> {
    let get = |k: &str| {
        j[k].as_f64()
            .with_context(|| format!("torch JSON: no split.{k}"))
    };
    Ok(StepSplit {
        score_s: get("score_s")?,
        compact_s: get("compact_s")?,
        eval_s: get("eval_s")?,
    })
}

pub fn table(out: &mut String, c: &Comparison) -> Result<()> {
    let sides = &c.sides;
    writeln!(
        out,
        "| method | steps | PyTorch + zennit s | lrprune s | per step (PyTorch / lrprune) s | speed-up | AUC class (PyTorch) | AUC class (lrprune) | max \\|Δ balanced\\| |\n|---|---|---|---|---|---|---|---|---|"
    )?;
    for s in sides {
        let per = |t: f64| t / s.steps.max(1) as f64;
        writeln!(
            out,
            "| `{}` | {} | {:.1} | {:.1} | {:.2} / {:.2} | {:.2}× | {:.3} | {:.3} | {:.3} |",
            s.method,
            s.steps,
            s.torch_s,
            s.lrprune_s,
            per(s.torch_s),
            per(s.lrprune_s),
            s.torch_s / s.lrprune_s,
            s.torch_auc,
            s.lrprune_auc,
            s.max_diff
        )?;
    }
    let (t, l): (f64, f64) = (
        sides.iter().map(|s| s.torch_s).sum(),
        sides.iter().map(|s| s.lrprune_s).sum(),
    );
    writeln!(
        out,
        "| **both** | | {t:.1} | {l:.1} | | **{:.2}×** | | | |",
        t / l
    )?;
    writeln!(
        out,
        "\nWhole process: PyTorch + zennit {:.1} s (interpreter start, imports, reading the export, both sweeps), lrprune {:.1} s (task prepared from the cache, head trained, both sweeps): **{:.2}×**. Per step (1…), where the time went, s a step:\n",
        c.torch_whole_s,
        c.lrprune_whole_s,
        c.torch_whole_s / c.lrprune_whole_s
    )?;
    writeln!(
        out,
        "| method | side | scores (`lrp`: the relevance pass) | compaction | evaluation |\n|---|---|---|---|---|"
    )?;
    for s in sides {
        let n = s.steps.max(1) as f64;
        for (side, x) in [
            ("PyTorch + zennit", s.torch_split),
            ("lrprune", s.lrprune_split),
        ] {
            writeln!(
                out,
                "| `{}` | {side} | {:.2} | {:.3} | {:.2} |",
                s.method,
                x.score_s / n,
                x.compact_s / n,
                x.eval_s / n
            )?;
        }
    }
    Ok(())
}
