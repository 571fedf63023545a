//! Sweeps across machines: a sweep run as 3 shards at once into one folder gives exactly the
//! runs (and step rows) of one process; folders gathered from machines merge into one
//! report, refusing a run whose copies differ; the README's Slurm script runs as an array.

mod common;
use std::path::Path;

fn digests(results: &Path) -> Vec<(String, String)> {
    lrprune::results::digests(results).unwrap()
}

fn spec(dir: &Path) -> std::path::PathBuf {
    common::tiny_spec(
        dir,
        "sh",
        r#"["l1", "random", "lrp-oneshot", "lrp"]"#,
        "[0, 1]",
    )
}

#[test]
fn three_shards_at_once_equal_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path());
    let one = dir.path().join("one");
    common::run_ok(&[
        "run".as_ref(),
        "--quiet".as_ref(),
        s.as_os_str(),
        "--results-dir".as_ref(),
        one.as_os_str(),
    ]);
    let want = digests(&one);
    assert_eq!(want.len(), 8);

    let children: Vec<_> = (1..=3)
        .map(|k| {
            common::lrprune()
                .args(["run", "--quiet", "--resume", "--shard", &format!("{k}/3")])
                .arg(&s)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let results = dir.path().join("results");
    assert_eq!(
        digests(&results),
        want,
        "the same runs with the same step rows, once each"
    );
    assert!(
        results.join("summary.parquet").is_file(),
        "the last shard wrote the report"
    );
    assert!(results.join("report/summary.md").is_file());
}

#[test]
fn folders_from_two_machines_merge_and_conflicts_are_named() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for (d, k) in [(&a, "1/2"), (&b, "2/2")] {
        let s = spec(d.path());
        common::run_ok(&[
            "run".as_ref(),
            "--quiet".as_ref(),
            "--shard".as_ref(),
            k.as_ref(),
            s.as_os_str(),
        ]);
    }
    let (ra, rb) = (a.path().join("results"), b.path().join("results"));
    let (na, nb) = (digests(&ra).len(), digests(&rb).len());
    assert_eq!(na + nb, 8, "the shards split the runs");
    common::run_ok(&["report".as_ref(), ra.as_os_str(), rb.as_os_str()]);
    let summary = lrprune::results::read_parquet(&ra.join("summary.parquet")).unwrap();
    assert_eq!(
        summary.height(),
        8,
        "one summary row per run of both folders"
    );

    // A run present in both folders with different rows is refused, naming both files.
    let id = &digests(&rb)[0].0;
    let src = lrprune::results::steps_path(&rb, id);
    let mut df = lrprune::results::read_parquet(&src).unwrap();
    let shifted: Vec<f64> = df
        .column("top1")
        .unwrap()
        .f64()
        .unwrap()
        .into_no_null_iter()
        .map(|v| v + 0.5)
        .collect();
    df.with_column(polars::prelude::Column::new("top1".into(), shifted))
        .unwrap();
    lrprune::results::write_parquet_atomic(&lrprune::results::steps_path(&ra, id), &mut df)
        .unwrap();
    let out = common::lrprune()
        .arg("report")
        .arg(&ra)
        .arg(&rb)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("run {id} has different results"))
            && err.contains(&ra.display().to_string())
            && err.contains(&rb.display().to_string()),
        "{err}"
    );
}

#[test]
fn the_readme_slurm_array_runs_with_the_variables_set_by_hand() {
    let script = std::fs::read_to_string("scripts/slurm_array.sh").unwrap();
    let readme = std::fs::read_to_string("README.md").unwrap();
    assert!(
        readme.contains(script.trim()),
        "the README shows scripts/slurm_array.sh verbatim"
    );
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path());
    let bin = Path::new(env!("CARGO_BIN_EXE_lrprune"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for task in 0..4 {
        let out = std::process::Command::new("bash")
            .arg("scripts/slurm_array.sh")
            .env("PATH", &path)
            .env("SPEC", &s)
            .env("SLURM_ARRAY_TASK_ID", task.to_string())
            .env("SLURM_ARRAY_TASK_COUNT", "4")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "task {task}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let results = dir.path().join("results");
    assert_eq!(digests(&results).len(), 8, "every run once");
    assert!(
        results.join("report/summary.md").is_file(),
        "the last task wrote the report"
    );
}
