//! What an unpacked asset must contain, and a check that it still does.
//!
//! The package's sha256 is checked once, when it is downloaded; what the harness then reads
//! are the files unpacked or converted from it. When an asset is complete, the size and
//! sha256 of every file in its folder are recorded in `.manifest`, and every use of the
//! asset (`assets::resolve`) hashes the files again against it: a flipped byte, a truncated,
//! emptied or replaced file is caught before it can change a result. Hashing costs about a
//! second per 500 MB (the largest asset, VGG16, is 59 MB), paid once per task.

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

const FILE: &str = ".manifest";
/// What [`verify`] says of a folder unpacked before manifests existed.
pub const UNRECORDED: &str = "it has no record of its files (unpacked by an older lrprune)";

/// Files of an asset folder and its sub-folders (a photo dataset's class folders), as
/// `/`-separated paths relative to it; bookkeeping files and folders (`.name`) left out.
fn files(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut folders = vec![String::new()];
    while let Some(rel) = folders.pop() {
        let here = dir.join(&rel);
        for e in std::fs::read_dir(&here).with_context(|| format!("reading {}", here.display()))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if e.file_type()?.is_dir() {
                folders.push(path);
            } else {
                names.push(path);
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Record the size and sha256 of every file in `dir`.
pub fn write(dir: &Path) -> Result<()> {
    let mut lines = String::new();
    for name in files(dir)? {
        let p = dir.join(&name);
        let size = std::fs::metadata(&p)?.len();
        lines.push_str(&format!("{}  {size}  {name}\n", super::sha256_file(&p)?));
    }
    std::fs::write(dir.join(FILE), lines)?;
    Ok(())
}

/// `None` when every recorded file is there with its size and digest, else what is wrong.
pub fn verify(dir: &Path) -> Result<Option<String>> {
    let Ok(text) = std::fs::read_to_string(dir.join(FILE)) else {
        return Ok(Some(
            "it has no record of its files (made by an older lrprune)".into(),
        ));
    };
    let mut want: BTreeMap<&str, (&str, u64)> = BTreeMap::new();
    for line in text.lines() {
        let mut it = line.splitn(3, "  ");
        if let (Some(sha), Some(size), Some(name)) = (it.next(), it.next(), it.next()) {
            want.insert(name, (sha, size.parse().unwrap_or(u64::MAX)));
        }
    }
    for (name, (sha, size)) in &want {
        let p = dir.join(name);
        let meta = match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Ok(Some(format!("{} is not a file", p.display()))),
            Err(_) => return Ok(Some(format!("{} is missing", p.display()))),
        };
        if meta.len() != *size {
            return Ok(Some(format!(
                "{} has {} bytes, {size} were unpacked",
                p.display(),
                meta.len()
            )));
        }
        if super::sha256_file(&p)? != *sha {
            return Ok(Some(format!(
                "{} has changed since it was unpacked",
                p.display()
            )));
        }
    }
    Ok(None)
}
