//! `lrprune bench`: measured speed facts, written as a Markdown report.
//!
//! Everything in the report comes from one invocation: lrprune's kernels and sweeps, and
//! the same work in PyTorch (`scripts/torch_reference.py`, run as a child process), so every
//! ratio compares two measurements taken minutes apart on the same machine. Kernel timings
//! are medians over repeats after a warm-up; sweeps are timed once, as a user runs them.

pub mod child;
pub mod conv;
pub mod gpu;
pub mod reference;
pub mod search;

use crate::lrp::composite;
use crate::lrp::filters::filter_relevance;
use crate::model::Network;
use crate::runner;
use crate::spec::RunConfig;
use anyhow::{Context, Result};
use candle_core::Device;
use std::fmt::Write;
use std::time::Instant;

/// `text` with `section` (which starts with `start` and ends with `end`) put in place:
/// replacing an earlier one, else appended.
pub fn splice(text: &str, section: &str, start: &str, end: &str) -> String {
    match (text.find(start), text.find(end)) {
        (Some(a), Some(b)) if b > a => {
            format!(
                "{}{}{}",
                &text[..a],
                section.trim_end(),
                &text[b + end.len()..]
            )
        }
        _ => format!("{}\n\n{}\n", text.trim_end(), section.trim_end()),
    }
}

/// Median wall time of `f` in seconds over `reps` runs after one warm-up.
pub fn time<T>(reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    let mut once = || f().map(drop);
    Ok(time_interleaved(reps, &mut [&mut once])?[0])
}

/// Median wall times of each of `fs`, run in turn `reps` times after one warm-up each: a
/// ratio of two of them is read on the same stretch of the host's load, which on a shared
/// 2-core machine moves a single timing by ±20 % over minutes.
pub fn time_interleaved(
    reps: usize,
    fs: &mut [&mut dyn FnMut() -> Result<()>],
) -> Result<Vec<f64>> {
    for f in fs.iter_mut() {
        f()?;
    }
    let mut t = vec![Vec::with_capacity(reps); fs.len()];
    for _ in 0..reps {
        for (f, t) in fs.iter_mut().zip(t.iter_mut()) {
            let s = Instant::now();
            f()?;
            t.push(s.elapsed().as_secs_f64());
        }
    }
    Ok(t.into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect())
}

/// One relevance pass over the reference set vs one forward pass of the same images, for
/// the first run of a spec: (images, forward s, relevance s).
fn lrp_ratio(cfg: &RunConfig, device: &Device, reps: usize) -> Result<(usize, f64, f64)> {
    let task = runner::prepare_task(cfg, device)?;
    let refset = &task.data.train;
    let bs = cfg.data.batch_size;
    let comp = composite::by_name("epsilon-plus", cfg.model.preprocess, device)?;
    let mut forward = || -> Result<()> {
        Network::batched(&refset.images, bs, |x| task.net.forward(x))?
            .sum_all()?
            .to_scalar::<f32>()?;
        Ok(())
    };
    let mut relevance = || -> Result<()> {
        filter_relevance(&task.net, refset, &comp, task.data.n_classes(), bs, None)?;
        Ok(())
    };
    // Alternated, so their ratio is read on the same stretch of the host's load.
    let t = time_interleaved(reps, &mut [&mut forward, &mut relevance])?;
    Ok((refset.labels.len(), t[0], t[1]))
}

/// The relevance-vs-forward table, one row per spec (the quickstart's 32², the 224² task).
fn lrp_ratio_table(
    out: &mut String,
    cfgs: &[&RunConfig],
    device: &Device,
    reps: usize,
) -> Result<()> {
    writeln!(out, "\n### LRP relevance pass vs forward pass\n")?;
    writeln!(out, "One relevance pass (the trace, then the reverse pass down to the first conv's output; composite `epsilon-plus`, per-class per-filter relevance) over each task's reference images, against one forward pass of the same images, same batches; the two alternate repeat by repeat (medians), so host drift moves both alike. The floor is about 3.0× (docs/performance.md, \"the floor\").\n")?;
    writeln!(out, "| model | dataset | input | images | batch | forward s | relevance s | relevance / forward |\n|---|---|---|---|---|---|---|---|")?;
    for cfg in cfgs {
        eprintln!("bench: relevance vs forward at {}²…", cfg.model.input_size);
        let (n, fwd, rel) = lrp_ratio(cfg, device, reps)?;
        writeln!(
            out,
            "| {} | {} | {}² | {n} | {} | {fwd:.3} | {rel:.3} | **{:.2}×** |",
            cfg.model.name,
            cfg.dataset.name,
            cfg.model.input_size,
            cfg.data.batch_size,
            rel / fwd
        )?;
    }
    Ok(())
}

