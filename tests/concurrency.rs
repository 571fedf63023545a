//! Two processes on one spec and results folder (a sweep started twice, or two shards):
//! every run is run exactly once, none is lost, and no lock or temp file is left behind.
//! Locks of other processes: a stale one (old heartbeat) is taken over, a live one is
//! skipped, counted and makes the exit status 1 unless `--wait` is given.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

#[test]
fn two_processes_share_a_results_folder_without_losing_runs() {
    for attempt in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let spec = common::tiny_spec(
            dir.path(),
            "pair",
            r#"["l1", "random", "lrp-oneshot"]"#,
            "[1, 2]",
        );
        let start = || {
            common::lrprune()
                .args(["run", "--resume", "--wait", "--quiet"])
                .arg(&spec)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (start(), start());
        for child in [a, b] {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "attempt {attempt}: {err}");
            assert!(!err.contains("panicked"), "attempt {attempt}: {err}");
        }
        let results = dir.path().join("results");
        let steps = common::step_files(&results);
        assert_eq!(steps.len(), 6, "attempt {attempt}: one steps file per run");
        for f in &steps {
            let id = f.file_stem().unwrap().to_str().unwrap();
            assert!(
                lrprune::results::runs_path(&results, id).is_file(),
                "{id}: runs file lost"
            );
            let rows = lrprune::results::read_parquet(f).unwrap().height();
            assert_eq!(rows, 10, "{id}: a complete curve (step 0 and nine steps)");
        }
        let leftovers: Vec<_> = walk(&results)
            .into_iter()
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy().to_string();
                n.starts_with(".partial-") || n.ends_with(".lock")
            })
            .collect();
        assert!(
            leftovers.is_empty(),
            "attempt {attempt}: left behind {leftovers:?}"
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A spec of two runs (`l1` and `random`, seed 1) and the first run's lock file, written as
/// a process on another host would write it, with its mtime `age` ago.
fn foreign_lock(dir: &Path, age: Duration) -> (PathBuf, PathBuf) {
    let spec = common::tiny_spec(dir, "held", r#"["l1", "random"]"#, "[1]");
    let loaded = lrprune::spec::load(&spec).unwrap();
    let lock = lrprune::runner::lock::path(&loaded.results_dir, &loaded.runs[0].run_id());
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    std::fs::write(&lock, "4242 a-node-far-away").unwrap();
    let f = std::fs::File::options().write(true).open(&lock).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
    (spec, lock)
}

fn run(spec: &Path, extra: &[&str]) -> (bool, String, String) {
    let out = common::lrprune()
        .args(["run", "--quiet"])
        .args(extra)
        .arg(spec)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn a_lock_from_another_host_with_an_old_heartbeat_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, lock) = foreign_lock(dir.path(), Duration::from_secs(3600));
    let (ok, out, err) = run(&spec, &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("2 runs ran, 0 already done, 0 held by another process, 0 failed"),
        "{out}"
    );
    assert!(!lock.exists(), "released after the run");
    assert_eq!(common::step_files(&dir.path().join("results")).len(), 2);
}

#[test]
fn a_live_lock_of_another_process_is_counted_as_held_and_fails_the_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, lock) = foreign_lock(dir.path(), Duration::from_secs(5));
    let (ok, out, err) = run(&spec, &[]);
    assert!(!ok, "a held run makes the exit status non-zero: {out}");
    assert!(
        out.contains("1 runs ran, 0 already done, 1 held by another process, 0 failed"),
        "{out}"
    );
    let shown = lock.display().to_string();
    assert!(err.contains(&shown) && err.contains("--wait"), "{err}");
    assert!(lock.exists(), "another process's lock is left alone");
    // Once the other process has finished (here: its lock is gone), --resume completes it.
    std::fs::remove_file(&lock).unwrap();
    let (ok, out, err) = run(&spec, &["--resume"]);
    assert!(ok, "{err}");
    assert!(out.contains("1 runs ran, 1 already done, 0 held"), "{out}");
}

#[test]
fn wait_runs_a_held_run_once_its_lock_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, lock) = foreign_lock(dir.path(), Duration::from_secs(5));
    let child = common::lrprune()
        .args(["run", "--quiet", "--wait"])
        .arg(&spec)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let steps = dir.path().join("results").join("steps");
    let t0 = std::time::Instant::now();
    while std::fs::read_dir(&steps).map_or(0, |d| d.count()) < 1 {
        assert!(t0.elapsed() < Duration::from_secs(120), "the free run ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    std::fs::remove_file(&lock).unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{err}");
    assert!(
        stdout.contains("2 runs ran, 0 already done, 0 held"),
        "{stdout}"
    );
    assert!(
        err.contains("waiting for 1 runs held by other processes"),
        "{err}"
    );
}

/// On a folder shared between hosts, a temp file of a writer on another host is kept until
/// it is as old as a stale lock (its writer may be running there); a dead writer's from
/// this host goes at once.
#[test]
fn another_hosts_temp_files_are_kept_until_stale() {
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps");
    std::fs::create_dir_all(&steps).unwrap();
    // Above Linux's pid_max: no such process here.
    let dead = 4_194_305;
    let ours = steps.join(format!(
        ".partial-{dead}-{}-a.parquet",
        lrprune::fsio::host_tag()
    ));
    let theirs = steps.join(format!(".partial-{dead}-0badc0de-b.parquet"));
    let old = steps.join(format!(".partial-{dead}-0badc0de-c.parquet"));
    for p in [&ours, &theirs, &old] {
        std::fs::write(p, b"x").unwrap();
    }
    let f = std::fs::File::options().write(true).open(&old).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    lrprune::results::remove_stale_partials(dir.path()).unwrap();
    assert!(!ours.exists() && !old.exists(), "stale ones removed");
    assert!(theirs.exists(), "another host's live temp file kept");
}
