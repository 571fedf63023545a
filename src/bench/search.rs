//! `lrprune bench --search`: the measured layer search's cost against plain `lrp` on the
//! quickstart's first task, both run in this process on one prepared task (loading, head
//! training and the intact relevance shared and not timed), alternating, median of the
//! repeats. Written between markers into docs/performance.md.

use crate::runner;
use crate::spec::{ControlSettings, MethodKind, MethodSpec, RunConfig};
use anyhow::{Context, Result};
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

/// The section: per-run wall time of `lrp` and of the measured search, `reps` each.
pub fn run(spec_path: &std::path::Path, reps: usize) -> Result<String> {
    let spec = crate::spec::load(spec_path)?;
    let lrp = spec
        .runs
        .iter()
        .find(|r| r.method.kind == MethodKind::Lrp)
        .with_context(|| format!("{}: no `lrp` run to compare with", spec_path.display()))?;
    let search = search_config(lrp);
    let task = runner::prepare_task(lrp, &candle_core::Device::Cpu)?;
    let bar = indicatif::ProgressBar::hidden();
    let mut times = [Vec::new(), Vec::new()];
    let mut steps = [0, 0];
    for rep in 0..reps.max(1) {
        for (k, cfg) in [lrp, &search].into_iter().enumerate() {
            eprintln!("bench: {} (repeat {})…", cfg.method.name, rep + 1);
            let t = Instant::now();
            // The first step computes the intact relevance the search reads; a later run
            // of the same task would too, so it is timed.
            steps[k] = runner::run_one(cfg, &task, &bar)?.len() - 1;
            times[k].push(t.elapsed().as_secs_f64());
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (t_lrp, t_search) = (median(&mut times[0]), median(&mut times[1]));
    let mut out = String::new();
    writeln!(out, "{START}\n")?;
    writeln!(out, "## Measured layer search vs `lrp`\n")?;
    writeln!(
        out,
        "`lrprune bench --search --out docs/performance.md`: the quickstart's first task (`{}`, seed {}, {} control images, {}% steps to {}%), prepared once; each run is `run_one` in this process (pruning, the controller's measurements and the test evaluation of every step), median of {} alternating repeats. The search runs as the default `aa-lrp` (`aa-search-conf` of the ablation specs): every round measures every layer's offer; a measured candidate keeps its values on the control split, so after the round's winner changes the network at a layer only what follows that layer runs again, a pruned conv's output is taken as a channel selection of the unpruned one, and a round's candidates run in parallel (`src/prune/search.rs`). Decisions are bit-identical to the search before these changes (`tests/golden.rs`).\n",
        lrp.model.name,
        lrp.seed,
        task.data.train.labels.len(),
        (lrp.pruning.step * 100.0).round(),
        (lrp.pruning.max_rate * 100.0).round(),
        reps.max(1)
    )?;
    writeln!(out, "| method | steps | s per run |\n|---|---|---|")?;
    writeln!(out, "| `lrp` | {} | {t_lrp:.1} |", steps[0])?;
    writeln!(
        out,
        "| `aa-lrp` (measured search) | {} | {t_search:.1} |",
        steps[1]
    )?;
    writeln!(
        out,
        "\nThe measured search costs **{:.2}×** `lrp`'s wall time per run (target ≤ 2×).",
        t_search / t_lrp
    )?;
    writeln!(out, "\n{END}")?;
    Ok(out)
}
