//! The seed-aggregated table as Markdown, CSV and LaTeX (booktabs).

use super::summary::METRICS;
use anyhow::Result;
use polars::prelude::*;
use std::fmt::Write;

/// One table row, read out of the aggregated frame for formatting.
struct Row {
    ident: [String; 4],
    seeds: u32,
    /// (mean, sd) per metric in `METRICS` order.
    values: Vec<(Option<f64>, Option<f64>)>,
    ratio_class: Option<f64>,
    ratio_top1: Option<f64>,
    paired_mean: Option<f64>,
    paired_ci: Option<(f64, f64)>,
    wins_losses: Option<(u32, u32)>,
}

fn rows(agg: &DataFrame) -> Result<Vec<Row>> {
    let s = |c: &str| -> Result<StringChunked> { Ok(agg.column(c)?.str()?.clone()) };
    let f = |c: &str| -> Result<Float64Chunked> {
        Ok(agg.column(c)?.cast(&DataType::Float64)?.f64()?.clone())
    };
    let (model, dataset, variant, method) =
        (s("model")?, s("dataset")?, s("variant")?, s("method")?);
    let seeds = agg.column("seeds")?.cast(&DataType::UInt32)?.u32()?.clone();
    let cols: Vec<(Float64Chunked, Float64Chunked)> = METRICS
        .iter()
        .map(|m| Ok((f(&format!("{m}_mean"))?, f(&format!("{m}_sd"))?)))
        .collect::<Result<_>>()?;
    let (rc, rt) = (f("auc_class_ratio")?, f("auc_top1_ratio")?);
    let (pm_, lo, hi) = (
        f("paired_ratio_mean")?,
        f("paired_ci_low")?,
        f("paired_ci_high")?,
    );
    let u = |c: &str| -> Result<UInt32Chunked> {
        Ok(agg.column(c)?.cast(&DataType::UInt32)?.u32()?.clone())
    };
    let (wins, losses) = (u("paired_wins")?, u("paired_losses")?);
    Ok((0..agg.height())
        .map(|i| Row {
            ident: [model.get(i), dataset.get(i), variant.get(i), method.get(i)]
                .map(|v| v.unwrap_or("").to_string()),
            seeds: seeds.get(i).unwrap_or(0),
            values: cols.iter().map(|(m, s)| (m.get(i), s.get(i))).collect(),
            ratio_class: rc.get(i),
            ratio_top1: rt.get(i),
            paired_mean: pm_.get(i),
            paired_ci: lo.get(i).zip(hi.get(i)),
            wins_losses: wins.get(i).zip(losses.get(i)),
        })
        .collect())
}

fn pm(v: (Option<f64>, Option<f64>), pm: &str) -> String {
    match v {
        (Some(m), Some(s)) => format!("{m:.3}{pm}{s:.3}"),
        (Some(m), None) => format!("{m:.3}"),
        _ => "–".into(),
    }
}
fn ratio(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| format!("{r:.2}×"))
}

const HEADERS: [&str; 17] = [
    "model",
    "dataset",
    "variant",
    "method",
    "seeds",
    "AUC class",
    "× base",
    "paired × base [95% CI]",
    "W/L",
    "AUC top-1",
    "× base",
    "AUC harm.",
    "AUC worst",
    "bal@0.5",
    "bal@0.7",
    "bal@0.9",
    "safe rate",
];

/// The paired ratio with its bootstrap interval, e.g. `1.07× [1.02, 1.11]`.
fn paired(r: &Row) -> String {
    match (r.paired_mean, r.paired_ci) {
        (Some(m), Some((lo, hi))) => format!("{m:.2}× [{lo:.2}, {hi:.2}]"),
        (Some(m), None) => format!("{m:.2}×"),
        _ => "–".into(),
    }
}

