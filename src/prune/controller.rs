//! The accuracy-aware controller (`aa-lrp`; docs/method.md): our formalisation of Yasui et al.'s
//! abstract. Two switchable mechanisms, both driven by the harmonic mean A of per-class
//! accuracies on the **control split** (the small training split or a held-out control set
//! from the training pool, never the test split):
//!
//! - *order control*: per-class relevance, normalised per class, weighted towards classes the
//!   current network gets wrong, so filters weak classes depend on move back in the order;
//! - *rate control*: a step that drops A by more than `tolerance` is halved and retried from
//!   the same state (down to `min_step`); after a clean step the step size grows back.
//!
//! With both switches off it makes exactly the decisions of iterative `lrp`.

use super::criteria::postprocess;
use super::mask::FilterMask;
use super::relevance::grouped;
use super::schedule::{is_last, rate_at, Context, Pruned, Schedule, Step};
use super::search::{search, Costs, Ended, Offers};
use super::select::{expand, prune_lowest, target_count, Scores};
use super::signal::Reader;
use crate::lrp::filters::filter_relevance;
use crate::lrp::Composite;
use crate::lrp::FilterRelevance;
use crate::model::Network;
use crate::spec::{
    AfterStep, ClassWeights, ControlSettings, LrpSettings, PruningSettings, RelevanceSource,
};
use anyhow::Result;

pub struct AccuracyAware {
    pub control: ControlSettings,
    pub lrp: LrpSettings,
    pub pruning: PruningSettings,
    pub composite: Composite,
    pub n_classes: usize,
    /// Current step size (fraction of all filters), adapted by rate control.
    step: f64,
    /// Grid index, used when rate control is off (then the grid is `lrp`'s).
    k: usize,
    done: bool,
    /// Per-class relevance of the intact network, for the `intact` / `blend` sources.
    intact: Option<FilterRelevance>,
    /// Each group's last measured cost, carried from step to step (`search_take = "lazy"`).
    search_costs: Costs,
    /// Where the layer search ended on the step this schedule returned most recently: the
    /// next step's search continues from it (the runner hands that step back as the next
    /// state).
    ended: Option<Ended>,
}

impl AccuracyAware {
    pub fn new(
        control: ControlSettings,
        lrp: LrpSettings,
        pruning: PruningSettings,
        composite: Composite,
        n_classes: usize,
    ) -> Self {
        let step = pruning.step;
        Self {
            control,
            lrp,
            pruning,
            composite,
            n_classes,
            step,
            k: 0,
            done: false,
            intact: None,
            search_costs: Costs::default(),
            ended: None,
        }
    }

