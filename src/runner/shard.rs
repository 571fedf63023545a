//! Splitting a sweep over machines: shard K of N runs a deterministic share of the expanded
//! run list, balanced by an estimate of each run's cost (longest first onto the least loaded
//! shard), so that the slow methods do not all land on one shard. Shards write into one
//! results folder (or several, merged by `lrprune report DIR DIR…`); locks keep a run to one
//! writer (`lock.rs`).

use crate::spec::{MethodKind, RunConfig};
use anyhow::{bail, Context, Result};

/// Shard `index` (0-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// `K/N` with 1 ≤ K ≤ N, as a user counts shards.
    pub fn parse(s: &str) -> Result<Self> {
        let fix = "(fix: --shard K/N with 1 ≤ K ≤ N, e.g. --shard 2/4)";
        let (k, n) = s
            .split_once('/')
            .with_context(|| format!("--shard `{s}` {fix}"))?;
        let (k, n): (usize, usize) = (
            k.trim()
                .parse()
                .with_context(|| format!("--shard `{s}` {fix}"))?,
            n.trim()
                .parse()
                .with_context(|| format!("--shard `{s}` {fix}"))?,
        );
        if k == 0 || k > n {
            bail!("--shard `{s}` {fix}");
        }
        Ok(Self {
            index: k - 1,
            count: n,
        })
    }

    /// From a Slurm job array: `SLURM_ARRAY_TASK_ID` (counted from `SLURM_ARRAY_TASK_MIN`,
    /// 0 if unset) of `SLURM_ARRAY_TASK_COUNT`.
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| -> Result<Option<usize>> {
            match std::env::var(name) {
                Ok(v) => {
                    Ok(Some(v.trim().parse().with_context(|| {
                        format!("{name}=`{v}` is not a number")
                    })?))
                }
                Err(_) => Ok(None),
            }
        };
        let (Some(id), Some(count)) = (var("SLURM_ARRAY_TASK_ID")?, var("SLURM_ARRAY_TASK_COUNT")?)
        else {
            bail!("--shard-from-env: SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT must be set (fix: run it as a Slurm array job, or give --shard K/N)");
        };
        let min = var("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let index = id.checked_sub(min).filter(|i| *i < count).with_context(|| {
            format!("SLURM_ARRAY_TASK_ID={id} is outside {min}..{} (SLURM_ARRAY_TASK_MIN, SLURM_ARRAY_TASK_COUNT)", min + count)
        })?;
        Ok(Self { index, count })
    }
}

/// A run's relative cost: pixels times how many network passes its method makes.
pub fn cost(cfg: &RunConfig) -> f64 {
    let passes = match cfg.method.kind {
        MethodKind::L1 | MethodKind::L2 | MethodKind::Random => 1.0,
        MethodKind::LrpOneshot => 1.5,
        MethodKind::Lrp => 3.0,
        MethodKind::Taylor => 4.0,
        MethodKind::AaLrp => 4.0,
    };
    let px = (cfg.model.input_size * cfg.model.input_size) as f64;
    passes * px * (cfg.data.train_per_class + cfg.data.test_per_class) as f64
}

/// The shard of every run (same order): longest first onto the least loaded shard, ties to
/// the earlier run and the lower shard, so every process computes the same split.
pub fn assign(runs: &[RunConfig], count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| cost(&runs[b]).total_cmp(&cost(&runs[a])).then(a.cmp(&b)));
    let mut load = vec![0f64; count.max(1)];
    let mut shard = vec![0; runs.len()];
    for i in order {
        let s = (0..load.len())
            .min_by(|&x, &y| load[x].total_cmp(&load[y]).then(x.cmp(&y)))
            .unwrap_or(0);
        load[s] += cost(&runs[i]);
        shard[i] = s;
    }
    shard
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_as_users_count_them() {
        assert_eq!(Shard::parse("1/3").unwrap(), Shard { index: 0, count: 3 });
        assert!(
            Shard::parse("0/3").is_err()
                && Shard::parse("4/3").is_err()
                && Shard::parse("x").is_err()
        );
    }
}
