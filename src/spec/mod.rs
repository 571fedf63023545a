//! Experiment specs: a TOML file expands into a grid of fully resolved runs.
//!
//! The grid is `models × datasets × seeds × overrides × methods` (methods innermost, so runs
//! that share a trained head are adjacent). Every error names the file, the line and the key,
//! because a researcher fixing a spec at 2 a.m. should not have to guess.

mod catalog;
mod control;
mod locate;
mod settings;
pub mod validate;

pub use catalog::{builtin_model, default_classes, BUILTIN_DATASETS};
pub use catalog::{
    Arch, CfgItem, DataFormat, DatasetSpec, MethodKind, MethodSpec, ModelSpec, Preprocess, Spread,
    BUILTIN_MODELS, NAMED_METHODS,
};
pub use control::{ClassWeights, ControlSettings, RelevanceSource, Signal, Take};
pub use settings::{
    AfterStep, ClassRef, DataSettings, GroupPolicy, GroupReduce, HeadSettings, InputNorm,
    LayerNorm, LrpSettings, Optimizer, PruningSettings, COMPOSITES,
};

use anyhow::{bail, Result};
use catalog::builtin_dataset;
use control::check_control;
use locate::{toml_error_key, Locator};
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
    /// The controller's knobs of an `aa-lrp` run: its `control` table, or — where it has
    /// none — the chosen variant, at load ([`load`]) and for a config made in code alike
    /// (one default, [`ControlSettings::chosen`]).
    pub fn control_settings(&self) -> ControlSettings {
        self.control.clone().unwrap_or_else(ControlSettings::chosen)
    }

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
/// The largest spec file read (the shipped ones are under 10 KiB).
pub const MAX_SPEC_BYTES: u64 = 16 << 20;