    /// How A is read on the control split.
    fn reader<'a>(&self, ctx: &Context<'a>) -> Reader<'a> {
        Reader {
            control: ctx.control,
            signal: self.control.signal,
            floor: self.control.epsilon,
            n_classes: self.n_classes,
            batch: ctx.batch_size,
            prefix: ctx.control_prefix,
            plan: ctx.plan,
        }
    }

    /// A and the per-class scores of the candidate at `mask`, read from the values the
    /// search ended with where it ended on that very network (head fixed), else measured on
    /// the candidate's network, which is returned with them.
    fn measure(
        &self,
        mask: &FilterMask,
        ended: Option<&Ended>,
        ctx: &Context,
    ) -> Result<(f64, Vec<f64>, Option<Network>)> {
        let reader = self.reader(ctx);
        if let (Some(e), true) = (ended, ctx.head_policy.keeps_head()) {
            let (a, class) = e.measured(&reader)?;
            return Ok((a, class, None));
        }
        let net = ctx.compact(mask)?;
        let (a, class) = reader.measure(&net, mask)?;
        Ok((a, class, Some(net)))
    }

    /// The state at candidate `mask`, with what [`Self::measure`] found, and the search's end
    /// kept for the next step.
    fn accept(
        &mut self,
        mask: FilterMask,
        measured: (f64, Vec<f64>, Option<Network>),
        ended: Option<Ended>,
        ctx: &Context,
    ) -> Result<Pruned> {
        let (a, class, net) = measured;
        let net = match net {
            Some(net) => net,
            None => ctx.compact(&mask)?,
        };
        self.ended = ended;
        Ok(Pruned {
            mask,
            net,
            signal: Some((a, class)),
        })
    }

    /// Remove `n` more filters from `state`: the lowest-scored globally, or by measured
    /// layer search, continuing from `from` (where the last search ended, at this state).
    fn choose(
        &mut self,
        state: &Pruned,
        scores: &Scores,
        n: usize,
        from: Option<Ended>,
        ctx: &Context,
    ) -> Result<(FilterMask, Option<Ended>)> {
        let min_per_layer = self.pruning.min_filters_per_layer;
        if !self.control.layer_search {
            return Ok((prune_lowest(&state.mask, scores, n, min_per_layer)?, None));
        }
        let after_step = ctx.head_policy.after_step();
        let offers = Offers {
            fraction: self.control.search_fraction,
            take: self.control.search_take,
            min_per_layer,
            keep_budget: ctx.search_budget,
            restandardize: after_step != AfterStep::None,
            screen: self.control.search_screen,
            screen_images: self.control.search_screen_images,
            gauge: &crate::sysmem::Process,
        };
        // A re-fitted head is a new classifier every step: candidates are read with it.
        let current = match after_step {
            AfterStep::RefitHead => Some(state.net.clone()),
            _ => None,
        };
        let ended = search(
            ctx.original,
            current,
            from,
            &state.mask,
            scores,
            n,
            &offers,
            &self.reader(ctx),
            &mut self.search_costs,
        )?;
        Ok((ended.mask().clone(), Some(ended)))
    }

    /// Class weights from the control split's class accuracies.
    fn weights(&self, class_acc: &[f64]) -> Vec<f64> {
        let eps = self.control.epsilon;
        let raw: Vec<f64> = class_acc
            .iter()
            .map(|a| match self.control.class_weights {
                ClassWeights::InverseAccuracy => 1.0 / a.max(eps),
                ClassWeights::InverseAccuracySquared => 1.0 / a.max(eps).powi(2),
                ClassWeights::Uniform => 1.0,
            })
            .collect();
        let total: f64 = raw.iter().sum();
        raw.into_iter().map(|w| w / total).collect()
    }

    /// Filter scores (compacted order) from one network's per-class relevance.
    fn combine(&self, rel: &FilterRelevance, class_acc: &[f64]) -> Vec<Vec<f64>> {
        if !self.control.order_control {
            return postprocess(rel.total(), self.lrp.abs, self.lrp.normalize);
        }
        let w = self.weights(class_acc);
        let mut out: Vec<Vec<f64>> = rel
            .per_class
            .iter()
            .map(|l| vec![0.0; l.first().map_or(0, Vec::len)])
            .collect();
        for (c, wc) in w.iter().enumerate() {
            let class_scores: Vec<Vec<f64>> = rel.per_class.iter().map(|l| l[c].clone()).collect();
            for (o, s) in
                out.iter_mut()
                    .zip(postprocess(class_scores, self.lrp.abs, self.lrp.normalize))
            {
                for (a, b) in o.iter_mut().zip(s) {
                    *a += wc * b;
                }
            }
        }
        out
    }

    /// The pruning order at `mask`, in the unpruned indexing (lower = pruned first).
    fn order(
        &mut self,
        mask: &FilterMask,
        net: &Network,
        ctx: &Context,
        class_acc: &[f64],
    ) -> Result<Scores> {
        let bs = ctx.batch_size;
        let current = |s: &Self| -> Result<Scores> {
            let rel = filter_relevance(
                net,
                ctx.reference,
                &s.composite,
                s.n_classes,
                bs,
                ctx.from(mask),
            )?;
            Ok(expand(
                mask,
                &s.combine(&grouped(ctx.plan, &rel), class_acc),
            ))
        };
        let mut scores = match self.control.relevance {
            RelevanceSource::Iterative => current(self)?,
            RelevanceSource::Intact | RelevanceSource::Blend => {
                let full = FilterMask::all_alive(&ctx.plan.sizes());
                if self.intact.is_none() {
                    let rel = filter_relevance(
                        ctx.original,
                        ctx.reference,
                        &self.composite,
                        self.n_classes,
                        bs,
                        ctx.from(&full),
                    )?;
                    self.intact = Some(grouped(ctx.plan, &rel));
                }
                let intact = expand(
                    &full,
                    &self.combine(self.intact.as_ref().unwrap(), class_acc),
                );
                if self.control.relevance == RelevanceSource::Intact {
                    intact
                } else {
                    let cur = current(self)?;
                    let b = self.control.blend;
                    cur.iter()
                        .zip(&intact)
                        .map(|(c, i)| {
                            c.iter()
                                .zip(i)
                                .map(|(c, i)| b * c + (1.0 - b) * i)
                                .collect()
                        })
                        .collect()
                }
            }
        };
        if self.control.layer_aware {
            for (l, row) in scores.iter_mut().enumerate() {
                let left = mask.alive_in(l) as f64 / mask.keep[l].len() as f64;
                let d = left.max(1e-9).powf(self.control.layer_power);
                row.iter_mut().for_each(|s| *s /= d);
            }
        }
        Ok(scores)
    }
}

