//! Knobs of the accuracy-aware controller (`aa-lrp`, docs/method.md), their
//! defaults and their valid ranges.

use serde::{Deserialize, Serialize};

/// How the accuracy-aware controller weighs classes in the pruning order.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ClassWeights {
    /// w_c ∝ 1 / max(a_c, ε): the harmonic mean's sensitivity (docs/method.md).
    InverseAccuracy,
    /// w_c ∝ 1 / max(a_c, ε)²: leans harder on the weakest classes.
    InverseAccuracySquared,
    /// Equal weights: per-class normalisation only.
    Uniform,
}

/// Which network the controller's relevance comes from at each step.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RelevanceSource {
    /// Recomputed on the current pruned network every step (docs/method.md, as first formalised).
    Iterative,
    /// Computed once on the intact network (the one-shot ranking, per class).
    Intact,
    /// `blend`·current + (1 − `blend`)·intact, each normalised first.
    Blend,
}

/// What the controller's A averages per class (harmonic mean over classes).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Signal {
    /// Per-class accuracy (docs/method.md, as first formalised).
    Accuracy,
    /// Per-class mean softmax probability of the true class: a smoothed A.
    Confidence,
}

/// Knobs of the accuracy-aware controller (`aa-lrp`, docs/method.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ControlSettings {
    /// Adapt the step size with the harmonic-mean accuracy A of the control split.
    #[serde(default = "d_true")]
    pub rate_control: bool,
    /// Order filters by class-weighted per-class relevance.
    #[serde(default)]
    pub order_control: bool,
    /// Largest allowed drop of A in one step before the step is halved.
    #[serde(default = "d_tolerance")]
    pub tolerance: f64,
    /// Smallest step (fraction of all filters); a step this small is accepted regardless.
    #[serde(default = "d_min_step")]
    pub min_step: f64,
    /// Floor on each class accuracy inside A and the class weights.
    #[serde(default = "d_epsilon")]
    pub epsilon: f64,
    #[serde(default = "d_class_weights")]
    pub class_weights: ClassWeights,
    #[serde(default = "d_relevance")]
    pub relevance: RelevanceSource,
    /// Weight of the current network's relevance for `relevance = "blend"`.
    #[serde(default = "d_blend")]
    pub blend: f64,
    /// Divide scores by the layer's remaining fraction, so nearly empty layers are spared.
    #[serde(default = "d_true")]
    pub layer_aware: bool,
    /// Exponent on the remaining fraction for `layer_aware` (2 spares depleted layers more).
    #[serde(default = "d_layer_power")]
    pub layer_power: f64,
    /// After an accepted step without back-off, the step grows by this factor (up to `step`).
    #[serde(default = "d_growth")]
    pub growth: f64,
    /// What A averages per class: `accuracy` (docs/method.md) or `confidence` (smoothed).
    #[serde(default = "d_signal")]
    pub signal: Signal,
    /// Choose the layer to prune next by the measured effect on A (`prune/search/`).
    #[serde(default)]
    pub layer_search: bool,
    /// Chunk a layer offers per search round, as a fraction of its original width.
    #[serde(default = "d_search_fraction")]
    pub search_fraction: f64,
    /// Offers accepted per measurement pass: `best` (one, then re-measure) or `all`
    /// (cheapest first until the step's quota is met).
    /// (Left out of the run id at its default, so ids of runs made before the knob existed
    /// stay valid.)
    #[serde(default = "d_search_take", skip_serializing_if = "is_best")]
    pub search_take: Take,
    /// Screened search: each round measures only this many offers, those a first-order
    /// estimate of their cost in A ranks cheapest (`prune/screen.rs`); 0 measures every
    /// offer (the exact search). Under `search_take = "lazy"`, the k offers that look
    /// cheapest by their last measured costs must all be measured on the current network
    /// before the cheapest is accepted (1: the plain lazy search). Not with
    /// `search_take = "all"`. (Left out of the run id at 0, so ids of exact-search runs
    /// stay valid.)
    #[serde(default, skip_serializing_if = "is_zero")]
    pub search_screen: usize,
    /// How the screen ranks: 0, by the first-order estimate; m > 0, by measuring every
    /// offer on the first m control images of each class. With `search_take = "lazy"` (and
    /// no `search_screen`) the lazy search runs on those images alone, every offer measured
    /// afresh at each step's start, A read on the whole control split once a step.
    /// (Left out of the run id at 0.)
    #[serde(default, skip_serializing_if = "is_zero")]
    pub search_screen_images: usize,
}
fn is_zero(n: &usize) -> bool {
    *n == 0
}
fn is_best(t: &Take) -> bool {
    *t == Take::Best
}
fn d_search_take() -> Take {
    Take::Best
}
fn d_layer_power() -> f64 {
    2.0
}
fn d_signal() -> Signal {
    Signal::Accuracy
}
fn d_search_fraction() -> f64 {
    0.1
}
impl ControlSettings {
    /// What `aa-lrp` runs without a `control` table: the best variant on the validation
    /// seeds that fits the quickstart's budget (docs/method.md, "Choosing the default
    /// variant"): the measured layer search on the smoothed A, intact relevance within
    /// layers, no rate or order control (`aa-search-conf` of the ablation specs). A
    /// `control` table starts from the knob defaults instead (the fields' own).
    pub fn chosen() -> Self {
        Self {
            rate_control: false,
            order_control: false,
            relevance: RelevanceSource::Intact,
            layer_aware: false,
            layer_power: 1.0,
            layer_search: true,
            signal: Signal::Confidence,
            ..Self::default()
        }
    }

