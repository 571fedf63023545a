//! The sweep: prepare each task (data split + trained head), run each method's schedule,
//! evaluate every step on the held-out test split and write the run's Parquet atomically.
//!
//! `task` prepares a task, `methods` maps a method to its schedule; this file runs them.

pub mod export;
pub mod inputs;
pub mod lock;
pub mod memory;
mod methods;
pub mod shard;
mod task;

pub use methods::{schedule_for, searches_layers};
pub use task::{context, prepare_task, Task};

use crate::eval::{self, Metrics};
use crate::model::{cost, Network};
use crate::prune::schedule::Pruned;
use crate::prune::FilterMask;
use crate::results::{self, RunIdentity, RunMeta, StepRecord};
use crate::spec::{RunConfig, Spec};
use anyhow::{bail, Result};
use candle_core::Device;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

fn record(
    step: i64,
    mask: &FilterMask,
    net: &Network,
    m: &Metrics,
    s: Option<&crate::prune::Step>,
    wall_ms: f64,
) -> StepRecord {
    let c = cost::cost(net);
    StepRecord {
        step,
        pruning_rate: mask.rate(),
        filters_remaining: mask.alive() as i64,
        params: c.params as i64,
        flops: c.flops() as i64,
        top1: m.top1,
        balanced_acc: m.balanced,
        harmonic_acc: m.harmonic,
        class_acc: m.class_acc.clone(),
        layer_filters: mask.per_layer().into_iter().map(|v| v as i64).collect(),
        kept: mask.to_strings(),
        control_acc: s.and_then(|s| s.control_acc()),
        step_size: s.map_or(0.0, |s| s.step_size),
        backoffs: s.map_or(0, |s| s.backoffs),
        wall_ms,
    }
}

/// Run one configuration on a prepared task; returns every step's record (step 0 = unpruned).
pub fn run_one(cfg: &RunConfig, task: &Task, bar: &ProgressBar) -> Result<Vec<StepRecord>> {
    Ok(steps(cfg, task, bar, None)?.0)
}

/// Seconds a run's steps (1…) spent scoring, compacting and evaluating.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepSplit {
    pub score_s: f64,
    pub compact_s: f64,
    pub eval_s: f64,
}

/// [`run_one`], with where its steps' time went (`lrprune bench`).
pub fn run_one_timed(
    cfg: &RunConfig,
    task: &Task,
    bar: &ProgressBar,
) -> Result<(Vec<StepRecord>, StepSplit)> {
    let (rows, _, split) = steps(cfg, task, bar, None)?;
    Ok((rows, split))
}

/// Run `cfg` again up to step `until` (`lrprune export` of a run whose steps file holds no
/// masks): the records up to it and its state. Same spec and seed, same steps on the CPU.
pub fn replay(cfg: &RunConfig, task: &Task, until: usize) -> Result<(Vec<StepRecord>, Pruned)> {
    let (rows, state, _) = steps(cfg, task, &ProgressBar::hidden(), Some(until))?;
    Ok((rows, state))
}

