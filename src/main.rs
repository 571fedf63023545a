//! The `lrprune` command line.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use lrprune::model::precision::Precision;
use lrprune::{assets, model, report, runner, spec};
use std::path::PathBuf;
use std::process::ExitCode;

/// Where `docs/performance.md`'s hand-measured sections start; `bench --out` keeps them.
const BENCH_KEEP: &str = "<!-- measured outside lrprune bench: kept on rewrite -->";

/// Print to stdout, ignoring a closed pipe (`lrprune inspect … | head` must not panic).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

#[derive(Parser)]
#[command(
    name = "lrprune",
    version,
    about = "LRP-based and accuracy-aware CNN filter pruning, reproducibly"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceArg {
    Cpu,
    Cuda,
}

/// How the GPU multiplies f32 (src/model/precision.rs).
#[derive(Clone, Copy, Default, ValueEnum)]
enum PrecisionArg {
    /// Strict IEEE fp32, as on the CPU.
    #[default]
    Fp32,
    /// TF32 tensor cores for convolutions and matrix products (CUDA only).
    Tf32,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::Fp32 => Precision::Fp32,
            PrecisionArg::Tf32 => Precision::Tf32,
        }
    }
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// An architecture (vgg16, resnet18, alexnet, mobilenet_v2, …) or a custom VGG cfg such
    /// as "64 M 128 M".
    #[arg(long, default_value = "vgg16")]
    model: String,
    /// The checkpoint has batch-norm layers (folded into the convs).
    #[arg(long)]
    batch_norm: bool,
    /// safetensors/.pth with features.N.* and classifier.N.* (torchvision names).
    #[arg(long)]
    weights: PathBuf,
    /// safetensors with `images` (N,C,H,W f32, preprocessed) and `labels` (N, i64).
    #[arg(long)]
    inputs: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// epsilon-plus (default), epsilon-plus-nobias, epsilon-plus-flat, epsilon-plus-zb,
    /// epsilon-alpha2-beta1.
    #[arg(long, default_value = "epsilon-plus")]
    composite: String,
    /// Pixel bounds for the zB rule.
    #[arg(long, value_enum, default_value = "caffe-bgr")]
    preprocess: PreprocessArg,
    /// Also write one input-relevance heatmap PNG per sample here.
    #[arg(long)]
    heatmaps: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum PreprocessArg {
    CaffeBgr,
    Torchvision,
}

fn explain(a: ExplainArgs) -> Result<()> {
    let device = device(a.device, Precision::Fp32)?;
    let opts = lrprune::lrp::explain::ExplainOptions {
        model: a.model,
        batch_norm: a.batch_norm,
        weights: a.weights,
        inputs: a.inputs,
        out: a.out,
        composite: a.composite,
        preprocess: match a.preprocess {
            PreprocessArg::CaffeBgr => spec::Preprocess::CaffeBgr,
            PreprocessArg::Torchvision => spec::Preprocess::Torchvision,
        },
        heatmaps: a.heatmaps,
    };
    let mut df = lrprune::lrp::explain::explain(&opts, &device)?;
    lrprune::results::write_parquet_atomic(&opts.out, &mut df)?;
    outln!("{} filters → {}", df.height(), opts.out.display());
    Ok(())
}

