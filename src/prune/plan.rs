//! The pruning plan: which channels must go together, derived once from the graph.
//!
//! In the spirit of Torch-Pruning's dependency graph, a **group** is a set of channels that
//! can only be removed together: the output channel of a conv (its folded BN entry with
//! it), the matching input channel of every conv that reads it, a depthwise conv's channel
//! (its input and output are one channel), every conv feeding the same residual `Add`, and
//! for the last block the head's standardisation entries and linear columns. What each op
//! does to channels is its own statement ([`Op::channels`]): channel-wise ops (ReLU,
//! pooling, dropout, `Add`) pass a channel through unchanged, `Flatten` turns channel `c`
//! into features `c·hw .. (c+1)·hw`, a `Concat` puts its inputs' channel blocks side by side.
//!
//! Everything that acts on a mask — zeroing ([`super::zeroed::zeroed`]), compaction
//! ([`super::compact::compact`]), scoring a group from its convs, where a pass may start —
//! follows this plan; nothing else walks the graph to find out what feeds what. A VGG has
//! one group per conv, in conv order, so its masks read exactly as before.

use super::mask::FilterMask;
use crate::model::layer::{Channels, Side};
use crate::model::prefix::{PrefixCache, Start};
use crate::model::{Network, Op};
pub use crate::spec::{GroupPolicy, GroupReduce};
use anyhow::{bail, Result};

/// Where a group's channel `c` lives in one tensor. A reader's `at` is the channel offset
/// of the group's block in the value it reads (non-zero behind a `Concat`): the group's
/// channel `c` is the reader's input channel `at + c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    /// Output channel `c` of conv node `n` (weight row and bias); for a depthwise conv this
    /// is also its input channel.
    Out(usize),
    /// Input channel `at + c` of node `node`, `hw` features a channel: a conv's weight
    /// column, a per-channel affine's entry, the head's standardisation entries or linear
    /// columns `(at + c)·hw .. (at + c + 1)·hw` ([`Op::params_along`]).
    In { node: usize, at: usize, hw: usize },
}

impl Member {
    /// The node the member lives in.
    pub fn node(&self) -> usize {
        match *self {
            Member::Out(node) | Member::In { node, .. } => node,
        }
    }
    /// The channel offset of the group's block in the member's tensor (0 for a producer).
    pub fn at(&self) -> usize {
        match *self {
            Member::Out(_) => 0,
            Member::In { at, .. } => at,
        }
    }
    /// Features per channel in the member's tensor.
    pub fn hw(&self) -> usize {
        match *self {
            Member::Out(_) => 1,
            Member::In { hw, .. } => hw,
        }
    }
    /// The side of its node's op the member cuts.
    pub fn side(&self) -> Side {
        match self {
            Member::Out(_) => Side::Out,
            Member::In { .. } => Side::In,
        }
    }
}

/// How a value's channels map to channel spaces: consecutive blocks `(space, channels)`
/// (one block unless a `Concat` made it), each channel carrying `hw` features.
#[derive(Debug, Clone)]
struct Layout {
    blocks: Vec<(usize, usize)>,
    hw: usize,
}

