//! Inputs a spec names by path — a `[[model]]`'s `weights`, a `[[dataset]]`'s `source` —
//! are recorded by digest in the results folder (`inputs.json`) the first time a sweep uses
//! them, and every later sweep into that folder checks them before it runs anything: a file
//! changed between `run` and `run --resume` is an error naming it and the key, never a
//! folder of runs made partly with the old file and partly with the new one. (Built-in
//! `asset:` files are pinned by sha256 in the catalog and verified on use.) The run id does
//! not cover these digests: docs/design-choices.md, "Results", says why.
//!
//! A file's digest is the sha256 of its content. The record also keeps its size and mtime,
//! so an unchanged file is not read again: a 500 MB checkpoint is hashed once per folder,
//! not on every resume; a touched file with the same content is accepted and re-stamped.
//! A folder (IDX, CIFAR, ImageFolder trees) is digested by its listing — relative path,
//! size and mtime of every file under it, one stat each — because hashing an ImageNet tree
//! (140 GB) on every resume is no option; an edit that keeps a file's size and mtime is
//! then not seen, as with make or rsync.

use crate::spec::RunConfig;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// The record's name in a results folder.
pub const RECORD: &str = "inputs.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    /// The spec key naming the input (`model.weights`, `dataset.source`).
    key: String,
    sha256: String,
    /// Size and mtime (ns) of a file when it was hashed; `None` for a folder.
    stamp: Option<(u64, u64)>,
}

/// Path → entry, sorted so the file diffs cleanly.
type Record = BTreeMap<String, Entry>;

/// Every user input of `runs` (no `asset:`), each once: its path and spec key.
fn user_inputs<'a>(
    runs: impl IntoIterator<Item = &'a RunConfig>,
) -> BTreeMap<&'a str, &'static str> {
    let mut inputs = BTreeMap::new();
    for r in runs {
        for (path, key) in [
            (r.model.weights.as_str(), "model.weights"),
            (r.dataset.source.as_str(), "dataset.source"),
        ] {
            if !path.starts_with("asset:") {
                inputs.entry(path).or_insert(key);
            }
        }
    }
    inputs
}

fn stamp(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some((meta.len(), mtime.as_nanos() as u64))
}

/// The sha256 of every file's relative path, size and mtime under `root`, in path order.
fn listing_digest(root: &Path) -> Result<String> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64, u64)>, root: &Path) -> Result<()> {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        for e in entries {
            let e = e.with_context(|| format!("reading {}", dir.display()))?;
            let p = e.path();
            // Symlinked folders are not followed (no cycles); symlinked files are.
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&p, out, root)?;
            } else if let Some((size, mtime)) = std::fs::metadata(&p).ok().and_then(|m| stamp(&m)) {
                out.push((
                    p.strip_prefix(root).unwrap_or(&p).to_path_buf(),
                    size,
                    mtime,
                ));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(root, &mut files, root)?;
    files.sort();
    let mut h = Sha256::new();
    for (p, size, mtime) in files {
        h.update(format!("{}\0{size}\0{mtime}\n", p.display()).as_bytes());
    }
    Ok(hex::encode(h.finalize()))
}

/// The record's entry for `path` as it is now; `old` (its recorded entry) spares hashing a
/// file whose size and mtime are unchanged.
fn entry_now(path: &str, key: &str, old: Option<&Entry>) -> Result<Entry> {
    let p = Path::new(path);
    let meta = std::fs::metadata(p)
        .with_context(|| format!("{key} `{path}`: cannot read it (fix: check the path)"))?;
    let (sha256, stamp) = if meta.is_dir() {
        (listing_digest(p)?, None)
    } else {
        let now = stamp(&meta);
        match old {
            Some(e) if e.stamp.is_some() && e.stamp == now => (e.sha256.clone(), now),
            _ => (crate::assets::sha256_file(p)?, now),
        }
    };
    Ok(Entry {
        key: key.to_string(),
        sha256,
        stamp,
    })
}

/// Check the user inputs of `runs` against results folder `dir`'s record and record those
/// it does not hold yet.
pub fn check_and_record<'a>(
    dir: &Path,
    runs: impl IntoIterator<Item = &'a RunConfig>,
) -> Result<()> {
    let inputs = user_inputs(runs);
    if inputs.is_empty() {
        return Ok(());
    }
    let file = dir.join(RECORD);
    let old: Record = match std::fs::read_to_string(&file) {
        Ok(text) => serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not a record of this folder's inputs (fix: restore it, or start a new results folder)",
                file.display()
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Record::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let mut record = old.clone();
    for (path, key) in inputs {
        let was = old.get(path);
        let now = entry_now(path, key, was)?;
        if let Some(was) = was.filter(|w| w.sha256 != now.sha256) {
            bail!(
                "{key} `{path}` changed since results in {} were made with it (recorded sha256 {}, now {}); runs of the old and the new file are not mixed in one folder (fix: restore the file, or write the sweep to a new folder with results_dir or --results-dir; delete {} only if no results there used the old file)",
                dir.display(),
                &was.sha256[..12],
                &now.sha256[..12],
                file.display()
            );
        }
        record.insert(path.to_string(), now);
    }
    if record != old {
        let text = serde_json::to_string_pretty(&record)? + "\n";
        crate::fsio::write_atomic(&file, |tmp| Ok(std::fs::write(tmp, &text)?))?;
    }
    Ok(())
}
