//! `lrprune export --rate/--safe/--step`: the network a run pruned, taken home.
//!
//! The steps file records each step's mask (`kept`); the run's task is prepared again from
//! the spec (same seed, same split and head), the original network is compacted to the mask
//! with the head as `after_step` left it, and the result is checked against the recorded
//! row — parameters, FLOPs and the test accuracies, exactly — before anything is written: a
//! changed weights or data file, or a different version of the code, cannot hand over a
//! network that is not the one the curve describes. Steps files written before masks were
//! recorded are replayed to the step instead (same spec and seed → same steps on the CPU).

use super::{context, prepare_task, record, replay, Task};
use crate::eval;
use crate::model::{cost, export};
use crate::prune::schedule::Pruned;
use crate::prune::FilterMask;
use crate::results::{self, StepRecord};
use crate::spec::RunConfig;
use anyhow::{bail, Context as _, Result};
use candle_core::Device;
use polars::prelude::*;
use std::path::Path;

/// Which step of a run to export.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum At {
    /// The most pruned step whose rate is at most this.
    Rate(f64),
    /// The step with this number (0 = unpruned).
    Step(usize),
    /// The safe rate's step: the last before balanced accuracy first falls more than
    /// [`eval::SAFE_TOLERANCE`] below step 0's.
    Safe,
}

/// What an export wrote.
pub struct Exported {
    pub step: usize,
    pub rate: f64,
    /// The run was replayed to the step (its steps file holds no masks).
    pub replayed: bool,
}

/// The resolved settings run `id` of results folder `dir` was made with (its runs file's
/// `config_json`): what `lrprune export RESULTS --run ID` exports without the spec.
pub fn config_of(dir: &Path, id: &str) -> Result<RunConfig> {
    let file = results::runs_path(dir, id);
    if !file.is_file() {
        bail!(
            "--run {id}: {} does not exist (fix: a run id as `ls {}` lists them, without `.parquet`)",
            file.display(),
            dir.join("runs").display()
        );
    }
    let df = results::read_parquet(&file)?;
    let json = df
        .column("config_json")
        .and_then(|c| c.str().cloned())
        .ok()
        .and_then(|c| c.get(0).map(str::to_string))
        .with_context(|| format!("{}: no `config_json` column", file.display()))?;
    let cfg: RunConfig = serde_json::from_str(&json)
        .with_context(|| format!("{}: `config_json` is not a run's settings", file.display()))?;
    if cfg.run_id() != id {
        bail!(
            "{}: its settings give run id {}, not {id} (the file was renamed or made by another lrprune version; fix: export with the spec: `lrprune export SPEC --run ID`)",
            file.display(),
            cfg.run_id()
        );
    }
    Ok(cfg)
}

/// A step as its row recorded it.
struct Recorded {
    rate: f64,
    balanced: f64,
    kept: Option<Vec<String>>,
}

/// Export run `cfg` (whose results are in `dir`) at step `at` to folder `out`.
pub fn pruned(dir: &Path, cfg: &RunConfig, at: At, out: &Path) -> Result<Exported> {
    let id = cfg.run_id();
    let file = results::steps_path(dir, &id);
    if !super::is_finished(dir, &id) {
        bail!(
            "{}: run {id} has no finished results there (fix: run the spec first, or point --results-dir at its results; `lrprune status SPEC` lists the finished runs)",
            dir.display()
        );
    }
    let df = results::read_parquet(&file)?;
    let rows = recorded(&df).with_context(|| format!("reading {}", file.display()))?;
    let k = choose(&rows, at).with_context(|| format!("{} (run {id})", file.display()))?;
    let task = prepare_task(cfg, &Device::Cpu)?;
    let (state, replayed) = match &rows[k].kept {
        Some(kept) => {
            let mask = FilterMask::from_strings(kept, &task.plan.sizes()).map_err(|why| {
                anyhow::anyhow!(
                    "{}: step {k}'s `kept` does not fit model `{}` ({why}) (fix: export with the spec the results were made with)",
                    file.display(),
                    cfg.model.name
                )
            })?;
            (context(&task, cfg).form(mask)?, false)
        }
        None => (replay(cfg, &task, k)?.1, true),
    };
    let got = measure(&task, cfg, k, &state)?;
    check(&df, k, &got).with_context(|| {
        format!(
            "{}: step {k} formed again does not give the recorded row, so it is not the network the results describe (fix: export with the weights, data and lrprune version the results were made with; on a run recorded on CUDA the CPU's accuracies can differ by an image)",
            file.display()
        )
    })?;
    let c = cost::cost(&state.net);
    let meta = serde_json::json!({
        "run_id": id,
        "step": k,
        "pruning_rate": got.pruning_rate,
        "params": c.params,
        "macs": c.macs,
        "flops": c.flops(),
        "test": {
            "top1": got.top1,
            "balanced_acc": got.balanced_acc,
            "images": task.data.test.labels.len(),
        },
        "class_names": task.data.class_names,
        "groups": groups(&task, &state.mask),
        "model": {
            "name": cfg.model.name,
            "arch": cfg.model.arch,
            "weights": cfg.model.weights,
        },
        "input": {
            "shape": [task.net.input_shape.0, task.net.input_shape.1, task.net.input_shape.2],
            "preprocess": cfg.model.preprocess,
            "note": "model.onnx reads images preprocessed as test.safetensors holds them",
        },
        "onnx": {
            "opset": export::onnx::OPSET,
            "input": export::onnx::INPUT,
            "output": export::onnx::OUTPUT,
        },
        "replayed": replayed,
        "config": cfg,
    });
    crate::fsio::create_dir_all(out).context("--out")?;
    export::write_pruned(&state.net, &task.data.test, &meta, out)?;
    Ok(Exported {
        step: k,
        rate: rows[k].rate,
        replayed,
    })
}

