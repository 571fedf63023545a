//! The spec's plain sections: how images are split, the pruning grid, the head, and how
//! relevance becomes a filter score.

use serde::{Deserialize, Serialize};

/// How many images per class go where. The training split trains the head and is the LRP
/// reference and (by default) the controller's control set; the test split only draws the
/// curves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSettings {
    #[serde(default = "d_train")]
    pub train_per_class: usize,
    #[serde(default = "d_test")]
    pub test_per_class: usize,
    /// Optional subset of classes, by index or by name; empty = the dataset's default
    /// classes (all, except where the catalog names a default: `ifct-food`).
    #[serde(default)]
    pub classes: Vec<ClassRef>,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Images per class for a separate **control set**, drawn from the training pool
    /// disjointly from the head's training images (0 = the controller measures A on the
    /// training split itself). The head fits its own training images perfectly, so A on
    /// them stays at 1 until damage is done; a held-out control set sees generalisation.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub control_per_class: usize,
}
/// A class in `data.classes`: its index among the dataset's (sorted) classes, or its name,
/// or the code a name starts with before a space (`"C"` for `C green leafy vegetables`).
/// Indices serialise as before, so the run ids of specs that list indices do not change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(untagged)]
pub enum ClassRef {
    Index(usize),
    Name(String),
}

impl ClassRef {
    /// The class of `names` this refers to, if any.
    pub fn find(&self, names: &[String]) -> Option<usize> {
        match self {
            ClassRef::Index(i) => (*i < names.len()).then_some(*i),
            ClassRef::Name(n) => names.iter().position(|c| c == n).or_else(|| {
                names
                    .iter()
                    .position(|c| c.split_once(' ').is_some_and(|(code, _)| code == n))
            }),
        }
    }
}

impl std::fmt::Display for ClassRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClassRef::Index(i) => write!(f, "{i}"),
            ClassRef::Name(n) => write!(f, "`{n}`"),
        }
    }
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}
fn d_train() -> usize {
    20
}
fn d_test() -> usize {
    50
}
fn d_batch() -> usize {
    100
}
impl Default for DataSettings {
    fn default() -> Self {
        Self {
            train_per_class: d_train(),
            test_per_class: d_test(),
            classes: vec![],
            batch_size: d_batch(),
            control_per_class: 0,
        }
    }
}

/// The global iterative schedule shared by every method.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PruningSettings {
    /// Fraction of all conv filters pruned per step.
    #[serde(default = "d_step")]
    pub step: f64,
    /// Every curve ends exactly here.
    #[serde(default = "d_max_rate")]
    pub max_rate: f64,
    /// Never empty a pruning group (a VGG conv; a residual stream of a ResNet).
    #[serde(default = "d_min_filters")]
    pub min_filters_per_layer: usize,
    /// Which pruning groups may lose channels. (Left out of the run id at its default, so
    /// ids of runs made before the knob existed stay valid; likewise `group_reduce`.)
    #[serde(default, skip_serializing_if = "is_default")]
    pub groups: GroupPolicy,
    /// How a group's score combines its producing convs' scores.
    #[serde(default, skip_serializing_if = "is_default")]
    pub group_reduce: GroupReduce,
    /// What happens to the head after every step (docs/method.md, "After a step").
    #[serde(default, skip_serializing_if = "is_default")]
    pub after_step: AfterStep,
}
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}
fn d_step() -> f64 {
    0.05
}
fn d_max_rate() -> f64 {
    0.9
}
fn d_min_filters() -> usize {
    1
}
impl Default for PruningSettings {
    fn default() -> Self {
        Self {
            step: d_step(),
            max_rate: d_max_rate(),
            min_filters_per_layer: d_min_filters(),
            groups: GroupPolicy::default(),
            group_reduce: GroupReduce::default(),
            after_step: AfterStep::default(),
        }
    }
}

/// What the head sees: raw GAP features or per-feature standardised ones (docs/method.md: the head
/// matters as much as the criterion, so this is recorded with every run).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum InputNorm {
    None,
    Standardize,
}

/// The classifier head trained on cached features of the fixed backbone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeadSettings {
    #[serde(default)]
    pub hidden: Vec<usize>,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "d_norm")]
    pub input_norm: InputNorm,
    #[serde(default = "d_opt")]
    pub optimizer: Optimizer,
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    #[serde(default)]
    pub weight_decay: f64,
}
fn d_norm() -> InputNorm {
    InputNorm::Standardize
}
fn d_opt() -> Optimizer {
    Optimizer::Adam
}
fn d_lr() -> f64 {
    1e-2
}
fn d_epochs() -> usize {
    300
}
impl Default for HeadSettings {
    fn default() -> Self {
        Self {
            hidden: vec![],
            dropout: 0.0,
            input_norm: d_norm(),
            optimizer: d_opt(),
            lr: d_lr(),
            epochs: d_epochs(),
            weight_decay: 0.0,
        }
    }
}