fn cells(r: &Row, sep: &str) -> Vec<String> {
    let mut c: Vec<String> = r.ident.to_vec();
    c.push(r.seeds.to_string());
    c.push(pm(r.values[0], sep));
    c.push(ratio(r.ratio_class));
    c.push(paired(r));
    c.push(
        r.wins_losses
            .map_or("–".into(), |(w, l)| format!("{w}/{l}")),
    );
    c.push(pm(r.values[1], sep));
    c.push(ratio(r.ratio_top1));
    // AUC of the harmonic mean, of the worst class, then balanced accuracy at 0.5/0.7/0.9.
    for v in &r.values[2..7] {
        c.push(pm(*v, sep));
    }
    c.push(pm(r.values[8], sep));
    c
}

/// The table as column headers and text cells (mean ± sd), for the HTML report.
pub fn grid(agg: &DataFrame) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let headers = HEADERS.iter().map(|h| h.to_string()).collect();
    Ok((
        headers,
        rows(agg)?.iter().map(|r| cells(r, " ± ")).collect(),
    ))
}

pub fn markdown(agg: &DataFrame, baseline: &str) -> Result<String> {
    let mut s = String::new();
    writeln!(s, "| {} |", HEADERS.join(" | "))?;
    writeln!(s, "|{}|", HEADERS.map(|_| "---").join("|"))?;
    for r in rows(agg)? {
        writeln!(s, "| {} |", cells(&r, " ± ").join(" | "))?;
    }
    writeln!(s, "\n{}", note(baseline))?;
    Ok(s)
}

/// What the table's columns mean.
pub fn note(baseline: &str) -> String {
    format!(
        "Mean ± sd over seeds. AUC = normalised area under accuracy vs pruning rate (class = balanced accuracy). \
         × base = ratio of means to `{baseline}`; paired × base = mean over seeds of each seed's class-AUC ratio to `{baseline}` on the same seed, \
         with a bootstrap 95 % interval; W/L = seeds above / below `{baseline}`. AUC harm. / worst = AUC of the harmonic mean of class accuracies / of the worst class. \
         bal@r = balanced accuracy at rate r. safe rate = highest rate with balanced accuracy within 1 point of rate 0."
    )
}

pub fn latex(agg: &DataFrame, baseline: &str) -> Result<String> {
    let esc = |t: &str| {
        t.replace('_', "\\_")
            .replace('%', "\\%")
            .replace('&', "\\&")
    };
    let mut s = String::new();
    writeln!(
        s,
        "% generated by lrprune report; needs \\usepackage{{booktabs}}"
    )?;
    writeln!(
        s,
        "\\begin{{tabular}}{{llll{}}}",
        "r".repeat(HEADERS.len() - 4)
    )?;
    writeln!(s, "\\toprule")?;
    writeln!(
        s,
        "{} \\\\",
        HEADERS
            .map(|h| esc(&h.replace('×', "$\\times$")))
            .join(" & ")
    )?;
    writeln!(s, "\\midrule")?;
    for r in rows(agg)? {
        let c: Vec<String> = cells(&r, " $\\pm$ ")
            .iter()
            .map(|c| esc(c).replace('×', "$\\times$"))
            .collect();
        writeln!(s, "{} \\\\", c.join(" & "))?;
    }
    writeln!(s, "\\bottomrule")?;
    writeln!(s, "\\end{{tabular}}")?;
    writeln!(s, "% ratios relative to {}", esc(baseline))?;
    Ok(s)
}

/// Machine-readable: every aggregated column, raw numbers.
pub fn csv(agg: &DataFrame) -> Result<String> {
    let mut s = String::new();
    let names: Vec<String> = agg
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    writeln!(s, "{}", names.join(","))?;
    for i in 0..agg.height() {
        let row: Vec<String> = agg
            .columns()
            .iter()
            .map(|c| match c.get(i) {
                Ok(AnyValue::Null) | Err(_) => String::new(),
                Ok(AnyValue::String(v)) => format!("\"{}\"", v.replace('"', "\"\"")),
                Ok(v) => v.to_string(),
            })
            .collect();
        writeln!(s, "{}", row.join(","))?;
    }
    Ok(s)
}