/// Each group's name, size and kept channel indices (unpruned indexing).
fn groups(task: &Task, mask: &FilterMask) -> Vec<serde_json::Value> {
    task.plan
        .names()
        .into_iter()
        .enumerate()
        .map(|(g, name)| {
            serde_json::json!({
                "name": name,
                "channels": mask.keep[g].len(),
                "kept": mask.alive_indices(g),
            })
        })
        .collect()
}

/// The record of `state` as the sweep made it: test metrics from the stored prefix.
fn measure(task: &Task, cfg: &RunConfig, k: usize, state: &Pruned) -> Result<StepRecord> {
    let from = task.plan.start(&task.test_prefix, &state.mask);
    let nc = task.data.n_classes();
    let bs = cfg.data.batch_size;
    let m = eval::evaluate_from(&state.net, &task.data.test, nc, bs, Some(from))?;
    Ok(record(k as i64, &state.mask, &state.net, &m, None, 0.0))
}

/// The recorded row `k` of `df` and `got` agree on what defines the network and its test
/// accuracies.
fn check(df: &DataFrame, k: usize, got: &StepRecord) -> Result<()> {
    let f = |c: &str| -> Result<f64> { df.column(c)?.f64()?.get(k).context(c.to_string()) };
    let i = |c: &str| -> Result<i64> { df.column(c)?.i64()?.get(k).context(c.to_string()) };
    let pairs = [
        (
            "filters_remaining",
            i("filters_remaining")? as f64,
            got.filters_remaining as f64,
        ),
        ("params", i("params")? as f64, got.params as f64),
        ("flops", i("flops")? as f64, got.flops as f64),
        ("top1", f("top1")?, got.top1),
        ("balanced_acc", f("balanced_acc")?, got.balanced_acc),
    ];
    for (name, want, have) in pairs {
        if want != have {
            bail!("`{name}`: recorded {want}, formed again {have}");
        }
    }
    Ok(())
}

/// Every step's rate, balanced accuracy and mask (when recorded), in step order.
fn recorded(df: &DataFrame) -> Result<Vec<Recorded>> {
    let steps = df.column("step")?.i64()?;
    let rates = df.column("pruning_rate")?.f64()?;
    let bal = df.column("balanced_acc")?.f64()?;
    let kept = df.column("kept").ok().map(|c| c.list()).transpose()?;
    let mut out = Vec::with_capacity(df.height());
    for r in 0..df.height() {
        if steps.get(r) != Some(r as i64) {
            bail!(
                "row {r} holds step {:?}: the steps are not 0, 1, 2, … in order",
                steps.get(r)
            );
        }
        let strings = |s: Series| -> Result<Vec<String>> {
            let s = s.str()?;
            Ok((0..s.len())
                .map(|i| s.get(i).unwrap_or("").to_string())
                .collect())
        };
        out.push(Recorded {
            rate: rates.get(r).context("pruning_rate is empty")?,
            balanced: bal.get(r).context("balanced_acc is empty")?,
            kept: kept
                .and_then(|k| k.get_as_series(r))
                .map(strings)
                .transpose()?,
        });
    }
    if out.is_empty() {
        bail!("no steps recorded");
    }
    Ok(out)
}

/// The step `at` names among `rows`.
fn choose(rows: &[Recorded], at: At) -> Result<usize> {
    let last = rows.len() - 1;
    match at {
        At::Step(k) if k <= last => Ok(k),
        At::Step(k) => bail!("--step {k}: the run has steps 0 to {last}"),
        At::Rate(r) if !(0.0..=1.0).contains(&r) => {
            bail!("--rate {r}: a pruning rate is a fraction of the filters, from 0 to 1")
        }
        At::Rate(r) => {
            let k = rows.iter().rposition(|s| s.rate <= r + 1e-9).unwrap_or(0);
            Ok(k)
        }
        At::Safe => {
            let bal: Vec<f64> = rows.iter().map(|s| s.balanced).collect();
            Ok(eval::safe_step(&bal, eval::SAFE_TOLERANCE).unwrap_or(0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(rates: &[f64], bal: &[f64]) -> Vec<Recorded> {
        rates
            .iter()
            .zip(bal)
            .map(|(&rate, &balanced)| Recorded {
                rate,
                balanced,
                kept: None,
            })
            .collect()
    }

    #[test]
    fn a_step_is_chosen_by_rate_number_or_safety() {
        let rows = curve(&[0.0, 0.1, 0.23, 0.3, 0.5], &[0.8, 0.8, 0.795, 0.7, 0.75]);
        assert_eq!(choose(&rows, At::Rate(0.25)).unwrap(), 2);
        assert_eq!(choose(&rows, At::Rate(0.3)).unwrap(), 3);
        assert_eq!(choose(&rows, At::Rate(1.0)).unwrap(), 4);
        assert_eq!(choose(&rows, At::Rate(0.0)).unwrap(), 0);
        // The first fall of more than a point ends the safe range, whatever comes after.
        assert_eq!(choose(&rows, At::Safe).unwrap(), 2);
        assert_eq!(choose(&rows, At::Step(4)).unwrap(), 4);
        let e = choose(&rows, At::Step(5)).unwrap_err().to_string();
        assert!(e.contains("steps 0 to 4"), "{e}");
        for bad in [f64::NAN, -0.1, 1.5] {
            let e = choose(&rows, At::Rate(bad)).unwrap_err().to_string();
            assert!(e.contains("from 0 to 1"), "{e}");
        }
    }
}
