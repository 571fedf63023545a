//! The weight baselines as their papers run them: per-layer normalised scores (Yeom et al.)
//! and the layer-uniform schedule (Li et al.), next to the raw global ranking.

mod common;
use candle_core::Device;
use lrprune::prune::criteria::{Normalized, WeightNorm};
use lrprune::prune::{Criterion, FilterMask, ScoreInput};
use lrprune::runner::{self, Task};
use lrprune::spec::{LayerNorm, RunConfig};

/// The tiny task with `methods` (names as a spec lists them), one run per method.
fn tiny(methods: &str) -> (tempfile::TempDir, Vec<RunConfig>) {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::tiny_spec(dir.path(), "base", methods, "[3]");
    let runs = lrprune::spec::load(&spec).unwrap().runs;
    (dir, runs)
}

fn scores(task: &Task, criterion: &mut dyn Criterion) -> Vec<Vec<f64>> {
    criterion
        .score(&ScoreInput {
            net: &task.net,
            plan: &task.plan,
            reference: &task.data.train,
            batch_size: 40,
            from: None,
        })
        .unwrap()
}

/// Indices of `v` sorted by value (ties by index).
fn order(v: &[f64]) -> Vec<usize> {
    let mut i: Vec<usize> = (0..v.len()).collect();
    i.sort_by(|&a, &b| v[a].total_cmp(&v[b]).then(a.cmp(&b)));
    i
}

#[test]
fn normalised_l1_ranks_within_a_layer_exactly_as_raw_l1() {
    let (_dir, runs) = tiny(r#"["l1"]"#);
    let task = runner::prepare_task(&runs[0], &Device::Cpu).unwrap();
    let raw = scores(&task, &mut WeightNorm { p: 1 });
    for norm in [LayerNorm::Sum, LayerNorm::L2] {
        let mut n = Normalized {
            inner: Box::new(WeightNorm { p: 1 }),
            norm,
        };
        let normed = scores(&task, &mut n);
        for (l, (a, b)) in raw.iter().zip(&normed).enumerate() {
            assert_eq!(order(a), order(b), "{norm:?}: layer {l} reordered");
        }
        // …but the layers are put on one scale: the scores themselves changed.
        assert_ne!(raw, normed, "{norm:?} changed nothing");
    }
}

#[test]
fn layer_uniform_takes_the_same_fraction_from_every_layer() {
    let (_dir, runs) = tiny(r#"["l1-uniform", "l1-sum", "l1"]"#);
    let cfg = &runs[0];
    assert_eq!(cfg.method.name, "l1-uniform");
    let task = runner::prepare_task(cfg, &Device::Cpu).unwrap();
    let ctx = runner::context(&task, cfg);
    let mut schedule = runner::schedule_for(cfg, task.data.n_classes(), &Device::Cpu).unwrap();
    let widths = task.plan.sizes();
    let mut state = ctx.form(FilterMask::all_alive(&widths)).unwrap();
    let mut k = 0;
    while let Some(step) = schedule.next(&state, &ctx).unwrap() {
        k += 1;
        state = step.pruned;
        let mask = &state.mask;
        let rate = lrprune::prune::schedule::rate_at(k, &cfg.pruning);
        for (l, &w) in widths.iter().enumerate() {
            let gone = lrprune::prune::select::target_count(rate, w);
            let want = (w - gone).max(cfg.pruning.min_filters_per_layer);
            assert_eq!(mask.alive_in(l), want, "step {k}, layer {l} of width {w}");
        }
    }
    assert!(k > 3, "the schedule stopped after {k} steps");
    // The named methods resolve to what they say.
    assert_eq!(runs[1].method.normalize, Some(LayerNorm::Sum));
    assert_eq!(runs[2].method.normalize, None);
}
