//! Report: AUCs against hand-worked values, and every plot kind rendered without system fonts.

use lrprune::report::{self, ReportOptions};
use lrprune::results::{self, RunIdentity, StepRecord};
use polars::prelude::*;
use std::path::Path;

fn rec(step: i64, rate: f64, top1: f64, bal: f64) -> StepRecord {
    StepRecord {
        step,
        pruning_rate: rate,
        filters_remaining: 100 - (rate * 100.0) as i64,
        params: 1000 - (rate * 900.0) as i64,
        flops: 2000 - (rate * 1800.0) as i64,
        top1,
        balanced_acc: bal,
        harmonic_acc: bal,
        class_acc: vec![bal, top1, (bal + top1) / 2.0],
        layer_filters: vec![60 - (rate * 50.0) as i64, 40 - (rate * 40.0) as i64],
        kept: vec![],
        control_acc: None,
        step_size: 0.1,
        backoffs: 0,
        wall_ms: 1.0,
    }
}

fn write_run(dir: &Path, method: &str, seed: i64, rows: &[StepRecord]) {
    let id = RunIdentity {
        run_id: format!("m-d-{method}-s{seed}"),
        experiment: "t".into(),
        model: "m".into(),
        dataset: "d".into(),
        method: method.into(),
        variant: String::new(),
        seed,
    };
    let mut df = results::steps_frame(&id, rows).unwrap();
    results::write_parquet_atomic(&results::steps_path(dir, &id.run_id), &mut df).unwrap();
}

/// Quiet report options with baseline `a` and an optional focus method.
fn opts_with(focus: Option<&str>) -> ReportOptions {
    ReportOptions {
        out: None,
        baseline: "a".into(),
        focus: focus.map(String::from),
        quiet: true,
        only: None,
        merge: vec![],
    }
}

fn fixture(dir: &Path) {
    // `a`: even steps. top1 (0,.9) (.3,.6) (.6,.3) (.9,.0) → AUC .45; balanced constant .5.
    let a: Vec<StepRecord> = (0..4)
        .map(|k| rec(k, 0.3 * k as f64, 0.9 - 0.3 * k as f64, 0.5))
        .collect();
    write_run(dir, "a", 0, &a);
    // `b`: uneven steps (0,1) (.1,.8) (.4,.5) (.9,.1) → (.09 + .195 + .15)/.9 = .48333…
    let pts = [(0.0, 1.0), (0.1, 0.8), (0.4, 0.5), (0.9, 0.1)];
    let b: Vec<StepRecord> = pts
        .iter()
        .enumerate()
        .map(|(k, (r, v))| rec(k as i64, *r, *v, *v))
        .collect();
    write_run(dir, "b", 0, &b);
    // `b` seed 1: balanced .2 lower everywhere → AUC .28333…
    let b1: Vec<StepRecord> = pts
        .iter()
        .enumerate()
        .map(|(k, (r, v))| rec(k as i64, *r, *v, v - 0.2))
        .collect();
    write_run(dir, "b", 1, &b1);
}

#[test]
fn auc_matches_hand_computation() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let opts = opts_with(None);
    let r = report::report(dir.path(), &opts).unwrap();
    let s = results::read_parquet(&r.summary).unwrap();
    let get = |run: &str, col: &str| -> f64 {
        let f = s
            .clone()
            .lazy()
            .filter(col_expr("run_id").eq(lit(run)))
            .collect()
            .unwrap();
        f.column(col).unwrap().f64().unwrap().get(0).unwrap()
    };
    assert!((get("m-d-a-s0", "auc_top1") - 0.45).abs() < 1e-12);
    assert!((get("m-d-a-s0", "auc_class") - 0.5).abs() < 1e-12);
    assert!((get("m-d-b-s0", "auc_top1") - 0.435 / 0.9).abs() < 1e-12);
    assert!((get("m-d-b-s0", "auc_class") - 0.435 / 0.9).abs() < 1e-12);
    assert!((get("m-d-b-s1", "auc_class") - (0.435 / 0.9 - 0.2)).abs() < 1e-12);
    // Interpolated: b at 0.5 lies on (.4,.5)–(.9,.1): .5 − .08 = .42.
    assert!((get("m-d-b-s0", "balanced_at_0.5") - 0.42).abs() < 1e-12);
    assert!((get("m-d-b-s0", "flops_frac") - (2000.0 - 1620.0) / 2000.0).abs() < 1e-12);

    // Aggregated over seeds: b's class AUC mean = .48333 − .1, sd = sqrt(2·.1²) = .141421.
    let csv = std::fs::read_to_string(dir.path().join("report/summary.csv")).unwrap();
    let b_line = csv.lines().find(|l| l.contains("\"b\"")).unwrap();
    let mean = 0.435 / 0.9 - 0.1;
    assert!(b_line.contains(&format!("{:.6}", mean)[..6]), "{b_line}");
    assert!(
        r.markdown.contains("| b | 2 |") || r.markdown.contains(" b | 2 "),
        "{}",
        r.markdown
    );
    assert!(
        r.markdown.contains(&format!("{:.3} ± 0.141", mean)),
        "{}",
        r.markdown
    );
    // Ratio to the baseline `a` (class AUC .5).
    assert!(
        r.markdown.contains(&format!("{:.2}×", mean / 0.5)),
        "{}",
        r.markdown
    );
    let tex = std::fs::read_to_string(dir.path().join("report/summary.tex")).unwrap();
    assert!(tex.contains("\\toprule") && tex.contains("\\bottomrule"));
}

