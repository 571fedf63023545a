//! The run grid: `models × datasets × seeds × overrides × methods`, methods innermost so runs
//! that share a trained head are adjacent. `[[override]]` tables patch sections for a named
//! variant and may name the methods and seeds it runs for.

use super::locate::Locator;
use super::names::key_of_table;
use super::{
    default_classes, validate, ClassRef, ControlSettings, DataSettings, DatasetSpec, HeadSettings,
    LrpSettings, MethodKind, MethodSpec, ModelSpec, PruningSettings, RunConfig, SpecFile,
};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The expanded grid, and where the spec sets each section key (for errors found at run time).
pub(super) struct Grid {
    pub runs: Vec<RunConfig>,
    pub key_lines: KeyLines,
}

/// `(variant, "section.key")` → the line setting it: an override's line for the keys it
/// patches, the section's line for the spec's own (variant `""`).
pub(super) type KeyLines = std::collections::BTreeMap<(String, String), usize>;

/// Every run of the spec, each checked as a whole (a method's needs against its variant's
/// settings), an error pointing at the method's table or its mention.
pub(super) fn expand(
    loc: &Locator,
    raw: &SpecFile,
    name: &str,
    models: &[ModelSpec],
    datasets: &[DatasetSpec],
    methods: &[(MethodSpec, &Spanned<String>)],
) -> Result<Grid> {
    let variants = resolve_overrides(loc, raw)?;
    let mut runs = Vec::new();
    // The position in `experiment.methods` of each run's method, for locating its errors.
    let mut method_of_run = Vec::new();
    for model in models {
        for dataset in datasets {
            for &seed in raw.experiment.seeds.get_ref() {
                for v in &variants {
                    for (mi, (method, _)) in methods.iter().enumerate() {
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
                            experiment: name.to_string(),
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
            let at = methods[method_of_run[i]].1;
            let span = key_of_table(loc, &raw.method, &r.method.name, field, at);
            let why = match r.variant.as_str() {
                "" => why,
                v => format!("in override `{v}`: {why}"),
            };
            bail!(loc.err(span, key, why));
        }
    }
    Ok(Grid {
        runs,
        key_lines: key_lines(loc, raw),
    })
}

/// The sections a variant patches, and whose keys a run-time error may name.
const SECTIONS: [&str; 4] = ["data", "pruning", "head", "lrp"];

/// Where the spec sets each section key, from the file as written (serde's structs forget
/// which keys were given).
fn key_lines(loc: &Locator, raw: &SpecFile) -> KeyLines {
    let mut out = KeyLines::new();
    let Ok(table) = loc.text.parse::<toml::Table>() else {
        return out;
    };
    for section in SECTIONS {
        let Some(keys) = table.get(section).and_then(|t| t.as_table()) else {
            continue;
        };
        let at = section_span(loc, raw, section);
        for key in keys.keys() {
            let line = loc.line(loc.key_in(at.clone(), key).start);
            out.insert((String::new(), format!("{section}.{key}")), line);
        }
    }
    for o in &raw.overrides {
        let Some(toml::Value::String(variant)) = o.get_ref().get("name") else {
            continue;
        };
        for section in SECTIONS {
            let Some(keys) = o.get_ref().get(section).and_then(|t| t.as_table()) else {
                continue;
            };
            let line = loc.line(loc.key_in(o.span(), section).start);
            for key in keys.keys() {
                out.insert((variant.clone(), format!("{section}.{key}")), line);
            }
        }
    }
    out
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

/// One override of the grid (or the spec as written): its name and the settings it yields.
#[derive(Clone)]
pub(super) struct Variant {
    /// `""` for the spec without overrides.
    pub(super) name: String,
    pub(super) data: DataSettings,
    pub(super) pruning: PruningSettings,
    pub(super) head: HeadSettings,
    pub(super) lrp: LrpSettings,
    /// The methods and seeds this variant runs for (`None`: all the experiment's); a second
    /// protocol is often wanted for a few methods on fewer seeds.
    pub(super) methods: Option<Vec<String>>,
    pub(super) seeds: Option<Vec<u64>>,
}

impl Variant {
    /// The spec as written, without overrides.
    pub(super) fn base(raw: &SpecFile) -> Self {
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

/// Range checks of the spec's own sections (each override's are checked as it is made).
pub(super) fn check_base(loc: &Locator, raw: &SpecFile) -> Result<()> {
    check_sections(loc, raw, &Variant::base(raw), None)
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
