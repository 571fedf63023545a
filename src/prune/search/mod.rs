//! Measured layer search (`control.layer_search`): an order-control variant that chooses
//! *where* to prune by the measured effect on the control signal A, and *which* filters
//! within a group by relevance.
//!
//! Why: every method's collapse on the quickstart coincides with one layer (conv13, the
//! fixed head's input) being drained; a global relevance ranking cannot see that, because
//! per-layer normalisation makes each filter of a wide layer look cheap. Here each round
//! asks every layer for its `search_fraction` least relevant filters, removes each chunk
//! tentatively, measures A on the control split, and keeps the chunk that costs the least A
//! per filter removed. Rounds repeat until the step's quota is met.
//!
//! "Layer" in the knobs' names (`layer_search`) is a pruning group here: the channels that
//! go together (docs/method.md).
//!
//! Files: this one is the policy (which groups offer what, which offer is taken);
//! `state.rs` the bookkeeping (the current network and each group's offer measured on it);
//! `read.rs` how a network is read on the control split; `memory.rs` how much of the
//! candidates' values may be kept.
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

mod memory;
mod read;
mod state;

use super::compact::compact;
use super::mask::FilterMask;
use super::select::Scores;
use super::signal::Reader;
use crate::model::Network;
pub use crate::spec::Take;
use crate::sysmem::Gauge;
use anyhow::Result;
use read::logits_of;
use state::State;

/// How the search cuts and accepts offers (the `control.search_*` knobs), and the memory
/// gauge its kept values answer to.
#[derive(Clone, Copy)]
pub struct Offers<'a> {
    /// Each group offers this fraction of its original width per round.
    pub fraction: f64,
    pub take: Take,
    /// No group is cut below this many filters.
    pub min_per_layer: usize,
    /// Bytes of measured candidates' own values kept between rounds; the rest are measured
    /// from the current network again when asked (the decisions do not change).
    pub keep_budget: usize,
    /// Read every candidate with its head's input standardisation re-estimated on its own
    /// features (for runs whose head changes after a step: `after_step` ≠ none).
    pub restandardize: bool,
    /// Measure only this many offers a round, those a screen ranks cheapest; 0 measures
    /// every offer (the exact search). Under `Take::Lazy`, the k cheapest-looking offers
    /// (by their last measured costs) must all be measured on the current network before
    /// the cheapest is accepted.
    pub screen: usize,
    /// How the screen ranks: 0, by a first-order estimate (`super::screen`); m > 0, by
    /// measuring every offer on the first m control images of each class.
    pub screen_images: usize,
    /// What the kept values give way to (`sysmem::Process` in a run).
    pub gauge: &'a dyn Gauge,
}

/// Each group's last measured cost, carried from one call (step) to the next for
/// `Take::Lazy` (reset every round under `Take::Best`).
#[derive(Default)]
pub struct Costs(Vec<f64>);

/// Where a search ended: the network at the mask it returned, that network's values on the
/// control split and the offers measured on it, and the same on the screen's images
/// (`Offers::screen_images`). A search handed it continues from there.
pub struct Ended {
    st: State,
    /// The screen's state, in step with `st` (`None` unless the run screens by measurement).
    sub: Option<State>,
}

impl Ended {
    /// The mask the search returned.
    pub fn mask(&self) -> &FilterMask {
        &self.st.mask
    }

