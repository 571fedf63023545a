//! The regular files of a gzipped tar, as `npm pack` writes them (ustar): 512-byte
//! headers with the name (plus the ustar prefix) and an octal size, each file's bytes padded
//! to 512. Other entry kinds (folders, links, pax headers) are skipped; the packages read
//! here are pinned by sha256, so nothing else needs supporting.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;

const BLOCK: usize = 512;

fn text(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

fn octal(field: &[u8]) -> Option<usize> {
    let s = std::str::from_utf8(text(field)).ok()?.trim();
    usize::from_str_radix(s, 8).ok()
}

/// Every regular file of `archive` as (path inside the archive, bytes).
pub fn files(archive: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut tar = Vec::new();
    let f =
        std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut tar)
        .with_context(|| format!("{} is not a gzip file", archive.display()))?;
    let mut out = Vec::new();
    let mut at = 0;
    while at + BLOCK <= tar.len() {
        let h = &tar[at..at + BLOCK];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let Some(size) = octal(&h[124..136]) else {
            bail!(
                "{}: a tar header at byte {at} has no size",
                archive.display()
            );
        };
        let body = at + BLOCK;
        let Some(data) = tar.get(body..body + size) else {
            bail!("{}: truncated tar entry at byte {at}", archive.display());
        };
        if matches!(h[156], b'0' | 0) {
            let mut name = String::from_utf8_lossy(text(&h[..100])).into_owned();
            // POSIX ustar only: GNU headers (`ustar  `) keep other fields there.
            if &h[257..263] == b"ustar\0" && h[345] != 0 {
                name = format!("{}/{name}", String::from_utf8_lossy(text(&h[345..500])));
            }
            out.push((name, data.to_vec()));
        }
        at = body + size.div_ceil(BLOCK) * BLOCK;
    }
    Ok(out)
}
