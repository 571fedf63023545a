//! The method factory: which schedule and criterion a run's method kind means.

use crate::prune::controller::AccuracyAware;
use crate::prune::criteria::{Criterion, Normalized, RandomScores, Taylor, WeightNorm};
use crate::prune::relevance::LrpCriterion;
use crate::prune::schedule::{GlobalSchedule, Schedule};
use crate::rng;
use crate::spec::{MethodKind, RunConfig};
use anyhow::{bail, Result};
use candle_core::Device;

/// Whether the run's method searches layers by measurement (src/prune/search/), which
/// holds the control split's values: its memory is checked per run (`memory::Estimate`).
pub fn searches_layers(cfg: &RunConfig) -> bool {
    cfg.method.kind == MethodKind::AaLrp && cfg.control_settings().layer_search
}

/// The schedule a method runs. Criteria only ever see the reference (training) split.
pub fn schedule_for(
    cfg: &RunConfig,
    n_classes: usize,
    device: &Device,
) -> Result<Box<dyn Schedule>> {
    // Checked at load for every run of a spec; here for configs made in code.
    if let Err((key, why)) = crate::spec::validate::check_method(cfg) {
        bail!("{why} (key `{key}`)");
    }
    let lrp = || -> Result<Box<dyn Criterion>> {
        let settings = cfg.lrp.clone().unwrap_or_default();
        let composite =
            crate::lrp::composite::by_name(&settings.composite, cfg.model.preprocess, device)?;
        Ok(Box::new(LrpCriterion {
            composite,
            settings,
            n_classes,
        }))
    };
    if cfg.method.kind == MethodKind::AaLrp {
        let lrp = cfg.lrp.clone().unwrap_or_default();
        let composite =
            crate::lrp::composite::by_name(&lrp.composite, cfg.model.preprocess, device)?;
        let control = cfg.control_settings();
        return Ok(Box::new(AccuracyAware::new(
            control,
            lrp,
            cfg.pruning.clone(),
            composite,
            n_classes,
        )));
    }
    let spread = cfg.method.schedule;
    let (criterion, recompute): (Box<dyn Criterion>, bool) = match cfg.method.kind {
        MethodKind::L1 => (Box::new(WeightNorm { p: 1 }), true),
        MethodKind::L2 => (Box::new(WeightNorm { p: 2 }), true),
        MethodKind::Random => (
            Box::new(RandomScores {
                rng: rng::stream(cfg.seed, "random-criterion"),
            }),
            true,
        ),
        MethodKind::Lrp => (lrp()?, true),
        MethodKind::LrpOneshot => (lrp()?, false),
        MethodKind::Taylor => (Box::new(Taylor), true),
        MethodKind::AaLrp => unreachable!("handled above"),
    };
    let criterion = match cfg.method.normalize {
        Some(norm) => Box::new(Normalized {
            inner: criterion,
            norm,
        }),
        None => criterion,
    };
    Ok(Box::new(
        GlobalSchedule::new(criterion, cfg.pruning.clone(), recompute).spread(spread),
    ))
}