#[derive(Subcommand)]
enum Cmd {
    /// Download, verify and unpack assets into the cache (all of them without arguments).
    Fetch {
        assets: Vec<String>,
        /// List the known assets and whether they are cached.
        #[arg(long)]
        list: bool,
    },
    /// Run every run of an experiment spec, writing Parquet results.
    Run {
        spec: PathBuf,
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceArg,
        /// fp32 (default, comparable with the CPU) or tf32 (CUDA only, faster).
        #[arg(long, value_enum, default_value = "fp32")]
        precision: PrecisionArg,
        /// Refuse tasks estimated to need more memory than this (12G, 800M…; default 80%
        /// of physical memory).
        #[arg(long)]
        max_memory: Option<String>,
        /// Skip runs whose results already exist.
        #[arg(long)]
        resume: bool,
        /// Wait for runs another process holds (and run them if it dies) instead of
        /// skipping them and exiting with status 1.
        #[arg(long)]
        wait: bool,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
        /// Write results here instead of the spec's `results_dir`.
        #[arg(long)]
        results_dir: Option<PathBuf>,
        /// Run only shard K of N (1 ≤ K ≤ N) of the runs, balanced by cost.
        #[arg(long, conflicts_with = "shard_from_env")]
        shard: Option<String>,
        /// The shard from a Slurm job array: the task's index in the array ((ID − MIN) / STEP)
        /// of SLURM_ARRAY_TASK_COUNT.
        #[arg(long)]
        shard_from_env: bool,
    },
    /// Which of a spec's runs are done, running (and where) or missing.
    Status { spec: PathBuf },
    /// Show the expanded run list and the model's layers, parameters and FLOPs.
    Inspect { spec: PathBuf },
    /// Every built-in model at 224×224: nodes, parameters, MACs, pruning groups.
    Models,
    /// One line per run: its id and a sha256 of its step rows (all columns but `wall_ms`),
    /// to check that two sweeps (machines, versions) gave the same results.
    Digest { results: PathBuf },
    /// Per-filter LRP relevance of a checkpoint on a batch of inputs, to Parquet.
    Explain(ExplainArgs),
    /// Export a run's task (backbone + trained head, preprocessed splits) as
    /// DIR/weights.safetensors, DIR/inputs.safetensors (training split, what `explain`
    /// reads), DIR/test.safetensors and DIR/task.json (the run's resolved settings); or,
    /// with --rate, --step or --safe, the network the run pruned at that step (compacted,
    /// head included) as DIR/model.onnx, DIR/model.safetensors, DIR/model.json (kept
    /// channels, rate, size, accuracy, preprocessing) and DIR/test.safetensors.
    Export {
        /// The spec; or, with --rate, --step or --safe, a results folder (its runs files
        /// hold each run's settings) and --run ID.
        spec: PathBuf,
        /// The run: its index in `inspect`'s list, or its id.
        #[arg(long, default_value = "0")]
        run: String,
        #[arg(long)]
        out: PathBuf,
        /// The pruned network at the most pruned step whose rate is at most this.
        #[arg(long, group = "at")]
        rate: Option<f64>,
        /// The pruned network at this step (0 = unpruned).
        #[arg(long, group = "at")]
        step: Option<usize>,
        /// The pruned network at the safe rate: the last step before balanced accuracy
        /// first falls more than 1 point below step 0's.
        #[arg(long, group = "at")]
        safe: bool,
        /// Where the run's results are, when `run --results-dir` put them elsewhere.
        #[arg(long)]
        results_dir: Option<PathBuf>,
    },
    /// Speed benchmarks (relevance vs forward pass, conv GFLOP/s per VGG16 layer) as Markdown.
    Bench {
        /// The quickstart: its first run is the benchmarked task, its whole sweep is timed.
        #[arg(long, default_value = "experiments/quickstart.toml")]
        spec: PathBuf,
        /// A 224×224 sweep whose wall time and peak memory are reported.
        #[arg(long, default_value = "experiments/bench_224.toml")]
        spec_224: PathBuf,
        /// Write the report here (e.g. docs/performance.md); stdout otherwise.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Skip the PyTorch side (no python3 / no PyPI access).
        #[arg(long)]
        no_torch: bool,
        /// Skip the whole-sweep timings.
        #[arg(long)]
        no_sweeps: bool,
        /// The PyTorch reference script.
        #[arg(long, default_value = "scripts/torch_reference.py")]
        script: PathBuf,
        /// cuda: the GPU section instead (conv per VGG16 layer vs PyTorch on the same GPU),
        /// spliced into --out between its markers.
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceArg,
        /// With --device cuda: fp32 or tf32, for lrprune and PyTorch alike.
        #[arg(long, value_enum, default_value = "fp32")]
        precision: PrecisionArg,
        /// With --device cuda: images per conv call.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Only the layer search against `lrp`: per task of --spec (first seed), `lrp` and
        /// each `aa-lrp` method of the spec (--reps repeats each), spliced into --out
        /// between its markers.
        #[arg(long)]
        search: bool,
    },
    /// Summaries, tables (md/csv/tex) and plots (png/svg) from a results directory; more
    /// directories (shards gathered from other machines) are merged in, written to the first.
    Report {
        #[arg(required = true, num_args = 1..)]
        results: Vec<PathBuf>,
        /// Output directory (default RESULTS/report).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Method the AUC ratios are relative to (default: `lrp` if the results have it,
        /// else the first method).
        #[arg(long, default_value = "")]
        baseline: String,
        /// Method whose per-class curves and layer profile are drawn (default: the baseline).
        #[arg(long)]
        focus: Option<String>,
        /// Only the runs this spec expands to (ignores stale results of older specs).
        #[arg(long)]
        spec: Option<PathBuf>,
    },
}

