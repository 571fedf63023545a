//! Checks of the spec as written: its names, the methods' own `lrp` and `control` tables and
//! the model tables, each error pointing at the line that sets the key. (The sections'
//! ranges, the spec's own and each override's, are checked with the grid's variants.)

use super::control::check_control;
use super::locate::Locator;
use super::names::Named;
use super::{validate, SpecFile};
use anyhow::{bail, Result};
use toml::Spanned;

pub(super) fn validate_settings(loc: &Locator, raw: &SpecFile) -> Result<()> {
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

/// Names (they become file names) and lists without duplicates (a duplicate would run the
/// same run id twice).
pub(super) fn check_names(loc: &Locator, raw: &SpecFile) -> Result<()> {
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
pub(super) fn unique_tables<T: Named>(
    loc: &Locator,
    tables: &[Spanned<T>],
    kind: &str,
) -> Result<()> {
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
