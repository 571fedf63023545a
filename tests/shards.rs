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

/// Shard counts that only size an allocation are bounded: `--shard 1/2305843009213693952`
/// overflowed a capacity, `1/1000000000000` asked for 8 TB; and a count above the runs
/// gives the extra shards nothing without allocating for them.
#[test]
fn huge_shard_counts_are_refused_or_cost_nothing() {
    use lrprune::runner::shard::{self, Shard, MAX_SHARDS};
    for bad in [
        "1/2305843009213693952",
        "1/1000000000000",
        "1/18446744073709551615",
    ] {
        let e = Shard::parse(bad).unwrap_err().to_string();
        assert!(e.contains(bad) && e.contains("fix"), "{e}");
    }
    assert_eq!(
        Shard::parse(&format!("1/{MAX_SHARDS}")).unwrap().count,
        MAX_SHARDS
    );
    let dir = tempfile::tempdir().unwrap();
    let runs = lrprune::spec::load(&spec(dir.path())).unwrap().runs;
    let few = shard::assign(&runs, runs.len());
    assert_eq!(
        shard::assign(&runs, usize::MAX),
        few,
        "more shards than runs: the same split"
    );
    // From the CLI: an error, not an abort.
    let out = common::lrprune()
        .args(["run", "--quiet", "--shard", "1/1000000000000"])
        .arg(spec(dir.path()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--shard") && !err.contains("panicked"),
        "{err}"
    );
}

/// A Slurm array with a step (`--array=0-6:2`: IDs 0, 2, 4, 6) is shards 1–4 of 4 by the
/// task's index within the array; IDs off the array and absurd counts are refused by name.
#[test]
fn slurm_arrays_with_a_step_map_each_task_to_its_own_shard() {
    use lrprune::runner::shard::Shard;
    let vars = |pairs: &[(&str, &str)]| {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Shard::from_vars(move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    };
    for (id, index) in [("0", 0), ("2", 1), ("4", 2), ("6", 3)] {
        let s = vars(&[
            ("SLURM_ARRAY_TASK_ID", id),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ])
        .unwrap();
        assert_eq!((s.index, s.count), (index, 4), "ID {id}");
    }
    // An offset array without a step, as before.
    let s = vars(&[
        ("SLURM_ARRAY_TASK_ID", "12"),
        ("SLURM_ARRAY_TASK_COUNT", "3"),
        ("SLURM_ARRAY_TASK_MIN", "10"),
    ])
    .unwrap();
    assert_eq!((s.index, s.count), (2, 3));
    for (pairs, words) in [
        (
            vec![
                ("SLURM_ARRAY_TASK_ID", "3"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
                ("SLURM_ARRAY_TASK_STEP", "2"),
            ],
            "SLURM_ARRAY_TASK_ID=3",
        ),
        (
            vec![
                ("SLURM_ARRAY_TASK_ID", "8"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
                ("SLURM_ARRAY_TASK_STEP", "2"),
            ],
            "SLURM_ARRAY_TASK_ID=8",
        ),
        (
            vec![
                ("SLURM_ARRAY_TASK_ID", "0"),
                ("SLURM_ARRAY_TASK_COUNT", "18446744073709551615"),
            ],
            "SLURM_ARRAY_TASK_COUNT=18446744073709551615",
        ),
        (
            vec![
                ("SLURM_ARRAY_TASK_ID", "0"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
                ("SLURM_ARRAY_TASK_STEP", "0"),
            ],
            "SLURM_ARRAY_TASK_STEP=0",
        ),
    ] {
        let e = vars(&pairs).unwrap_err().to_string();
        assert!(e.contains(words) && e.contains("fix"), "{e}");
    }
}
