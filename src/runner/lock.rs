//! One writer per run: a process claims a run with a lock file (`locks/<run_id>.lock`,
//! created exclusively, holding its `pid host`) before running it and removes it once the
//! run's results are written. Another process on the same results folder skips a run whose
//! lock is live, so shards of one sweep (or a sweep started twice) run every run once.
//!
//! A lock is live while its holder refreshes it: a thread of the holding process sets the
//! file's mtime every [`HEARTBEAT`]. It is stale, and taken over, when its process is gone
//! from this host (a killed sweep: at once) or its mtime is older than [`STALE_AFTER`]
//! (a lock from another host, whose pid cannot be checked here, or a pid since reused by an
//! unrelated process). Ten minutes is twenty missed heartbeats: far above a busy machine's
//! scheduling delays and typical clock skew between cluster nodes, short enough that a
//! Slurm task killed on another node costs a resumed sweep minutes, not forever. A holder
//! stopped longer than that (SIGSTOP, a suspended job) loses its lock; if it resumes, both
//! processes run the run and write the same files atomically, so nothing is lost — the same
//! as two processes taking over one stale lock at the same moment.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

pub use crate::fsio::STALE_AFTER;

/// How often a holder refreshes its lock's mtime.
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// This process's `pid host`, as lock files record it.
pub fn holder() -> String {
    format!("{} {}", std::process::id(), host())
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// The lock file of run `run_id` in results folder `dir`.
pub fn path(dir: &Path, run_id: &str) -> PathBuf {
    dir.join("locks").join(format!("{run_id}.lock"))
}

/// The `pid host` of a live lock at `path`; `None` when there is none or it is stale.
pub fn live_holder(path: &Path) -> Option<String> {
    let held_by = std::fs::read_to_string(path).ok()?;
    let age = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default(); // an mtime in the future (clock skew) is fresh
    (age <= STALE_AFTER && process_may_run(&held_by)).then_some(held_by)
}

/// Whether the process `holder` (`pid host`) may still be running: on another host it may.
fn process_may_run(holder: &str) -> bool {
    let mut it = holder.split_whitespace();
    let (Some(pid), host_name) = (it.next().and_then(|p| p.parse::<u32>().ok()), it.next()) else {
        return false;
    };
    if host_name.is_some_and(|h| h != host()) {
        return true;
    }
    pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
}

/// A claimed run: a thread keeps its lock fresh; dropping it stops the thread and releases
/// the claim.
pub struct RunLock {
    path: PathBuf,
    stop: Option<mpsc::Sender<()>>,
    beat: Option<std::thread::JoinHandle<()>>,
}

impl RunLock {
    fn new(path: PathBuf, every: Duration) -> Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let p = path.clone();
        let beat = std::thread::Builder::new()
            .name("lock-heartbeat".into())
            .spawn(move || {
                // Until the sender is dropped; a lock taken over meanwhile is left alone.
                while stopped.recv_timeout(every) == Err(mpsc::RecvTimeoutError::Timeout) {
                    if !is_ours(&p) {
                        break;
                    }
                    let _ = std::fs::File::options()
                        .write(true)
                        .open(&p)
                        .and_then(|f| f.set_modified(SystemTime::now()));
                }
            })
            .with_context(|| format!("starting the heartbeat of {}", path.display()))?;
        Ok(Self {
            path,
            stop: Some(stop),
            beat: Some(beat),
        })
    }
}

fn is_ours(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|h| h == holder())
}

impl Drop for RunLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(beat) = self.beat.take() {
            let _ = beat.join();
        }
        if is_ours(&self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub enum Claim {
    Taken(RunLock),
    /// Another live process holds the run: its lock file and `pid host`.
    Busy {
        path: PathBuf,
        holder: String,
    },
}

/// Claim run `run_id` in results folder `dir`.
pub fn claim(dir: &Path, run_id: &str) -> Result<Claim> {
    claim_beating(dir, run_id, HEARTBEAT)
}

fn claim_beating(dir: &Path, run_id: &str, every: Duration) -> Result<Claim> {
    let path = path(dir, run_id);
    let locks = path.parent().expect("a lock path has a folder");
    crate::fsio::create_dir_all(locks)?;
    for _ in 0..3 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(holder().as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
                return Ok(Claim::Taken(RunLock::new(path, every)?));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if let Some(holder) = live_holder(&path).filter(|h| !h.is_empty()) {
                    return Ok(Claim::Busy { path, holder });
                }
                // Stale (or caught between create and write).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path) -> Duration {
        let t = std::fs::metadata(path).unwrap().modified().unwrap();
        SystemTime::now().duration_since(t).unwrap_or_default()
    }

    fn backdate(path: &Path, by: Duration) {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - by).unwrap();
    }

    #[test]
    fn a_held_lock_is_kept_fresh_and_removed_on_release() {
        let dir = tempfile::tempdir().unwrap();
        let Claim::Taken(lock) = claim_beating(dir.path(), "r", Duration::from_millis(20)).unwrap()
        else {
            panic!("a free run is taken");
        };
        let p = path(dir.path(), "r");
        backdate(&p, 2 * STALE_AFTER);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            age(&p) < Duration::from_secs(5),
            "the heartbeat refreshed it"
        );
        assert_eq!(live_holder(&p), Some(holder()));
        drop(lock);
        assert!(!p.exists());
    }

    #[test]
    fn stale_means_a_dead_pid_here_or_an_old_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        std::fs::write(&p, "1234 some-other-host").unwrap();
        assert!(live_holder(&p).is_some(), "a fresh foreign lock is live");
        backdate(&p, STALE_AFTER + Duration::from_secs(5));
        assert_eq!(live_holder(&p), None, "an old foreign lock is stale");
        std::fs::write(&p, holder()).unwrap();
        backdate(&p, STALE_AFTER + Duration::from_secs(5));
        assert_eq!(live_holder(&p), None, "so is a live pid's, not refreshed");
        std::fs::write(&p, format!("{} {}", u32::MAX, host())).unwrap();
        assert_eq!(
            live_holder(&p),
            None,
            "a fresh lock of a dead pid here is stale"
        );
    }
}