impl Layout {
    fn one(space: usize, channels: usize) -> Self {
        Self {
            blocks: vec![(space, channels)],
            hw: 1,
        }
    }
    /// `(space, channel offset)` of every block.
    fn offsets(&self) -> Vec<(usize, usize)> {
        let mut at = 0;
        (self.blocks.iter())
            .map(|&(s, n)| {
                at += n;
                (s, at - n)
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct Group {
    /// The first producing conv's node name, with the number of convs coupled to it.
    pub name: String,
    pub size: usize,
    pub members: Vec<Member>,
    /// Conv nodes whose output channels are the group's (the `Out` members), ascending.
    pub producers: Vec<usize>,
    /// Whether a residual `Add` couples several convs' outputs in this group.
    pub coupled: bool,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub groups: Vec<Group>,
    pub reduce: GroupReduce,
    /// For every node, its position among the network's convs (`None` for other ops).
    conv_index: Vec<Option<usize>>,
}

/// Union-find over channel spaces, each with its members.
struct Spaces {
    parent: Vec<usize>,
    members: Vec<Vec<Member>>,
    coupled: Vec<bool>,
    /// Not prunable: the input image's channels, a linear layer's outputs, grouped convs.
    frozen: Vec<bool>,
}

impl Spaces {
    fn new_space(&mut self, frozen: bool) -> usize {
        self.parent.push(self.parent.len());
        self.members.push(Vec::new());
        self.coupled.push(false);
        self.frozen.push(frozen);
        self.parent.len() - 1
    }
    fn root(&mut self, mut s: usize) -> usize {
        while self.parent[s] != s {
            self.parent[s] = self.parent[self.parent[s]];
            s = self.parent[s];
        }
        s
    }
    fn union(&mut self, a: usize, b: usize) -> usize {
        let (a, b) = (self.root(a), self.root(b));
        if a != b {
            self.parent[b] = a;
            let moved = std::mem::take(&mut self.members[b]);
            self.members[a].extend(moved);
            self.coupled[a] |= self.coupled[b];
            self.frozen[a] |= self.frozen[b];
        }
        a
    }
    fn add(&mut self, s: usize, m: Member) {
        let r = self.root(s);
        self.members[r].push(m);
    }
}

impl Plan {
    /// Derive the plan of the intact `net`.
    pub fn build(net: &Network, policy: GroupPolicy, reduce: GroupReduce) -> Result<Plan> {
        let shapes = net.shapes();
        let mut sp = Spaces {
            parent: Vec::new(),
            members: Vec::new(),
            coupled: Vec::new(),
            frozen: Vec::new(),
        };
        let mut value = vec![Layout::one(sp.new_space(true), net.input_shape.0)];
        let mut conv_index = vec![None; net.nodes.len()];
        let mut convs = 0;
        for (i, node) in net.nodes.iter().enumerate() {
            let input = value[node.inputs[0]].clone();
            let hw = input.hw;
            // The node reads every block of its input at that block's offset.
            let reads = |sp: &mut Spaces| {
                for (s, at) in input.offsets() {
                    sp.add(s, Member::In { node: i, at, hw });
                }
            };
            let fresh = |sp: &mut Spaces, frozen: bool| {
                Layout::one(sp.new_space(frozen), shapes[i + 1].channels())
            };
            if matches!(node.op, Op::Conv(_)) {
                conv_index[i] = Some(convs);
                convs += 1;
            }
            let out = match node.op.channels() {
                Channels::Through => input,
                Channels::Scale | Channels::PerFeature => {
                    reads(&mut sp);
                    input
                }
                Channels::ToFeatures => {
                    let channels: usize = input.blocks.iter().map(|b| b.1).sum();
                    Layout {
                        hw: shapes[i + 1].elements() / channels.max(1),
                        ..input
                    }
                }
                Channels::Produce { filters } => {
                    reads(&mut sp);
                    let out = fresh(&mut sp, !filters);
                    if filters {
                        sp.add(out.blocks[0].0, Member::Out(i));
                    }
                    out
                }
                Channels::Depthwise if input.blocks.len() == 1 => {
                    sp.add(input.blocks[0].0, Member::Out(i));
                    input
                }
                // A grouped (not depthwise) conv ties channels in blocks, and a depthwise one
                // reading a concatenation would need a producer per block: not pruned.
                Channels::Depthwise | Channels::Tied => {
                    for &(s, _) in &input.blocks {
                        let r = sp.root(s);
                        sp.frozen[r] = true;
                    }
                    fresh(&mut sp, true)
                }
                Channels::Merge => {
                    for &v in &node.inputs[1..] {
                        let other = &value[v];
                        let sizes = |l: &Layout| l.blocks.iter().map(|b| b.1).collect::<Vec<_>>();
                        if sizes(other) != sizes(&input) {
                            bail!(
                                "`{}` adds values concatenated differently ({:?} and {:?} channels)",
                                node.name,
                                sizes(&input),
                                sizes(other)
                            );
                        }
                        for (a, b) in input.blocks.iter().zip(&other.blocks) {
                            let r = sp.union(a.0, b.0);
                            sp.coupled[r] = true;
                        }
                    }
                    input
                }
                Channels::Concat => Layout {
                    blocks: (node.inputs.iter())
                        .flat_map(|&v| value[v].blocks.clone())
                        .collect(),
                    hw,
                },
            };
            value.push(out);
        }
        let mut groups = Vec::new();
        for s in 0..sp.parent.len() {
            if sp.root(s) != s || sp.frozen[s] {
                continue;
            }
            let members = std::mem::take(&mut sp.members[s]);
            let producers: Vec<usize> = members
                .iter()
                .filter_map(|m| match m {
                    Member::Out(n) => Some(*n),
                    _ => None,
                })
                .collect();
            let coupled = sp.coupled[s];
            if producers.is_empty() || (coupled && policy == GroupPolicy::Internal) {
                continue;
            }
            let mut producers = producers;
            producers.sort_unstable();
            let size = out_channels(net, producers[0]);
            if let Some(&bad) = producers.iter().find(|&&n| out_channels(net, n) != size) {
                bail!(
                    "`{}` and `{}` share channels but have {size} and {} filters",
                    net.nodes[producers[0]].name,
                    net.nodes[bad].name,
                    out_channels(net, bad)
                );
            }
            let first = &net.nodes[producers[0]].name;
            let adds = producers
                .iter()
                .filter(|&&n| matches!(&net.nodes[n].op, Op::Conv(c) if !c.is_depthwise()))
                .count();
            let name = if adds > 1 {
                format!("{first} (+{} coupled)", adds - 1)
            } else {
                first.clone()
            };
            groups.push(Group {
                name,
                size,
                members,
                producers,
                coupled,
            });
        }
        groups.sort_by_key(|g| g.producers[0]);
        Ok(Plan {
            groups,
            reduce,
            conv_index,
        })
    }

    /// Channels of every group in the intact network.
    pub fn sizes(&self) -> Vec<usize> {
        self.groups.iter().map(|g| g.size).collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.groups.iter().map(|g| g.name.clone()).collect()
    }

    /// Current channels of every group in `net` (the intact network or a compaction of it).
    pub fn sizes_in(&self, net: &Network) -> Vec<usize> {
        self.groups
            .iter()
            .map(|g| out_channels(net, g.producers[0]))
            .collect()
    }

    /// Where `member`'s block of channels (a `Concat` may have put other blocks before it)
    /// starts in a network whose groups have `sizes` channels: its offset in the intact
    /// network less what the groups before it on the same tensor have lost. Blocks no group
    /// holds (frozen ones, the image) keep their size.
    pub fn offset_in(&self, member: &Member, sizes: &[usize]) -> usize {
        let (node, at) = (member.node(), member.at());
        if matches!(member, Member::Out(_)) || at == 0 {
            return 0;
        }
        let lost: usize = (self.groups.iter().zip(sizes))
            .flat_map(|(group, &now)| {
                group.members.iter().filter_map(move |m| {
                    let before = !matches!(m, Member::Out(_)) && m.node() == node;
                    (before && m.at() < at).then_some(group.size - now)
                })
            })
            .sum();
        at - lost
    }

    /// The first node that removing channels of group `g` changes.
    pub fn first_node(&self, g: usize) -> usize {
        self.groups[g].producers[0]
    }

    /// The first node a network pruned as `dead` says differs from the intact one
    /// (`dead[g]`: whether group `g` lost any channel).
    pub fn first_changed(&self, dead: impl Iterator<Item = bool>) -> Option<usize> {
        dead.enumerate()
            .filter(|(_, d)| *d)
            .map(|(g, _)| self.first_node(g))
            .min()
    }

    /// Where a pass over `cache`'s split starts for a network pruned by `mask`.
    pub fn start<'a>(&self, cache: &'a PrefixCache, mask: &FilterMask) -> Start<'a> {
        let dead = mask.keep.iter().map(|row| row.iter().any(|alive| !alive));
        Start::at(cache, self.first_changed(dead))
    }

    /// Per-group scores from per-conv ones (`per_conv[k]`: the k-th conv's output
    /// channels, in `net`'s current indexing), combined over each group's producers.
    pub fn group_scores(&self, per_conv: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let reduce = self.reduce;
        self.groups
            .iter()
            .map(|g| {
                let rows: Vec<&Vec<f64>> = g
                    .producers
                    .iter()
                    .map(|&n| &per_conv[self.conv_index[n].expect("producers are convs")])
                    .collect();
                // Start from the first row (not 0.0) so a single producer's scores pass
                // through bit for bit (−0.0 stays −0.0).
                let mut out = rows[0].clone();
                for row in &rows[1..] {
                    for (o, v) in out.iter_mut().zip(row.iter()) {
                        *o = match reduce {
                            GroupReduce::Sum | GroupReduce::Mean => *o + v,
                            GroupReduce::Max => o.max(*v),
                        };
                    }
                }
                if reduce == GroupReduce::Mean && rows.len() > 1 {
                    out.iter_mut().for_each(|o| *o /= rows.len() as f64);
                }
                out
            })
            .collect()
    }
}

fn out_channels(net: &Network, node: usize) -> usize {
    match &net.nodes[node].op {
        Op::Conv(c) => c.out_channels(),
        _ => 0,
    }
}
