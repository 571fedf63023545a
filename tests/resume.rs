//! Kill a sweep mid-way, resume it, and find every run exactly once with no partial file.

mod common;
use std::time::{Duration, Instant};

#[test]
fn killed_sweep_resumes_without_duplicates_or_partials() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::tiny_spec(
        dir.path(),
        "resume",
        r#"["l1", "l2", "random"]"#,
        "[0, 1, 2, 3]",
    );
    let steps = dir.path().join("results/steps");
    let runs = dir.path().join("results/runs");

    let mut child = common::lrprune()
        .args(["run", "--quiet"])
        .arg(&spec)
        .spawn()
        .unwrap();
    // Wait until at least one run has finished, then kill the sweep.
    let t0 = Instant::now();
    loop {
        let n = std::fs::read_dir(&runs).map(|d| d.count()).unwrap_or(0);
        if n >= 1 || t0.elapsed() > Duration::from_secs(300) {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("sweep ended before it could be killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = std::fs::read_dir(&steps).unwrap().count();
    assert!(
        before < 12,
        "the sweep finished before the kill; the test proves nothing"
    );

    // Without --resume the harness refuses to overwrite.
    let out = common::lrprune()
        .args(["run", "--quiet"])
        .arg(&spec)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));

    common::run_ok(&[
        "run".as_ref(),
        "--quiet".as_ref(),
        "--resume".as_ref(),
        spec.as_os_str(),
    ]);

    let listed = lrprune::spec::load(&spec).unwrap();
    let mut ids: Vec<String> = listed.runs.iter().map(|r| r.run_id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12);
    for sub in ["steps", "runs"] {
        let mut files: Vec<String> = std::fs::read_dir(dir.path().join("results").join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let expected: Vec<String> = ids.iter().map(|i| format!("{i}.parquet")).collect();
        assert_eq!(
            files, expected,
            "{sub}/ must hold each run exactly once and nothing else"
        );
    }
    for id in &ids {
        let df = lrprune::results::read_parquet(&lrprune::results::steps_path(
            &dir.path().join("results"),
            id,
        ))
        .unwrap();
        assert_eq!(df.height(), 10, "run {id}: steps 0..=9");
    }
}

#[test]
fn a_changed_weights_or_dataset_file_is_never_mixed_into_an_old_folder() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::tiny_spec(dir.path(), "changed", r#"["l1", "random"]"#, "[1]");
    let results = dir.path().join("results");
    let run = |extra: &[&str]| {
        common::lrprune()
            .args(["run", "--quiet"])
            .args(extra)
            .arg(&spec)
            .output()
            .unwrap()
    };
    let err = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    // Half the sweep, then the weights change before the rest.
    let out = run(&["--shard", "1/2"]);
    assert!(out.status.success(), "{}", err(&out));
    let weights = dir.path().join("tiny.safetensors");
    common::tiny_weights(&weights, 8);
    let out = run(&["--resume"]);
    assert!(!out.status.success(), "a changed weights file is refused");
    let e = err(&out);
    let shown = weights.display().to_string();
    assert!(
        e.contains(&shown) && e.contains("model.weights") && e.contains("--results-dir"),
        "names the file, its key and the fix: {e}"
    );
    assert_eq!(common::step_files(&results).len(), 1, "nothing ran");
    // The same content again, rewritten (a new mtime): the rest of the sweep runs.
    common::tiny_weights(&weights, 7);
    let out = run(&["--resume"]);
    assert!(out.status.success(), "{}", err(&out));
    assert_eq!(common::step_files(&results).len(), 2);
    // A dataset folder with other files is refused the same way, by its key.
    common::tiny_idx(&dir.path().join("data"), 31, 11);
    let out = run(&["--resume"]);
    let e = err(&out);
    assert!(!out.status.success() && e.contains("dataset.source"), "{e}");
}