/// The device, with the process set up for `precision` before it is created.
fn device(arg: DeviceArg, precision: Precision) -> Result<candle_core::Device> {
    precision.apply(matches!(arg, DeviceArg::Cuda))?;
    match arg {
        DeviceArg::Cpu => Ok(candle_core::Device::Cpu),
        DeviceArg::Cuda => {
            if !candle_core::utils::cuda_is_available() {
                bail!("--device cuda: this binary was built without CUDA (fix: scripts/build_cuda.sh, README \"CUDA\")");
            }
            let t = std::time::Instant::now();
            let d = candle_core::Device::new_cuda(0)?;
            model::gpu::keep_freed_memory(&d)?;
            eprintln!(
                "cuda: device 0 ready in {:.1} s ({})",
                t.elapsed().as_secs_f64(),
                precision.name()
            );
            Ok(d)
        }
    }
}

fn fetch(names: &[String], list: bool) -> Result<()> {
    if list {
        for a in assets::ASSETS {
            let state = if assets::is_cached(a) {
                "cached"
            } else {
                "not fetched"
            };
            outln!(
                "{:16} {:12} {}\n{:16} licence: {}",
                a.name,
                state,
                a.description,
                "",
                a.licence
            );
        }
        return Ok(());
    }
    let chosen: Vec<&assets::Asset> = if names.is_empty() {
        assets::ASSETS.iter().collect()
    } else {
        names
            .iter()
            .map(|n| {
                assets::find(n).ok_or_else(|| {
                    anyhow::anyhow!("unknown asset `{n}` (fix: `lrprune fetch --list`)")
                })
            })
            .collect::<Result<_>>()?
    };
    for a in chosen {
        let dir = assets::ensure(a)?;
        outln!("{}: {}", a.name, dir.display());
    }
    Ok(())
}

fn inspect(path: &std::path::Path) -> Result<()> {
    let spec = spec::load(path)?;
    outln!(
        "experiment `{}`: {} runs → {}",
        spec.name,
        spec.runs.len(),
        spec.results_dir.display()
    );
    for r in &spec.runs {
        outln!("  {}", r.run_id());
    }
    let mut seen = std::collections::HashSet::new();
    for r in spec
        .runs
        .iter()
        .filter(|r| seen.insert(r.model.name.clone()))
    {
        let net = model::load::backbone(&r.model, &candle_core::Device::Cpu)?;
        describe(&r.model, &net, r.pruning.groups, r.pruning.group_reduce)?;
        // Split sizes as the spec asks for them, for the classes it lists, else 10 (the
        // built-in MNIST-like datasets; the run itself checks the real sizes).
        let n = if r.data.classes.is_empty() {
            10
        } else {
            r.data.classes.len()
        };
        let splits = [n * r.data.train_per_class, n * r.data.test_per_class];
        let e = runner::memory::estimate(&net, &splits, r.data.batch_size).with_head(
            &net,
            &r.head.hidden,
            n,
            splits[0],
        );
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        outln!(
            "  memory per task (estimate for {n} classes): {:.1} GiB = images {:.1} + stored prefixes {:.1} + one batch of {} {:.1} + the head's training {:.1}; --max-memory now {:.1} GiB",
            gib(e.total()),
            gib(e.data),
            gib(e.prefix),
            r.data.batch_size,
            gib(e.batch),
            gib(e.head),
            gib(runner::memory::limit())
        );
        // A control split as large as the training split (its default).
        if let Some(s) =
            (spec.runs.iter()).find(|s| s.model.name == r.model.name && runner::searches_layers(s))
        {
            let control = n * match s.data.control_per_class {
                0 => s.data.train_per_class,
                c => c,
            };
            let w = e.with_search(&net, control);
            outln!(
                "  a run of `{}` (layer search) adds {:.1} GiB, the current network's values on {control} control images: {:.1} GiB in all; and up to {:.1} GiB of kept candidates where memory allows (they give way when it runs short)",
                s.method.name,
                gib(w.search),
                gib(w.total()),
                gib(w.search_cache)
            );
        }
    }
    Ok(())
}

