//! Task preparation: the data split drawn from the seed, the fixed backbone's stored
//! prefixes on each split, the head trained on its features, and the step-0 metrics.

use super::memory;
use crate::data::{self, split::TaskData};
use crate::eval::{self, Metrics};
use crate::model::load;
use crate::model::network::batch_ranges;
use crate::model::prefix::{self, PrefixCache, Start};
use crate::model::{head, Network};
use crate::prune::after_step::HeadPolicy;
use crate::prune::schedule::Context;
use crate::prune::Plan;
use crate::spec::RunConfig;
use crate::{assets, rng};
use anyhow::{bail, Context as _, Result};
use candle_core::{Device, Tensor};

/// A prepared task: the unpruned network (backbone + trained head), its pruning plan and
/// its data split.
pub struct Task {
    pub net: Network,
    pub plan: Plan,
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

/// Load data, draw the seeded split, and train the head on the fixed backbone's features.
pub fn prepare_task(cfg: &RunConfig, device: &Device) -> Result<Task> {
    let mut net = load::backbone(&cfg.model, device)?;
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
    let splits = split_sizes(&data);
    let what = format!("model `{}` at {}²", cfg.model.name, cfg.model.input_size);
    let e = memory::estimate(&net, &splits, bs).with_head(
        &net,
        &cfg.head.hidden,
        data.n_classes(),
        data.train.labels.len(),
    );
    memory::check(&what, &e, bs)?;
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
    let intact_from = |cache| Some(Start::at(cache, None));
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
    for op in head {
        net.push_chain(op);
    }
    let plan = Plan::build(&net, cfg.pruning.groups, cfg.pruning.group_reduce)
        .with_context(|| format!("model `{}`: deriving its pruning groups", cfg.model.name))?;
    let nc = data.n_classes();
    let train_from = intact_from(&train_prefix);
    let head_train_acc = eval::evaluate_from(&net, &data.train, nc, bs, train_from)?.top1;
    let intact = eval::evaluate_from(&net, &data.test, nc, bs, intact_from(&test_prefix))?;
    Ok(Task {
        control_prefix,
        net,
        plan,
        data,
        head_train_acc,
        intact,
        test_prefix,
        train_prefix,
    })
}

/// Images in each split the task holds (train, test, and the control set if any).
pub fn split_sizes(data: &TaskData) -> Vec<usize> {
    [Some(&data.train), Some(&data.test), data.control.as_ref()]
        .into_iter()
        .flatten()
        .map(|s| s.labels.len())
        .collect()
}

/// What schedules may see: the unpruned network and the **training** split. The test split
/// is not reachable from here, so no pruning decision can depend on it.
pub fn context<'a>(task: &'a Task, cfg: &'a RunConfig) -> Context<'a> {
    Context {
        original: &task.net,
        plan: &task.plan,
        reference: &task.data.train,
        batch_size: cfg.data.batch_size,
        head_policy: HeadPolicy::new(
            cfg.pruning.after_step,
            &cfg.head,
            cfg.seed,
            task.data.n_classes(),
        ),
        reference_prefix: Some(&task.train_prefix),
        control: task.data.control_split(),
        control_prefix: Some(task.control_prefix.as_ref().unwrap_or(&task.train_prefix)),
        search_budget: memory::search_budget(),
        clock: Default::default(),
    }
}
