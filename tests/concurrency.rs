//! Two processes on one spec and results folder (a sweep started twice, or two shards):
//! every run is run exactly once, none is lost, and no lock or temp file is left behind.

mod common;

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
                .args(["run", "--resume", "--quiet"])
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

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
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