/// Every run of a spec: done, running (by which process) or missing.
fn status(path: &std::path::Path) -> Result<()> {
    let spec = spec::load(path)?;
    let dir = &spec.results_dir;
    let (mut done, mut running, mut missing) = (0, 0, 0);
    for r in &spec.runs {
        let id = r.run_id();
        let state = if runner::is_finished(dir, &id) {
            done += 1;
            "done".to_string()
        } else if let Some(h) = runner::lock::live_holder(&runner::lock::path(dir, &id)) {
            running += 1;
            format!("running (pid host: {h})")
        } else {
            missing += 1;
            "missing".to_string()
        };
        outln!("{id}  {state}");
    }
    outln!(
        "{}: {done} done, {running} running, {missing} missing of {} runs",
        dir.display(),
        spec.runs.len()
    );
    Ok(())
}

/// A model's node table and pruning groups.
fn describe(
    m: &spec::ModelSpec,
    net: &model::Network,
    groups: spec::GroupPolicy,
    reduce: spec::GroupReduce,
) -> Result<()> {
    outln!(
        "\nmodel `{}` ({}, input 3×{}×{}):",
        m.name,
        m.arch.name(),
        m.input_size,
        m.input_size
    );
    out!("{}", model::summary::table(net));
    let plan = lrprune::prune::Plan::build(net, groups, reduce)?;
    outln!(
        "pruning groups ({}, {} channels):",
        plan.groups.len(),
        plan.sizes().iter().sum::<usize>()
    );
    for g in &plan.groups {
        let convs: Vec<&str> = g
            .producers
            .iter()
            .map(|&n| net.nodes[n].name.as_str())
            .collect();
        outln!(
            "  {:32} {:>5} channels  convs: {}",
            g.name,
            g.size,
            convs.join(", ")
        );
    }
    Ok(())
}

/// Every built-in model at 224×224: its nodes, parameters, MACs and pruning groups (the
/// backbone as `lrprune run` prunes it, without a classifier).
fn models() -> Result<()> {
    for &(name, ..) in spec::BUILTIN_MODELS {
        let mut m = spec::builtin_model(name).expect("a built-in");
        m.input_size = 224;
        let net = model::load::backbone(&m, &candle_core::Device::Cpu)?;
        describe(&m, &net, Default::default(), Default::default())?;
    }
    Ok(())
}

fn write_report(results: &std::path::Path, opts: &report::ReportOptions) -> Result<()> {
    let r = report::report(results, opts)?;
    outln!("\n{}", r.markdown);
    outln!("summary: {}", r.summary.display());
    for p in r.tables.iter().chain(&r.plots) {
        outln!("wrote {}", p.display());
    }
    Ok(())
}