    /// A and the per-class scores of the network the search ended with (read from the
    /// values it holds; with `restandardize`, its head re-standardised as measured).
    pub fn measured(&self, reader: &Reader) -> Result<(f64, Vec<f64>)> {
        let st = &self.st;
        let logits = logits_of(&st.net, &st.values, st.restandardize)?;
        reader.read(&logits)
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

/// Remove `n` filters from `mask` by measured layer search (see the module docs): every
/// group offers its `offers.fraction` (of its original width) least relevant filters,
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
        gauge,
    } = *offers;
    let plan = reader.plan;
    let own_head = current.is_some();
    // The network searched is a function of the mask: `original` compacted to it, or the
    // given one (whose head changed since anything was measured).
    let (mut st, carried_sub) = match (from, current) {
        (_, Some(net)) => (State::new(net, mask, reader, restandardize)?, None),
        (Some(Ended { st, sub }), None) => {
            debug_assert!(
                st.mask == *mask,
                "a search continues where the last one ended"
            );
            (st, sub)
        }
        (None, None) => {
            let net = compact(original, plan, mask)?;
            (State::new(net, mask, reader, restandardize)?, None)
        }
    };
    // `search_take = "lazy"` with `search_screen_images = m`: the lazy greedy search runs
    // on the screen's images alone, every offer measured afresh at each step's start; the
    // whole control split is read once a step, on the network the search ends with.
    let lazy_on_images = take == Take::Lazy && screen_images > 0;
    // The screen's own state on a few control images a class, kept in step with `st` (and
    // carried from step to step with it: its values are those a fresh state would compute).
    let sub_split = match screen_images {
        0 => None,
        _ if screen == 0 && !lazy_on_images => None,
        m => Some(reader.control.first_per_class(m)?),
    };
    let sub_reader = sub_split.as_ref().map(|control| Reader {
        control,
        prefix: None,
        ..*reader
    });
    let mut sub = match (&sub_reader, carried_sub) {
        (Some(_), Some(carried)) => Some(carried),
        (Some(r), None) => Some(State::new(st.net.clone(), mask, r, restandardize)?),
        (None, _) => None,
    };
    let groups = mask.keep.len();
    let memory_costs = &mut costs.0;
    if memory_costs.len() != groups || take == Take::Best || lazy_on_images {
        *memory_costs = vec![f64::NEG_INFINITY; groups];
    }
    // The state the offers are measured and accepted on, and the screen's beside it.
    let (work, mut side, reader_of_work): (&mut State, Option<&mut State>, &Reader) =
        if lazy_on_images {
            let on_images = sub.as_mut().expect("the screen's state");
            (
                on_images,
                None,
                sub_reader.as_ref().expect("the screen's images"),
            )
        } else {
            (&mut st, sub.as_mut(), reader)
        };
    let mut removed = 0;
    while removed < n {
        let st = &mut *work;
        let reader = reader_of_work;
        let quota = |st: &State, g: usize| {
            let room = st.mask.alive_in(g).saturating_sub(min_per_layer);
            let width = st.mask.keep[g].len();
            ((fraction * width as f64).round() as usize)
                .max(1)
                .min(room)
                .min(n - removed)
        };
        // The cheapest-looking open group (never-measured ones first; ties: earlier).
        let open: Vec<usize> = (0..groups).filter(|&g| quota(st, g) > 0).collect();
        let Some(&g) = open
            .iter()
            .min_by(|&&a, &&b| memory_costs[a].total_cmp(&memory_costs[b]))
        else {
            break; // every group is at its floor
        };
        if take == Take::All {
            // Measure every open offer once, accept them cheapest first.
            let asked: Vec<(usize, usize)> = open.iter().map(|&o| (o, quota(st, o))).collect();
            let costs = st.measure(&asked, scores, reader, keep_budget, gauge)?;
            let mut measured: Vec<(usize, f64)> = open.iter().copied().zip(costs).collect();
            measured.sort_by(|x, y| x.1.total_cmp(&y.1));
            let mut accepted = Vec::new();
            for (o, _) in measured {
                let k = st.offered(o).min(n - removed);
                accepted.push((o, k));
                removed += k;
                if removed == n {
                    break;
                }
            }
            st.accept_all(&accepted, original, own_head, reader)?;
            continue;
        }
        // Lazy: the cheapest-looking offer is accepted once it and the others among the k
        // cheapest-looking (k = `screen`, at least 1) are all measured on the current
        // network. Their last costs rank them, as the estimate ranks a screened round's
        // offers; k = 1 is the plain lazy search (the first ranked is `g`).
        let stale_in_top: Vec<usize> = match take {
            Take::Lazy => {
                let mut ranked = open.clone();
                ranked
                    .sort_by(|&a, &b| memory_costs[a].total_cmp(&memory_costs[b]).then(a.cmp(&b)));
                ranked.truncate(screen.max(1));
                ranked.retain(|&o| st.fresh(o).is_none());
                ranked
            }
            _ => Vec::new(),
        };
        if st.fresh(g).is_some() && stale_in_top.is_empty() {
            removed += st.accept(g, plan)?;
            if let Some(sub) = side.as_mut() {
                sub.accept(g, plan)?; // measured in the same round, on the same mask
            }
            if take == Take::Best {
                memory_costs.iter_mut().for_each(|m| *m = f64::NEG_INFINITY);
            }
        } else if take == Take::Best {
            // Every open group is measured before the next accept: all at once (or, screened,
            // the `screen` that look cheapest; the others cannot be accepted this round).
            let mut asked: Vec<(usize, usize)> = open
                .iter()
                .filter(|&&o| st.fresh(o).is_none())
                .map(|&o| (o, quota(st, o)))
                .collect();
            // LRPRUNE_SCREEN_CHECK=1: measure every offer (the exact search's decisions) and
            // print how the screen ranked them beside what they measured.
            let check = screen > 0 && std::env::var_os("LRPRUNE_SCREEN_CHECK").is_some();
            let estimated = match (&mut side, &sub_reader) {
                _ if screen == 0 => None,
                (Some(sub), Some(r)) => Some(sub.measure(&asked, scores, r, keep_budget, gauge)?),
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
            let costs = st.measure(&asked, scores, reader, keep_budget, gauge)?;
            if let (Some(est), true) = (&estimated, check) {
                super::screen::log_check(&asked, est, &costs, screen);
            }
            for ((o, _), c) in asked.iter().zip(costs) {
                memory_costs[*o] = c;
            }
        } else {
            // Lazy: the stale ones among the k cheapest-looking measured again on the current
            // network, all at once (every never-measured one at once when the cheapest-looking
            // was never measured: the same network, so the same costs).
            let unmeasured = |o: usize| memory_costs[o] == f64::NEG_INFINITY;
            let asked: Vec<(usize, usize)> = match unmeasured(g) {
                true => open
                    .iter()
                    .filter(|&&o| unmeasured(o))
                    .map(|&o| (o, quota(st, o)))
                    .collect(),
                false => stale_in_top.iter().map(|&o| (o, quota(st, o))).collect(),
            };
            let costs = st.measure(&asked, scores, reader, keep_budget, gauge)?;
            for ((o, _), c) in asked.iter().zip(costs) {
                memory_costs[*o] = c;
            }
        }
    }
    if lazy_on_images {
        let on_images = sub.as_ref().expect("the screen's state");
        let net = on_images.net.clone();
        st = State::new(net, &on_images.mask, reader, restandardize)?;
    }
    Ok(Ended { st, sub })
}
