//! Same spec + seed → same results on CPU.

mod common;
use polars::prelude::*;

fn run(dir: &std::path::Path) -> DataFrame {
    let spec = common::tiny_spec(dir, "det", r#"["l1", "random"]"#, "[5]");
    let results = dir.join("results");
    let _ = std::fs::remove_dir_all(&results);
    common::run_ok(&["run".as_ref(), "--quiet".as_ref(), spec.as_os_str()]);
    let files = common::step_files(&results);
    let frames: Vec<DataFrame> = files
        .iter()
        .map(|f| {
            lrprune::results::read_parquet(f)
                .unwrap()
                .drop("wall_ms")
                .unwrap()
        })
        .collect();
    let mut all = frames[0].clone();
    for f in &frames[1..] {
        all.vstack_mut(f).unwrap();
    }
    all
}

#[test]
fn same_spec_and_seed_give_identical_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (run(dir.path()), run(dir.path()));
    assert_eq!(a.height(), 20);
    // Everything but wall-clock time (`wall_ms`) is identical, run ids included.
    assert!(a.equals_missing(&b), "results differ:\n{a}\n{b}");
    // And the curve actually moves, so equality is not vacuous.
    let top1 = a.column("top1").unwrap().f64().unwrap().clone();
    assert!(top1.max().unwrap() > top1.min().unwrap());
}