/// Read and expand a spec file.
pub fn load(path: &Path) -> Result<Spec> {
    // A FIFO would block and /dev/zero never end: a spec is a regular file of a few KiB.
    let bytes = crate::fsio::read_capped(path, "spec", MAX_SPEC_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() + 1;
        anyhow::anyhow!(
            "{}:{line}: byte {at} is not UTF-8 (fix: save the spec as UTF-8)",
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

    let models = resolve_names(
        &loc,
        &exp.models,
        "models",
        &raw.model,
        builtin_model,
        |n| {
            format!("unknown model `{n}` (fix: use a built-in model (vgg16) or define it in a [[model]] table)")
        },
    )?;
    let models = models
        .into_iter()
        .map(|(mut spec, used_at)| {
            spec.weights = resolve_local(base_dir, &spec.weights);
            check_weights(&loc, &raw, used_at, &spec)?;
            Ok(spec)
        })
        .collect::<Result<Vec<_>>>()?;
    let datasets = resolve_names(
        &loc,
        &exp.datasets,
        "datasets",
        &raw.dataset,
        builtin_dataset,
        |n| {
            let known: Vec<&str> = BUILTIN_DATASETS.iter().map(|d| d.0).collect();
            format!(
                "unknown dataset `{n}` (fix: use one of {}, or define it in a [[dataset]] table)",
                known.join(", ")
            )
        },
    )?
    .into_iter()
    .map(|(mut spec, used_at)| {
        spec.source = resolve_local(base_dir, &spec.source);
        check_source(&loc, &raw, used_at, &spec)?;
        Ok(spec)
    })
    .collect::<Result<Vec<_>>>()?;
    let builtin_method = |name: &str| {
        let named = NAMED_METHODS.iter().find(|m| m.0 == name);
        let (kind, normalize, schedule) = match named {
            Some(&(_, kind, normalize, schedule)) => (kind, normalize, schedule),
            None => (MethodKind::parse(name)?, None, Spread::Global),
        };
        Some(MethodSpec {
            name: name.to_string(),
            kind,
            lrp: None,
            control: None,
            normalize,
            schedule,
        })
    };
    let methods = resolve_names(
        &loc,
        &exp.methods,
        "methods",
        &raw.method,
        builtin_method,
        |n| {
            let known: Vec<_> = MethodKind::ALL
                .iter()
                .map(|(n, _)| *n)
                .chain(NAMED_METHODS.iter().map(|m| m.0))
                .collect();
            format!(
                "unknown method `{n}` (fix: use one of {} or define it in a [[method]] table)",
                known.join(", ")
            )
        },
    )?;
    let method_uses: Vec<&Spanned<String>> = methods.iter().map(|(_, at)| *at).collect();
    let methods: Vec<MethodSpec> = methods.into_iter().map(|(spec, _)| spec).collect();

    let variants = resolve_overrides(&loc, &raw)?;
    let name = exp.name.get_ref().clone();
    let mut runs = Vec::new();
    // The position in `experiment.methods` of each run's method, for locating its errors.
    let mut method_of_run = Vec::new();
    for model in &models {
        for dataset in &datasets {
            for &seed in exp.seeds.get_ref() {
                for v in &variants {
                    for (mi, method) in methods.iter().enumerate() {
                        if !v.covers(&method.name, seed) {
                            continue;
                        }
                        method_of_run.push(mi);
                        runs.push(RunConfig {
                            lrp: method
                                .kind
                                .uses_relevance()
                                .then(|| method.lrp.clone().unwrap_or_else(|| v.lrp.clone())),
                            control: (method.kind == MethodKind::AaLrp).then(|| {
                                (method.control.clone()).unwrap_or_else(ControlSettings::chosen)
                            }),
                            experiment: name.clone(),
                            model: model.clone(),
                            dataset: dataset.clone(),
                            method: method.clone(),
                            seed,
                            variant: v.name.clone(),
                            data: with_default_classes(&v.data, dataset),
                            pruning: v.pruning.clone(),
                            head: v.head.clone(),
                        });
                    }
                }
            }
        }
    }
    for (i, r) in runs.iter().enumerate() {
        if let Err((key, why)) = validate::check_method(r) {
            let field = key.rsplit('.').next().unwrap_or(key);
            let at = method_uses[method_of_run[i]];
            let span = key_of_table(&loc, &raw.method, &r.method.name, field, at);
            let why = match r.variant.as_str() {
                "" => why,
                v => format!("in override `{v}`: {why}"),
            };
            bail!(loc.err(span, key, why));
        }
    }
    if exp
        .results_dir
        .as_ref()
        .is_some_and(|d| d.as_os_str().is_empty())
    {
        bail!(loc.err(
            loc.key_in(0..1, "results_dir"),
            "experiment.results_dir",
            format!("is empty, which would write results into the current directory (fix: give a folder, e.g. results_dir = \"results/{name}\", or leave the key out for that default)")
        ));
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
    if !methods.iter().any(|m| m.name == baseline) {
        let names: Vec<&str> = methods.iter().map(|m| m.name.as_str()).collect();
        bail!(loc.err(
            loc.key_in(0..1, "baseline"),
            "experiment.baseline",
            format!(
                "`{baseline}` is not one of the spec's methods (fix: one of {})",
                names.join(", ")
            )
        ));
    }
    Ok(Spec {
        path: path.to_path_buf(),
        name,
        baseline,
        results_dir,
        runs,
    })
}

/// The run's data settings: the spec's, with the dataset's default classes where the spec
/// names none.
fn with_default_classes(data: &DataSettings, dataset: &DatasetSpec) -> DataSettings {
    let mut data = data.clone();
    if data.classes.is_empty() {
        data.classes = default_classes(&dataset.source)
            .iter()
            .map(|c| ClassRef::Name(c.to_string()))
            .collect();
    }
    data
}

/// A table a spec defines by name (`[[model]]`, `[[dataset]]`, `[[method]]`).
trait Named {
    fn name(&self) -> &str;
}
impl Named for ModelSpec {
    fn name(&self) -> &str {
        &self.name
    }
}
impl Named for DatasetSpec {
    fn name(&self) -> &str {
        &self.name
    }
}
impl Named for MethodSpec {
    fn name(&self) -> &str {
        &self.name
    }
}

/// Each name listed at `experiment.<key>`: the table of that name, else the built-in one;
/// an unknown name is an error located at its mention, with `unknown(name)` as the message.
fn resolve_names<'a, T: Named + Clone>(
    loc: &Locator,
    names: &'a Spanned<Vec<Spanned<String>>>,
    key: &str,
    tables: &[Spanned<T>],
    builtin: impl Fn(&str) -> Option<T>,
    unknown: impl Fn(&str) -> String,
) -> Result<Vec<(T, &'a Spanned<String>)>> {
    names
        .get_ref()
        .iter()
        .map(|n| {
            let name = n.get_ref();
            tables
                .iter()
                .find(|t| t.get_ref().name() == name)
                .map(|t| t.get_ref().clone())
                .or_else(|| builtin(name))
                .map(|spec| (spec, n))
                .ok_or_else(|| loc.err(n.span(), &format!("experiment.{key}"), unknown(name)))
        })
        .collect()
}

/// The first `section.key` of the spec's sections that `message` names and the spec file
/// sets, with the line that sets it.
pub fn key_line(path: &Path, message: &str) -> Option<(String, usize)> {
    let text = std::fs::read_to_string(path).ok()?;
    for section in ["data", "pruning", "head", "lrp"] {
        let Some(at) = message.find(&format!("{section}.")) else {
            continue;
        };
        let key: String = message[at + section.len() + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let mut in_section = false;
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.starts_with('[') {
                in_section = t == format!("[{section}]");
            } else if in_section
                && t.starts_with(&key)
                && t[key.len()..].trim_start().starts_with('=')
            {
                return Some((format!("{section}.{key}"), i + 1));
            }
        }
    }
    None
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
    let problem = match std::fs::metadata(&spec.weights) {
        Err(_) => "does not exist",
        Ok(m) if m.is_dir() => "is a directory, not a weights file",
        Ok(m) if !m.is_file() => "is not a regular file (a device or a pipe)",
        Ok(m) if m.len() == 0 => "is empty",
        Ok(_) => return Ok(()),
    };
    bail!(loc.err(
        key_of_table(loc, &raw.model, &spec.name, "weights", used_at),
        "model.weights",
        format!(
            "weights file `{}` {problem} (fix: give a .safetensors or .pth file, relative to the spec, or `asset:NAME` for a built-in asset)",
            spec.weights
        ),
    ))
}

/// Where table `name` (a `[[model]]` / `[[dataset]]`) sets `key`; where the name is used
/// for a built-in one.
fn key_of_table<T: Named>(
    loc: &Locator,
    tables: &[Spanned<T>],
    name: &str,
    key: &str,
    used_at: &Spanned<String>,
) -> std::ops::Range<usize> {
    tables
        .iter()
        .find(|t| t.get_ref().name() == name)
        .map(|t| loc.key_in(t.span(), key))
        .unwrap_or(used_at.span())
}

/// A dataset's local source must exist (a folder or a file, as its format wants).
fn check_source(
    loc: &Locator,
    raw: &SpecFile,
    used_at: &Spanned<String>,
    spec: &DatasetSpec,
) -> Result<()> {
    if spec.source.starts_with("asset:") || Path::new(&spec.source).exists() {
        return Ok(());
    }
    bail!(loc.err(
        key_of_table(loc, &raw.dataset, &spec.name, "source", used_at),
        "dataset.source",
        format!(
            "`{}` does not exist (fix: a path relative to the spec, or `asset:NAME`)",
            spec.source
        ),
    ))
}

fn validate_settings(loc: &Locator, raw: &SpecFile) -> Result<()> {
    check_sections(loc, raw, &Variant::base(raw), None)?;
    check_names(loc, raw)?;
    // A method's own `lrp` (the spec's and each override's are section checks).
    for m in &raw.method {
        if let Some(Err((key, why))) = m.get_ref().lrp.as_ref().map(validate::check_lrp) {
            bail!(loc.err(loc.key_in(m.span(), key), &format!("lrp.{key}"), why));
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
    for m in &raw.model {
        if let Err((key, why)) = validate::check_model(m.get_ref()) {
            bail!(loc.err(loc.key_in(m.span(), key), &format!("model.{key}"), why));
        }
    }
    Ok(())
}

/// The byte range of `[section]`'s header, or the experiment name's where the section is
/// not written (its defaults are valid).
fn section_span(loc: &Locator, raw: &SpecFile, section: &str) -> std::ops::Range<usize> {
    let header = format!("[{section}]");
    loc.text
        .lines()
        .scan(0usize, |at, line| {
            let start = *at;
            *at += line.len() + 1;
            Some((start, line))
        })
        .find(|(_, line)| line.trim() == header)
        .map_or(raw.experiment.name.span(), |(start, _)| {
            start..start + header.len()
        })
}

/// Range checks of a variant's sections; an override's problems point at the override.
fn check_sections(
    loc: &Locator,
    raw: &SpecFile,
    v: &Variant,
    at: Option<std::ops::Range<usize>>,
) -> Result<()> {
    let checks = [
        ("data", validate::check_data(&v.data)),
        ("pruning", validate::check_pruning(&v.pruning)),
        ("head", validate::check_head(&v.head)),
        ("pruning", validate::check_after_step(&v.pruning, &v.head)),
        ("lrp", validate::check_lrp(&v.lrp)),
    ];
    for (section, result) in checks {
        let Err((key, why)) = result else { continue };
        let (span, key_path, why) = match &at {
            Some(o) => (
                loc.key_in(o.clone(), section),
                format!("override.{section}.{key}"),
                format!("in override `{}`: {why}", v.name),
            ),
            None => (
                loc.key_in(section_span(loc, raw, section), key),
                format!("{section}.{key}"),
                why,
            ),
        };
        bail!(loc.err(span, &key_path, why));
    }
    Ok(())
}

/// Names (they become file names) and lists without duplicates (a duplicate would run the
/// same run id twice).
fn check_names(loc: &Locator, raw: &SpecFile) -> Result<()> {
    let exp = &raw.experiment;
    if let Err(why) = validate::check_name(exp.name.get_ref()) {
        bail!(loc.err(exp.name.span(), "experiment.name", why));
    }
    let tables = raw
        .model
        .iter()
        .map(|t| (t.span(), t.get_ref().name.as_str(), "model.name"))
        .chain(
            raw.dataset
                .iter()
                .map(|t| (t.span(), t.get_ref().name.as_str(), "dataset.name")),
        )
        .chain(
            raw.method
                .iter()
                .map(|t| (t.span(), t.get_ref().name.as_str(), "method.name")),
        );
    for (span, name, key) in tables {
        if let Err(why) = validate::check_name(name) {
            bail!(loc.err(loc.key_in(span, "name"), key, why));
        }
    }
    unique_tables(loc, &raw.model, "model")?;
    unique_tables(loc, &raw.dataset, "dataset")?;
    unique_tables(loc, &raw.method, "method")?;
    for (list, key) in [
        (&exp.models, "experiment.models"),
        (&exp.datasets, "experiment.datasets"),
        (&exp.methods, "experiment.methods"),
    ] {
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = list.get_ref().iter().find(|n| !seen.insert(n.get_ref())) {
            bail!(loc.err(
                dup.span(),
                key,
                format!("`{}` is listed twice (fix: list it once)", dup.get_ref())
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = exp.seeds.get_ref().iter().find(|s| !seen.insert(**s)) {
        bail!(loc.err(
            exp.seeds.span(),
            "experiment.seeds",
            format!("seed {dup} is listed twice (fix: list each seed once)")
        ));
    }
    Ok(())
}

/// Two `[[kind]]` tables of one name: a name resolves to one table, so the second would be
/// silently ignored.
fn unique_tables<T: Named>(loc: &Locator, tables: &[Spanned<T>], kind: &str) -> Result<()> {
    let mut seen = std::collections::HashMap::new();
    for t in tables {
        let at = loc.key_in(t.span(), "name");
        if let Some(first) = seen.insert(t.get_ref().name(), at.start) {
            bail!(loc.err(
                at.clone(),
                &format!("{kind}.name"),
                format!(
                    "`{}` names two [[{kind}]] tables, at lines {} and {} (fix: give each table its own name)",
                    t.get_ref().name(),
                    loc.line(first),
                    loc.line(at.start)
                )
            ));
        }
    }
    Ok(())
}

/// One override of the grid (or the spec as written): its name and the settings it yields.
#[derive(Clone)]
pub(super) struct Variant {
    /// `""` for the spec without overrides.
    name: String,
    data: DataSettings,
    pruning: PruningSettings,
    head: HeadSettings,
    lrp: LrpSettings,
    /// The methods and seeds this variant runs for (`None`: all the experiment's); a second
    /// protocol is often wanted for a few methods on fewer seeds.
    methods: Option<Vec<String>>,
    seeds: Option<Vec<u64>>,
}

impl Variant {
    /// The spec as written, without overrides.
    fn base(raw: &SpecFile) -> Self {
        Variant {
            name: String::new(),
            data: raw.data.clone(),
            pruning: raw.pruning.clone(),
            head: raw.head.clone(),
            lrp: raw.lrp.clone(),
            methods: None,
            seeds: None,
        }
    }

    /// Whether this variant runs `method` on `seed`.
    fn covers(&self, method: &str, seed: u64) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|m| m.iter().any(|n| n == method))
            && self.seeds.as_ref().is_none_or(|s| s.contains(&seed))
    }
}

/// `[[override]]` tables patch `data`, `pruning` and `head` for a named variant of the grid.
fn resolve_overrides(loc: &Locator, raw: &SpecFile) -> Result<Vec<Variant>> {
    let base = Variant::base(raw);
    let exp_methods: Vec<String> = (raw.experiment.methods.get_ref().iter())
        .map(|m| m.get_ref().clone())
        .collect();
    let exp_seeds = raw.experiment.seeds.get_ref();
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
        if let Err(why) = validate::check_name(&name) {
            bail!(loc.err(loc.key_in(o.span(), "name"), "override.name", why));
        }
        if out.iter().any(|v: &Variant| v.name == name) {
            bail!(loc.err(
                loc.key_in(o.span(), "name"),
                "override.name",
                format!("two overrides are named `{name}` (fix: give each its own name)")
            ));
        }
        let mut v = Variant {
            name: name.clone(),
            ..base.clone()
        };
        for (key, value) in table {
            let key_path = format!("override.{key}");
            let bad =
                |m: String| loc.err(o.span(), &key_path, format!("in override `{name}`: {m}"));
            match key.as_str() {
                "name" => {}
                "data" => v.data = patch(&v.data, value).map_err(bad)?,
                "pruning" => v.pruning = patch(&v.pruning, value).map_err(bad)?,
                "head" => v.head = patch(&v.head, value).map_err(bad)?,
                "lrp" => v.lrp = patch(&v.lrp, value).map_err(bad)?,
                "methods" => v.methods = Some(subset(value, &exp_methods).map_err(bad)?),
                "seeds" => v.seeds = Some(subset(value, exp_seeds).map_err(bad)?),
                other => {
                    return Err(bad(format!(
                        "unknown key `{other}` (fix: overrides may patch data, pruning, head or lrp, and name the methods and seeds they run for)"
                    )))
                }
            }
        }
        check_sections(loc, raw, &v, Some(o.span()))?;
        out.push(v);
    }
    Ok(out)
}

/// An override's `methods` or `seeds`: a non-empty list drawn from the experiment's own.
fn subset<T>(value: &toml::Value, of: &[T]) -> std::result::Result<Vec<T>, String>
where
    T: for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    let list: Vec<T> = value
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| format!("must be a list ({})", e.message().trim()))?;
    if list.is_empty() {
        return Err("is empty, so the override would run nothing (fix: list some of the experiment's, or leave the key out for all)".into());
    }
    match list.iter().find(|x| !of.contains(x)) {
        Some(x) => Err(format!(
            "names {x:?}, which the experiment does not run (fix: use some of {of:?})"
        )),
        None => Ok(list),
    }
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
        // Golden ids, written by the code before the graph model: a change to how a run
        // config serialises (a new field without `skip_serializing_if`, a renamed enum
        // value) would silently re-key every stored result and break `--resume`.
        assert_eq!(
            s.runs[0].run_id(),
            "vgg16-fashion-mnist-l1-raw-s1-b4bd9d0c56"
        );
        assert_eq!(
            s.runs[5].run_id(),
            "vgg16-fashion-mnist-aa-slow-raw-s2-767af76c88"
        );
        assert_eq!(
            s.runs[15].run_id(),
            "vgg16-mnist-5k-aa-slow-fine-s2-7c4a708c6c"
        );
    }

    #[test]
    fn an_override_runs_only_its_methods_and_seeds() {
        let narrow = SPEC.replace(
            "name = \"fine\"\n",
            "name = \"fine\"\nmethods = [\"aa-slow\"]\nseeds = [2]\n",
        );
        let s = parse(Path::new("x.toml"), &narrow).unwrap();
        // "raw": 2 datasets × 2 seeds × 2 methods; "fine": 2 datasets × seed 2 × aa-slow.
        assert_eq!(s.runs.len(), 10);
        let fine: Vec<_> = s.runs.iter().filter(|r| r.variant == "fine").collect();
        assert_eq!(fine.len(), 2);
        assert!(fine
            .iter()
            .all(|r| r.method.name == "aa-slow" && r.seed == 2));
        // The runs it keeps are the same runs as without the restriction.
        let full = parse(Path::new("x.toml"), SPEC).unwrap();
        let ids: std::collections::HashSet<String> = full.runs.iter().map(|r| r.run_id()).collect();
        assert!(s.runs.iter().all(|r| ids.contains(&r.run_id())));
        for (bad, says) in [
            ("methods = [\"l2\"]", "\"l2\""),
            ("seeds = [7]", "7"),
            ("seeds = []", "is empty"),
            ("methods = \"l1\"", "must be a list"),
        ] {
            let spec = SPEC.replace("name = \"fine\"\n", &format!("name = \"fine\"\n{bad}\n"));
            let e = parse(Path::new("x.toml"), &spec).unwrap_err().to_string();
            assert!(
                e.contains("x.toml:") && e.contains("in override `fine`") && e.contains(says),
                "{bad}: {e}"
            );
        }
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
