//! The sweep: prepare each task (data split + trained head), run each method's schedule,
//! evaluate every step on the held-out test split and write the run's Parquet atomically.

use crate::data::{self, split::TaskData};
use crate::eval::{self, Metrics};
use crate::lrp::LrpCriterion;
use crate::model::network::batch_ranges;
use crate::model::prefix::{self, PrefixCache, Start};
use crate::model::{cost, head, vgg, weights, Layer, Network};
use crate::prune::compact::compact;
use crate::prune::controller::AccuracyAware;
use crate::prune::criteria::{Criterion, RandomScores, Taylor, WeightNorm};
use crate::prune::schedule::{Context, GlobalSchedule, Schedule};
use crate::prune::FilterMask;
use crate::results::{self, RunIdentity, StepRecord};
use crate::spec::{MethodKind, RunConfig, Spec};
use crate::{assets, rng};
use anyhow::{bail, Context as _, Result};
use candle_core::{Device, Tensor};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

/// A prepared task: the unpruned network (backbone + trained head) and its data split.
pub struct Task {
    pub net: Network,
    pub data: TaskData,
    /// Head accuracy on its own training split (a sanity figure, stored per run).
    pub head_train_acc: f64,
    /// Test metrics of the unpruned network (step 0), shared by every method of the task.
    pub intact: Metrics,
    /// The intact network's layer inputs on the test and training splits
    /// ([`PrefixCache`]): every step's evaluation and relevance pass starts at the first
    /// pruned conv.
    pub test_prefix: PrefixCache,
    pub train_prefix: PrefixCache,
    /// The same on the held-out control set, when the spec draws one.
    pub control_prefix: Option<PrefixCache>,
}

/// The model's layer configuration (named VGG or custom `cfg`).
fn layer_config(cfg: &RunConfig) -> Result<Vec<Option<usize>>> {
    let m = &cfg.model;
    match m.arch.as_str() {
        "custom" => vgg::custom_config(&m.cfg),
        arch => vgg::config(arch).with_context(|| {
            format!(
                "model `{}`: unknown arch `{arch}` (fix: vgg11, vgg13, vgg16, vgg19 or custom)",
                m.name
            )
        }),
    }
}

/// torchvision `features.N` indices of the model's convs.
pub fn conv_keys(cfg: &RunConfig) -> Result<Vec<usize>> {
    Ok(vgg::conv_keys(&layer_config(cfg)?, cfg.model.batch_norm))
}

/// Build the backbone a model spec describes, without a head.
pub fn load_backbone(cfg: &RunConfig, device: &Device) -> Result<Network> {
    let m = &cfg.model;
    let layer_cfg = layer_config(cfg)?;
    let path = assets::resolve(&m.weights)?;
    let tensors = weights::load(&path, device)?;
    let mut layers = vgg::build_features(&layer_cfg, m.batch_norm, 3, &tensors, device)
        .with_context(|| format!("building model `{}` from {}", m.name, path.display()))?;
    layers.push(Layer::GlobalAvgPool);
    let head_start = layers.len();
    Ok(Network {
        layers,
        head_start,
        input_shape: (3, m.input_size, m.input_size),
    })
}

