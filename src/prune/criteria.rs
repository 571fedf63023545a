//! Filter-ranking criteria. A criterion sees the current (compacted) network and the
//! reference split, and scores every alive filter; lower scores are pruned first.
//!
//! LRP and Taylor criteria plug in here without touching the schedule or the runner.

use crate::data::split::Split;
use crate::model::Network;
use anyhow::Result;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// What a criterion may look at. The reference split is the small training split, never the
/// test split (DESIGN §3: test data only draws curves).
pub struct ScoreInput<'a> {
    /// The current network, compacted: conv k has exactly the alive filters of layer k.
    pub net: &'a Network,
    pub reference: &'a Split,
    pub batch_size: usize,
}

pub trait Criterion {
    /// One score per alive filter of each conv, in compacted order.
    fn score(&mut self, input: &ScoreInput) -> Result<Vec<Vec<f64>>>;
}

/// Filter weight norm (Li et al. 2017): `p = 1` for L1, `p = 2` for L2.
pub struct WeightNorm {
    pub p: u8,
}

impl Criterion for WeightNorm {
    fn score(&mut self, input: &ScoreInput) -> Result<Vec<Vec<f64>>> {
        input
            .net
            .convs()
            .map(|c| {
                let w = c.weight.flatten_from(1)?;
                let norm = if self.p == 1 {
                    w.abs()?.sum(1)?
                } else {
                    w.sqr()?.sum(1)?.sqrt()?
                };
                Ok(norm.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?)
            })
            .collect()
    }
}

/// Uniform random scores from the run's seeded stream: a random pruning order.
pub struct RandomScores {
    pub rng: ChaCha8Rng,
}

impl Criterion for RandomScores {
    fn score(&mut self, input: &ScoreInput) -> Result<Vec<Vec<f64>>> {
        Ok(input
            .net
            .filters_per_conv()
            .into_iter()
            .map(|n| (0..n).map(|_| self.rng.random::<f64>()).collect())
            .collect())
    }
}
