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
    pub after_step: AfterStep,
    pub head: &'a HeadSettings,
    /// The run's seed: a re-fitted head starts from the same draw as the intact one.
    pub seed: u64,
    pub n_classes: usize,
}

impl HeadPolicy<'_> {
    /// `net` (a pruned backbone carrying the intact network's head) after the step, its
    /// features taken on `train` (from the stored prefix when `from` is given).
    pub fn apply(
        &self,
        net: Network,
        train: &Split,
        from: Option<Start>,
        batch: usize,
    ) -> Result<Network> {
        if self.after_step == AfterStep::None {
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
