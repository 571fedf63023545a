//! Names a spec uses: `[[model]]`/`[[dataset]]`/`[[method]]` tables or the built-ins, and the
//! local files they point at (checked at load, so a typo is not found an hour into a sweep).

use super::locate::Locator;
use super::{DatasetSpec, MethodSpec, ModelSpec, SpecFile};
use anyhow::{bail, Result};
use std::path::Path;
use toml::Spanned;

/// A table a spec defines by name (`[[model]]`, `[[dataset]]`, `[[method]]`).
pub(super) trait Named {
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
pub(super) fn resolve_names<'a, T: Named + Clone>(
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

/// Relative local paths in a spec are relative to the spec file, like an include.
pub(super) fn resolve_local(base: &Path, source: &str) -> String {
    if source.starts_with("asset:") || Path::new(source).is_absolute() {
        source.to_string()
    } else {
        base.join(source).display().to_string()
    }
}

pub(super) fn check_weights(
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
            "weights file `{}` {problem} (fix: give a .safetensors, .pth or .onnx file, relative to the spec, or `asset:NAME` for a built-in asset)",
            spec.weights
        ),
    ))
}

/// Where table `name` (a `[[model]]` / `[[dataset]]`) sets `key`; where the name is used
/// for a built-in one.
pub(super) fn key_of_table<T: Named>(
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
pub(super) fn check_source(
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