/// Load data, draw the seeded split, and train the head on the fixed backbone's features.
pub fn prepare_task(cfg: &RunConfig, device: &Device) -> Result<Task> {
    let mut net = load_backbone(cfg, device)?;
    let src_path = assets::resolve(&cfg.dataset.source)?;
    let sources = data::open(&cfg.dataset, &src_path).with_context(|| {
        format!(
            "opening dataset `{}` at {}",
            cfg.dataset.name,
            src_path.display()
        )
    })?;
    let mut split_rng = rng::stream(cfg.seed, "split");
    let data = data::split::make(
        &sources,
        &cfg.data,
        cfg.model.input_size,
        cfg.model.preprocess,
        &mut split_rng,
        device,
    )?;
    let bs = cfg.data.batch_size;
    // The intact backbone's layer inputs on each split, computed once: the head comes after
    // the last conv, so they stay valid, and the head's features, the intact metrics and
    // every later pass start from them instead of running the network again.
    let build = |images: &Tensor| PrefixCache::build(&net, images, bs, prefix::DEFAULT_BUDGET);
    let train_prefix = build(&data.train.images)?;
    let test_prefix = build(&data.test.images)?;
    let control_prefix = data
        .control
        .as_ref()
        .map(|c| build(&c.images))
        .transpose()?;
    let intact_mask = FilterMask::all_alive(&net.filters_per_conv());
    let intact_from = |cache| Some(Start::for_mask(cache, &intact_mask));
    let feats = batch_ranges(data.train.labels.len(), bs)
        .map(|(start, len)| {
            let from = intact_from(&train_prefix);
            prefix::forward(&net, &data.train.images, from, start, len)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let feats = Tensor::cat(&feats, 0)?;
    if feats
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .any(|v| !v.is_finite())
    {
        bail!(
            "backbone features contain NaN/Inf (check the weights file `{}`)",
            cfg.model.weights
        );
    }
    let mut head_rng = rng::stream(cfg.seed, "head");
    let head = head::train(
        &feats,
        &data.train.labels_tensor()?,
        data.n_classes(),
        &cfg.head,
        &mut head_rng,
    )?;
    net.layers.extend(head);
    let nc = data.n_classes();
    let train_from = intact_from(&train_prefix);
    let head_train_acc = eval::evaluate_from(&net, &data.train, nc, bs, train_from)?.top1;
    let intact = eval::evaluate_from(&net, &data.test, nc, bs, intact_from(&test_prefix))?;
    Ok(Task {
        control_prefix,
        net,
        data,
        head_train_acc,
        intact,
        test_prefix,
        train_prefix,
    })
}

/// The schedule a method runs. Criteria only ever see the reference (training) split.
pub fn schedule_for(
    cfg: &RunConfig,
    n_classes: usize,
    device: &Device,
) -> Result<Box<dyn Schedule>> {
    let lrp = || -> Result<Box<dyn Criterion>> {
        let settings = cfg.lrp.clone().unwrap_or_default();
        let composite =
            crate::lrp::composite::by_name(&settings.composite, cfg.model.preprocess, device)?;
        Ok(Box::new(LrpCriterion {
            composite,
            settings,
            n_classes,
        }))
    };
    if cfg.method.kind == MethodKind::AaLrp {
        let lrp = cfg.lrp.clone().unwrap_or_default();
        let composite =
            crate::lrp::composite::by_name(&lrp.composite, cfg.model.preprocess, device)?;
        let control = cfg.control.clone().unwrap_or_default();
        return Ok(Box::new(AccuracyAware::new(
            control,
            lrp,
            cfg.pruning.clone(),
            composite,
            n_classes,
        )));
    }
    let (criterion, recompute): (Box<dyn Criterion>, bool) = match cfg.method.kind {
        MethodKind::L1 => (Box::new(WeightNorm { p: 1 }), true),
        MethodKind::L2 => (Box::new(WeightNorm { p: 2 }), true),
        MethodKind::Random => (
            Box::new(RandomScores {
                rng: rng::stream(cfg.seed, "random-criterion"),
            }),
            true,
        ),
        MethodKind::Lrp => (lrp()?, true),
        MethodKind::LrpOneshot => (lrp()?, false),
        MethodKind::Taylor => (Box::new(Taylor), true),
        MethodKind::AaLrp => unreachable!("handled above"),
    };
    Ok(Box::new(GlobalSchedule::new(
        criterion,
        cfg.pruning.clone(),
        recompute,
    )))
}

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
        control_acc: s.and_then(|s| s.control_acc),
        step_size: s.map_or(0.0, |s| s.step_size),
        backoffs: s.map_or(0, |s| s.backoffs),
        wall_ms,
    }
}

/// What schedules may see: the unpruned network and the **training** split. The test split
/// is not reachable from here, so no pruning decision can depend on it.
pub fn context(task: &Task, batch_size: usize) -> Context<'_> {
    Context {
        original: &task.net,
        reference: &task.data.train,
        batch_size,
        reference_prefix: Some(&task.train_prefix),
        control: task.data.control_split(),
        control_prefix: Some(task.control_prefix.as_ref().unwrap_or(&task.train_prefix)),
    }
}