impl Schedule for AccuracyAware {
    fn next(&mut self, state: &Pruned, ctx: &Context) -> Result<Option<Step>> {
        let mask = &state.mask;
        let total = mask.total();
        let removed = total - mask.alive();
        let end = target_count(self.pruning.max_rate, total);
        if self.done || (self.control.rate_control && removed >= end) {
            return Ok(None);
        }
        let (a_before, class_acc) = match &state.signal {
            Some(signal) => signal.clone(),
            None => self.reader(ctx).measure(&state.net, mask)?,
        };
        let scores = self.order(mask, &state.net, ctx, &class_acc)?;
        // Only the step's first search continues from where the last one ended (at `state`);
        // a retry after a back-off starts again from `state`.
        let mut carried = self.ended.take();

        if !self.control.rate_control {
            // The fixed grid of plain `lrp`.
            self.k += 1;
            let rate = rate_at(self.k, &self.pruning);
            let n = target_count(rate, total).saturating_sub(removed);
            let (next, ended) = self.choose(state, &scores, n, carried.take(), ctx)?;
            self.done = is_last(self.k, &self.pruning);
            let measured = self.measure(&next, ended.as_ref(), ctx)?;
            let step_size = rate - rate_at(self.k - 1, &self.pruning);
            return Ok(Some(Step {
                pruned: self.accept(next, measured, ended, ctx)?,
                step_size,
                backoffs: 0,
            }));
        }

        let mut s = self.step;
        let mut backoffs = 0;
        loop {
            let n = (target_count(s, total).max(1)).min(end - removed);
            let (cand, ended) = self.choose(state, &scores, n, carried.take(), ctx)?;
            let measured = self.measure(&cand, ended.as_ref(), ctx)?;
            let a_after = measured.0;
            let floor = self.control.min_step - 1e-12;
            let count = |s: f64| (target_count(s, total).max(1)).min(end - removed);
            if a_before - a_after > self.control.tolerance && s / 2.0 >= floor {
                // A halving that removes as many filters (n = 1, or the last ones to `end`)
                // gives the same candidate, measured and refused the same: it is counted,
                // not measured again (which, at n = 1 below a min_step of 1e-12, never ended).
                loop {
                    s /= 2.0;
                    backoffs += 1;
                    if count(s) < n || !(s / 2.0 >= floor && s / 2.0 > 0.0) {
                        break;
                    }
                }
                if count(s) < n {
                    continue;
                }
            }
            self.step = if backoffs == 0 {
                (s * self.control.growth).min(self.pruning.step)
            } else {
                s
            };
            let progressed = cand.alive() < mask.alive();
            self.done = !progressed || total - cand.alive() >= end;
            return Ok(Some(Step {
                step_size: n as f64 / total as f64,
                pruned: self.accept(cand, measured, ended, ctx)?,
                backoffs,
            }));
        }
    }
}
