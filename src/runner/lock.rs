//! One writer per run: a process claims a run with a lock file (`locks/<run_id>.lock`,
//! created exclusively, holding its pid and host) before running it and removes it once the
//! run's results are written. Another process on the same results folder skips a run whose
//! lock is held by a live process, so shards of one sweep (or a sweep started twice) run
//! every run exactly once. A lock whose process is gone (killed sweep) is taken over.
//!
//! Liveness is checked for processes on this host (`/proc/<pid>`); a lock written on
//! another host is taken as live. Two processes taking over the same stale lock at the same
//! moment can both run that run; they write the same files atomically, so nothing is lost.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// This process's `pid host`, as lock files and temp-file names record it.
pub fn holder() -> String {
    format!("{} {}", std::process::id(), host())
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// Whether the process `holder` (`pid host`) may still be running.
pub fn is_alive(holder: &str) -> bool {
    let mut it = holder.split_whitespace();
    let (Some(pid), host_name) = (it.next().and_then(|p| p.parse::<u32>().ok()), it.next()) else {
        return false;
    };
    if host_name.is_some_and(|h| h != host()) {
        return true;
    }
    pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
}

/// A claimed run; dropping it releases the claim.
pub struct RunLock {
    path: PathBuf,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub enum Claim {
    Taken(RunLock),
    /// Another live process holds the run (`pid host`).
    Busy(String),
}

/// Claim run `run_id` in results folder `dir`.
pub fn claim(dir: &Path, run_id: &str) -> Result<Claim> {
    let locks = dir.join("locks");
    std::fs::create_dir_all(&locks).with_context(|| format!("creating {}", locks.display()))?;
    let path = locks.join(format!("{run_id}.lock"));
    for _ in 0..3 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(holder().as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
                return Ok(Claim::Taken(RunLock { path }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let held_by = std::fs::read_to_string(&path).unwrap_or_default();
                if !held_by.is_empty() && is_alive(&held_by) {
                    return Ok(Claim::Busy(held_by));
                }
                // Left by a process that is gone (or caught between create and write).
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => {
                return Err(e).with_context(|| format!("creating the lock {}", path.display()))
            }
        }
    }
    anyhow::bail!(
        "{}: cannot claim the run (fix: delete the lock file if no sweep is running)",
        path.display()
    )
}