/// Run one configuration on a prepared task; returns every step's record (step 0 = unpruned).
pub fn run_one(cfg: &RunConfig, task: &Task, bar: &ProgressBar) -> Result<Vec<StepRecord>> {
    let n_classes = task.data.n_classes();
    let bs = cfg.data.batch_size;
    let mut mask = FilterMask::all_alive(&task.net.filters_per_conv());
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
    let ctx = context(task, bs);
    let mut schedule = schedule_for(cfg, n_classes, task.net.device())?;
    let n_steps = (cfg.pruning.max_rate / cfg.pruning.step - 1e-9).ceil() as u64;
    bar.set_length(n_steps);
    bar.set_position(0);
    while let Some(step) = {
        let t = Instant::now();
        schedule.next(&mask, &ctx)?.map(|s| (s, t))
    } {
        let (step, t) = step;
        mask = step.mask.clone();
        let net = compact(&task.net, &mask)?;
        let from = Start::for_mask(&task.test_prefix, &mask);
        let m = eval::evaluate_from(&net, &task.data.test, n_classes, bs, Some(from))?;
        rows.push(record(
            rows.len() as i64,
            &mask,
            &net,
            &m,
            Some(&step),
            t.elapsed().as_secs_f64() * 1e3,
        ));
        bar.inc(1);
        // Rate control can take more steps than the fixed grid: keep the bar honest.
        if bar.length().is_some_and(|len| bar.position() >= len)
            && mask.rate() < cfg.pruning.max_rate - 1e-3
        {
            bar.inc_length(1);
        }
    }
    Ok(rows)
}

/// Options of `lrprune run`.
pub struct RunOptions {
    pub device: Device,
    pub resume: bool,
    /// Hide progress bars (tests, CI logs).
    pub quiet: bool,
}

pub fn is_finished(dir: &Path, run_id: &str) -> bool {
    results::steps_path(dir, run_id).is_file() && results::runs_path(dir, run_id).is_file()
}

/// Run every run of `spec`; with `resume`, runs whose results exist are skipped.
/// Returns the number of runs executed.
pub fn run_sweep(spec: &Spec, opts: &RunOptions) -> Result<usize> {
    let dir = &spec.results_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    results::remove_stale_partials(dir)?;
    let todo: Vec<&RunConfig> = spec
        .runs
        .iter()
        .filter(|r| !(opts.resume && is_finished(dir, &r.run_id())))
        .collect();
    if !opts.resume {
        let started = |id: &str| {
            results::steps_path(dir, id).is_file() || results::runs_path(dir, id).is_file()
        };
        if let Some(r) = spec.runs.iter().find(|r| started(&r.run_id())) {
            bail!(
                "{}: results for run {} already exist (fix: pass --resume to skip finished runs, or delete the directory to start over)",
                dir.display(),
                r.run_id()
            );
        }
    }
    let skipped = spec.runs.len() - todo.len();
    if skipped > 0 {
        eprintln!(
            "resuming: {skipped} of {} runs already finished",
            spec.runs.len()
        );
    }
    let multi = MultiProgress::new();
    if opts.quiet {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let sweep = multi.add(ProgressBar::new(todo.len() as u64));
    sweep.set_style(
        ProgressStyle::with_template(
            "sweep {bar:30} {pos}/{len} runs [{elapsed_precise}<{eta_precise}]",
        )
        .unwrap(),
    );
    let bar = multi.add(ProgressBar::new(0));
    bar.set_style(ProgressStyle::with_template("{msg:40} {bar:30} step {pos}/{len}").unwrap());

    // A failing run names the spec too: the fix (a key in `data`, a path) goes there.
    let run_ctx = |id: &str| format!("{}: run {id}", spec.path.display());
    let mut cached: Option<(String, Rc<Task>)> = None;
    for cfg in &todo {
        let id = cfg.run_id();
        bar.set_message(id.clone());
        let key = cfg.task_key();
        let task = match &cached {
            Some((k, t)) if *k == key => t.clone(),
            _ => {
                let t = Rc::new(prepare_task(cfg, &opts.device).with_context(|| run_ctx(&id))?);
                cached = Some((key, t.clone()));
                t
            }
        };
        let t0 = Instant::now();
        let rows = run_one(cfg, &task, &bar).with_context(|| run_ctx(&id))?;
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
        let mut meta = crate::results::run_frame(
            &ident,
            cfg,
            &task,
            t0.elapsed().as_secs_f64(),
            &opts.device,
        )?;
        results::write_parquet_atomic(&results::runs_path(dir, &id), &mut meta)?;
        let (first, last) = (&rows[0], rows.last().unwrap());
        multi.suspend(|| {
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
        sweep.inc(1);
    }
    sweep.finish_and_clear();
    bar.finish_and_clear();
    Ok(todo.len())
}