fn col_expr(name: &str) -> Expr {
    col(name)
}

#[test]
fn every_plot_renders_without_system_fonts() {
    // The font is compiled into the binary; point fontconfig at nothing to be sure.
    std::env::set_var("FONTCONFIG_FILE", "/dev/null");
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let opts = opts_with(Some("b"));
    let r = report::report(dir.path(), &opts).unwrap();
    let kinds = [
        "top1_vs_rate",
        "balanced_vs_rate",
        "class_acc_vs_rate",
        "layer_profile",
        "balanced_vs_flops",
    ];
    assert_eq!(r.plots.len(), 2 * kinds.len());
    for k in kinds {
        let png = dir.path().join(format!("report/{k}-m-d.png"));
        let img = image::open(&png).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (960, 640));
        let non_white = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
        let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
        assert!(
            non_white > 5_000,
            "{k}: almost blank ({non_white} non-white pixels)"
        );
        assert!(colours.len() > 8, "{k}: only {} colours", colours.len());
        let svg = std::fs::read_to_string(png.with_extension("svg")).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{k}.svg: {e}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        assert!(
            svg.contains("pruning rate") || svg.contains("FLOPs"),
            "{k}: axis label missing"
        );
    }
}

#[test]
fn empty_and_mixed_results_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let opts = opts_with(None);
    let e = report::report(dir.path(), &opts).err().unwrap().to_string();
    assert!(e.contains("no steps/ folder") && e.contains("fix"), "{e}");
    std::fs::create_dir_all(dir.path().join("steps")).unwrap();
    let e = report::report(dir.path(), &opts).err().unwrap().to_string();
    assert!(e.contains("no .parquet step files"), "{e}");
    fixture(dir.path());
    let mut other = df!("run_id" => ["x"], "step" => [0i64]).unwrap();
    results::write_parquet_atomic(&dir.path().join("steps/zz.parquet"), &mut other).unwrap();
    let e = format!("{:#}", report::report(dir.path(), &opts).err().unwrap());
    assert!(
        e.contains("mixed schemas") && e.contains("zz.parquet"),
        "{e}"
    );
}

/// A steps file with fewer than two rows (killed writer, truncated copy) is refused by name
/// instead of silently dropping the run (0 rows) or giving it a NaN AUC (1 row).
#[test]
fn damaged_step_files_are_refused_by_name() {
    for rows in [0usize, 1] {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let few: Vec<StepRecord> = (0..rows as i64).map(|k| rec(k, 0.0, 0.9, 0.5)).collect();
        write_run(dir.path(), "broken", 0, &few);
        let Err(e) = report::report(dir.path(), &opts_with(None)) else {
            panic!("a steps file with {rows} rows was accepted");
        };
        let e = e.to_string();
        assert!(
            e.contains("m-d-broken-s0.parquet") && e.contains("damaged"),
            "{rows} rows: {e}"
        );
    }
}

/// `report/index.html` holds the whole report, self-contained: the summary table (one row
/// per curve), every plot inline as SVG, the runs' metadata, and nothing fetched from
/// elsewhere.
#[test]
fn the_html_report_holds_every_table_row_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let r = report::report(dir.path(), &opts_with(None)).unwrap();
    let html = std::fs::read_to_string(dir.path().join("report/index.html")).unwrap();
    let svgs: Vec<_> = r
        .plots
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "svg"))
        .collect();
    assert!(!svgs.is_empty());
    assert_eq!(
        html.matches("<svg").count(),
        svgs.len(),
        "every plot inline"
    );
    for p in &svgs {
        let kind = p.file_stem().unwrap().to_string_lossy().replace("-m-d", "");
        assert!(
            html.contains(&format!("data-name=\"{kind}\"")),
            "{kind} missing"
        );
    }
    // The summary table: the header and one row per (method) curve of the fixture.
    let table = &html[html.find("<table id=\"summary\">").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    assert_eq!(
        table.matches("<tr>").count(),
        1 + 2,
        "header + methods a and b"
    );
    for cell in ["AUC class", ">a<", ">b<"] {
        assert!(table.contains(cell), "{cell} not in the summary table");
    }
    for external in ["<script", "<link", "src=\"http", "href=\"http"] {
        assert!(!html.contains(external), "the page loads {external}");
    }
}

