//! Reports: per-run summaries, seed-aggregated tables and comparison plots from the Parquet
//! results of a sweep.

pub mod curve;
pub mod summary;
