//! lrprune: a reproducible harness for pruning CNN filters by relevance.
//!
//! The modules follow the pipeline, in the order data flows through it, and none imports
//! from a later one:
//! `assets` (fetch + verify real weights and data) → `spec` (TOML experiment → run list)
//! → `data` (decode, preprocess, seeded split) → `model` (the network graph, architectures,
//! fixed backbone + trained head) → `eval` (per-class metrics) → `lrp` (relevance by an
//! explicit reverse pass) → `prune` (pruning groups, criteria, masks, compaction, schedules,
//! the controller) → `results` (the Parquet contract, atomic writes) → `runner` (tasks,
//! methods, the sweep) → `report` (tables and plots); `bench` measures them; `rng`, `fsio` (regular files in, atomic
//! writes out) and `sysmem` (memory facts and the `--max-memory` limit) serve all.

pub mod assets;
pub mod bench;
pub mod data;
pub mod eval;
pub mod fsio;
pub mod lrp;
pub mod model;
pub mod prune;
pub mod report;
pub mod results;
pub mod rng;
pub mod runner;
pub mod spec;
pub mod sysmem;

pub use anyhow::{Error, Result};
