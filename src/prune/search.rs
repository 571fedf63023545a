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
//! Cost: one forward per layer and round, but only from the pruned layer on: every value of
//! the current network on the control split is cached, and removing channels of a group
//! changes nothing before its first conv.

use super::compact::compact;
use super::mask::FilterMask;
use super::plan::Plan;
use super::select::Scores;
use super::signal::Reader;
use crate::model::network::batch_ranges;
use crate::model::prefix;
use crate::model::Network;
pub use crate::spec::Take;
use anyhow::Result;
use candle_core::Tensor;

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

/// Every value of the current network on the control split, per batch, so that a pass can
/// restart at any node.
struct Traces {
    /// `per_batch[b][v]`: value v on batch b.
    per_batch: Vec<Vec<Tensor>>,
}

impl Traces {
    fn build(net: &Network, mask: &FilterMask, reader: &Reader) -> Result<Self> {
        let control = reader.control;
        let from = reader.prefix.map(|c| reader.plan.start(c, mask));
        let per_batch = batch_ranges(control.labels.len(), reader.batch)
            .map(|(start, len)| Ok(prefix::trace(net, &control.images, from, start, len)?))
            .collect::<Result<_>>()?;
        Ok(Self { per_batch })
    }

    /// The values up to `node` that nodes from `node` on read, of one batch.
    fn live(net: &Network, acts: &[Tensor], node: usize) -> Vec<Option<Tensor>> {
        let mut given = vec![None; node + 1];
        for v in net.live_before(node) {
            given[v] = Some(acts[v].clone());
        }
        given
    }

    /// After the network changed from `node` on (now `net`): values before it stay, the
    /// rest are recomputed.
    fn update_after(&mut self, net: &Network, node: usize) -> Result<()> {
        for acts in &mut self.per_batch {
            let before = acts[..=node].iter().cloned().map(Some).collect();
            *acts = net.trace_from(node, before)?;
        }
        Ok(())
    }

    /// Logits of `net` on the control split, running it from `node` on.
    fn logits_from(&self, net: &Network, node: usize) -> Result<Tensor> {
        let outs = self
            .per_batch
            .iter()
            .map(|acts| net.forward_from(node, Self::live(net, acts, node)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::cat(&outs, 0)?)
    }
}

/// How the search cuts and accepts offers (the `control.search_*` knobs).
#[derive(Clone, Copy)]
pub struct Offers {
    /// Each layer offers this fraction of its original width per round.
    pub fraction: f64,
    pub take: Take,
    /// No layer is cut below this many filters.
    pub min_per_layer: usize,
}

/// One layer's measured offer on the current network.
struct Offer {
    /// A lost per filter removed.
    damage: f64,
    filters: Vec<usize>,
    /// The current network without them, and its A.
    net: Network,
    a: f64,
}

/// The search's view of the current state.
struct State<'a> {
    mask: FilterMask,
    net: Network,
    a: f64,
    inputs: Traces,
    reader: &'a Reader<'a>,
    plan: &'a Plan,
}

impl State<'_> {
    /// Layer `layer`'s offer of (at most) `q` filters, measured.
    fn measure(&self, layer: usize, q: usize, scores: &Scores) -> Result<Offer> {
        let filters = lowest_in_layer(&self.mask, scores, layer, q);
        // The same removal, in the current (compacted) network's indexing.
        let mut rel = FilterMask::all_alive(&self.plan.sizes_in(&self.net));
        let alive_idx = self.mask.alive_indices(layer);
        for f in &filters {
            let j = alive_idx
                .iter()
                .position(|&i| i as usize == *f)
                .expect("alive");
            rel.keep[layer][j] = false;
        }
        let net = compact(&self.net, self.plan, &rel)?;
        let logits = self.inputs.logits_from(&net, self.plan.first_node(layer))?;
        let (a, _) = self.reader.read(&logits)?;
        Ok(Offer {
            damage: (self.a - a) / filters.len() as f64,
            filters,
            net,
            a,
        })
    }

    fn accept(&mut self, layer: usize, offer: Offer) -> Result<()> {
        for f in &offer.filters {
            self.mask.keep[layer][*f] = false;
        }
        self.net = offer.net;
        self.a = offer.a;
        self.inputs
            .update_after(&self.net, self.plan.first_node(layer))
    }
}

/// Remove `n` filters from `mask` by measured layer search (see the module docs): every
/// layer offers its `offers.fraction` (of its original width) least relevant filters,
/// offers are measured on `reader`'s control split, and the cheapest per filter are accepted
/// (`offers.take`). `memory` carries each layer's last measured cost between calls (for
/// `Take::Lazy`).
pub fn search(
    original: &Network,
    mask: &FilterMask,
    scores: &Scores,
    n: usize,
    offers: &Offers,
    reader: &Reader,
    memory: &mut Vec<f64>,
) -> Result<FilterMask> {
    let Offers {
        fraction,
        take,
        min_per_layer,
    } = *offers;
    let plan = reader.plan;
    let net = compact(original, plan, mask)?;
    let (a, _) = reader.measure(&net, mask)?;
    let inputs = Traces::build(&net, mask, reader)?;
    let mut st = State {
        mask: mask.clone(),
        net,
        a,
        inputs,
        reader,
        plan,
    };
    let layers = mask.keep.len();
    if memory.len() != layers || take == Take::Best {
        *memory = vec![f64::NEG_INFINITY; layers];
    }
    let mut removed = 0;
    // Offers measured on the current network, by layer.
    let mut fresh: Vec<Option<Offer>> = (0..layers).map(|_| None).collect();
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
            .min_by(|&&a, &&b| memory[a].total_cmp(&memory[b]))
        else {
            break; // every layer is at its floor
        };
        if take == Take::All {
            // Measure every open offer once, accept them cheapest first.
            let mut measured = Vec::new();
            for &o in &open {
                measured.push((o, st.measure(o, quota(&st, o), scores)?));
            }
            measured.sort_by(|x, y| x.1.damage.total_cmp(&y.1.damage));
            for (o, offer) in measured {
                let k = offer.filters.len().min(n - removed);
                for f in &offer.filters[..k] {
                    st.mask.keep[o][*f] = false;
                }
                removed += k;
                if removed == n {
                    break;
                }
            }
            st.net = compact(original, plan, &st.mask)?;
            st.a = reader.measure(&st.net, &st.mask)?.0;
            st.inputs = Traces::build(&st.net, &st.mask, reader)?;
            continue;
        }
        match fresh[l].take() {
            Some(offer) => {
                removed += offer.filters.len();
                st.accept(l, offer)?;
                fresh.iter_mut().for_each(|f| *f = None);
                if take == Take::Best {
                    memory.iter_mut().for_each(|m| *m = f64::NEG_INFINITY);
                }
            }
            None => {
                let offer = st.measure(l, quota(&st, l), scores)?;
                memory[l] = offer.damage;
                fresh[l] = Some(offer);
            }
        }
    }
    Ok(st.mask)
}
