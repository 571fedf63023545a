//! The photo datasets, unpacked as ImageFolder trees (`<asset>/<class>/<file>`) so that one
//! loader (`data::image_folder`) serves them and any folder a user brings.
//!
//! Photos are written as the package holds them, duplicates included: exact duplicates are
//! dropped when a tree is loaded, where a user's own folders get the same treatment.

use super::{rcc::Rcc, tgz};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// IFCT 2017's food groups, by the letter a food's code starts with.
pub const IFCT_GROUPS: &[(char, &str)] = &[
    ('A', "cereals and millets"),
    ('B', "grain legumes"),
    ('C', "green leafy vegetables"),
    ('D', "other vegetables"),
    ('E', "fruits"),
    ('F', "roots and tubers"),
    ('G', "condiments and spices"),
    ('H', "nuts and oil seeds"),
    ('I', "sugars"),
    ('J', "mushrooms"),
    ('K', "miscellaneous foods"),
    ('L', "milk and milk products"),
    ('M', "egg and egg products"),
    ('N', "poultry"),
    ('O', "animal meat"),
    ('P', "marine fish"),
    ('Q', "marine shellfish"),
    ('R', "marine mollusks"),
    ('S', "fresh water fish and shellfish"),
    ('T', "edible oils and fats"),
];

/// Groups whose "photos" are a handful of placeholder images repeated over most of their
/// foods (egg, poultry, meat): they would teach the head the placeholder, so they are left
/// out of the tree.
pub const IFCT_PLACEHOLDER_GROUPS: &[char] = &['M', 'N', 'O'];

/// A group's class folder: its letter, then its name (`C green leafy vegetables`), so the
/// folders sort by letter and `data.classes` can name a group by its letter.
pub fn ifct_class(letter: char) -> Option<String> {
    let (_, name) = IFCT_GROUPS.iter().find(|(l, _)| *l == letter)?;
    Some(format!("{letter} {name}"))
}

fn write(dir: &Path, class: &str, file: &str, bytes: &[u8]) -> Result<()> {
    let folder = dir.join(class);
    crate::fsio::create_dir_all(&folder)?;
    let out = folder.join(file);
    std::fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))
}

/// `package/assets/<CODE>.jpeg` of the npm tarball → `<dir>/<group class>/<CODE>.jpeg`.
pub fn unpack_ifct(package: &Path, dir: &Path) -> Result<()> {
    let mut written = 0;
    for (path, bytes) in tgz::files(package)? {
        let Some(file) = path.strip_prefix("package/assets/") else {
            continue;
        };
        let Some(letter) = file.chars().next() else {
            continue;
        };
        if IFCT_PLACEHOLDER_GROUPS.contains(&letter) || !file.ends_with(".jpeg") {
            continue;
        }
        let Some(class) = ifct_class(letter) else {
            bail!(
                "{}: {file} has no IFCT 2017 food group (codes start with A–T)",
                package.display()
            );
        };
        write(dir, &class, file, &bytes)?;
        written += 1;
    }
    if written == 0 {
        bail!(
            "{}: no food photos under package/assets/",
            package.display()
        );
    }
    Ok(())
}

/// The files under `under<source>/` of the bundle `rcc`, for each (source, class) of
/// `classes`, → `<dir>/<class>/<file>` (a folder's README, which gives each photo's source
/// and licence, goes along).
pub fn unpack_rcc(rcc: &Path, under: &str, classes: &[(&str, &str)], dir: &Path) -> Result<()> {
    let bytes = std::fs::read(rcc).with_context(|| format!("reading {}", rcc.display()))?;
    let files = Rcc::parse(&bytes)
        .and_then(|r| r.files())
        .with_context(|| format!("reading the Qt resource bundle {}", rcc.display()))?;
    for (source, class) in classes {
        let folder = format!("{under}{source}/");
        let mut written = 0;
        for (path, data) in &files {
            let Some(file) = path.strip_prefix(&folder) else {
                continue;
            };
            if file.contains('/') {
                continue;
            }
            write(dir, class, file, data)?;
            written += usize::from(file != "README");
        }
        if written == 0 {
            bail!("{}: no files under {folder}", rcc.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::rcc::tests::build;

    #[test]
    fn rcc_photos_land_in_class_folders_with_their_readme() {
        let bundle = build(&[
            (
                "fishes",
                &[
                    ("README", b"License: CC0-1.0", true),
                    ("a.webp", b"A", false),
                ],
            ),
            (
                "renewable",
                &[("b.webp", b"B", true), ("c.webp", b"C", false)],
            ),
            ("numbers", &[("00.svg", b"<svg/>", false)]),
        ]);
        let tmp = tempfile::tempdir().unwrap();
        let rcc = tmp.path().join("x.rcc");
        std::fs::write(&rcc, bundle).unwrap();
        let out = tmp.path().join("out");
        let classes = [("fishes", "fishes"), ("renewable", "renewable energy")];
        unpack_rcc(&rcc, "", &classes, &out).unwrap();
        let read = |p: &str| std::fs::read(out.join(p)).unwrap();
        assert_eq!(read("fishes/a.webp"), b"A");
        assert_eq!(read("fishes/README"), b"License: CC0-1.0");
        assert_eq!(read("renewable energy/b.webp"), b"B");
        assert_eq!(read("renewable energy/c.webp"), b"C");
        assert!(!out.join("numbers").exists(), "only the listed classes");
        // A class the bundle lacks (a different package version) is an error, not an
        // empty class.
        let e = unpack_rcc(&rcc, "", &[("tools", "tools")], &out).unwrap_err();
        assert!(e.to_string().contains("no files under tools/"), "{e}");
    }

    #[test]
    fn every_group_but_the_placeholders_has_a_class_folder() {
        assert_eq!(ifct_class('C').unwrap(), "C green leafy vegetables");
        assert_eq!(ifct_class('U'), None);
        assert_eq!(IFCT_GROUPS.len(), 20);
        assert!(IFCT_PLACEHOLDER_GROUPS
            .iter()
            .all(|g| ifct_class(*g).is_some()));
    }
}
