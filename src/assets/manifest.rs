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
/// What [`verify`] says of a folder without a usable manifest (unpacked before manifests
/// existed, or the manifest damaged).
pub const UNRECORDED: &str =
    "it has no usable record of its files (unpacked by an older lrprune, or `.manifest` damaged)";

/// Files of an asset folder and its sub-folders (a photo dataset's class folders), as
/// `/`-separated paths relative to it; bookkeeping files and folders (`.name`) left out.
fn files(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut folders = vec![String::new()];
    while let Some(rel) = folders.pop() {
        let here = dir.join(&rel);
        for e in std::fs::read_dir(&here).with_context(|| format!("reading {}", here.display()))? {
            let e = e.with_context(|| format!("reading {}", here.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if e.file_type()
                .with_context(|| format!("reading {}", e.path().display()))?
                .is_dir()
            {
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
        let size = std::fs::metadata(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .len();
        lines.push_str(&format!("{}  {size}  {name}\n", super::sha256_file(&p)?));
    }
    let path = dir.join(FILE);
    std::fs::write(&path, lines).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `None` when every recorded file is there with its size and digest, else what is wrong.
/// A manifest that is missing, unreadable, or records nothing, a line it cannot parse, or
/// fewer files than the folder holds is no record ([`UNRECORDED`]): checking only what it
/// lists would let a damaged file through unchecked.
pub fn verify(dir: &Path) -> Result<Option<String>> {
    let unrecorded = || Ok(Some(UNRECORDED.to_string()));
    let Ok(text) = std::fs::read_to_string(dir.join(FILE)) else {
        return unrecorded();
    };
    let mut want: BTreeMap<&str, (&str, u64)> = BTreeMap::new();
    for line in text.lines() {
        let mut it = line.splitn(3, "  ");
        let (Some(sha), Some(Ok(size)), Some(name)) =
            (it.next(), it.next().map(str::parse::<u64>), it.next())
        else {
            return unrecorded();
        };
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return unrecorded();
        }
        want.insert(name, (sha, size));
    }
    if want.is_empty() || files(dir)?.iter().any(|f| !want.contains_key(f.as_str())) {
        return unrecorded();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty, garbage or partial manifest must not switch verification off: a flipped
    /// byte behind it is still "no record", which `assets::ensure` fetches afresh.
    #[test]
    fn a_manifest_that_records_less_than_the_folder_is_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.bin"), b"weights").unwrap();
        std::fs::write(d.join("b.bin"), b"labels").unwrap();
        write(d).unwrap();
        assert_eq!(verify(d).unwrap(), None);
        let full = std::fs::read_to_string(d.join(FILE)).unwrap();
        std::fs::write(d.join("a.bin"), b"weightz").unwrap();
        assert!(verify(d).unwrap().unwrap().contains("changed"));
        let first_line = full.lines().next().unwrap().to_string() + "\n";
        for bad in ["", "garbage\n", "\n", first_line.as_str()] {
            std::fs::write(d.join(FILE), bad).unwrap();
            assert_eq!(verify(d).unwrap().as_deref(), Some(UNRECORDED), "{bad:?}");
        }
        std::fs::remove_file(d.join(FILE)).unwrap();
        assert_eq!(verify(d).unwrap().as_deref(), Some(UNRECORDED));
    }
}
