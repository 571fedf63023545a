//! The Parquet results contract (docs/design-choices.md, "Results"): one row per pruning step per run, plus one
//! metadata row per run. Files are written to a temp file and renamed, so a reader never
//! sees a partial file and a killed sweep leaves only whole results behind.

use anyhow::{Context, Result};
use polars::prelude::*;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub step: i64,
    pub pruning_rate: f64,
    pub filters_remaining: i64,
    pub params: i64,
    pub flops: i64,
    pub top1: f64,
    pub balanced_acc: f64,
    pub harmonic_acc: f64,
    pub class_acc: Vec<f64>,
    pub layer_filters: Vec<i64>,
    /// Which channels the step keeps: one string per pruning group, `1` for a kept channel
    /// and `0` for a pruned one, in the unpruned network's order (what `lrprune export
    /// --rate` rebuilds the pruned network from).
    pub kept: Vec<String>,
    pub control_acc: Option<f64>,
    pub step_size: f64,
    pub backoffs: i64,
    pub wall_ms: f64,
}

/// Identity columns repeated on every row of a run.
#[derive(Debug, Clone)]
pub struct RunIdentity {
    pub run_id: String,
    pub experiment: String,
    pub model: String,
    pub dataset: String,
    pub method: String,
    pub variant: String,
    pub seed: i64,
}

pub fn steps_path(dir: &Path, run_id: &str) -> PathBuf {
    dir.join("steps").join(format!("{run_id}.parquet"))
}
pub fn runs_path(dir: &Path, run_id: &str) -> PathBuf {
    dir.join("runs").join(format!("{run_id}.parquet"))
}

/// A list column, one list (a series) per row.
fn list_col(name: &str, rows: Vec<Series>) -> Column {
    Series::new(name.into(), rows).into_column()
}
fn list_f64(name: &str, rows: impl Iterator<Item = Vec<f64>>) -> Column {
    list_col(name, rows.map(|v| Series::new("".into(), v)).collect())
}
fn list_i64(name: &str, rows: impl Iterator<Item = Vec<i64>>) -> Column {
    list_col(name, rows.map(|v| Series::new("".into(), v)).collect())
}
/// A one-row list-of-strings column.
fn list_str(name: &str, values: &[String]) -> Column {
    list_col(name, vec![Series::new("".into(), values)])
}

pub fn steps_frame(id: &RunIdentity, rows: &[StepRecord]) -> Result<DataFrame> {
    let n = rows.len();
    let rep = |name: &str, v: &str| Column::new(name.into(), vec![v.to_string(); n]);
    let col_f = |name: &str, f: fn(&StepRecord) -> f64| {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>())
    };
    let col_i = |name: &str, f: fn(&StepRecord) -> i64| {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>())
    };
    let df = DataFrame::new(
        n,
        vec![
            rep("run_id", &id.run_id),
            rep("experiment", &id.experiment),
            rep("model", &id.model),
            rep("dataset", &id.dataset),
            rep("method", &id.method),
            rep("variant", &id.variant),
            Column::new("seed".into(), vec![id.seed; n]),
            col_i("step", |r| r.step),
            col_f("pruning_rate", |r| r.pruning_rate),
            col_i("filters_remaining", |r| r.filters_remaining),
            col_i("params", |r| r.params),
            col_i("flops", |r| r.flops),
            col_f("top1", |r| r.top1),
            col_f("balanced_acc", |r| r.balanced_acc),
            col_f("harmonic_acc", |r| r.harmonic_acc),
            list_f64("class_acc", rows.iter().map(|r| r.class_acc.clone())),
            list_i64(
                "layer_filters",
                rows.iter().map(|r| r.layer_filters.clone()),
            ),
            list_col(
                "kept",
                rows.iter()
                    .map(|r| Series::new("".into(), &r.kept))
                    .collect(),
            ),
            Column::new(
                "control_acc".into(),
                rows.iter().map(|r| r.control_acc).collect::<Vec<_>>(),
            ),
            col_f("step_size", |r| r.step_size),
            col_i("backoffs", |r| r.backoffs),
            col_f("wall_ms", |r| r.wall_ms),
        ],
    )?;
    Ok(df)
}

pub use crate::fsio::write_atomic;

/// Write `df` to `path` atomically ([`write_atomic`]).
pub fn write_parquet_atomic(path: &Path, df: &mut DataFrame) -> Result<()> {
    write_atomic(path, |tmp| {
        let f = std::fs::File::create(tmp)?;
        write_parquet(f, df)
    })
}