/// Per-layer normalisation of filter scores before the global ranking.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LayerNorm {
    None,
    /// v / Σ v over the layer (Yeom et al. 2021).
    Sum,
    /// v / ‖v‖₂ over the layer.
    L2,
}

/// How relevance becomes a filter score.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LrpSettings {
    /// A composite name (`lrprune explain --help` lists them).
    #[serde(default = "d_composite")]
    pub composite: String,
    /// Rank by |relevance| instead of signed relevance.
    #[serde(default)]
    pub abs: bool,
    #[serde(default = "d_layer_norm")]
    pub normalize: LayerNorm,
}
fn d_composite() -> String {
    "epsilon-plus".into()
}
fn d_layer_norm() -> LayerNorm {
    LayerNorm::Sum
}
impl Default for LrpSettings {
    fn default() -> Self {
        Self {
            composite: d_composite(),
            abs: false,
            normalize: d_layer_norm(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Optimizer {
    Adam,
    Sgd,
}

/// Which groups may be pruned (`[pruning] groups`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupPolicy {
    /// Every group, the residual streams included.
    #[default]
    All,
    /// Only channels inside residual blocks: groups coupled through an `Add` (the residual
    /// stream) stay intact.
    Internal,
}

/// What the network's head goes through after each pruning step (`[pruning] after_step`).
/// The backbone stays fixed either way; every method of a spec gets the same treatment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AfterStep {
    /// The head stays as trained on the intact network.
    #[default]
    None,
    /// The head's input standardisation is re-estimated on the pruned network's training
    /// features (needs `head.input_norm = "standardize"`).
    Restandardize,
    /// The head is trained again, from the same seeded start, on the pruned network's
    /// training features.
    RefitHead,
}

/// How a group's score combines its producing convs' scores (`[pruning] group_reduce`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupReduce {
    /// Sum over the producing convs (relevance is additive; so are L1 norms).
    #[default]
    Sum,
    /// Mean over the producing convs.
    Mean,
    /// The largest of the producing convs' scores (a channel counts as much as its most
    /// important use).
    Max,
}

/// An LRP rule for an affine layer (a conv or a dense layer), as a composite names it;
/// `lrp/rules.rs` applies it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "rule")]
pub enum Rule {
    /// ε-rule: `R_in = x ⊙ Aᵀ(R / stab(z))`, `z = A(x) + b`.
    Epsilon { epsilon: f64 },
    /// z⁺ (α1β0): positive contributions only; `bias` adds b⁺ to the denominator (zennit).
    ZPlus { bias: bool },
    /// αβ: `α·(positive share) − β·(negative share)`, α − β = 1.
    AlphaBeta { alpha: f64, beta: f64 },
    /// Flat: relevance spread uniformly over each output's receptive field (first layer).
    Flat,
    /// zᴮ: box-constrained input in [low, high] per channel (first layer).
    ZBox,
}

/// An LRP composite: the rule of the first conv and of the other convs (dense layers take
/// ε = 1e-6; a zᴮ first conv reads the preprocessing's pixel bounds). The one list of them:
/// specs are checked against it and `lrp/composite.rs` builds from it.
pub struct CompositeDef {
    pub name: &'static str,
    pub about: &'static str,
    pub first_conv: Rule,
    pub conv: Rule,
}

const ZPLUS: Rule = Rule::ZPlus { bias: true };
const ZPLUS_NOBIAS: Rule = Rule::ZPlus { bias: false };
const ALPHA2_BETA1: Rule = Rule::AlphaBeta {
    alpha: 2.0,
    beta: 1.0,
};

/// The composites lrprune knows, with what they do.
pub const COMPOSITES: &[CompositeDef] = &[
    CompositeDef {
        name: "epsilon-plus",
        about: "convs z⁺ with b⁺ (zennit EpsilonPlus), dense ε = 1e-6 — the default",
        first_conv: ZPLUS,
        conv: ZPLUS,
    },
    CompositeDef {
        name: "epsilon-plus-nobias",
        about: "convs z⁺ ignoring biases (conserves relevance exactly), dense ε",
        first_conv: ZPLUS_NOBIAS,
        conv: ZPLUS_NOBIAS,
    },
    CompositeDef {
        name: "epsilon-plus-flat",
        about: "as epsilon-plus, first conv flat",
        first_conv: Rule::Flat,
        conv: ZPLUS,
    },
    CompositeDef {
        name: "epsilon-plus-zb",
        about: "as epsilon-plus, first conv zᴮ with the preprocessing's pixel bounds",
        first_conv: Rule::ZBox,
        conv: ZPLUS,
    },
    CompositeDef {
        name: "epsilon-alpha2-beta1",
        about: "convs α2β1, dense ε",
        first_conv: ALPHA2_BETA1,
        conv: ALPHA2_BETA1,
    },
];