/// The steps of `cfg` on `task`, to the end or to step `until`, and the last state.
fn steps(
    cfg: &RunConfig,
    task: &Task,
    bar: &ProgressBar,
    until: Option<usize>,
) -> Result<(Vec<StepRecord>, Pruned, StepSplit)> {
    let n_classes = task.data.n_classes();
    let bs = cfg.data.batch_size;
    let mask = FilterMask::all_alive(&task.plan.sizes());
    let t0 = Instant::now();
    let m0 = task.intact.clone();
    let mut rows = vec![record(
        0,
        &mask,
        &task.net,
        &m0,
        None,
        t0.elapsed().as_secs_f64() * 1e3,
    )];
    if methods::searches_layers(cfg) {
        let control = task.data.control_split().labels.len();
        let e = memory::estimate(&task.net, &task::split_sizes(&task.data), bs)
            .with_search(&task.net, control);
        let what = format!("method `{}` (layer search)", cfg.method.name);
        memory::check(&what, &e, bs)?;
    }
    let ctx = context(task, cfg);
    let mut schedule = schedule_for(cfg, n_classes, task.net.device())?;
    let n_steps = (cfg.pruning.max_rate / cfg.pruning.step - 1e-9).ceil() as u64;
    bar.set_length(n_steps);
    bar.set_position(0);
    let mut state = ctx.form(mask)?;
    let compact0 = ctx.clock.compact_s();
    let mut eval_s = 0.0;
    while until.is_none_or(|u| rows.len() <= u) {
        let t = Instant::now();
        let Some(step) = schedule.next(&state, &ctx)? else {
            break;
        };
        let pruned = &step.pruned;
        let from = task.plan.start(&task.test_prefix, &pruned.mask);
        let te = Instant::now();
        let m = eval::evaluate_from(&pruned.net, &task.data.test, n_classes, bs, Some(from))?;
        eval_s += te.elapsed().as_secs_f64();
        rows.push(record(
            rows.len() as i64,
            &pruned.mask,
            &pruned.net,
            &m,
            Some(&step),
            t.elapsed().as_secs_f64() * 1e3,
        ));
        bar.inc(1);
        // Rate control can take more steps than the fixed grid: keep the bar honest.
        if bar.length().is_some_and(|len| bar.position() >= len)
            && pruned.mask.rate() < cfg.pruning.max_rate - 1e-3
        {
            bar.inc_length(1);
        }
        state = step.pruned;
    }
    let split = StepSplit {
        score_s: ctx.clock.score_s(),
        compact_s: ctx.clock.compact_s() - compact0,
        eval_s,
    };
    Ok((rows, state, split))
}

/// `f`, with a panic (a bug: everything a spec can say is checked at load) turned into an
/// error, so the message still names the spec and the run.
pub fn guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        bail!("internal error (please report it): {what}")
    })
}

/// Options of `lrprune run`.
pub struct RunOptions {
    pub device: Device,
    /// How the GPU multiplies f32 (set up before `device` was made); recorded per run.
    pub precision: crate::model::precision::Precision,
    /// Run only this shard's share of the runs.
    pub shard: Option<shard::Shard>,
    pub resume: bool,
    /// Wait for runs another process holds (running them if their lock goes stale) instead
    /// of skipping them.
    pub wait: bool,
    /// Hide progress bars (tests, CI logs).
    pub quiet: bool,
    /// When the process started: on CUDA the sweep reports how long its first task took to
    /// be ready, kernel loading included (docs/performance.md, GPU).
    pub started: Instant,
}

/// How often `--wait` looks at the runs other processes hold (a stat of two files each).
const WAIT_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// How many of the spec's runs have results in its folder.
pub fn finished_count(spec: &Spec) -> usize {
    spec.runs
        .iter()
        .filter(|r| is_finished(&spec.results_dir, &r.run_id()))
        .count()
}

pub fn is_finished(dir: &Path, run_id: &str) -> bool {
    results::steps_path(dir, run_id).is_file() && results::runs_path(dir, run_id).is_file()
}

/// What a sweep did with its share of the spec's runs.
#[derive(Debug, Default)]
pub struct Summary {
    /// Runs this process ran to the end.
    pub ran: usize,
    /// Runs skipped because their results exist (`--resume`, or another process finished
    /// them meanwhile).
    pub done: usize,
    /// Runs skipped because another live process holds them: their lock files.
    pub held: Vec<PathBuf>,
    /// Runs that failed: their ids.
    pub failed: Vec<String>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{} runs ran, {} already done, {} held by another process, {} failed",
            self.ran,
            self.done,
            self.held.len(),
            self.failed.len()
        )
    }
}

impl Summary {
    /// The sweep's exit status: an error when a run failed, or when one was held by another
    /// process (without `--wait`): this process cannot tell whether its results will come.
    pub fn check(&self, spec: &Spec) -> Result<()> {
        let mut problems = Vec::new();
        if !self.failed.is_empty() {
            let share = self.ran + self.done + self.held.len() + self.failed.len();
            problems.push(format!(
                "{} of {share} runs failed ({}); the others finished (fix the errors above and rerun with --resume)",
                self.failed.len(),
                self.failed.join(", ")
            ));
        }
        if !self.held.is_empty() {
            let locks: Vec<String> = self.held.iter().map(|p| p.display().to_string()).collect();
            problems.push(format!(
                "{} runs were skipped as held by another process ({}) (fix: rerun with --resume once that process ends, `lrprune status` shows it, or pass --wait to wait for them; a lock whose process is gone is taken over, one from another host {} min after its last heartbeat)",
                self.held.len(),
                locks.join(", "),
                lock::STALE_AFTER.as_secs() / 60
            ));
        }
        match problems.is_empty() {
            true => Ok(()),
            false => bail!("{}: {}", spec.path.display(), problems.join("; ")),
        }
    }
}

