//! Experiment specs: a TOML file expands into a grid of fully resolved runs.
//!
//! The grid is `models × datasets × seeds × overrides × methods` (methods innermost, so runs
//! that share a trained head are adjacent). Every error names the file, the line and the key,
//! because a researcher fixing a spec at 2 a.m. should not have to guess.

mod catalog;
mod control;
mod grid;
mod locate;
mod names;
mod sections;
mod settings;
pub mod validate;

pub use catalog::{builtin_model, default_classes, BUILTIN_DATASETS};
pub use catalog::{
    Arch, CfgItem, DataFormat, DatasetSpec, MethodKind, MethodSpec, ModelSpec, Preprocess, Spread,
    BUILTIN_MODELS, NAMED_METHODS,
};
pub use control::{ClassWeights, ControlSettings, RelevanceSource, Signal, Take};
pub use settings::{
    AfterStep, ClassRef, CompositeDef, DataSettings, GroupPolicy, GroupReduce, HeadSettings,
    InputNorm, LayerNorm, LrpSettings, Optimizer, PruningSettings, Rule, COMPOSITES,
};

use anyhow::{bail, Result};
use catalog::builtin_dataset;
use locate::{toml_error_key, Locator};
use names::{check_source, check_weights, resolve_local, resolve_names};
use sections::validate_settings;
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

/// A setting that fails on what only the run can see (the dataset's classes and sizes):
/// raised at run time with the key it concerns, located by [`Spec::locate`].
#[derive(Debug, thiserror::Error)]
#[error("{why}")]
pub struct SettingError {
    /// `section.key`, as in the spec (`data.train_per_class`).
    pub key: String,
    /// The message, naming the key, its value and the fix.
    pub why: String,
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
    /// Where the spec sets each section key, per variant (see [`Spec::locate`]).
    key_lines: grid::KeyLines,
}

impl Spec {
    /// `error`, located at the spec line that sets the key it names, if it is a
    /// [`SettingError`] and the spec sets that key (the override's line for a run of that
    /// override, else the section's): what only the data can tell, such as a class with too
    /// few images, is found at run time and still points at the line to fix.
    pub fn locate(&self, run: &RunConfig, error: anyhow::Error) -> anyhow::Error {
        let Some(key) = error
            .chain()
            .find_map(|c| c.downcast_ref::<SettingError>())
            .map(|e| e.key.clone())
        else {
            return error;
        };
        let line = [run.variant.as_str(), ""]
            .iter()
            .find_map(|v| self.key_lines.get(&(v.to_string(), key.clone())));
        match line {
            Some(line) => error.context(format!("{}:{line}: key `{key}`", self.path.display())),
            None => error.context(format!("{}: key `{key}`", self.path.display())),
        }
    }
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
    grid::check_base(&loc, &raw)?;
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
    let name = exp.name.get_ref().clone();
    let grid = grid::expand(&loc, &raw, &name, &models, &datasets, &methods)?;
    let methods: Vec<MethodSpec> = methods.into_iter().map(|(spec, _)| spec).collect();
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
        runs: grid.runs,
        key_lines: grid.key_lines,
    })
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
