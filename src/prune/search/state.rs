//! The search's bookkeeping: the current network with its values on the control split, and
//! each group's offer measured on it — fresh, or stale since the network changed at some
//! node, with the values it can still start from.

use super::memory::keep_allowed;
use super::read::{logits_of, run_from};
use crate::model::prefix;
use crate::model::values::Values;
use crate::model::{Network, Op};
use crate::prune::compact::compact;
use crate::prune::mask::{kept_positions, FilterMask};
use crate::prune::plan::Plan;
use crate::prune::screen;
use crate::prune::select::Scores;
use crate::prune::signal::Reader;
use crate::sysmem::Gauge;
use anyhow::Result;
use candle_core::Tensor;
use rayon::prelude::*;

/// A node index past every node: nothing has changed.
const UNCHANGED: usize = usize::MAX;

/// One group's measured offer.
pub(super) struct Offer {
    pub filters: Vec<usize>,
    /// The mask of the network it was measured on (without `filters` removed).
    on: FilterMask,
    /// The network it was measured on without them, and its A.
    net: Network,
    a: f64,
    /// `net`'s values on the control split, if kept; before the group's first node they
    /// are shared with the network it was measured on.
    values: Option<Values>,
    /// Bytes of `values` it holds of its own.
    own_bytes: usize,
    /// The first node the current network has changed at since the measurement
    /// ([`UNCHANGED`]: the offer is fresh).
    stale_from: usize,
}

/// One offer to measure: `net` (the current network without `filters`), run from
/// `base`, values of a network it equals up to the group `dropped` names.
struct Job {
    group: usize,
    filters: Vec<usize>,
    on: FilterMask,
    /// `net` is this network compacted to `rel` (done in parallel, in [`Job::run`]).
    current: Network,
    rel: FilterMask,
    /// Bytes its values take beyond those it shares (as the current network's shapes say).
    own_bytes: usize,
    /// Bytes of `base` that are its own (a kept offer's values it starts from; 0 when it
    /// starts from the current network's): counted in `State::kept` until the job ends.
    held: usize,
    base: Values,
    /// The group whose channels at these positions `net` keeps, where `net` first differs
    /// from `base`'s network (`None`: nowhere).
    dropped: Option<(usize, Vec<u32>)>,
}

impl Job {
    fn run(self, reader: &Reader, keep: bool, restandardize: bool) -> Result<(usize, Offer)> {
        let Job {
            group,
            filters,
            on,
            current,
            rel,
            own_bytes,
            mut base,
            dropped,
            ..
        } = self;
        let net = compact(&current, reader.plan, &rel)?;
        let start = match &dropped {
            Some((g, positions)) => skip_producer(&net, reader.plan, *g, positions, &mut base)?,
            None => net.nodes.len(),
        };
        let (logits, values) = run_from(&net, &base, start, keep, restandardize)?;
        let (a, _) = reader.read(&logits)?;
        let offer = Offer {
            filters,
            on,
            net,
            a,
            values,
            own_bytes: if keep { own_bytes } else { 0 },
            stale_from: UNCHANGED,
        };
        Ok((group, offer))
    }
}

/// The current network and the offers measured on it.
pub(super) struct State {
    pub mask: FilterMask,
    pub net: Network,
    pub a: f64,
    pub values: Values,
    /// Each group's last measured offer, fresh or stale.
    offers: Vec<Option<Offer>>,
    /// Each group's stale offer of other filters, kept for when they are asked again: a
    /// step's last round offers fewer filters (what is left of its quota), and the next
    /// step's first round the usual ones.
    spare: Vec<Option<Offer>>,
    /// Bytes of offers' own values held.
    kept: usize,
    /// Whether candidates are read with their head re-standardised
    /// ([`super::Offers::restandardize`]).
    pub restandardize: bool,
}

