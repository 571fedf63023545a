//! Child processes the benchmark times: whole `lrprune run` sweeps (wall time and peak
//! resident memory, read from the kernel's accounting of that one child) and the PyTorch
//! reference script (JSON on stdout).

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// What one child cost.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub wall_s: f64,
    /// Peak resident set size of the child, bytes.
    pub peak_rss: u64,
}

/// Run `cmd` to completion with its stdout captured; wall time and peak RSS of that child.
pub fn run(mut cmd: Command) -> Result<(Usage, String)> {
    let t = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let mut stdout = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        use std::io::Read;
        pipe.read_to_string(&mut stdout)?;
    }
    let (status, peak_rss) = wait_with_rusage(child)?;
    let wall_s = t.elapsed().as_secs_f64();
    if !status {
        bail!("{cmd:?} failed (its stderr is above)");
    }
    Ok((Usage { wall_s, peak_rss }, stdout))
}

/// Wait for `child` and read its own rusage (wait4), so each sweep's peak memory is its
/// own rather than the maximum over all children so far.
#[cfg(unix)]
fn wait_with_rusage(child: std::process::Child) -> Result<(bool, u64)> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    std::mem::forget(child); // already reaped
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    // Linux reports ru_maxrss in KiB.
    Ok((ok, usage.ru_maxrss as u64 * 1024))
}

#[cfg(not(unix))]
fn wait_with_rusage(mut child: std::process::Child) -> Result<(bool, u64)> {
    Ok((child.wait()?.success(), 0))
}

/// `lrprune run SPEC --results-dir DIR --quiet` with this very binary.
pub fn sweep(spec: &Path, results: &Path) -> Result<Usage> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("run")
        .arg(spec)
        .arg("--results-dir")
        .arg(results)
        .arg("--quiet");
    Ok(run(cmd)?.0)
}

/// `python3 scripts/torch_reference.py ARGS…` → its JSON output (the script makes its own
/// venv with torch and zennit on first use).
pub fn torch(script: &Path, args: &[&str]) -> Result<(Usage, serde_json::Value)> {
    let mut cmd = Command::new("python3");
    cmd.arg(script).args(args);
    let (usage, out) = run(cmd)?;
    let json = serde_json::from_str(&out)
        .with_context(|| format!("{} printed no JSON", script.display()))?;
    Ok((usage, json))
}
