//! Measured layer search (`control.layer_search`): an order-control variant that chooses
//! *where* to prune by the measured effect on the control signal A, and *which* filters
//! within a layer by relevance.
//!
//! Why: every method's collapse on the quickstart coincides with one layer (conv13, the
//! fixed head's input) being drained; a global relevance ranking cannot see that, because
//! per-layer normalisation makes each filter of a wide layer look cheap. Here each round
//! asks every layer for its `search_fraction` least relevant filters, removes each chunk
//! tentatively, measures A on the control split, and keeps the chunk that costs the least A
//! per filter removed. Rounds repeat until the step's quota is met.
//!
//! Cost: a measurement runs a candidate network only from its first changed node on, from
//! the current network's values on the control split (removing channels of a group changes
//! nothing before its first conv). And a measured candidate keeps its own values (within
//! `Offers::keep_budget`): when the round's winner changes the network at node N, a
//! candidate from an earlier layer is still right up to N, so the next round runs it from N
//! on only.
//! The winner's values become the current network's. Every value is computed by the same
//! operations on the same inputs as a measurement from scratch would, so the decisions do
//! not depend on what was kept (tests/golden.rs holds them to digests written before).

use super::compact::compact;
use super::mask::FilterMask;
use super::plan::Plan;
use super::screen;
use super::select::Scores;
use super::signal::Reader;
use crate::model::network::batch_ranges;
use crate::model::{head, prefix, Network, Op};
pub use crate::spec::Take;
use crate::sysmem;
use anyhow::Result;
use candle_core::Tensor;
use rayon::prelude::*;

/// The `q` lowest-scored alive filters of `layer` (original indices; ties: lower index).
fn lowest_in_layer(mask: &FilterMask, scores: &Scores, layer: usize, q: usize) -> Vec<usize> {
    let mut alive: Vec<usize> = (0..mask.keep[layer].len())
        .filter(|&f| mask.keep[layer][f])
        .collect();
    alive.sort_by(|&a, &b| {
        scores[layer][a]
            .total_cmp(&scores[layer][b])
            .then(a.cmp(&b))
    });
    alive.truncate(q);
    alive
}

/// A network's values on the control split, per batch: `[b][v]` is value v on batch b.
type Values = Vec<Vec<Tensor>>;

/// Every value of `net` (pruned by `mask`) on the control split, and its logits.
fn trace_all(
    net: &Network,
    mask: &FilterMask,
    reader: &Reader,
    restandardize: bool,
) -> Result<(Values, Tensor)> {
    let control = reader.control;
    let from = reader.prefix.map(|c| reader.plan.start(c, mask));
    let values: Values = batch_ranges(control.labels.len(), reader.batch)
        .map(|(start, len)| prefix::trace(net, &control.images, from, start, len))
        .collect::<candle_core::Result<_>>()?;
    let logits = logits_of(net, &values, restandardize)?;
    Ok((values, logits))
}

/// The value a measurement reads: the output, or with `restandardize` the backbone's.
fn read_at(net: &Network, restandardize: bool) -> usize {
    if restandardize {
        net.head_start
    } else {
        net.nodes.len()
    }
}

/// The network's outputs on every batch, concatenated: its last values, or with
/// `restandardize` its head re-standardised on these features first.
fn logits_of(net: &Network, values: &Values, restandardize: bool) -> Result<Tensor> {
    let at = read_at(net, restandardize);
    let outs: Vec<Tensor> = values.iter().map(|acts| acts[at].clone()).collect();
    let outs = Tensor::cat(&outs, 0)?;
    if restandardize {
        restandardized_head(net, &outs)
    } else {
        Ok(outs)
    }
}

/// `net`'s head on its backbone outputs `features`, its input standardisation re-estimated
/// on them: how the search measures a candidate when the run re-standardises or re-fits
/// the head after a step (docs/method.md, "After a step"), with the control split standing
/// in for the training split the step itself reads. A head without a standardisation
/// (`head.input_norm = "none"`) is read as it is.
fn restandardized_head(net: &Network, features: &Tensor) -> Result<Tensor> {
    let head = net.head();
    if !matches!(head.first(), Some(Op::Standardize { .. })) {
        return Ok(net.head_forward(features)?);
    }
    let head = head::restandardize(&head, features)?;
    Ok(net.with_head(head).head_forward(features)?)
}