impl State {
    pub fn new(
        net: Network,
        mask: &FilterMask,
        reader: &Reader,
        restandardize: bool,
    ) -> Result<Self> {
        let mut st = Self {
            a: 0.0,
            mask: mask.clone(),
            net,
            values: Values::default(),
            offers: (0..mask.keep.len()).map(|_| None).collect(),
            spare: (0..mask.keep.len()).map(|_| None).collect(),
            kept: 0,
            restandardize,
        };
        st.run_current(reader)?;
        Ok(st)
    }

    /// The current network's values and A, run from the stored prefix.
    pub fn run_current(&mut self, reader: &Reader) -> Result<()> {
        let from = reader.prefix.map(|c| reader.plan.start(c, &self.mask));
        let control = reader.control;
        self.values = prefix::values(&self.net, &control.images, from, reader.batch)?;
        let logits = logits_of(&self.net, &self.values, self.restandardize)?;
        self.a = reader.read(&logits)?.0;
        Ok(())
    }

    /// Measure the offers of `asked` (group, at most that many filters) on the current
    /// network, each from its group's previous offer where that is still right, in
    /// parallel, keeping their values within `budget` bytes as `gauge` allows; returns their
    /// damage (A lost per filter removed), in order.
    pub fn measure(
        &mut self,
        asked: &[(usize, usize)],
        scores: &Scores,
        reader: &Reader,
        budget: usize,
        gauge: &dyn Gauge,
    ) -> Result<Vec<f64>> {
        let budget = keep_allowed(budget, self.kept, gauge);
        if self.kept > budget {
            self.drop_kept();
        }
        let jobs = asked
            .iter()
            .map(|&(group, q)| self.prepare(group, q, scores, reader))
            .collect::<Result<Vec<_>>>()?;
        // What is kept is decided up front, in order, so it never depends on timing. The
        // values a job starts from stay until it ends, whatever the order the jobs run in:
        // a job's own values take the place of those only when it is the one holding them.
        let mut released = 0;
        let keep: Vec<bool> = jobs
            .iter()
            .map(|j| {
                let after = self.kept - j.held + j.own_bytes;
                let fits = after <= budget;
                if fits {
                    self.kept = after;
                } else {
                    released += j.held;
                }
                fits
            })
            .collect();
        let a0 = self.a;
        let restandardize = self.restandardize;
        let t = std::time::Instant::now();
        let done = jobs
            .into_par_iter()
            .zip(keep)
            .map(|(job, keep)| job.run(reader, keep, restandardize))
            .collect::<Result<Vec<_>>>()?;
        self.kept -= released;
        let log = std::env::var_os("LRPRUNE_SEARCH_LOG").is_some();
        if log {
            let secs = t.elapsed().as_secs_f64();
            let images = reader.control.labels.len();
            eprintln!(
                "search: measured {} offers on {images} images in {secs:.3} s",
                asked.len()
            );
        }
        let damage = done
            .into_iter()
            .map(|(group, offer)| {
                let damage = (a0 - offer.a) / offer.filters.len() as f64;
                self.offers[group] = Some(offer);
                damage
            })
            .collect();
        if log {
            self.log_memory(budget, gauge);
        }
        Ok(damage)
    }

    /// `LRPRUNE_SEARCH_LOG=1`: what the search holds, as counted and as allocated, beside
    /// the process's resident memory.
    fn log_memory(&self, budget: usize, gauge: &dyn Gauge) {
        let mut seen = std::collections::HashSet::new();
        let current = self.values.distinct_bytes(&mut seen);
        let offers: usize = (self.offers.iter().chain(&self.spare))
            .flatten()
            .filter_map(|o| o.values.as_ref())
            .map(|v| v.distinct_bytes(&mut seen))
            .sum();
        let rss = gauge.resident().unwrap_or(0);
        let mib = |b: u64| b >> 20;
        eprintln!(
            "search: current values {} MiB, offers' values {} MiB (counted {} of {} MiB allowed), resident {} MiB",
            mib(current as u64),
            mib(offers as u64),
            mib(self.kept as u64),
            mib(budget as u64),
            mib(rss)
        );
    }

