//! The LRP pruning criterion: per-conv relevance (`lrp::filters`) combined over each pruning
//! group's producing convs, then optionally |·| and normalised per group (Yeom et al.:
//! v / Σ v).

use super::criteria::{postprocess, Criterion, ScoreInput};
use super::plan::Plan;
use crate::lrp::filters::filter_relevance;
use crate::lrp::{Composite, FilterRelevance};
use crate::spec::LrpSettings;
use anyhow::Result;

/// Per-conv relevance combined into per-group relevance, class by class.
pub fn grouped(plan: &Plan, rel: &FilterRelevance) -> FilterRelevance {
    let classes = rel.per_class.first().map_or(0, Vec::len);
    let per_class_groups: Vec<Vec<Vec<f64>>> = (0..classes)
        .map(|c| {
            let per_conv: Vec<Vec<f64>> = rel.per_class.iter().map(|k| k[c].clone()).collect();
            plan.group_scores(&per_conv)
        })
        .collect();
    FilterRelevance {
        per_class: (0..plan.groups.len())
            .map(|g| per_class_groups.iter().map(|c| c[g].clone()).collect())
            .collect(),
    }
}

/// LRP filter ranking on the reference split.
pub struct LrpCriterion {
    pub composite: Composite,
    pub settings: LrpSettings,
    pub n_classes: usize,
}

impl Criterion for LrpCriterion {
    fn score(&mut self, input: &ScoreInput) -> Result<Vec<Vec<f64>>> {
        let rel = filter_relevance(
            input.net,
            input.reference,
            &self.composite,
            self.n_classes,
            input.batch_size,
            input.from,
        )?;
        Ok(postprocess(
            grouped(input.plan, &rel).total(),
            self.settings.abs,
            self.settings.normalize,
        ))
    }
}
