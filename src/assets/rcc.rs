//! Reading Qt resource bundles (`.rcc`, "qres" format versions 1–3), for the photos that
//! GCompris ships inside them.
//!
//! Layout (all integers big-endian): a header `qres`, version, and the offsets of the tree,
//! data and names blocks (version 3 adds a flags word). The tree is an array of fixed-size
//! nodes, node 0 the root: a name offset, flags (1 = zlib, 2 = directory, 4 = zstd), then for
//! a directory its child count and first child's index, for a file its territory, language
//! and data offset; version ≥ 2 appends a 64-bit modification time. A name is a u16 length,
//! a u32 hash and UTF-16 code units; a file's data is a u32 length and its bytes, which for
//! zlib entries are a u32 uncompressed length and a zlib stream (qCompress).

use anyhow::{bail, Context, Result};
use std::io::Read;

const ZLIB: u16 = 1;
const DIRECTORY: u16 = 2;
const ZSTD: u16 = 4;

/// A parsed bundle over its bytes.
pub struct Rcc<'a> {
    bytes: &'a [u8],
    tree: usize,
    data: usize,
    names: usize,
    node_len: usize,
}

impl<'a> Rcc<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        if bytes.get(..4) != Some(b"qres") {
            bail!("not a Qt resource bundle (no `qres` magic)");
        }
        let mut rcc = Self {
            bytes,
            tree: 0,
            data: 0,
            names: 0,
            node_len: 14,
        };
        let version = rcc.u32(4)?;
        if !(1..=3).contains(&version) {
            bail!("Qt resource format version {version} is not supported (1–3 are)");
        }
        rcc.tree = rcc.u32(8)? as usize;
        rcc.data = rcc.u32(12)? as usize;
        rcc.names = rcc.u32(16)? as usize;
        if version >= 2 {
            rcc.node_len = 22;
        }
        Ok(rcc)
    }

    fn slice(&self, at: usize, len: usize) -> Result<&'a [u8]> {
        at.checked_add(len)
            .and_then(|end| self.bytes.get(at..end))
            .with_context(|| {
                format!(
                    "truncated: {len} bytes at offset {at} of a {}-byte bundle",
                    self.bytes.len()
                )
            })
    }
    fn u16(&self, at: usize) -> Result<u16> {
        let b = self.slice(at, 2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&self, at: usize) -> Result<u32> {
        let b = self.slice(at, 4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn name(&self, offset: u32) -> Result<String> {
        let at = self.names + offset as usize;
        let len = self.u16(at)? as usize;
        let units: Vec<u16> = self
            .slice(at + 6, 2 * len)?
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16(&units).context("a resource name is not valid UTF-16")
    }

    fn file(&self, offset: u32, flags: u16) -> Result<Vec<u8>> {
        let at = self.data + offset as usize;
        let len = self.u32(at)? as usize;
        let stored = self.slice(at + 4, len)?;
        if flags & ZSTD != 0 {
            bail!("zstd-compressed entries are not supported");
        }
        if flags & ZLIB == 0 {
            return Ok(stored.to_vec());
        }
        let Some((size, stream)) = stored.split_first_chunk::<4>() else {
            bail!("a compressed entry shorter than its length prefix");
        };
        let size = u32::from_be_bytes(*size) as usize;
        let mut out = Vec::with_capacity(size);
        flate2::read::ZlibDecoder::new(stream)
            .read_to_end(&mut out)
            .context("a zlib entry does not inflate")?;
        if out.len() != size {
            bail!(
                "a zlib entry inflates to {} bytes, its header says {size}",
                out.len()
            );
        }
        Ok(out)
    }

    /// Every file as (path without the leading `/`, bytes), in tree order.
    pub fn files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        // (node, its path); the root has no name. Depth is bounded by the node count, so a
        // cyclic tree (a corrupt bundle) is refused instead of looping.
        let nodes = self
            .bytes
            .len()
            .saturating_sub(self.tree)
            .div_ceil(self.node_len);
        let mut stack = vec![(0usize, String::new())];
        let mut visited = 0usize;
        while let Some((i, path)) = stack.pop() {
            visited += 1;
            if visited > nodes {
                bail!("the resource tree refers to more nodes than it holds");
            }
            let at = self.tree + i * self.node_len;
            let flags = self.u16(at + 4)?;
            if flags & DIRECTORY != 0 {
                let (count, first) = (self.u32(at + 6)? as usize, self.u32(at + 10)? as usize);
                // Children are pushed in reverse so they pop in the bundle's order.
                for child in (first..first.saturating_add(count)).rev() {
                    let name = self.name(self.u32(self.tree + child * self.node_len)?)?;
                    let p = if path.is_empty() {
                        name
                    } else {
                        format!("{path}/{name}")
                    };
                    stack.push((child, p));
                }
            } else {
                let data = self
                    .file(self.u32(at + 10)?, flags)
                    .with_context(|| format!("resource {path}"))?;
                out.push((path, data));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A file of a test bundle: name, bytes, whether stored zlib-compressed.
    pub(crate) type Entry<'a> = (&'a str, &'a [u8], bool);

    /// A version-2 bundle with one level of folders under the root, each with its files.
    pub(crate) fn build(folders: &[(&str, &[Entry])]) -> Vec<u8> {
        let mut names = Vec::new();
        let mut add_name = |n: &str| {
            let at = names.len() as u32;
            let units: Vec<u16> = n.encode_utf16().collect();
            names.extend((units.len() as u16).to_be_bytes());
            names.extend(0u32.to_be_bytes()); // the hash: lrprune does not look names up
            units.iter().for_each(|u| names.extend(u.to_be_bytes()));
            at
        };
        let node = |name: u32, flags: u16, a: u32, b: u32| {
            let mut n = name.to_be_bytes().to_vec();
            n.extend(flags.to_be_bytes());
            n.extend(a.to_be_bytes());
            n.extend(b.to_be_bytes());
            n.extend(0u64.to_be_bytes());
            n
        };
        // Nodes: the root, the folders, then each folder's files in turn.
        let mut tree = node(0, DIRECTORY, folders.len() as u32, 1);
        let (mut data, mut leaves) = (Vec::new(), Vec::new());
        let mut next = 1 + folders.len() as u32;
        for (folder, files) in folders {
            tree.extend(node(add_name(folder), DIRECTORY, files.len() as u32, next));
            next += files.len() as u32;
            for (name, bytes, zlib) in *files {
                let stored = if *zlib {
                    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), Default::default());
                    z.write_all(bytes).unwrap();
                    let mut s = (bytes.len() as u32).to_be_bytes().to_vec();
                    s.extend(z.finish().unwrap());
                    s
                } else {
                    bytes.to_vec()
                };
                // (territory, language) = 0, then the data offset.
                leaves.extend(node(add_name(name), u16::from(*zlib), 0, data.len() as u32));
                data.extend((stored.len() as u32).to_be_bytes());
                data.extend(stored);
            }
        }
        tree.extend(leaves);
        let (data_at, names_at) = (20, 20 + data.len());
        let tree_at = names_at + names.len();
        let mut out = b"qres".to_vec();
        for v in [2, tree_at, data_at, names_at] {
            out.extend((v as u32).to_be_bytes());
        }
        out.extend(data);
        out.extend(names);
        out.extend(tree);
        out
    }

    #[test]
    fn plain_and_zlib_entries_read_back_with_their_paths() {
        let long = vec![7u8; 1000];
        let b = build(&[(
            "pics",
            &[("a.webp", b"plain bytes", false), ("b.webp", &long, true)],
        )]);
        let files = Rcc::parse(&b).unwrap().files().unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0], ("pics/a.webp".into(), b"plain bytes".to_vec()));
        assert_eq!(files[1], ("pics/b.webp".into(), long));
    }

    #[test]
    fn damaged_bundles_are_refused_not_misread() {
        assert!(Rcc::parse(b"PK\x03\x04 a zip").is_err());
        let b = build(&[("pics", &[("b.webp", &[1u8; 100], true)])]);
        // Cut into the tree: a node past the end.
        let e = Rcc::parse(&b[..b.len() - 10]).unwrap().files().unwrap_err();
        assert!(format!("{e:#}").contains("truncated"), "{e:#}");
        // A flipped byte in the zlib stream (just after the two length prefixes).
        let mut bad = b.clone();
        bad[20 + 8 + 2] ^= 0xff;
        let e = Rcc::parse(&bad).unwrap().files().unwrap_err();
        assert!(format!("{e:#}").contains("pics/b.webp"), "{e:#}");
    }
}