    /// Free every offer's values: each is measured from the current network again when
    /// asked (the decisions do not change).
    fn drop_kept(&mut self) {
        for o in self.offers.iter_mut().chain(&mut self.spare).flatten() {
            o.values = None;
            o.own_bytes = 0;
        }
        self.kept = 0;
    }

    /// What measuring group `group`'s offer of (at most) `q` filters takes.
    fn prepare(&mut self, group: usize, q: usize, scores: &Scores, reader: &Reader) -> Result<Job> {
        let plan = reader.plan;
        let filters = self.mask.lowest_alive(group, &scores[group], q);
        let first = plan.first_node(group);
        let mut previous = None;
        for p in [self.offers[group].take(), self.spare[group].take()]
            .into_iter()
            .flatten()
        {
            if p.filters == filters {
                previous = Some(p);
            } else if p.values.is_some() && self.spare[group].is_none() {
                self.spare[group] = Some(p); // the newer of the two other ones
            } else {
                self.kept -= p.own_bytes;
            }
        }
        // The current network without the offer.
        let target = self.mask.without(group, &filters);
        let rel = self.mask.relative(&target);
        let images = reader.control.labels.len();
        let own_bytes = Values::bytes_after(&self.net, first, images);
        // `previous` offered these very filters; its values hold before the change since.
        let previous_bytes = previous.as_ref().map_or(0, |p| p.own_bytes);
        let reusable = previous.filter(|p| p.stale_from > first && p.values.is_some());
        // The job holds the values it reuses (still counted in `kept`); others are gone.
        let held = if reusable.is_some() {
            previous_bytes
        } else {
            self.kept -= previous_bytes;
            0
        };
        // Values to start from, and the group whose channels they have too many of.
        let (base, dropped) = match reusable {
            Some(p) if p.stale_from >= self.net.nodes.len() => (p.values.expect("kept"), None),
            Some(p) => {
                // The current network lost channels of the group starting at `stale_from`
                // since: from `p.on`'s alive ones to the current mask's.
                let g = (0..self.mask.keep.len())
                    .find(|&g| plan.first_node(g) == p.stale_from)
                    .expect("a group starts where the network changed");
                let keep = kept_positions(&p.on.keep[g], &self.mask.keep[g]);
                (p.values.expect("kept"), Some((g, keep)))
            }
            None => {
                let keep = kept_positions(&self.mask.keep[group], &target.keep[group]);
                (self.values.clone(), Some((group, keep)))
            }
        };
        Ok(Job {
            group,
            filters,
            on: self.mask.clone(),
            current: self.net.clone(),
            rel,
            own_bytes,
            held,
            base,
            dropped,
        })
    }

    /// The screen's first-order estimate of the A lost per filter by each offer of
    /// `asked`, in order.
    pub fn estimates(
        &self,
        asked: &[(usize, usize)],
        scores: &Scores,
        reader: &Reader,
    ) -> Result<Vec<f64>> {
        let t = std::time::Instant::now();
        let costs = screen::channel_costs(&self.net, self.values.batches(), reader)?;
        if std::env::var_os("LRPRUNE_SEARCH_LOG").is_some() {
            eprintln!(
                "search: screened {} offers in {:.3} s",
                asked.len(),
                t.elapsed().as_secs_f64()
            );
        }
        Ok(asked
            .iter()
            .map(|&(group, q)| {
                let filters = self.mask.lowest_alive(group, &scores[group], q);
                screen::offer_cost(&costs, &self.mask, group, &filters)
            })
            .collect())
    }

    /// The fresh offer of `group`, if there is one.
    pub fn fresh(&self, group: usize) -> Option<&Offer> {
        self.offers[group]
            .as_ref()
            .filter(|o| o.stale_from == UNCHANGED)
    }

