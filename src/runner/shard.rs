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

/// The most shards a sweep is split into (Slurm's own cap on an array is 4,000,001). Shards
/// past the number of runs get none ([`assign`]), so a larger count is only ever a typo.
pub const MAX_SHARDS: usize = 1_000_000;

impl Shard {
    /// `K/N` with 1 ≤ K ≤ N ≤ [`MAX_SHARDS`], as a user counts shards.
    pub fn parse(s: &str) -> Result<Self> {
        let fix = format!("(fix: --shard K/N with 1 ≤ K ≤ N ≤ {MAX_SHARDS}, e.g. --shard 2/4)");
        let bad = || anyhow::anyhow!("--shard `{s}` {fix}");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let k: usize = k.trim().parse().map_err(|_| bad())?;
        let n: usize = n.trim().parse().map_err(|_| bad())?;
        if k == 0 || k > n || n > MAX_SHARDS {
            return Err(bad());
        }
        Ok(Self {
            index: k - 1,
            count: n,
        })
    }

    /// From a Slurm job array ([`Shard::from_vars`] on the environment).
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// From a Slurm job array's variables (`var(name)`): the task's index within the
    /// array, (`SLURM_ARRAY_TASK_ID` − `SLURM_ARRAY_TASK_MIN`) / `SLURM_ARRAY_TASK_STEP`
    /// (MIN 0 and STEP 1 when unset), of `SLURM_ARRAY_TASK_COUNT` shards: `--array=0-6:2`
    /// runs IDs 0, 2, 4, 6 as shards 1–4 of 4.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let num = |name: &str| -> Result<Option<usize>> {
            var(name)
                .map(|v| {
                    v.trim().parse().map_err(|_| {
                        anyhow::anyhow!("{name}=`{v}` is not a number (fix: run it as a Slurm array job, or give --shard K/N)")
                    })
                })
                .transpose()
        };
        let (Some(id), Some(count)) = (num("SLURM_ARRAY_TASK_ID")?, num("SLURM_ARRAY_TASK_COUNT")?)
        else {
            bail!("--shard-from-env: SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT must be set (fix: run it as a Slurm array job, or give --shard K/N)");
        };
        if count == 0 || count > MAX_SHARDS {
            bail!("SLURM_ARRAY_TASK_COUNT={count} (fix: an array of 1 to {MAX_SHARDS} tasks)");
        }
        let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1);
        if step == 0 {
            bail!("SLURM_ARRAY_TASK_STEP=0 (fix: an array step ≥ 1, e.g. --array=0-6:2)");
        }
        let index = id
            .checked_sub(min)
            .filter(|d| d % step == 0)
            .map(|d| d / step)
            .filter(|i| *i < count)
            .with_context(|| {
                format!("SLURM_ARRAY_TASK_ID={id} is not one of the {count} tasks from SLURM_ARRAY_TASK_MIN={min} in steps of SLURM_ARRAY_TASK_STEP={step} (fix: set them as Slurm does, or give --shard K/N)")
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
    // Shards past the number of runs would get none: leave them out (the same split).
    let mut load = vec![0f64; count.clamp(1, runs.len().max(1))];
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
