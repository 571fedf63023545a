//! Schedules turn a criterion into the sequence of masks of a pruning curve.

use super::after_step::HeadPolicy;
use super::compact::compact;
use super::criteria::{Criterion, ScoreInput};
use super::mask::FilterMask;
use super::plan::Plan;
use super::select::{expand, prune_lowest, prune_uniform, target_count, Scores};
use crate::data::split::Split;
use crate::model::prefix::{PrefixCache, Start};
use crate::model::Network;
use crate::spec::{PruningSettings, Spread};
use anyhow::Result;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A pruning state: a mask, the network it forms, and what the controller measured on it.
/// A schedule is handed the state it left (the intact one first) and returns the next, so
/// every state's network is formed once and read by its evaluation, the next criterion and
/// the controller alike.
#[derive(Debug, Clone)]
pub struct Pruned {
    pub mask: FilterMask,
    /// The original network compacted to `mask`, its head as `after_step` leaves it.
    pub net: Network,
    /// A and the per-class scores on the control split, where the controller measured them.
    pub signal: Option<(f64, Vec<f64>)>,
}

/// What a schedule decided for one step.
#[derive(Debug, Clone)]
pub struct Step {
    pub pruned: Pruned,
    /// Fraction of all filters this step tried to remove.
    pub step_size: f64,
    pub backoffs: i64,
}

impl Step {
    /// The controller's accuracy signal after the step (control split), if it has one.
    pub fn control_acc(&self) -> Option<f64> {
        self.pruned.signal.as_ref().map(|s| s.0)
    }
}

/// Context shared by every step: the unpruned network and the reference split.
pub struct Context<'a> {
    pub original: &'a Network,
    /// The pruning groups of `original`.
    pub plan: &'a Plan,
    pub reference: &'a Split,
    pub batch_size: usize,
    /// The intact network's stored layer inputs on the reference split, if kept.
    pub reference_prefix: Option<&'a PrefixCache>,
    /// Where the accuracy-aware controller measures A: the reference split, or a held-out
    /// control set from the training pool (`data.control_per_class`). Never the test split.
    pub control: &'a Split,
    /// The intact network's stored layer inputs on `control`, if kept.
    pub control_prefix: Option<&'a PrefixCache>,
    /// What a pruned network's head goes through (`[pruning] after_step`).
    pub head_policy: HeadPolicy<'a>,
    /// Bytes the measured layer search may keep of its candidates' values.
    pub search_budget: usize,
    /// Time spent scoring and compacting so far.
    pub clock: Clock,
}

/// Time a run spends in [`Context::scores`] and [`Context::compact`], summed over its
/// steps: `lrprune bench` reports a step's split (relevance / compaction / evaluation).
/// Atomic, as the layer search compacts candidates on several threads.
#[derive(Default)]
pub struct Clock {
    score_ns: AtomicU64,
    compact_ns: AtomicU64,
}