/// What `lrprune bench` measures.
pub struct BenchOptions {
    /// The quickstart spec: its first run is the benchmarked task, and its whole sweep is
    /// timed.
    pub spec: std::path::PathBuf,
    /// A 224×224 sweep whose peak memory is reported.
    pub spec_224: std::path::PathBuf,
    pub reps: usize,
    /// Run the PyTorch side (`python3 scripts/torch_reference.py`).
    pub torch: bool,
    /// Time whole sweeps (quickstart, 224²) as child processes.
    pub sweeps: bool,
    pub script: std::path::PathBuf,
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// Run the benchmarks and return the report.
pub fn run(opts: &BenchOptions) -> Result<String> {
    let device = Device::Cpu;
    let spec = crate::spec::load(&opts.spec)?;
    let cfg = spec.runs.first().context("the spec has no runs")?;
    let mut out = String::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    writeln!(out, "# Performance\n")?;
    writeln!(
        out,
        "Measured by one `lrprune bench --out docs/performance.md` run on {cpu}, {cores} cores, SIMD level {:?}; kernel timings are medians of {} after a warm-up. Every PyTorch figure comes from `scripts/torch_reference.py` run by the same command.\n",
        crate::model::conv::lanes::level(),
        opts.reps
    )?;

    let torch_conv = if opts.torch {
        eprintln!("bench: PyTorch conv layers…");
        Some(child::torch(&opts.script, &["conv", "--reps", &opts.reps.to_string()])?.1)
    } else {
        None
    };
    if let Some(t) = &torch_conv {
        writeln!(
            out,
            "PyTorch {} (CPU, {} threads).\n",
            t["torch_version"].as_str().unwrap_or("?"),
            t["threads"]
        )?;
    }
    writeln!(out, "## Conv forward per VGG16 layer\n")?;
    writeln!(out, "lrprune's CPU kernels (`src/model/conv/`: Winograd F(4,3)/F(2,3) for 3×3 stride-1 convs with ≥ 16 input channels, im2col + GEMM otherwise; bias added) against PyTorch's `F.conv2d` (oneDNN) and Candle's `conv2d` + bias. *lrprune* reuses one weight tensor (its transformed filters are cached, as when a sweep evaluates a network batch after batch); *cold* gives every call new weights, paying the filter transform each time. × PyTorch = PyTorch time / lrprune time.")?;
    let mut worst = Vec::new();
    for (size, batch) in [(32, 64), (224, 8)] {
        eprintln!("bench: conv layers at {size}²…");
        let t = torch_conv.as_ref().and_then(|j| {
            j["tables"]
                .as_array()?
                .iter()
                .find(|t| t["size"].as_u64() == Some(size as u64))
        });
        let rows = conv::measure(size, batch, opts.reps, t)?;
        conv::table(&mut out, size, batch, &rows)?;
        if let Some(w) = conv::worst_ratio(&rows) {
            worst.push((size, w));
        }
    }
    for (size, (w, c)) in worst {
        writeln!(
            out,
            "\nAt {size}²: slowest layer relative to PyTorch **{w:.2}×** (cold {c:.2}×)."
        )?;
    }

    let spec_224 = crate::spec::load(&opts.spec_224)?;
    let cfg_224 = spec_224.runs.first().context("the 224² spec has no runs")?;
    lrp_ratio_table(&mut out, &[cfg, cfg_224], &device, opts.reps)?;

    if opts.torch {
        writeln!(out, "\n## The same sweep in PyTorch + zennit\n")?;
        writeln!(out, "Each spec's first task, run by lrprune and by `scripts/torch_reference.py sweep` on lrprune's export of it (same weights, head and splits, same threads): plain iterative `lrp` (zennit EpsilonPlus; per-layer sum normalisation) and `l1` on the spec's grid, compacting after every step and evaluating every step. Times are each sweep loop, file loading excluded; *per step* is the loop's time over its steps (step 0's evaluation included). The curves must match for the times to mean anything: the last column is the largest per-step difference in balanced accuracy.")?;
        for s in [&spec, &spec_224] {
            let c = s.runs.first().context("the spec has no runs")?;
            eprintln!(
                "bench: reference sweep at {}² (lrprune and PyTorch + zennit)…",
                c.model.input_size
            );
            let cmp = reference::compare(s, &opts.script)?;
            let sides = &cmp.sides;
            writeln!(out, "\n#### `{}` at {}² (seed {}, {} reference and {} test images, batch {}, {}% steps to {}%)\n",
                s.path.display(), c.model.input_size, c.seed, sides.first().map_or(0, |x| x.n_reference), sides.first().map_or(0, |x| x.n_test), c.data.batch_size,
                (c.pruning.step * 100.0).round(), (c.pruning.max_rate * 100.0).round())?;
            reference::table(&mut out, &cmp)?;
        }
    }

    if opts.sweeps {
        writeln!(out, "\n## Whole sweeps\n")?;
        writeln!(out, "Each sweep runs as a child process (`lrprune run SPEC --results-dir TMP --quiet`, assets already cached); wall time includes loading, head training and the report. Peak memory is the child's maximum resident set size.\n")?;
        writeln!(
            out,
            "| sweep | runs | wall | peak memory |\n|---|---|---|---|"
        )?;
        let mut quickstart_s = None;
        for path in [&opts.spec, &opts.spec_224] {
            let s = crate::spec::load(path)?;
            eprintln!("bench: sweep {} ({} runs)…", path.display(), s.runs.len());
            let dir = tempfile::tempdir()?;
            let u = child::sweep(path, dir.path())?;
            writeln!(
                out,
                "| `{}` | {} | {:.0} s ({:.1} min) | {:.2} GiB |",
                path.display(),
                s.runs.len(),
                u.wall_s,
                u.wall_s / 60.0,
                gib(u.peak_rss)
            )?;
            quickstart_s.get_or_insert(u.wall_s);
        }
        if let Some(t) = quickstart_s {
            writeln!(
                out,
                "\nThe quickstart took **{:.1} min** (target ≤ 5 min).",
                t / 60.0
            )?;
        }
    }
    writeln!(out, "\n## Reproduce\n")?;
    writeln!(out, "```sh\ncargo run --release -- fetch\ncargo run --release -- bench --out docs/performance.md      # everything above, one run\npython3 scripts/torch_reference.py conv --reps 5             # the PyTorch side alone\n```")?;
    Ok(out)
}