/// Run every run of `spec`; with `resume`, runs whose results exist are skipped. Runs that
/// fail or are held elsewhere do not stop the others: the summary says what happened to each.
pub fn run_sweep(spec: &Spec, opts: &RunOptions) -> Result<Summary> {
    let dir = &spec.results_dir;
    crate::fsio::create_dir_all(dir)?;
    results::remove_stale_partials(dir)?;
    let mine = match opts.shard {
        Some(s) => shard::assign(&spec.runs, s.count)
            .into_iter()
            .map(|k| k == s.index)
            .collect(),
        None => vec![true; spec.runs.len()],
    };
    let todo: Vec<&RunConfig> = spec
        .runs
        .iter()
        .zip(&mine)
        .filter(|(r, mine)| **mine && !(opts.resume && is_finished(dir, &r.run_id())))
        .map(|(r, _)| r)
        .collect();
    if !opts.resume {
        let started = |id: &str| {
            results::steps_path(dir, id).is_file() || results::runs_path(dir, id).is_file()
        };
        if let Some(r) = todo.iter().find(|r| started(&r.run_id())) {
            bail!(
                "{}: results for run {} already exist (fix: pass --resume to skip finished runs, or delete the directory to start over)",
                dir.display(),
                r.run_id()
            );
        }
    }
    // Before anything runs: a changed weights or dataset file never joins an old folder.
    inputs::check_and_record(dir, &spec.runs)?;
    let share = mine.iter().filter(|m| **m).count();
    let skipped = share - todo.len();
    if let Some(s) = opts.shard {
        eprintln!(
            "shard {}/{}: {share} of the spec's {} runs",
            s.index + 1,
            s.count,
            spec.runs.len()
        );
    }
    if skipped > 0 {
        eprintln!("resuming: {skipped} of {share} runs already finished");
    }
    let mut s = Sweep::new(spec, opts, todo.len());
    s.summary.done = skipped;
    let mut held = Vec::new();
    for cfg in todo {
        match s.attempt(cfg)? {
            Attempt::Held { path, holder } => {
                if !opts.wait {
                    let id = cfg.run_id();
                    let p = path.display();
                    s.say(&format!(
                        "{id}: held by process {holder} ({p}); skipped here"
                    ));
                    s.sweep.inc(1);
                }
                held.push((cfg, path));
            }
            done => s.tally(done),
        }
    }
    if opts.wait && !held.is_empty() {
        s.say(&format!(
            "waiting for {} runs held by other processes",
            held.len()
        ));
        while !held.is_empty() {
            std::thread::sleep(WAIT_POLL);
            let mut still = Vec::new();
            for (cfg, path) in held {
                match s.attempt(cfg)? {
                    Attempt::Held { .. } => still.push((cfg, path)),
                    done => s.tally(done),
                }
            }
            held = still;
        }
    }
    s.sweep.finish_and_clear();
    s.bar.finish_and_clear();
    s.summary.held = held.into_iter().map(|(_, p)| p).collect();
    Ok(s.summary)
}

enum Attempt {
    Ran,
    Done,
    Held { path: PathBuf, holder: String },
    Failed(String),
}

/// A sweep in progress: its bars, the last task prepared (runs of one task share it) and
/// the tally so far.
struct Sweep<'a> {
    spec: &'a Spec,
    opts: &'a RunOptions,
    multi: MultiProgress,
    sweep: ProgressBar,
    bar: ProgressBar,
    cached: Option<(String, Rc<Task>)>,
    summary: Summary,
}