    /// The formalisation in docs/method.md exactly as written: relevance recomputed on the pruned network, both
    /// mechanisms on, no layer-aware order.
    pub fn paper() -> Self {
        Self {
            order_control: true,
            relevance: RelevanceSource::Iterative,
            layer_aware: false,
            ..Self::default()
        }
    }
}

fn d_true() -> bool {
    true
}
fn d_tolerance() -> f64 {
    0.02
}
fn d_min_step() -> f64 {
    0.01
}
fn d_epsilon() -> f64 {
    1e-3
}
fn d_class_weights() -> ClassWeights {
    ClassWeights::InverseAccuracy
}
fn d_relevance() -> RelevanceSource {
    RelevanceSource::Intact
}
fn d_blend() -> f64 {
    0.5
}
fn d_growth() -> f64 {
    2.0
}
/// The default `aa-lrp` is the best of the validation sweep within the quickstart's time
/// budget (docs/results.md): intact-network relevance, layer-aware order with the remaining
/// fraction squared (`layer_power = 2`), rate control.
impl Default for ControlSettings {
    fn default() -> Self {
        Self {
            rate_control: true,
            order_control: false,
            tolerance: d_tolerance(),
            min_step: d_min_step(),
            epsilon: d_epsilon(),
            class_weights: d_class_weights(),
            relevance: d_relevance(),
            blend: d_blend(),
            layer_aware: true,
            layer_power: d_layer_power(),
            growth: d_growth(),
            signal: d_signal(),
            layer_search: false,
            search_fraction: d_search_fraction(),
            search_take: d_search_take(),
            search_screen: 0,
            search_screen_images: 0,
        }
    }
}

/// The smallest `min_step` and `search_fraction`: a millionth of the filters.
const MIN_FRACTION: f64 = 1e-6;

/// Ranges of the controller's knobs: `Err((key, message with the fix))`.
pub(super) fn check_control(
    c: &ControlSettings,
) -> std::result::Result<(), (&'static str, String)> {
    let checks: [(&str, bool, &str, f64); 7] = [
        (
            "layer_power",
            c.layer_power >= 0.0,
            "≥ 0, e.g. 1",
            c.layer_power,
        ),
        (
            "tolerance",
            c.tolerance >= 0.0,
            "≥ 0, e.g. 0.02",
            c.tolerance,
        ),
        // Lower bounds: below them a backoff halves (or a search round offers) a step
        // too small to remove a filter of any network, and the loops never end.
        (
            "min_step",
            c.min_step >= MIN_FRACTION && c.min_step <= 1.0,
            "in [1e-6, 1], e.g. 0.01",
            c.min_step,
        ),
        (
            "epsilon",
            c.epsilon > 0.0 && c.epsilon <= 1.0,
            "in (0, 1], e.g. 1e-3",
            c.epsilon,
        ),
        (
            "blend",
            (0.0..=1.0).contains(&c.blend),
            "in [0, 1], e.g. 0.5",
            c.blend,
        ),
        ("growth", c.growth >= 1.0, "≥ 1, e.g. 2", c.growth),
        (
            "search_fraction",
            c.search_fraction >= MIN_FRACTION && c.search_fraction <= 1.0,
            "in [1e-6, 1], e.g. 0.1",
            c.search_fraction,
        ),
    ];
    for (key, ok, range, value) in checks {
        if !ok || value.is_nan() {
            return Err((key, format!("got {value} (fix: a value {range})")));
        }
    }
    if c.search_screen > 0 && c.search_take == Take::All {
        return Err((
            "search_screen",
            format!(
                "screens the rounds of search_take = \"best\" or \"lazy\", got search_take = \"{}\" (fix: search_take = \"best\" or \"lazy\", or search_screen = 0)",
                serde_json::to_value(c.search_take).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
            ),
        ));
    }
    if c.search_screen_images > 0 && c.search_screen == 0 && c.search_take != Take::Lazy {
        return Err((
            "search_screen_images",
            format!(
                "sets the images a screen ranks on, got {} with no screen (fix: search_screen = k, e.g. 3; or search_take = \"lazy\" to search on these images alone; or search_screen_images = 0)",
                c.search_screen_images
            ),
        ));
    }
    Ok(())
}

/// How offers are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Take {
    /// Greedy: measure every layer's offer, accept the cheapest, measure all again.
    Best,
    /// Lazy greedy: keep each layer's last measured cost (also across steps), re-measure
    /// only the currently cheapest-looking offer, and accept it once it is still the
    /// cheapest when measured on the current network. Exact greedy when costs only grow as
    /// pruning proceeds; a few measurements per accepted offer instead of one per layer.
    Lazy,
    /// Measure every offer once, then accept them cheapest first until the quota is met.
    All,
}
