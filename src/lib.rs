//! lrprune: a reproducible harness for pruning CNN filters by relevance.
//!
//! The modules follow the pipeline, in the order data flows through it:
//! `spec` (TOML experiment → run list) → `assets` (fetch + verify real weights and data)
//! → `data` (decode, preprocess, seeded split) → `model` (fixed backbone + trained head)
//! → `prune` (criteria, masks, compaction, schedules) → `eval` (per-class metrics)
//! → `runner` (sweep, resume) → `results` (atomic Parquet).

pub mod assets;
pub mod bench;
pub mod data;
pub mod eval;
pub mod lrp;
pub mod model;
pub mod prune;
pub mod report;
pub mod results;
pub mod rng;
pub mod runner;
pub mod spec;

pub use anyhow::{Error, Result};
