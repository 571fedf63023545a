//! Files in and out, for every module: reads take regular files only, with a cap on their
//! size, and writes go to a temp file renamed over a destination that is absent or a
//! regular file. A device, a FIFO, a directory or a symlink given as a path is refused by
//! name instead of being blocked on, read without end, or replaced by a results file.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// What `meta` is, for messages.
fn kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symlink"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a regular file"
    }
}

/// The metadata of `path` when it is a regular file (a symlink to one is followed); else
/// an error naming it as `what` (`--inputs`, `spec`).
pub fn regular_file(path: &Path, what: &str) -> Result<std::fs::Metadata> {
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "{what} {}: cannot read it (fix: check the path)",
            path.display()
        )
    })?;
    if !meta.is_file() {
        bail!(
            "{what} {}: is {}, not a regular file (fix: give a file)",
            path.display(),
            kind(&meta)
        );
    }
    Ok(meta)
}

/// The bytes of regular file `path`, refused when over `cap` bytes.
pub fn read_capped(path: &Path, what: &str, cap: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let meta = regular_file(path, what)?;
    let too_big = |n: u64| {
        anyhow::anyhow!(
            "{what} {}: {n} bytes, over the {cap} allowed (fix: give the right file)",
            path.display()
        )
    };
    if meta.len() > cap {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::new();
    // The file may grow between the check and the read.
    std::fs::File::open(path)
        .and_then(|f| f.take(cap + 1).read_to_end(&mut bytes))
        .with_context(|| format!("{what} {}: cannot read it", path.display()))?;
    if bytes.len() as u64 > cap {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// A file destination must be absent or a regular file: renaming over anything else would
/// replace a device node, a FIFO or a symlink (and its target would never be written).
pub fn check_destination(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(m) => bail!(
            "{}: is {}, not a regular file; lrprune writes only new or regular files (fix: give another path, or remove it)",
            path.display(),
            kind(&m)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("{}: cannot check it", path.display())),
    }
}

/// A folder destination (a report's, an export's) must be absent or a directory (a
/// symlink to one is followed).
pub fn check_dir_destination(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(m) => bail!(
            "{}: is {}, not a directory (fix: give a folder path that is absent or a directory)",
            path.display(),
            kind(&m)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("{}: cannot check it", path.display())),
    }
}

/// What went wrong in an I/O error, for a message that names the path itself: a full
/// device, an exceeded quota or a file in a folder's place said in words with the fix,
/// anything else as the OS says it.
pub fn io_cause(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match (e.kind(), e.raw_os_error()) {
        (K::StorageFull, _) | (_, Some(libc::ENOSPC)) => {
            "the device is full (ENOSPC) (fix: free space on it, or write elsewhere)".into()
        }
        (K::QuotaExceeded, _) | (_, Some(libc::EDQUOT)) => {
            "the disk quota is exceeded (EDQUOT) (fix: free space in your quota, or write elsewhere)"
                .into()
        }
        (K::ReadOnlyFilesystem, _) | (_, Some(libc::EROFS)) => {
            "the file system is read-only (fix: write elsewhere)".into()
        }
        (K::FileTooLarge, _) | (_, Some(libc::EFBIG)) => {
            "the file would exceed the size limit (EFBIG; see `ulimit -f`) (fix: raise the limit, or write elsewhere)"
                .into()
        }
        (K::PermissionDenied, _) => {
            format!("{e} (fix: check the permissions, or write elsewhere)")
        }
        _ => e.to_string(),
    }
}

/// The first I/O error in `e`'s chain of causes.
fn io_error_in(e: &anyhow::Error) -> Option<&std::io::Error> {
    e.chain().find_map(|c| c.downcast_ref::<std::io::Error>())
}

/// `e`, from writing `path`, as one message naming `path`: an I/O error anywhere in its
/// chain (a full disk, a quota) is the cause, said in words ([`io_cause`]) instead of as
/// whatever a library wrapped it in ("Invalid thrift: transport error"); and `path` is
/// left as it was (the temp file is removed, nothing renamed in).
fn write_error(path: &Path, e: anyhow::Error) -> anyhow::Error {
    match io_error_in(&e) {
        Some(io) => anyhow::anyhow!(
            "writing {} failed (the file is left as it was): {}",
            path.display(),
            io_cause(io)
        ),
        None => e.context(format!("writing {}", path.display())),
    }
}

/// `std::fs::create_dir_all` whose error names `path` and the fix: a file (not a folder)
/// in the way, or in the way of a parent, is said in words, not as `File exists (os error 17)`.
pub fn create_dir_all(path: &Path) -> Result<()> {
    use std::io::ErrorKind as K;
    let Err(e) = std::fs::create_dir_all(path) else {
        return Ok(());
    };
    let cause = match e.kind() {
        K::AlreadyExists => {
            let what = std::fs::metadata(path).map_or("something", |m| kind(&m));
            format!("{what} of that name is in the way, not a folder (fix: move it away, or give another folder)")
        }
        K::NotADirectory => match path
            .ancestors()
            .skip(1)
            .find(|p| std::fs::metadata(p).is_ok_and(|m| !m.is_dir()))
        {
            Some(file) => format!(
                "{} is a file, not a folder (fix: move it away, or give another folder)",
                file.display()
            ),
            None => format!("{e} (fix: give another folder)"),
        },
        _ => io_cause(&e),
    };
    bail!("cannot create the folder {}: {cause}", path.display())
}

/// This host's name, hashed to 8 hex digits (no `-`, whatever the name): temp-file names
/// carry it so that a cleanup on one host can tell another host's live writer from a
/// dead writer of its own on a shared file system.
pub fn host_tag() -> String {
    use sha2::{Digest, Sha256};
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    hex::encode(Sha256::digest(host.trim().as_bytes()))[..8].to_string()
}

/// Write `path` atomically: `write` fills a temp file (`.partial-*`, same directory, with
/// `path`'s extension so writers that go by it still can), which is fsynced and renamed over
/// `path`. A killed or failing writer leaves no file at `path`, only a temp file that
/// `results::remove_stale_partials` clears. The file gets the mode the umask gives a new
/// file (0644 under 022), as from any other tool, not the temp file's usual 0600.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    check_destination(path)?;
    let dir = path.parent().context("output path has no parent")?;
    // `a.parquet` has the parent "": the current directory.
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    create_dir_all(dir)?;
    let ext = path
        .extension()
        .map_or(String::new(), |e| format!(".{}", e.to_string_lossy()));
    // The writer's pid and host in the name: a temp file of a live writer is never cleared.
    let prefix = format!(".partial-{}-{}-", std::process::id(), host_tag());
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(&ext)
        // Created with 0666, which the kernel masks with the umask.
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    // On an error the temp file is removed (dropped) and `path` left as it was.
    write(tmp.path()).map_err(|e| write_error(path, e))?;
    std::fs::File::open(tmp.path())
        .and_then(|f| f.sync_all())
        .map_err(|e| write_error(path, e.into()))?;
    tmp.persist(path).map_err(|e| {
        let cause = io_cause(&e.error);
        anyhow::anyhow!(
            "writing {}: renaming the finished temp file into place failed: {cause}",
            path.display()
        )
    })?;
    Ok(())
}

/// A run lock or a partial results file not refreshed for this long is stale, whoever wrote
/// it (runner::lock refreshes a held lock every 30 s).
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_refuse_special_and_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.toml");
        std::fs::write(&f, "12345").unwrap();
        assert_eq!(read_capped(&f, "spec", 5).unwrap(), b"12345");
        let e = read_capped(&f, "spec", 4).unwrap_err().to_string();
        assert!(e.contains("a.toml") && e.contains("over the 4"), "{e}");
        let e = format!(
            "{:#}",
            read_capped(Path::new("/dev/zero"), "spec", 10).unwrap_err()
        );
        assert!(e.contains("/dev/zero") && e.contains("a device"), "{e}");
        let e = format!("{:#}", read_capped(dir.path(), "spec", 10).unwrap_err());
        assert!(e.contains("a directory"), "{e}");
    }
}