impl<'a> Sweep<'a> {
    fn new(spec: &'a Spec, opts: &'a RunOptions, runs: usize) -> Self {
        let multi = MultiProgress::new();
        if opts.quiet {
            multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let sweep = multi.add(ProgressBar::new(runs as u64));
        sweep.set_style(
            ProgressStyle::with_template(
                "sweep {bar:30} {pos}/{len} runs [{elapsed_precise}<{eta_precise}]",
            )
            .unwrap(),
        );
        let bar = multi.add(ProgressBar::new(0));
        bar.set_style(ProgressStyle::with_template("{msg:40} {bar:30} step {pos}/{len}").unwrap());
        Self {
            spec,
            opts,
            multi,
            sweep,
            bar,
            cached: None,
            summary: Summary::default(),
        }
    }

    fn say(&self, line: &str) {
        self.multi.suspend(|| eprintln!("{line}"));
    }

    fn tally(&mut self, a: Attempt) {
        match a {
            Attempt::Ran => self.summary.ran += 1,
            Attempt::Done => self.summary.done += 1,
            Attempt::Failed(id) => self.summary.failed.push(id),
            Attempt::Held { .. } => unreachable!("held runs are kept by the caller"),
        }
        self.sweep.inc(1);
    }

    /// Run `cfg` unless it is finished or another process holds it. A failing run is
    /// reported here and tallied; `Err` is only what stops the sweep (a lock or results
    /// file that cannot be written).
    fn attempt(&mut self, cfg: &RunConfig) -> Result<Attempt> {
        let dir = &self.spec.results_dir;
        let id = cfg.run_id();
        if is_finished(dir, &id) {
            return Ok(Attempt::Done);
        }
        let _claim = match lock::claim(dir, &id)? {
            lock::Claim::Taken(l) => l,
            lock::Claim::Busy { path, holder } => return Ok(Attempt::Held { path, holder }),
        };
        // Another process may have finished it between the check and the claim.
        if is_finished(dir, &id) {
            return Ok(Attempt::Done);
        }
        self.bar.set_message(id.clone());
        let t0 = Instant::now();
        // A failing run names the spec too: the fix (a key in `data`, a path) goes there.
        let (task, rows) = match self.run(cfg) {
            Ok(done) => done,
            Err(e) => {
                let e = (self.spec.locate(cfg, e))
                    .context(format!("{}: run {id}", self.spec.path.display()));
                self.say(&format!("error: {e:#}"));
                return Ok(Attempt::Failed(id));
            }
        };
        let ident = RunIdentity {
            run_id: id.clone(),
            experiment: cfg.experiment.clone(),
            model: cfg.model.name.clone(),
            dataset: cfg.dataset.name.clone(),
            method: cfg.method.name.clone(),
            variant: cfg.variant.clone(),
            seed: cfg.seed as i64,
        };
        let mut df = results::steps_frame(&ident, &rows)?;
        results::write_parquet_atomic(&results::steps_path(dir, &id), &mut df)?;
        let run_meta = RunMeta {
            head_train_acc: task.head_train_acc,
            n_train: task.data.train.labels.len(),
            n_test: task.data.test.labels.len(),
            class_names: task.data.class_names.clone(),
            group_names: task.plan.names(),
            wall_s: t0.elapsed().as_secs_f64(),
        };
        let (device, precision) = (&self.opts.device, self.opts.precision);
        let mut meta = results::run_frame(&ident, cfg, &run_meta, device, precision)?;
        results::write_parquet_atomic(&results::runs_path(dir, &id), &mut meta)?;
        let (first, last) = (&rows[0], rows.last().unwrap());
        self.multi.suspend(|| {
            use std::io::Write;
            let _ = writeln!(
                std::io::stdout(),
                "{id}: top1 {:.3} → {:.3} at rate {:.2} ({} steps, {:.1}s)",
                first.top1,
                last.top1,
                last.pruning_rate,
                rows.len() - 1,
                t0.elapsed().as_secs_f64()
            );
        });
        Ok(Attempt::Ran)
    }

    /// The task of `cfg` (prepared, or the last one when they share it) and its steps.
    fn run(&mut self, cfg: &RunConfig) -> Result<(Rc<Task>, Vec<StepRecord>)> {
        let key = cfg.task_key();
        let task = match &self.cached {
            Some((k, t)) if *k == key => t.clone(),
            _ => {
                let first = self.cached.is_none();
                let t = Rc::new(guard(|| prepare_task(cfg, &self.opts.device))?);
                if first && self.opts.device.is_cuda() {
                    let s = self.opts.started.elapsed().as_secs_f64();
                    self.say(&format!(
                        "cuda: first task ready (data, head, step 0) {s:.1} s after start"
                    ));
                }
                self.cached = Some((key, t.clone()));
                t
            }
        };
        let rows = guard(|| run_one(cfg, &task, &self.bar))?;
        Ok((task, rows))
    }
}