impl Clock {
    fn add(counter: &AtomicU64, since: Instant) {
        counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
    /// Seconds in scoring (for `lrp`, the relevance pass).
    pub fn score_s(&self) -> f64 {
        self.score_ns.load(Ordering::Relaxed) as f64 * 1e-9
    }
    /// Seconds in compaction (the network formed from a mask, head policy included).
    pub fn compact_s(&self) -> f64 {
        self.compact_ns.load(Ordering::Relaxed) as f64 * 1e-9
    }
}

impl Context<'_> {
    /// Where a pass over the reference split can start for a network pruned by `mask`.
    pub fn from(&self, mask: &FilterMask) -> Option<Start<'_>> {
        self.reference_prefix.map(|c| self.plan.start(c, mask))
    }

    /// The original network compacted to `mask`, its head as `after_step` leaves it (the
    /// network every evaluation, criterion and controller measurement of the state sees).
    pub fn compact(&self, mask: &FilterMask) -> Result<Network> {
        let t = Instant::now();
        let net = compact(self.original, self.plan, mask)?;
        let net = self
            .head_policy
            .apply(net, self.reference, self.from(mask), self.batch_size);
        Clock::add(&self.clock.compact_ns, t);
        net
    }

    /// The state at `mask`, its network formed, nothing measured on it yet.
    pub fn form(&self, mask: FilterMask) -> Result<Pruned> {
        let net = self.compact(&mask)?;
        Ok(Pruned {
            mask,
            net,
            signal: None,
        })
    }

    /// Score `state`'s network with `criterion`, in the unpruned indexing.
    pub fn scores(&self, criterion: &mut dyn Criterion, state: &Pruned) -> Result<Scores> {
        let t = Instant::now();
        let s = criterion.score(&ScoreInput {
            net: &state.net,
            plan: self.plan,
            reference: self.reference,
            batch_size: self.batch_size,
            from: self.from(&state.mask),
        })?;
        Clock::add(&self.clock.score_ns, t);
        Ok(expand(&state.mask, &s))
    }
}

pub trait Schedule {
    /// The step after `state` (the one this schedule returned last, or the intact state),
    /// or `None` once the curve has reached `max_rate`.
    fn next(&mut self, state: &Pruned, ctx: &Context) -> Result<Option<Step>>;
}

/// Fixed global steps: step k removes filters until `min(k·step, max_rate)` of all conv
/// filters are gone, lowest score first. With `recompute`, scores are recomputed on the
/// pruned network each step (Yeom et al.); without, they come once from the intact network
/// (one-shot, PXP-style), giving nested masks at every rate of the grid.
pub struct GlobalSchedule {
    pub criterion: Box<dyn Criterion>,
    pub settings: PruningSettings,
    pub recompute: bool,
    /// Spread each step evenly over the groups instead of one global ranking.
    pub spread: Spread,
    k: usize,
    cached: Option<Scores>,
}

impl GlobalSchedule {
    pub fn new(criterion: Box<dyn Criterion>, settings: PruningSettings, recompute: bool) -> Self {
        Self {
            criterion,
            settings,
            recompute,
            spread: Spread::Global,
            k: 0,
            cached: None,
        }
    }

    /// The same schedule spreading its removals as `spread` says.
    pub fn spread(mut self, spread: Spread) -> Self {
        self.spread = spread;
        self
    }
}

/// The rate grid 0 < r₁ < … < r_K = max_rate of a fixed-step schedule.
pub fn rate_at(k: usize, s: &PruningSettings) -> f64 {
    (k as f64 * s.step).min(s.max_rate)
}

pub fn is_last(k: usize, s: &PruningSettings) -> bool {
    rate_at(k, s) >= s.max_rate - 1e-12
}

impl Schedule for GlobalSchedule {
    fn next(&mut self, state: &Pruned, ctx: &Context) -> Result<Option<Step>> {
        let mask = &state.mask;
        if self.k > 0 && is_last(self.k, &self.settings) {
            return Ok(None);
        }
        self.k += 1;
        let rate = rate_at(self.k, &self.settings);
        let scores = match (&self.cached, self.recompute) {
            (Some(s), false) => s.clone(),
            _ => {
                let s = ctx.scores(self.criterion.as_mut(), state)?;
                self.cached = Some(s.clone());
                s
            }
        };
        let min = self.settings.min_filters_per_layer;
        let next = match self.spread {
            Spread::Global => {
                let removed = mask.total() - mask.alive();
                let n = target_count(rate, mask.total()).saturating_sub(removed);
                prune_lowest(mask, &scores, n, min)?
            }
            Spread::LayerUniform => prune_uniform(mask, &scores, rate, min)?,
        };
        Ok(Some(Step {
            pruned: ctx.form(next)?,
            step_size: rate - rate_at(self.k - 1, &self.settings),
            backoffs: 0,
        }))
    }
}