/// summary.parquet carries the paired ratio and the two AUCs that differ from top-1 on a
/// balanced test split; the tables show them.
#[test]
fn paired_ratio_and_harmonic_and_worst_class_aucs() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let r = report::report(dir.path(), &opts_with(None)).unwrap();
    let s = results::read_parquet(&dir.path().join("summary.parquet")).unwrap();
    let method = s.column("method").unwrap().str().unwrap().clone();
    let get = |c: &str, i: usize| s.column(c).unwrap().f64().unwrap().get(i).unwrap();
    for i in 0..s.height() {
        // The baseline's own paired ratio is 1; worst class ≤ class average.
        if method.get(i) == Some("a") {
            assert!((get("paired_ratio", i) - 1.0).abs() < 1e-12);
        }
        assert!(get("auc_worst", i) <= get("auc_class", i) + 1e-12);
        assert!(get("auc_harmonic", i) <= get("auc_class", i) + 1e-12);
    }
    for header in ["paired × base [95% CI]", "W/L", "AUC harm.", "AUC worst"] {
        assert!(
            r.markdown.contains(header),
            "{header} missing from the table"
        );
    }
}

/// Rows that would bend a curve or its AUC without a word — a NaN accuracy, a pruning rate
/// outside [0, 1], a step twice — are refused naming the file and the row.
#[test]
fn damaged_step_rows_are_refused_by_file_and_row() {
    let ok = |k: i64| rec(k, 0.3 * k as f64, 0.9, 0.5);
    let cases: [(&str, Vec<StepRecord>, &str); 4] = [
        ("nan", vec![ok(0), rec(1, 0.3, f64::NAN, 0.5)], "top1 = NaN"),
        (
            "negative",
            vec![ok(0), rec(1, -0.1, 0.9, 0.5)],
            "pruning_rate = -0.1",
        ),
        (
            "over",
            vec![ok(0), rec(1, 1.5, 0.9, 0.5)],
            "pruning_rate = 1.5",
        ),
        ("twice", vec![ok(0), ok(1), ok(1)], "the step appears twice"),
    ];
    for (name, rows, words) in cases {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        write_run(dir.path(), name, 0, &rows);
        let Err(e) = report::report(dir.path(), &opts_with(None)) else {
            panic!("{name}: damaged rows were accepted");
        };
        let e = e.to_string();
        for w in [&format!("m-d-{name}-s0.parquet"), "step 1", words, "fix"] {
            assert!(e.contains(w), "{name}: `{w}` not in: {e}");
        }
    }
}

/// Merging folders holds a run's metadata (`runs/`) to the same rule as its step rows: the
/// same in every folder but for its wall time, else refused naming both files.
#[test]
fn merged_folders_with_conflicting_run_metadata_are_refused() {
    let meta = |dir: &Path, config: &str, wall: f64| {
        let mut df = df!(
            "run_id" => ["m-d-a-s0"],
            "config_json" => [config],
            "wall_s" => [wall]
        )
        .unwrap();
        results::write_parquet_atomic(&results::runs_path(dir, "m-d-a-s0"), &mut df).unwrap();
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fixture(a.path());
    fixture(b.path());
    meta(a.path(), "{\"lr\":0.01}", 1.0);
    meta(b.path(), "{\"lr\":0.01}", 2.0);
    let merged = ReportOptions {
        merge: vec![b.path().to_path_buf()],
        ..opts_with(None)
    };
    report::report(a.path(), &merged).expect("only the wall time differs");
    meta(b.path(), "{\"lr\":0.1}", 2.0);
    let e = report::report(a.path(), &merged)
        .err()
        .expect("conflict accepted")
        .to_string();
    assert!(
        e.contains("different metadata")
            && e.contains(&a.path().join("runs/m-d-a-s0.parquet").display().to_string())
            && e.contains(&b.path().join("runs/m-d-a-s0.parquet").display().to_string()),
        "{e}"
    );
}
