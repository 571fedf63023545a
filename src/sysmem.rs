//! The machine's and the process's memory, as Linux reports it, and the process's limit
//! (`--max-memory`). Serves every stage: the runner refuses tasks that would not fit, and
//! the measured layer search (src/prune/search/) keeps fewer of its candidates' values
//! when memory runs short.

use std::sync::atomic::{AtomicU64, Ordering};

static LIMIT: AtomicU64 = AtomicU64::new(0);

/// Set `--max-memory` (bytes) for this process.
pub fn set_limit(bytes: u64) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

/// The limit in force: `--max-memory`, else 80% of physical memory.
pub fn limit() -> u64 {
    match LIMIT.load(Ordering::Relaxed) {
        0 => physical() / 10 * 8,
        b => b,
    }
}

/// A `Field:  N kB` line of a /proc file (/proc/meminfo, /proc/self/status), bytes.
fn kib_field(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Physical memory (16 GiB where it cannot be read).
pub fn physical() -> u64 {
    kib_field("/proc/meminfo", "MemTotal:").unwrap_or(16 << 30)
}

/// Memory the kernel can still hand out without swapping, other processes counted
/// (`None` where it cannot be read).
pub fn available() -> Option<u64> {
    kib_field("/proc/meminfo", "MemAvailable:")
}

/// This process's resident memory (`None` where it cannot be read).
pub fn resident() -> Option<u64> {
    kib_field("/proc/self/status", "VmRSS:")
}

/// This process's peak resident memory since it started or since [`reset_peak`].
pub fn peak_resident() -> Option<u64> {
    kib_field("/proc/self/status", "VmHWM:")
}

/// Start [`peak_resident`] again from the current resident memory (Linux: writing 5 to
/// /proc/self/clear_refs); false where the kernel does not allow it.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// What a memory policy reads: the limit in force, the process's resident memory and the
/// machine's available memory. Passed to the code that decides what to keep, so that it can
/// be tested on any readings.
pub trait Gauge: Sync {
    fn limit(&self) -> u64;
    fn resident(&self) -> Option<u64>;
    fn available(&self) -> Option<u64>;
}

/// This process on this machine, read from /proc at every call.
pub struct Process;

impl Gauge for Process {
    fn limit(&self) -> u64 {
        limit()
    }
    fn resident(&self) -> Option<u64> {
        resident()
    }
    fn available(&self) -> Option<u64> {
        available()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields are read in bytes: this process's resident memory lies between a
    /// megabyte and the machine's memory, and the machine has some available.
    #[test]
    fn proc_fields_read_in_bytes() {
        let rss = resident().expect("VmRSS");
        assert!(rss > 1 << 20 && rss < physical(), "{rss}");
        let avail = available().expect("MemAvailable");
        assert!(avail > 0 && avail <= physical(), "{avail}");
    }
}