/// glibc returns allocations above 128 KB–32 MB to the kernel on free and maps them afresh
/// (page faults + zeroing) on the next call; a sweep allocates activation-sized buffers
/// thousands of times, so keep them in the heap for reuse.
/// Write `section` into `out` between its markers (stdout without `out`).
fn splice_into(out: Option<PathBuf>, section: &str, start: &str, end: &str) -> Result<()> {
    match out {
        Some(p) => {
            let old = std::fs::read_to_string(&p).unwrap_or_default();
            let text = lrprune::bench::splice(&old, section, start, end);
            lrprune::results::write_atomic(&p, |tmp| Ok(std::fs::write(tmp, &text)?))?;
            outln!("wrote a section of {}", p.display());
        }
        None => out!("{section}"),
    }
    Ok(())
}

fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// `lrprune export --rate/--step/--safe`: run `cfg` of results folder `dir`, to `out`.
fn export_pruned(
    dir: &std::path::Path,
    cfg: &spec::RunConfig,
    at: runner::export::At,
    out: &std::path::Path,
) -> Result<()> {
    lrprune::fsio::check_dir_destination(out).context("--out")?;
    let e = runner::export::pruned(dir, cfg, at, out)?;
    let how = match e.replayed {
        true => ", replayed: its steps file holds no masks",
        false => "",
    };
    outln!(
        "exported {} at step {} (rate {:.4}{how}) to {}",
        cfg.run_id(),
        e.step,
        e.rate,
        out.display()
    );
    Ok(())
}

/// The run `--run` names: its index in `inspect`'s list, or its id.
fn pick_run<'a>(spec: &'a spec::Spec, run: &str) -> Result<&'a spec::RunConfig> {
    if let Some(cfg) = spec.runs.iter().find(|r| r.run_id() == run) {
        return Ok(cfg);
    }
    match run.parse::<usize>() {
        Ok(i) if i < spec.runs.len() => Ok(&spec.runs[i]),
        _ => bail!(
            "--run {run}: not a run id of {} nor an index below its {} runs (see `lrprune inspect`)",
            spec.path.display(),
            spec.runs.len()
        ),
    }
}