/// Run `net` from node `start` on every batch, given `base`'s values up to `start` (those
/// are `net`'s too): its logits (`restandardize`: as [`logits_of`]), and with `keep` all
/// its values.
fn run_from(
    net: &Network,
    base: &Values,
    start: usize,
    keep: bool,
    restandardize: bool,
) -> Result<(Tensor, Option<Values>)> {
    if keep {
        let values: Values = base
            .iter()
            .map(|acts| net.trace_from(start, acts[..=start].iter().cloned().map(Some).collect()))
            .collect::<candle_core::Result<_>>()?;
        return Ok((logits_of(net, &values, restandardize)?, Some(values)));
    }
    let end = read_at(net, restandardize);
    let outs = base
        .iter()
        .map(|acts| {
            if start >= end {
                return Ok(acts[end].clone());
            }
            let mut given = vec![None; start + 1];
            for v in net.live_before(start) {
                given[v] = Some(acts[v].clone());
            }
            if restandardize {
                net.backbone_from(start, given)
            } else {
                net.forward_from(start, given)
            }
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let outs = Tensor::cat(&outs, 0)?;
    if restandardize {
        return Ok((restandardized_head(net, &outs)?, None));
    }
    Ok((outs, None))
}

/// How the search cuts and accepts offers (the `control.search_*` knobs).
#[derive(Clone, Copy)]
pub struct Offers {
    /// Each layer offers this fraction of its original width per round.
    pub fraction: f64,
    pub take: Take,
    /// No layer is cut below this many filters.
    pub min_per_layer: usize,
    /// Bytes of measured candidates' own values kept between rounds; the rest are measured
    /// from the current network again when asked (the decisions do not change).
    pub keep_budget: usize,
    /// Read every candidate with its head's input standardisation re-estimated on its own
    /// features (for runs whose head changes after a step: `after_step` ≠ none).
    pub restandardize: bool,
    /// Measure only this many offers a round, those a screen ranks cheapest; 0 measures
    /// every offer (the exact search).
    pub screen: usize,
    /// How the screen ranks: 0, by a first-order estimate (`super::screen`); m > 0, by
    /// measuring every offer on the first m control images of each class.
    pub screen_images: usize,
}

/// A node index past every node: nothing has changed.
const UNCHANGED: usize = usize::MAX;

/// One layer's measured offer.
struct Offer {
    filters: Vec<usize>,
    /// The mask of the network it was measured on (without `filters` removed).
    on: FilterMask,
    /// The network it was measured on without them, and its A.
    net: Network,
    a: f64,
    /// `net`'s values on the control split, if kept; before the layer's first node they
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
    layer: usize,
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
            layer,
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
        Ok((layer, offer))
    }
}

/// Each group's last measured cost, carried from one call (step) to the next for
/// `Take::Lazy` (reset every round under `Take::Best`).
#[derive(Default)]
pub struct Costs(Vec<f64>);

/// Where a search ended: the network at the mask it returned, that network's values on the
/// control split and the offers measured on it. A search handed it continues from there.
pub struct Ended(State);

impl Ended {
    /// The mask the search returned.
    pub fn mask(&self) -> &FilterMask {
        &self.0.mask
    }

    /// A and the per-class scores of the network the search ended with (read from the
    /// values it holds; with `restandardize`, its head re-standardised as measured).
    pub fn measured(&self, reader: &Reader) -> Result<(f64, Vec<f64>)> {
        let st = &self.0;
        let logits = logits_of(&st.net, &st.values, st.restandardize)?;
        reader.read(&logits)
    }
}

/// The current network and the offers measured on it.
struct State {
    mask: FilterMask,
    net: Network,
    a: f64,
    values: Values,
    /// Each layer's last measured offer, fresh or stale.
    offers: Vec<Option<Offer>>,
    /// Each layer's stale offer of other filters, kept for when they are asked again: a
    /// step's last round offers fewer filters (what is left of its quota), and the next
    /// step's first round the usual ones.
    spare: Vec<Option<Offer>>,
    /// Bytes of offers' own values held.
    kept: usize,
    /// Whether candidates are read with their head re-standardised ([`Offers::restandardize`]).
    restandardize: bool,
}

impl State {
    fn new(net: Network, mask: &FilterMask, reader: &Reader, restandardize: bool) -> Result<Self> {
        let mut st = Self {
            a: 0.0,
            mask: mask.clone(),
            net,
            values: Vec::new(),
            offers: (0..mask.keep.len()).map(|_| None).collect(),
            spare: (0..mask.keep.len()).map(|_| None).collect(),
            kept: 0,
            restandardize,
        };
        st.run_current(reader)?;
        Ok(st)
    }

    /// The current network's values and A, run from the stored prefix.
    fn run_current(&mut self, reader: &Reader) -> Result<()> {
        let (values, logits) = trace_all(&self.net, &self.mask, reader, self.restandardize)?;
        self.values = values;
        self.a = reader.read(&logits)?.0;
        Ok(())
    }

    /// Measure the offers of `asked` (layer, at most that many filters) on the current
    /// network, each from its layer's previous offer where that is still right, in
    /// parallel; returns their damage (A lost per filter removed), in order.
    fn measure(
        &mut self,
        asked: &[(usize, usize)],
        scores: &Scores,
        reader: &Reader,
        budget: usize,
    ) -> Result<Vec<f64>> {
        let budget = keep_allowed(
            budget,
            self.kept,
            sysmem::limit(),
            sysmem::resident(),
            sysmem::available(),
        );
        if self.kept > budget {
            self.drop_kept();
        }
        let jobs = asked
            .iter()
            .map(|&(layer, q)| self.prepare(layer, q, scores, reader))
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
        if std::env::var_os("LRPRUNE_SEARCH_LOG").is_some() {
            eprintln!(
                "search: measured {} offers in {:.3} s",
                asked.len(),
                t.elapsed().as_secs_f64()
            );
        }
        let damage = done
            .into_iter()
            .map(|(layer, offer)| {
                let damage = (a0 - offer.a) / offer.filters.len() as f64;
                self.offers[layer] = Some(offer);
                damage
            })
            .collect();
        if std::env::var_os("LRPRUNE_SEARCH_LOG").is_some() {
            self.log_memory(budget);
        }
        Ok(damage)
    }

    /// `LRPRUNE_SEARCH_LOG=1`: what the search holds, as counted and as allocated, beside
    /// the process's resident memory.
    fn log_memory(&self, budget: usize) {
        let mut seen = std::collections::HashSet::new();
        let mut bytes = |values: &Values| -> usize {
            let tensors = values.iter().flatten();
            tensors
                .filter(|t| seen.insert(t.id()))
                .map(|t| t.elem_count() * 4)
                .sum()
        };
        let current = bytes(&self.values);
        let offers: usize = (self.offers.iter().chain(&self.spare))
            .flatten()
            .filter_map(|o| o.values.as_ref())
            .map(&mut bytes)
            .sum();
        let rss = sysmem::resident().unwrap_or(0);
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

    /// What measuring layer `layer`'s offer of (at most) `q` filters takes.
    fn prepare(&mut self, layer: usize, q: usize, scores: &Scores, reader: &Reader) -> Result<Job> {
        let plan = reader.plan;
        let filters = lowest_in_layer(&self.mask, scores, layer, q);
        let first = plan.first_node(layer);
        let mut previous = None;
        for p in [self.offers[layer].take(), self.spare[layer].take()]
            .into_iter()
            .flatten()
        {
            if p.filters == filters {
                previous = Some(p);
            } else if p.values.is_some() && self.spare[layer].is_none() {
                self.spare[layer] = Some(p); // the newer of the two other ones
            } else {
                self.kept -= p.own_bytes;
            }
        }
        // The current network without the offer.
        let target = without(&self.mask, layer, &filters);
        let rel = relative(&self.mask, &target);
        let own_bytes = own_bytes(&self.net, first, reader.control.labels.len());
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
                let keep = kept_positions(&self.mask.keep[layer], &target.keep[layer]);
                (self.values.clone(), Some((layer, keep)))
            }
        };
        Ok(Job {
            layer,
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

    /// The `k` offers of `asked` whose first-order estimate of the A lost per filter is
    /// lowest (ties: the earlier group), in `asked`'s order.
    /// The screen's estimate of the A lost per filter by each offer of `asked`, in order.
    fn estimates(
        &self,
        asked: &[(usize, usize)],
        scores: &Scores,
        reader: &Reader,
    ) -> Result<Vec<f64>> {
        let t = std::time::Instant::now();
        let costs = screen::channel_costs(&self.net, &self.values, reader)?;
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
                let filters = lowest_in_layer(&self.mask, scores, group, q);
                screen::offer_cost(&costs, &self.mask, group, &filters)
            })
            .collect())
    }

    /// The fresh offer of `layer`, if there is one.
    fn fresh(&self, layer: usize) -> Option<&Offer> {
        self.offers[layer]
            .as_ref()
            .filter(|o| o.stale_from == UNCHANGED)
    }

    /// Accept `layer`'s fresh offer: its network (and values) become the current ones.
    fn accept(&mut self, layer: usize, plan: &Plan) -> Result<usize> {
        let offer = self.offers[layer].take().expect("a fresh offer");
        self.kept -= offer.own_bytes;
        for f in &offer.filters {
            self.mask.keep[layer][*f] = false;
        }
        let first = plan.first_node(layer);
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

    /// The current network changed from node `node` on: every offer is stale from there,
    /// and the values of those that can no longer be reused are freed.
    fn changed_from(&mut self, node: usize, plan: &Plan) {
        let slots = self.offers.iter_mut().enumerate();
        for (l, slot) in slots.chain(self.spare.iter_mut().enumerate()) {
            if let Some(o) = slot {
                o.stale_from = o.stale_from.min(node);
                if o.stale_from <= plan.first_node(l) && o.values.take().is_some() {
                    self.kept -= o.own_bytes;
                    o.own_bytes = 0;
                }
            }
        }
    }
}

/// The `k` offers of `asked` whose `estimated` cost is lowest (ties: the earlier group), in
/// `asked`'s order.
fn top_k(mut asked: Vec<(usize, usize)>, estimated: &[f64], k: usize) -> Vec<(usize, usize)> {
    let mut ranked: Vec<(f64, usize)> = estimated
        .iter()
        .copied()
        .zip(asked.iter().map(|a| a.0))
        .collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let chosen: Vec<usize> = ranked.iter().take(k).map(|&(_, g)| g).collect();
    asked.retain(|(g, _)| chosen.contains(g));
    asked
}

/// `mask` with `filters` of `layer` removed too.
fn without(mask: &FilterMask, layer: usize, filters: &[usize]) -> FilterMask {
    let mut m = mask.clone();
    for &f in filters {
        m.keep[layer][f] = false;
    }
    m
}

/// `after` in the indexing of a network compacted to `before` (which it is within).
fn relative(before: &FilterMask, after: &FilterMask) -> FilterMask {
    let keep = before
        .keep
        .iter()
        .zip(&after.keep)
        .map(|(b, a)| (0..b.len()).filter(|&i| b[i]).map(|i| a[i]).collect())
        .collect();
    FilterMask { keep }
}

/// Positions, among the channels alive in `before`, of those alive in `after` too.
fn kept_positions(before: &[bool], after: &[bool]) -> Vec<u32> {
    let alive = (0..before.len()).filter(|&i| before[i]);
    alive
        .enumerate()
        .filter(|&(_, i)| after[i])
        .map(|(j, _)| j as u32)
        .collect()
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
    // The conv's output, then every channel-wise op reading only the value before.
    let mut last = node + 1;
    while net.nodes.get(last).is_some_and(|n| {
        matches!(n.op, Op::Relu | Op::Relu6 | Op::MaxPool(_) | Op::Dropout) && n.inputs == [last]
    }) {
        last += 1;
    }
    let ids = Tensor::new(keep, net.device())?;
    for acts in values.iter_mut() {
        // A conv fused with its ReLU recorded one tensor for both values: select it once.
        let mut prev: Option<(candle_core::TensorId, Tensor)> = None;
        for value in &mut acts[node + 1..=last] {
            let selected = match &prev {
                Some((id, t)) if *id == value.id() => t.clone(),
                _ => value.index_select(&ids, 1)?,
            };
            prev = Some((value.id(), selected.clone()));
            *value = selected;
        }
    }
    Ok(last)
}

/// Memory left free beside the candidates' values kept: for the round's own runs, and for
/// the rest of the machine.
const RESERVE: u64 = 1 << 30;

/// Bytes of candidates' values the search may hold now: its `budget`, within what the
/// process's `limit` leaves beside the rest of its `resident` memory, and within what the
/// machine has `available` (other processes count there). While a round runs, a kept
/// candidate's new values exist beside the old ones they replace, so the room is halved.
/// A run is admitted on the rest (src/runner/memory.rs); this keeps the part the search
/// controls from pushing the process past the limit or the machine into its out-of-memory
/// killer. The decisions do not depend on it.
fn keep_allowed(
    budget: usize,
    kept: usize,
    limit: u64,
    resident: Option<u64>,
    available: Option<u64>,
) -> usize {
    let kept = kept as u64;
    let mut allowed = budget as u64;
    if let Some(r) = resident {
        let rest = r.saturating_sub(kept);
        allowed = allowed.min(limit.saturating_sub(rest + RESERVE) / 2);
    }
    if let Some(a) = available {
        allowed = allowed.min((kept + a).saturating_sub(RESERVE) / 2);
    }
    allowed as usize
}

/// Bytes of the values of `net` after node `first`'s input, on `images` images.
fn own_bytes(net: &Network, first: usize, images: usize) -> usize {
    net.trace_floats_per_image(first + 1) * images * 4
}

/// Remove `n` filters from `mask` by measured layer search (see the module docs): every
/// layer offers its `offers.fraction` (of its original width) least relevant filters,
/// offers are measured on `reader`'s control split, and the cheapest per filter are accepted
/// (`offers.take`). `from` is where the last search ended when that was at `mask` (its
/// network and measured offers are reused); `costs` carries the groups' last costs.
/// `current` is the network at `mask` when its head is not `original`'s (re-fitted after
/// the last step); the search then starts from it, measuring nothing carried over.
/// Returns where it ended: the mask with `n` more filters removed, and its state.
#[allow(clippy::too_many_arguments)]
pub fn search(
    original: &Network,
    current: Option<Network>,
    from: Option<Ended>,
    mask: &FilterMask,
    scores: &Scores,
    n: usize,
    offers: &Offers,
    reader: &Reader,
    costs: &mut Costs,
) -> Result<Ended> {
    let Offers {
        fraction,
        take,
        min_per_layer,
        keep_budget,
        restandardize,
        screen,
        screen_images,
    } = *offers;
    let plan = reader.plan;
    let own_head = current.is_some();
    // The network searched is a function of the mask: `original` compacted to it, or the
    // given one (whose head changed since anything was measured).
    let mut st = match (from, current) {
        (_, Some(net)) => State::new(net, mask, reader, restandardize)?,
        (Some(Ended(s)), None) => {
            debug_assert!(
                s.mask == *mask,
                "a search continues where the last one ended"
            );
            s
        }
        (None, None) => State::new(compact(original, plan, mask)?, mask, reader, restandardize)?,
    };
    // The screen's own state on a few control images a class, kept in step with `st`.
    let sub_split = match screen_images {
        0 => None,
        _ if screen == 0 => None,
        m => Some(reader.control.first_per_class(m)?),
    };
    let sub_reader = sub_split.as_ref().map(|control| Reader {
        control,
        prefix: None,
        ..*reader
    });
    let mut sub = match &sub_reader {
        Some(r) => Some(State::new(st.net.clone(), mask, r, restandardize)?),
        None => None,
    };
    let layers = mask.keep.len();
    let memory_costs = &mut costs.0;
    if memory_costs.len() != layers || take == Take::Best {
        *memory_costs = vec![f64::NEG_INFINITY; layers];
    }
    let mut removed = 0;
    while removed < n {
        let quota = |st: &State, l: usize| {
            let room = st.mask.alive_in(l).saturating_sub(min_per_layer);
            let width = st.mask.keep[l].len();
            ((fraction * width as f64).round() as usize)
                .max(1)
                .min(room)
                .min(n - removed)
        };
        // The cheapest-looking open layer (never-measured ones first; ties: earlier).
        let open: Vec<usize> = (0..layers).filter(|&l| quota(&st, l) > 0).collect();
        let Some(&l) = open
            .iter()
            .min_by(|&&a, &&b| memory_costs[a].total_cmp(&memory_costs[b]))
        else {
            break; // every layer is at its floor
        };
        if take == Take::All {
            // Measure every open offer once, accept them cheapest first.
            let before = st.mask.clone();
            let asked: Vec<(usize, usize)> = open.iter().map(|&o| (o, quota(&st, o))).collect();
            let costs = st.measure(&asked, scores, reader, keep_budget)?;
            let mut measured: Vec<(usize, f64)> = open.iter().copied().zip(costs).collect();
            measured.sort_by(|x, y| x.1.total_cmp(&y.1));
            let mut first_changed = UNCHANGED;
            for (o, _) in measured {
                let filters = &st.offers[o].as_ref().expect("measured").filters;
                let k = filters.len().min(n - removed);
                for f in &filters[..k] {
                    st.mask.keep[o][*f] = false;
                }
                first_changed = first_changed.min(plan.first_node(o));
                removed += k;
                if removed == n {
                    break;
                }
            }
            // Accepted layers' offers are stale from their own first node on, so spent.
            st.changed_from(first_changed, plan);
            st.net = if own_head {
                compact(&st.net, plan, &relative(&before, &st.mask))?
            } else {
                compact(original, plan, &st.mask)?
            };
            st.run_current(reader)?;
            continue;
        }
        if st.fresh(l).is_some() {
            removed += st.accept(l, plan)?;
            if let Some(sub) = sub.as_mut() {
                sub.accept(l, plan)?; // measured in the same round, on the same mask
            }
            if take == Take::Best {
                memory_costs.iter_mut().for_each(|m| *m = f64::NEG_INFINITY);
            }
        } else if take == Take::Best {
            // Every open layer is measured before the next accept: all at once (or, screened,
            // the `screen` that look cheapest; the others cannot be accepted this round).
            let mut asked: Vec<(usize, usize)> = open
                .iter()
                .filter(|&&o| st.fresh(o).is_none())
                .map(|&o| (o, quota(&st, o)))
                .collect();
            // LRPRUNE_SCREEN_CHECK=1: measure every offer (the exact search's decisions) and
            // print how the screen ranked them beside what they measured.
            let check = screen > 0 && std::env::var_os("LRPRUNE_SCREEN_CHECK").is_some();
            let estimated = match (&mut sub, &sub_reader) {
                _ if screen == 0 => None,
                (Some(sub), Some(r)) => Some(sub.measure(&asked, scores, r, keep_budget)?),
                _ => Some(st.estimates(&asked, scores, reader)?),
            };
            if let (Some(est), false) = (&estimated, check) {
                asked = top_k(asked, est, screen);
                for &o in &open {
                    if st.fresh(o).is_none() {
                        memory_costs[o] = f64::INFINITY;
                    }
                }
            }
            let costs = st.measure(&asked, scores, reader, keep_budget)?;
            if let (Some(est), true) = (&estimated, check) {
                screen::log_check(&asked, est, &costs, screen);
            }
            for ((o, _), c) in asked.iter().zip(costs) {
                memory_costs[*o] = c;
            }
        } else {
            memory_costs[l] = st.measure(&[(l, quota(&st, l))], scores, reader, keep_budget)?[0];
        }
    }
    Ok(Ended(st))
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;

    #[test]
    fn the_kept_values_give_way_to_the_rest_of_the_process_and_the_machine() {
        let b = 4 * G as usize;
        // Room everywhere: the budget.
        assert_eq!(keep_allowed(b, 0, 16 * G, Some(2 * G), Some(20 * G)), b);
        assert_eq!(keep_allowed(b, 0, 16 * G, None, None), b);
        // The process holds 10 GiB of which 3 are kept values: 7 + 1 reserve leave 8, half
        // of it for kept values (the other half for those replacing them in a round).
        let k = 3 * G as usize;
        assert_eq!(keep_allowed(b, k, 16 * G, Some(10 * G), None), b);
        // 4 GiB more elsewhere in the process: 2 GiB may stay.
        let two = 2 * G as usize;
        assert_eq!(keep_allowed(b, k, 16 * G, Some(14 * G), None), two);
        // Over the limit without them: none.
        assert_eq!(keep_allowed(b, k, 16 * G, Some(20 * G), None), 0);
        // The machine has 2 GiB left: of the 3 kept, 2 stay.
        assert_eq!(keep_allowed(b, k, 64 * G, Some(4 * G), Some(2 * G)), two);
    }
}