/// A writer that keeps the first I/O error it returned: Parquet's writer turns one into
/// "Invalid thrift: transport error", which says nothing of a full disk.
struct Recorded<W> {
    inner: W,
    error: Option<std::io::Error>,
}

impl<W: std::io::Write> Recorded<W> {
    fn keep<T>(&mut self, r: std::io::Result<T>) -> std::io::Result<T> {
        r.inspect_err(|e| {
            // `io::Error` is not `Clone`: keep the OS code, else the kind and the words.
            let copy = match e.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(e.kind(), e.to_string()),
            };
            self.error.get_or_insert(copy);
        })
    }
}

impl<W: std::io::Write> std::io::Write for Recorded<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.inner.write(buf);
        self.keep(r)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.inner.flush();
        self.keep(r)
    }
}

/// `df` as Parquet into `w` (flushed); an I/O error of `w` comes back as itself, so that
/// [`write_atomic`] can say a full disk is full.
pub fn write_parquet(w: impl std::io::Write, df: &mut DataFrame) -> Result<()> {
    let mut w = Recorded {
        inner: w,
        error: None,
    };
    let written = ParquetWriter::new(&mut w)
        .with_compression(ParquetCompression::Uncompressed)
        .finish(df)
        .map(|_| ());
    let written = written.and_then(|()| std::io::Write::flush(&mut w).map_err(Into::into));
    match (written, w.error) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(io)) => Err(io.into()),
        (Err(e), None) => Err(anyhow::anyhow!("{e}")),
    }
}

/// Remove temp files a killed writer left behind (they are never valid results).
pub fn remove_stale_partials(dir: &Path) -> Result<()> {
    for sub in ["", "steps", "runs", "report"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(".partial-") else {
                continue;
            };
            if !partial_is_stale(rest, &e) {
                continue;
            }
            // Another process starting on the folder may clear it first.
            match std::fs::remove_file(e.path()) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(err).with_context(|| format!("removing {}", e.path().display()));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// A temp file `.partial-<pid>-<host tag>-…` is stale when its pid is gone from this host
/// (a killed writer), or, written on another host sharing the folder (or by a version
/// without the tag), once it is as old as a stale run lock: its writer may still be
/// running there.
fn partial_is_stale(rest: &str, e: &std::fs::DirEntry) -> bool {
    let mut parts = rest.split('-');
    let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
    if parts.next() == Some(crate::fsio::host_tag().as_str()) {
        return !pid.is_some_and(|p| Path::new("/proc").join(p.to_string()).exists());
    }
    let age = e.metadata().and_then(|m| m.modified()).ok();
    age.and_then(|t| t.elapsed().ok())
        .is_some_and(|a| a > crate::fsio::STALE_AFTER)
}

pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    let df = parquet_read(path, |f| ParquetReader::new(f).finish())?;
    check_frame(&df, path)?;
    Ok(df)
}

/// The reader takes a damaged file's column lengths and list offsets as they are: a
/// column shorter than the others, or offsets past its values, would make the first sort
/// or gather read out of bounds or allocate petabytes and abort. Refused here, naming the
/// file and the column.
fn check_frame(df: &DataFrame, path: &Path) -> Result<()> {
    for c in df.columns() {
        let offsets_fit = c.list().map_or(true, |list| {
            list.downcast_iter().all(|arr| {
                let o: &[i64] = arr.offsets().buffer();
                let inside = o.last().is_none_or(|&e| e as usize <= arr.values().len());
                o.first().is_none_or(|&s| s >= 0) && o.is_sorted() && inside
            })
        });
        if c.len() != df.height() || !offsets_fit {
            anyhow::bail!(
                "{}: column `{}` is damaged ({} values for {} rows, or list offsets outside its values) (fix: delete the file and rerun the spec with --resume)",
                path.display(),
                c.name(),
                c.len(),
                df.height()
            );
        }
    }
    Ok(())
}

/// `read` on Parquet file `path`; its error, or a panic of the reader (polars panics on
/// some damaged pages, tests/fuzz_inputs.rs), is an error naming the file.
pub fn parquet_read<T>(
    path: &Path,
    read: impl FnOnce(std::fs::File) -> PolarsResult<T>,
) -> Result<T> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(f))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => anyhow::bail!("{}: not a readable Parquet file: {e}", path.display()),
        Err(_) => anyhow::bail!(
            "{}: not a readable Parquet file (the reader failed on its damaged contents)",
            path.display()
        ),
    }
}

