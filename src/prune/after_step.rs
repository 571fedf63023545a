//! `[pruning] after_step`: what the head goes through after each step (docs/method.md,
//! "After a step"). Only the head changes; the backbone stays the fixed feature extractor.
//! Everything here reads the training split alone.

use crate::data::split::Split;
use crate::model::network::batch_ranges;
use crate::model::prefix::Start;
use crate::model::{head, Network};
use crate::rng;
use crate::spec::{AfterStep, HeadSettings};
use anyhow::Result;
use candle_core::Tensor;

/// How a pruned network gets its head.
pub struct HeadPolicy<'a> {
    after_step: AfterStep,
    head: &'a HeadSettings,
    /// The run's seed: a re-fitted head starts from the same draw as the intact one.
    seed: u64,
    n_classes: usize,
}

impl<'a> HeadPolicy<'a> {
    pub fn new(after_step: AfterStep, head: &'a HeadSettings, seed: u64, n_classes: usize) -> Self {
        Self {
            after_step,
            head,
            seed,
            n_classes,
        }
    }

    /// What the head goes through after a step.
    pub fn after_step(&self) -> AfterStep {
        self.after_step
    }

    /// Whether a pruned network keeps the intact network's head (`after_step = "none"`).
    pub fn keeps_head(&self) -> bool {
        self.after_step == AfterStep::None
    }

    /// `net` (the backbone pruned to a mask, carrying the intact network's head) after the
    /// step, its features taken on `train` (from the stored prefix when `from` is given).
    /// Called once per pruning state, where the state is formed (`Context::form`).
    pub fn apply(
        &self,
        net: Network,
        train: &Split,
        from: Option<Start>,
        batch: usize,
    ) -> Result<Network> {
        if self.keeps_head() {
            return Ok(net);
        }
        let feats = batch_ranges(train.labels.len(), batch)
            .map(|(start, len)| match from {
                Some(f) => f.features(&net, start, len),
                None => net.backbone_forward(&train.images.narrow(0, start, len)?),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let feats = Tensor::cat(&feats, 0)?;
        let ops = match self.after_step {
            AfterStep::None => unreachable!("returned above"),
            AfterStep::Restandardize => head::restandardize(&net.head(), &feats)?,
            AfterStep::RefitHead => head::train(
                &feats,
                &train.labels_tensor()?,
                self.n_classes,
                self.head,
                &mut rng::stream(self.seed, "head"),
            )?,
        };
        Ok(net.with_head(ops))
    }
}