    /// Accept `group`'s fresh offer: its network (and values) become the current ones.
    pub fn accept(&mut self, group: usize, plan: &Plan) -> Result<usize> {
        let offer = self.offers[group].take().expect("a fresh offer");
        self.kept -= offer.own_bytes;
        for f in &offer.filters {
            self.mask.keep[group][*f] = false;
        }
        let first = plan.first_node(group);
        self.values = match offer.values {
            Some(v) => v,
            None => run_from(&offer.net, &self.values, first, true, self.restandardize)?
                .1
                .expect("kept"),
        };
        self.net = offer.net;
        self.a = offer.a;
        self.changed_from(first, plan);
        Ok(offer.filters.len())
    }

    /// Accept the first `k` filters of each measured offer of `groups` at once (the
    /// `search_take = "all"` pass), and run the network they leave.
    pub fn accept_all(
        &mut self,
        groups: &[(usize, usize)],
        original: &Network,
        own_head: bool,
        reader: &Reader,
    ) -> Result<()> {
        let plan = reader.plan;
        let before = self.mask.clone();
        let mut first_changed = UNCHANGED;
        for &(g, k) in groups {
            let filters = &self.offers[g].as_ref().expect("measured").filters;
            for f in &filters[..k] {
                self.mask.keep[g][*f] = false;
            }
            first_changed = first_changed.min(plan.first_node(g));
        }
        // Accepted groups' offers are stale from their own first node on, so spent.
        self.changed_from(first_changed, plan);
        self.net = if own_head {
            compact(&self.net, plan, &before.relative(&self.mask))?
        } else {
            compact(original, plan, &self.mask)?
        };
        self.run_current(reader)
    }

    /// The number of filters `group`'s measured offer removes.
    pub fn offered(&self, group: usize) -> usize {
        self.offers[group].as_ref().map_or(0, |o| o.filters.len())
    }

    /// The current network changed from node `node` on: every offer is stale from there,
    /// and the values of those that can no longer be reused are freed.
    fn changed_from(&mut self, node: usize, plan: &Plan) {
        let slots = self.offers.iter_mut().enumerate();
        for (g, slot) in slots.chain(self.spare.iter_mut().enumerate()) {
            if let Some(o) = slot {
                o.stale_from = o.stale_from.min(node);
                if o.stale_from <= plan.first_node(g) && o.values.take().is_some() {
                    self.kept -= o.own_bytes;
                    o.own_bytes = 0;
                }
            }
        }
    }
}

/// Make `values` (of a network that `net` equals up to group `g`'s first node, where `net`
/// keeps only the channels at positions `keep` of `g`) right for `net` as far as that can
/// be done without running it, and return the node `net` must run from.
///
/// When `g` is the output of one plain conv, `net`'s conv output (and the channel-wise ops
/// after it: ReLU, max-pool) is the same tensor with the dropped channels left out, bit for
/// bit (tests/conv.rs), so the conv need not run again: the search's most frequent case,
/// and its costliest conv.
fn skip_producer(
    net: &Network,
    plan: &Plan,
    g: usize,
    keep: &[u32],
    values: &mut Values,
) -> Result<usize> {
    let node = plan.first_node(g);
    let plain_conv = matches!(&net.nodes[node].op, Op::Conv(c) if c.groups == 1);
    if plan.groups[g].producers.len() != 1 || !plain_conv {
        return Ok(node);
    }
    // The conv's output, then every channel-wise op reading only the value before (the
    // plan's notion, `Op::is_channelwise`; an `Add` reads two values and so ends the run).
    let mut last = node + 1;
    while net
        .nodes
        .get(last)
        .is_some_and(|n| n.op.is_channelwise() && n.inputs == [last])
    {
        last += 1;
    }
    let ids = Tensor::new(keep, net.device())?;
    values.select_channels(node + 1..=last, &ids)?;
    Ok(last)
}