fn main() -> ExitCode {
    let started = std::time::Instant::now();
    tune_allocator();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Fetch { assets, list } => fetch(&assets, list),
        Cmd::Inspect { spec } => inspect(&spec),
        Cmd::Models => models(),
        Cmd::Status { spec } => status(&spec),
        Cmd::Digest { results } => lrprune::results::digests(&results).map(|rows| {
            for (id, d) in rows {
                outln!("{id}  {d}");
            }
        }),
        Cmd::Run {
            spec,
            device: d,
            precision,
            max_memory,
            resume,
            wait,
            quiet,
            results_dir,
            shard,
            shard_from_env,
        } => device(d, precision.into()).and_then(|device| {
            if let Some(m) = max_memory {
                runner::memory::set_limit(runner::memory::parse_size(&m)?);
            }
            let mut spec = spec::load(&spec)?;
            if let Some(dir) = results_dir {
                spec.results_dir = dir;
            }
            let shard = match (shard, shard_from_env) {
                (Some(s), _) => Some(runner::shard::Shard::parse(&s)?),
                (None, true) => Some(runner::shard::Shard::from_env()?),
                (None, false) => None,
            };
            let summary = runner::run_sweep(
                &spec,
                &runner::RunOptions {
                    device,
                    precision: precision.into(),
                    started,
                    shard,
                    resume,
                    wait,
                    quiet,
                },
            )?;
            outln!("{summary}; results in {}", spec.results_dir.display());
            summary.check(&spec)?;
            // With shards, whichever process sees the last run finish writes the report.
            let done = runner::finished_count(&spec);
            if done < spec.runs.len() {
                outln!(
                    "{done} of the spec's {} runs have results; the report waits for the others (or run `lrprune report`)",
                    spec.runs.len()
                );
                return Ok(());
            }
            let opts = report::ReportOptions {
                out: None,
                baseline: spec.baseline.clone(),
                focus: None,
                quiet,
                only: Some(spec.runs.iter().map(|r| r.run_id()).collect()),
                merge: vec![],
            };
            write_report(&spec.results_dir, &opts)
        }),
        // `run` guards each run; `explain` reads inputs no spec check has seen.
        Cmd::Explain(args) => runner::guard(|| explain(args)),
        Cmd::Export {
            spec,
            run,
            out,
            rate,
            step,
            safe,
            results_dir,
        } => (|| {
            use runner::export::At;
            let at = match (rate, step, safe) {
                (Some(r), _, _) => Some(At::Rate(r)),
                (_, Some(k), _) => Some(At::Step(k)),
                (_, _, true) => Some(At::Safe),
                _ => None,
            };
            // A results folder holds each run's settings: with a step named, it is enough.
            if spec.is_dir() {
                let Some(at) = at else {
                    bail!("{}: a results folder exports a pruned network: name its step with --rate, --step or --safe (the task alone: `lrprune export SPEC --run N --out DIR`)", spec.display());
                };
                let cfg = runner::export::config_of(&spec, &run)?;
                return export_pruned(&spec, &cfg, at, &out);
            }
            let spec = spec::load(&spec)?;
            let cfg = pick_run(&spec, &run)?;
            let Some(at) = at else {
                lrprune::fsio::check_dir_destination(&out).context("--out")?;
                let task = runner::prepare_task(cfg, &candle_core::Device::Cpu)?;
                lrprune::fsio::create_dir_all(&out).context("--out")?;
                model::export::write_task(cfg, &task.net, &task.data.train, &task.data.test, &out)?;
                outln!("exported {} to {}", cfg.run_id(), out.display());
                return Ok(());
            };
            let dir = results_dir.unwrap_or_else(|| spec.results_dir.clone());
            export_pruned(&dir, cfg, at, &out)
        })(),
        Cmd::Bench {
            out,
            reps,
            no_torch,
            script,
            device: DeviceArg::Cuda,
            precision,
            batch,
            ..
        } => device(DeviceArg::Cuda, precision.into()).and_then(|d| {
            let opts = lrprune::bench::gpu::GpuOptions {
                precision: precision.into(),
                size: 224,
                batch,
                reps,
                torch: (!no_torch).then_some(script.as_path()),
            };
            let section = lrprune::bench::gpu::run(&d, &opts)?;
            use lrprune::bench::gpu::{END, START};
            splice_into(out, &section, START, END)
        }),
        Cmd::Bench {
            spec,
            out,
            reps,
            search: true,
            ..
        } => lrprune::bench::search::run(&spec, reps).and_then(|section| {
            use lrprune::bench::search::{END, START};
            splice_into(out, &section, START, END)
        }),
        Cmd::Bench {
            spec,
            spec_224,
            out,
            reps,
            no_torch,
            no_sweeps,
            script,
            precision,
            ..
        } => (|| {
            Precision::from(precision).apply(false)?;
            let text = lrprune::bench::run(&lrprune::bench::BenchOptions {
                spec,
                spec_224,
                reps,
                torch: !no_torch,
                sweeps: !no_sweeps,
                script,
            })?;
            match out {
                Some(p) => {
                    // Sections measured outside `bench` (long sweeps) follow a marker and
                    // survive a rewrite.
                    let kept = std::fs::read_to_string(&p).ok().and_then(|old| {
                        old.find(BENCH_KEEP).map(|i| old[i..].to_string())
                    });
                    let text = match kept {
                        Some(tail) => format!("{text}\n{tail}"),
                        None => text,
                    };
                    lrprune::results::write_atomic(&p, |tmp| Ok(std::fs::write(tmp, &text)?))?;
                    outln!("wrote {}", p.display());
                }
                None => outln!("{text}"),
            }
            Ok(())
        })(),
        Cmd::Report {
            results,
            out,
            baseline,
            focus,
            spec,
        } => spec
            .map(|p| spec::load(&p).map(|s| s.runs.iter().map(|r| r.run_id()).collect()))
            .transpose()
            .and_then(|only| {
                let opts = report::ReportOptions {
                    out,
                    baseline,
                    focus,
                    quiet: false,
                    only,
                    merge: results[1..].to_vec(),
                };
                write_report(&results[0], &opts)
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
