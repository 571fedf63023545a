//! A report killed at random moments never leaves a truncated plot or table: every file
//! is written whole under a temp name and renamed, and the temp files of a killed report are
//! gone after the next `run --resume`. Unknown `--baseline` / `--focus` are refused.

mod common;
use rand::{Rng, SeedableRng};
use std::path::Path;

/// Every final file in `dir` is whole (PNG decodes, SVG parses, tables are non-empty);
/// temp files are allowed only while a report may have been killed.
fn check_whole(dir: &Path, partials_allowed: bool) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with(".partial-") {
            assert!(partials_allowed, "{name} survived `run --resume`");
            continue;
        }
        match p.extension().and_then(|x| x.to_str()) {
            Some("png") => {
                image::open(&p).unwrap_or_else(|e| panic!("{name}: broken PNG: {e}"));
            }
            Some("svg") => {
                let text = std::fs::read_to_string(&p).unwrap();
                roxmltree::Document::parse(&text)
                    .unwrap_or_else(|e| panic!("{name}: broken SVG: {e}"));
            }
            _ => assert!(std::fs::metadata(&p).unwrap().len() > 0, "{name} is empty"),
        }
    }
}

#[test]
fn a_killed_report_leaves_no_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::tiny_spec(dir.path(), "rf", r#"["l1", "random"]"#, "[0, 1]");
    common::run_ok(&["run".as_ref(), "--quiet".as_ref(), spec.as_os_str()]);
    let results = dir.path().join("results");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for _ in 0..12 {
        let mut child = common::lrprune()
            .args(["report", "--baseline", "l1"])
            .arg(&results)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.random_range(0..600)));
        let _ = child.kill();
        child.wait().unwrap();
        check_whole(&results.join("report"), true);
        check_whole(&results, true);
    }
    common::run_ok(&[
        "run".as_ref(),
        "--quiet".as_ref(),
        "--resume".as_ref(),
        spec.as_os_str(),
    ]);
    check_whole(&results.join("report"), false);
    check_whole(&results, false);
}

#[test]
fn unknown_baseline_or_focus_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::tiny_spec(dir.path(), "bf", r#"["l1"]"#, "[0]");
    common::run_ok(&["run".as_ref(), "--quiet".as_ref(), spec.as_os_str()]);
    let results = dir.path().join("results");
    for flag in ["--baseline", "--focus"] {
        let out = common::lrprune()
            .args(["report", flag, "nope"])
            .arg(&results)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} nope was accepted");
        assert!(
            err.contains(flag) && err.contains("fix: one of l1"),
            "{err}"
        );
    }
}