/// What a run's metadata row says beyond its config.
pub struct RunMeta {
    /// Head accuracy on its own training split.
    pub head_train_acc: f64,
    pub n_train: usize,
    pub n_test: usize,
    pub class_names: Vec<String>,
    /// Names of the pruning groups, in the order of the `layer_filters` column.
    pub group_names: Vec<String>,
    pub wall_s: f64,
}

/// One metadata row per run: its full resolved config (JSON), the head's training accuracy,
/// split sizes and the constants a reader needs to interpret the step rows.
pub fn run_frame(
    id: &RunIdentity,
    cfg: &crate::spec::RunConfig,
    meta: &RunMeta,
    device: &candle_core::Device,
    precision: crate::model::precision::Precision,
) -> Result<DataFrame> {
    let s = |name: &str, v: String| Column::new(name.into(), vec![v]);
    let df = DataFrame::new(
        1,
        vec![
            s("run_id", id.run_id.clone()),
            s("experiment", id.experiment.clone()),
            s("model", id.model.clone()),
            s("dataset", id.dataset.clone()),
            s("method", id.method.clone()),
            s("variant", id.variant.clone()),
            Column::new("seed".into(), vec![id.seed]),
            s("config_json", serde_json::to_string(cfg)?),
            s(
                "head_input_norm",
                format!("{:?}", cfg.head.input_norm).to_lowercase(),
            ),
            Column::new("head_train_acc".into(), vec![meta.head_train_acc]),
            Column::new("n_train".into(), vec![meta.n_train as i64]),
            Column::new("n_test".into(), vec![meta.n_test as i64]),
            list_str("class_names", &meta.class_names),
            list_str("group_names", &meta.group_names),
            Column::new("harmonic_floor".into(), vec![crate::eval::HARMONIC_FLOOR]),
            s("device", format!("{device:?}")),
            s("precision", precision.name().to_string()),
            Column::new("wall_s".into(), vec![meta.wall_s]),
            s("lrprune_version", env!("CARGO_PKG_VERSION").to_string()),
        ],
    )?;
    Ok(df)
}

/// A digest of a step file's contents: sha256 over every column but `wall_ms` (the only one
/// that may differ between two runs of the same spec and seed on the CPU) and `kept`,
/// columns in name order, floats by their exact bits. Two result folders agree run for run
/// exactly when their digests do (`lrprune digest`). `kept` (the masks, added later) is
/// left out so that digests compare with those of folders written before it; the masks'
/// counts per group are in `layer_filters`, and different masks would show in the accuracies.
pub fn step_digest(path: &Path) -> Result<String> {
    digest_without(path, &["wall_ms", "kept"])
}

/// The same for a run's metadata file (`runs/`): every column but `wall_s`.
pub fn run_digest(path: &Path) -> Result<String> {
    digest_without(path, &["wall_s"])
}

/// sha256 over every column of `path` but those in `skip`.
fn digest_without(path: &Path, skip: &[&str]) -> Result<String> {
    use sha2::{Digest, Sha256};
    let df = read_parquet(path)?;
    let mut names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .filter(|n| !skip.contains(&n.as_str()))
        .collect();
    names.sort();
    let mut h = Sha256::new();
    for name in &names {
        h.update(name.as_bytes());
        h.update(b"\n");
        for v in df.column(name)?.as_materialized_series().iter() {
            h.update(canonical(&v).as_bytes());
            h.update(b"\n");
        }
    }
    Ok(hex::encode(h.finalize()))
}

fn canonical(v: &AnyValue) -> String {
    match v {
        AnyValue::Float64(f) => format!("{:016x}", f.to_bits()),
        AnyValue::Float32(f) => format!("{:08x}", f.to_bits()),
        AnyValue::List(s) => s
            .iter()
            .map(|x| canonical(&x))
            .collect::<Vec<_>>()
            .join(","),
        other => format!("{other:?}"),
    }
}

/// `run_id digest` for every step file under `dir/steps`, sorted by run id.
pub fn digests(dir: &Path) -> Result<Vec<(String, String)>> {
    let steps = dir.join("steps");
    let mut out = Vec::new();
    for entry in
        std::fs::read_dir(&steps).with_context(|| format!("reading {}", steps.display()))?
    {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("parquet") {
            continue;
        }
        let id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        out.push((id, step_digest(&path)?));
    }
    out.sort();
    Ok(out)
}
