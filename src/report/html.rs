//! `report/index.html`: the whole report in one self-contained page — the summary table,
//! every figure as inline SVG, and each run's metadata (resolved config, head accuracy,
//! device, wall time), grouped by model × dataset; no external CSS, JS or images. Rendered
//! from a minijinja template (`index.html.j2`, HTML-escaped except the SVGs).

use anyhow::{Context, Result};
use polars::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Serialize)]
struct Plot {
    name: String,
    svg: String,
}

#[derive(Serialize, Clone)]
struct RunMeta {
    run_id: String,
    method: String,
    seed: i64,
    head_train_acc: String,
    device: String,
    wall_s: String,
    config: String,
}

#[derive(Serialize)]
struct Group {
    model: String,
    dataset: String,
    plots: Vec<Plot>,
    runs: Vec<RunMeta>,
}

/// One runs file's row as the page shows it, with its model and dataset.
fn run_meta(path: &Path) -> Option<(String, String, RunMeta)> {
    let df = crate::results::read_parquet(path).ok()?;
    let s =
        |c: &str| -> Option<String> { Some(df.column(c).ok()?.str().ok()?.get(0)?.to_string()) };
    let f = |c: &str| -> Option<f64> { df.column(c).ok()?.f64().ok()?.get(0) };
    Some((
        s("model")?,
        s("dataset")?,
        RunMeta {
            run_id: s("run_id")?,
            method: s("method")?,
            seed: df.column("seed").ok()?.i64().ok()?.get(0)?,
            head_train_acc: f("head_train_acc").map_or(String::new(), |v| format!("{v:.3}")),
            device: s("device").unwrap_or_default(),
            wall_s: f("wall_s").map_or(String::new(), |v| format!("{v:.1}")),
            config: s("config_json").unwrap_or_default(),
        },
    ))
}

/// Write `out/index.html` for the aggregated table `agg`, the plots just rendered, and the
/// runs files of `folders` (only `only` when given).
pub fn write(
    out: &Path,
    folders: &[PathBuf],
    agg: &DataFrame,
    note: &str,
    plots: &[PathBuf],
    only: Option<&std::collections::HashSet<String>>,
) -> Result<PathBuf> {
    let (headers, rows) = super::tables::grid(agg)?;
    let mut combos: Vec<(String, String)> =
        rows.iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    combos.sort();
    combos.dedup();
    let mut metas = Vec::new();
    for folder in folders {
        let Ok(dir) = std::fs::read_dir(folder.join("runs")) else {
            continue;
        };
        for e in dir.flatten() {
            if let Some(m) = run_meta(&e.path()) {
                if only.is_none_or(|ids| ids.contains(&m.2.run_id)) {
                    metas.push(m);
                }
            }
        }
    }
    metas.sort_by(|a, b| {
        (&a.2.method, a.2.seed, &a.2.run_id).cmp(&(&b.2.method, b.2.seed, &b.2.run_id))
    });
    let runs_total = metas.len();
    let groups: Vec<Group> = combos
        .into_iter()
        .map(|(model, dataset)| {
            let suffix = format!("-{model}-{dataset}.svg");
            let plots = plots
                .iter()
                .filter(|p| p.to_string_lossy().ends_with(&suffix))
                .filter_map(|p| {
                    let svg = std::fs::read_to_string(p).ok()?;
                    // Inline: drop the XML declaration a standalone SVG file starts with.
                    let svg = svg
                        .find("<svg")
                        .map_or(svg.clone(), |i| svg[i..].to_string());
                    let name = p
                        .file_stem()?
                        .to_string_lossy()
                        .trim_end_matches(&suffix[..suffix.len() - 4])
                        .to_string();
                    Some(Plot { name, svg })
                })
                .collect();
            let runs = metas
                .iter()
                .filter(|(m, d, _)| *m == model && *d == dataset)
                .map(|(_, _, r)| r.clone())
                .collect();
            Group {
                model,
                dataset,
                plots,
                runs,
            }
        })
        .collect();
    let title = folders
        .first()
        .and_then(|f| f.file_name())
        .map_or("lrprune report".to_string(), |n| {
            format!("lrprune report: {}", n.to_string_lossy())
        });
    let mut env = minijinja::Environment::new();
    env.add_template("index.html", include_str!("index.html.j2"))?;
    let page = env
        .get_template("index.html")?
        .render(minijinja::context! {
            title, headers, rows, note, groups, runs_total,
            version => env!("CARGO_PKG_VERSION"),
        })?;
    let path = out.join("index.html");
    crate::results::write_atomic(&path, |tmp| Ok(std::fs::write(tmp, &page)?))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
