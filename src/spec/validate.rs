//! Range checks on every setting a run resolves to (the spec's own sections, and each
//! override's patched copy of them), on model definitions and on names, so that nothing
//! accepted at load can panic, loop forever or allocate without bound later.
//!
//! Each check returns the offending key (the field, as written in its section) and a
//! message with the fix; `spec::parse` locates it in the file.

use super::settings::{AfterStep, LrpSettings, COMPOSITES};
use super::{Arch, CfgItem, DataSettings, HeadSettings, InputNorm, ModelSpec, PruningSettings};
use super::{MethodKind, RunConfig, Spread};

/// The field at fault and what to do about it.
pub(super) type Problem = (&'static str, String);

/// The largest image side and per-class count accepted: beyond them a typo would allocate
/// terabytes instead of failing.
pub const MAX_INPUT_SIZE: usize = 1024;
pub const MAX_PER_CLASS: usize = 100_000;
/// The smallest step: with step = 1e-300 a sweep would never end.
pub const MIN_STEP: f64 = 1e-4;
/// Longest accepted name (names become file names).
pub const MAX_NAME: usize = 64;

fn at_least_one(key: &'static str, v: usize) -> Result<(), Problem> {
    if v == 0 {
        return Err((key, format!("must be ≥ 1, got 0 (fix: e.g. {key} = 10)")));
    }
    Ok(())
}

pub(super) fn check_data(d: &DataSettings) -> Result<(), Problem> {
    at_least_one("train_per_class", d.train_per_class)?;
    at_least_one("test_per_class", d.test_per_class)?;
    at_least_one("batch_size", d.batch_size)?;
    for (key, v) in [
        ("train_per_class", d.train_per_class),
        ("test_per_class", d.test_per_class),
        ("control_per_class", d.control_per_class),
        ("batch_size", d.batch_size),
    ] {
        if v > MAX_PER_CLASS {
            return Err((
                key,
                format!("{v} is more than {MAX_PER_CLASS} (fix: a smaller value)"),
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(c) = d.classes.iter().find(|c| !seen.insert(*c)) {
        return Err((
            "classes",
            format!("class {c} is listed twice (fix: list each class once)"),
        ));
    }
    Ok(())
}

pub(super) fn check_pruning(p: &PruningSettings) -> Result<(), Problem> {
    if !(p.step >= MIN_STEP && p.step <= 1.0) {
        return Err((
            "step",
            format!(
                "need {MIN_STEP} ≤ step ≤ 1, got {} (fix: e.g. step = 0.05)",
                p.step
            ),
        ));
    }
    if !(p.max_rate > 0.0 && p.max_rate < 1.0) {
        return Err((
            "max_rate",
            format!(
                "need 0 < max_rate < 1, got {} (fix: e.g. max_rate = 0.9)",
                p.max_rate
            ),
        ));
    }
    at_least_one("min_filters_per_layer", p.min_filters_per_layer)
}

/// `after_step = "restandardize"` re-estimates a standardisation the head must have.
pub(super) fn check_after_step(p: &PruningSettings, h: &HeadSettings) -> Result<(), Problem> {
    if p.after_step == AfterStep::Restandardize && h.input_norm != InputNorm::Standardize {
        return Err((
            "after_step",
            "\"restandardize\" needs a standardised head input (fix: [head] input_norm = \"standardize\", or after_step = \"refit-head\")".into(),
        ));
    }
    Ok(())
}

/// The widest hidden layer of a head: wider ones only allocate (a head on ≤ 2048
/// features needs far less), and 10⁸ asks for 200 GB.
pub const MAX_HEAD_WIDTH: usize = 65536;

pub(super) fn check_head(h: &HeadSettings) -> Result<(), Problem> {
    if h.hidden.contains(&0) {
        return Err((
            "hidden",
            "a hidden layer of width 0 (fix: widths ≥ 1, or hidden = [])".into(),
        ));
    }
    if let Some(w) = h.hidden.iter().find(|&&w| w > MAX_HEAD_WIDTH) {
        return Err((
            "hidden",
            format!(
                "a hidden layer of width {w} (fix: widths ≤ {MAX_HEAD_WIDTH}, e.g. hidden = [256])"
            ),
        ));
    }
    if !(h.lr.is_finite() && h.lr > 0.0) {
        return Err((
            "lr",
            format!("need a finite lr > 0, got {} (fix: e.g. lr = 0.01)", h.lr),
        ));
    }
    if !(0.0..1.0).contains(&h.dropout) {
        return Err((
            "dropout",
            format!(
                "need 0 ≤ dropout < 1, got {} (fix: e.g. dropout = 0.2)",
                h.dropout
            ),
        ));
    }
    if !(h.weight_decay.is_finite() && h.weight_decay >= 0.0) {
        return Err((
            "weight_decay",
            format!(
                "need a finite weight_decay ≥ 0, got {} (fix: e.g. weight_decay = 1e-4)",
                h.weight_decay
            ),
        ));
    }
    if h.epochs > 1_000_000 {
        return Err((
            "epochs",
            format!("{} epochs (fix: at most 1000000)", h.epochs),
        ));
    }
    Ok(())
}

/// The smallest square input on which `m`'s last feature map keeps at least one position.
pub fn min_input_size(m: &ModelSpec) -> usize {
    match m.arch {
        Arch::Custom => {
            let pools = m
                .cfg
                .iter()
                .filter(|c| matches!(c, CfgItem::Pool(_)))
                .count();
            1usize << pools.min(10)
        }
        Arch::Alexnet => 63,
        // Unknown until the graph is read: checked then (`model::load`).
        Arch::Onnx => 1,
        // Five 2×2 pools, or a total stride of 32.
        _ => 32,
    }
}

pub(super) fn check_model(m: &ModelSpec) -> Result<(), Problem> {
    let min = min_input_size(m);
    if m.input_size < min || m.input_size > MAX_INPUT_SIZE {
        return Err((
            "input_size",
            format!(
                "{} needs {min} ≤ input_size ≤ {MAX_INPUT_SIZE}, got {} (fix: e.g. input_size = {})",
                m.arch.name(),
                m.input_size,
                min.max(64)
            ),
        ));
    }
    let onnx_file = m.weights.to_ascii_lowercase().ends_with(".onnx");
    match (m.arch, onnx_file) {
        (Arch::Onnx, false) => return Err((
            "arch",
            format!("no `arch` given, and weights `{}` is not an .onnx file, whose graph would be the architecture (fix: name one, e.g. arch = \"resnet18\", or give an .onnx file)", m.weights),
        )),
        (Arch::Onnx, true) if !m.cfg.is_empty() || m.batch_norm => return Err((
            "cfg",
            "an ONNX model's graph is its architecture (fix: remove `cfg` and `batch_norm`)".into(),
        )),
        (arch, true) if arch != Arch::Onnx => return Err((
            "arch",
            format!("arch = \"{}\" with an .onnx weights file, whose graph is its own architecture (fix: remove `arch`, or write arch = \"onnx\")", arch.name()),
        )),
        _ => {}
    }
    if m.arch == Arch::Custom {
        if !m.cfg.iter().any(|c| matches!(c, CfgItem::Conv(_))) {
            return Err((
                "cfg",
                "a custom model needs at least one conv (fix: e.g. cfg = [16, \"M\", 32, \"M\"])"
                    .into(),
            ));
        }
        if m.cfg.iter().any(|c| matches!(c, CfgItem::Conv(0))) {
            return Err(("cfg", "a conv of width 0 (fix: widths ≥ 1)".into()));
        }
    }
    Ok(())
}

pub(super) fn check_lrp(l: &LrpSettings) -> Result<(), Problem> {
    if COMPOSITES.iter().any(|c| c.name == l.composite) {
        return Ok(());
    }
    let known: Vec<&str> = COMPOSITES.iter().map(|c| c.name).collect();
    Err((
        "composite",
        format!(
            "unknown composite `{}` (fix: one of {})",
            l.composite,
            known.join(", ")
        ),
    ))
}

/// What a method's kind rules out of the settings it meets: checked for every expanded run
/// at load (a method meets every variant) and again by the runner's method factory, so
/// that no run fails on it after its data is loaded and its head trained. The key is the
/// whole path (`method.schedule`).
pub fn check_method(cfg: &RunConfig) -> Result<(), Problem> {
    let name = &cfg.method.name;
    let kind = cfg.method.kind;
    if kind == MethodKind::AaLrp && cfg.method.schedule != Spread::Global {
        return Err(("method.schedule", format!("method `{name}`: method.schedule = \"layer-uniform\" does not apply to aa-lrp, whose controller sets its own steps (fix: leave schedule out)")));
    }
    if kind == MethodKind::AaLrp
        && cfg.pruning.after_step == AfterStep::RefitHead
        && cfg.data.control_per_class == 0
    {
        return Err(("pruning.after_step", format!("method `{name}` with pruning.after_step = \"refit-head\": a re-fitted head fits its training images, so the controller's accuracy read on them says nothing (fix: set data.control_per_class, e.g. 10, so that it reads a held-out control set)")));
    }
    if kind.uses_relevance() && cfg.method.normalize.is_some() {
        return Err(("method.normalize", format!("method `{name}`: method.normalize is for weight and Taylor criteria (fix: LRP methods normalise through lrp.normalize)")));
    }
    Ok(())
}

/// Names become parts of file names: a safe alphabet, a bounded length.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        return Ok(());
    }
    Err(format!(
        "`{name}` is not a usable name (fix: 1–{MAX_NAME} characters from A–Z, a–z, 0–9, `-`, `_`, `.`, not starting with `.`)"
    ))
}
