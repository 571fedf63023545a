//! The `lrprune` command line.

use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};
use lrprune::{assets, model, report, runner, spec};
use std::path::PathBuf;
use std::process::ExitCode;

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
        /// Skip runs whose results already exist.
        #[arg(long)]
        resume: bool,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
    },
    /// Show the expanded run list and the model's layers, parameters and FLOPs.
    Inspect { spec: PathBuf },
    /// Summaries, tables (md/csv/tex) and plots (png/svg) from a results directory.
    Report {
        results: PathBuf,
        /// Output directory (default RESULTS/report).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Method the AUC ratios are relative to.
        #[arg(long, default_value = "lrp")]
        baseline: String,
        /// Method whose per-class curves and layer profile are drawn (default: the baseline).
        #[arg(long)]
        focus: Option<String>,
    },
}

fn device(arg: DeviceArg) -> Result<candle_core::Device> {
    match arg {
        DeviceArg::Cpu => Ok(candle_core::Device::Cpu),
        DeviceArg::Cuda => {
            if !candle_core::utils::cuda_is_available() {
                bail!("--device cuda: this binary was built without CUDA (fix: cargo build --release --features cuda on a machine with the CUDA toolkit)");
            }
            Ok(candle_core::Device::new_cuda(0)?)
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
            println!(
                "{:16} {:12} {}\n{:16} licence: {}",
                a.name, state, a.description, "", a.licence
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
        println!("{}: {}", a.name, dir.display());
    }
    Ok(())
}

fn inspect(path: &std::path::Path) -> Result<()> {
    let spec = spec::load(path)?;
    println!(
        "experiment `{}`: {} runs → {}",
        spec.name,
        spec.runs.len(),
        spec.results_dir.display()
    );
    for r in &spec.runs {
        println!("  {}", r.run_id());
    }
    let mut seen = std::collections::HashSet::new();
    for r in spec
        .runs
        .iter()
        .filter(|r| seen.insert(r.model.name.clone()))
    {
        let net = runner::load_backbone(r, &candle_core::Device::Cpu)?;
        println!(
            "\nmodel `{}` ({}, input 3×{}×{}):",
            r.model.name, r.model.arch, r.model.input_size, r.model.input_size
        );
        print!("{}", model::summary::table(&net));
    }
    Ok(())
}

fn write_report(results: &std::path::Path, opts: &report::ReportOptions) -> Result<()> {
    let r = report::report(results, opts)?;
    println!("\n{}", r.markdown);
    println!("summary: {}", r.summary.display());
    for p in r.tables.iter().chain(&r.plots) {
        println!("wrote {}", p.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Fetch { assets, list } => fetch(&assets, list),
        Cmd::Inspect { spec } => inspect(&spec),
        Cmd::Run {
            spec,
            device: d,
            resume,
            quiet,
        } => device(d).and_then(|device| {
            let spec = spec::load(&spec)?;
            let n = runner::run_sweep(
                &spec,
                &runner::RunOptions {
                    device,
                    resume,
                    quiet,
                },
            )?;
            println!(
                "{n} runs finished; results in {}",
                spec.results_dir.display()
            );
            let opts = report::ReportOptions {
                out: None,
                baseline: spec.baseline.clone(),
                focus: None,
                quiet,
            };
            write_report(&spec.results_dir, &opts)
        }),
        Cmd::Report {
            results,
            out,
            baseline,
            focus,
        } => write_report(
            &results,
            &report::ReportOptions {
                out,
                baseline,
                focus,
                quiet: false,
            },
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
