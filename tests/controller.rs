//! The accuracy-aware controller: no test-data leakage, rate control backs off, and with both
//! mechanisms off it is plain iterative LRP.

mod common;
use candle_core::Device;
use lrprune::prune::{FilterMask, Step};
use lrprune::runner::{self, Task};
use lrprune::spec::{AfterStep, ControlSettings, MethodKind, MethodSpec, RunConfig};

fn tiny() -> (tempfile::TempDir, RunConfig) {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::tiny_spec(dir.path(), "aa", r#"["aa-lrp"]"#, "[3]");
    let cfg = lrprune::spec::load(&spec).unwrap().runs.remove(0);
    (dir, cfg)
}

fn with_control(cfg: &RunConfig, control: ControlSettings) -> RunConfig {
    method_config(cfg, "aa-lrp", MethodKind::AaLrp, Some(control))
}

/// `cfg` running method `kind` with its default knobs.
fn plain_method(cfg: &RunConfig, name: &str, kind: MethodKind) -> RunConfig {
    method_config(cfg, name, kind, None)
}

fn method_config(
    cfg: &RunConfig,
    name: &str,
    kind: MethodKind,
    control: Option<ControlSettings>,
) -> RunConfig {
    let mut c = cfg.clone();
    c.method = MethodSpec {
        name: name.into(),
        kind,
        lrp: None,
        control: control.clone(),
        normalize: None,
        schedule: Default::default(),
    };
    c.control = control;
    c
}

/// Every decision a schedule makes, driven the way the runner drives it.
fn decisions(cfg: &RunConfig, task: &Task) -> Vec<Step> {
    decisions_within(cfg, task, runner::memory::search_budget())
}

/// [`decisions`] with the layer search keeping at most `budget` bytes of candidates' values.
fn decisions_within(cfg: &RunConfig, task: &Task, budget: usize) -> Vec<Step> {
    let mut ctx = runner::context(task, cfg);
    ctx.search_budget = budget;
    let mut schedule = runner::schedule_for(cfg, task.data.n_classes(), &Device::Cpu).unwrap();
    let mut state = ctx.form(FilterMask::all_alive(&task.plan.sizes())).unwrap();
    let mut out = Vec::new();
    while let Some(step) = schedule.next(&state, &ctx).unwrap() {
        state = step.pruned.clone();
        out.push(step);
    }
    out
}

fn same(a: &[Step], b: &[Step]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.pruned.mask == y.pruned.mask
                && x.step_size == y.step_size
                && x.backoffs == y.backoffs
                && x.control_acc() == y.control_acc()
        })
}

#[test]
fn permuting_test_labels_changes_no_decision() {
    let (_dir, cfg) = tiny();
    test_labels_change_no_decision(&cfg);
}

/// With the head re-fitted after every step (on training features), still no decision
/// depends on the test split.
#[test]
fn a_refitted_head_reads_no_test_label_either() {
    let (_dir, cfg) = tiny();
    for kind in [AfterStep::RefitHead, AfterStep::Restandardize] {
        let mut c = plain_method(&cfg, "lrp", MethodKind::Lrp);
        c.pruning.after_step = kind;
        test_labels_change_no_decision(&c);
    }
}

/// On the intact network `restandardize` and `refit-head` give back the head it has: the
/// same statistics and the same seeded training on the same features.
#[test]
fn after_step_leaves_an_intact_network_unchanged() {
    let (_dir, cfg) = tiny();
    let task = runner::prepare_task(&cfg, &Device::Cpu).unwrap();
    let x = &task.data.test.images;
    let want = task.net.forward(x).unwrap().to_vec2::<f32>().unwrap();
    for kind in [AfterStep::Restandardize, AfterStep::RefitHead] {
        let mut c = cfg.clone();
        c.pruning.after_step = kind;
        let ctx = runner::context(&task, &c);
        let net = ctx
            .compact(&FilterMask::all_alive(&task.plan.sizes()))
            .unwrap();
        let got = net.forward(x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(got, want, "{kind:?} changed the intact network");
    }
    // Pruning the first conv moves every later feature: each policy gives a head of its
    // own. (Pruning only the last conv would leave the surviving features as they were.)
    let mut mask = FilterMask::all_alive(&task.plan.sizes());
    let half = mask.keep[0].len() / 2;
    mask.keep[0][..half].iter_mut().for_each(|k| *k = false);
    let outputs: Vec<Vec<Vec<f32>>> = [
        AfterStep::None,
        AfterStep::Restandardize,
        AfterStep::RefitHead,
    ]
    .into_iter()
    .map(|kind| {
        let mut c = cfg.clone();
        c.pruning.after_step = kind;
        let net = runner::context(&task, &c).compact(&mask).unwrap();
        net.forward(x).unwrap().to_vec2::<f32>().unwrap()
    })
    .collect();
    assert_ne!(
        outputs[0], outputs[1],
        "restandardize changed nothing when pruned"
    );
    assert_ne!(
        outputs[0], outputs[2],
        "refit-head changed nothing when pruned"
    );
    assert_ne!(outputs[1], outputs[2]);
}

#[test]
fn aa_lrp_with_a_refitted_head_needs_a_control_set() {
    let (_dir, cfg) = tiny();
    let mut c = cfg.clone();
    c.pruning.after_step = AfterStep::RefitHead;
    let err = match runner::schedule_for(&c, 3, &Device::Cpu) {
        Ok(_) => panic!("aa-lrp + refit-head without a control set was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("data.control_per_class"), "{err}");
    c.data.control_per_class = 2;
    assert!(runner::schedule_for(&c, 3, &Device::Cpu).is_ok());
}

fn test_labels_change_no_decision(cfg: &RunConfig) {
    let cfg = cfg.clone();
    let task = runner::prepare_task(&cfg, &Device::Cpu).unwrap();
    let before = decisions(&cfg, &task);
    let rows_before = runner::run_one(&cfg, &task, &indicatif::ProgressBar::hidden()).unwrap();

    let mut shuffled = runner::prepare_task(&cfg, &Device::Cpu).unwrap();
    let n = shuffled.data.test.labels.len();
    shuffled.data.test.labels = (0..n)
        .map(|i| shuffled.data.test.labels[(i * 7 + 3) % n])
        .collect();
    shuffled.intact = lrprune::eval::evaluate(&shuffled.net, &shuffled.data.test, 4, 40).unwrap();
    let after = decisions(&cfg, &shuffled);
    let rows_after = runner::run_one(&cfg, &shuffled, &indicatif::ProgressBar::hidden()).unwrap();

    assert!(!before.is_empty());
    assert!(
        same(&before, &after),
        "a pruning decision changed with the test labels"
    );
    // The runner logged the same decisions, while the test metrics did change.
    let key = |r: &lrprune::results::StepRecord| {
        (
            r.layer_filters.clone(),
            r.step_size,
            r.backoffs,
            r.control_acc,
        )
    };
    assert_eq!(
        rows_before.iter().map(key).collect::<Vec<_>>(),
        rows_after.iter().map(key).collect::<Vec<_>>()
    );
    assert_ne!(
        rows_before
            .iter()
            .map(|r| r.class_acc.clone())
            .collect::<Vec<_>>(),
        rows_after
            .iter()
            .map(|r| r.class_acc.clone())
            .collect::<Vec<_>>(),
        "permuting the test labels should move the test curves"
    );
}

#[test]
fn rate_control_backs_off_when_accuracy_would_drop() {
    let (_dir, cfg) = tiny();
    let task = runner::prepare_task(&cfg, &Device::Cpu).unwrap();
    // Any drop at all is too much: steps that lower A must be halved (down to min_step).
    let strict = with_control(
        &cfg,
        ControlSettings {
            tolerance: 0.0,
            min_step: 0.01,
            ..ControlSettings::paper()
        },
    );
    let steps = decisions(&strict, &task);
    let backed: Vec<&Step> = steps.iter().filter(|s| s.backoffs > 0).collect();
    assert!(!backed.is_empty(), "no back-off although tolerance is 0");
    for s in &backed {
        assert!(
            s.step_size < cfg.pruning.step,
            "a backed-off step kept the full size"
        );
    }
    // Each step's A is logged; a step that lowered A was first halved down to the floor
    // (min_step, at least one filter), never accepted at a larger size.
    let mut prev = 1.0f64;
    let n_total = task.net.filters_per_conv().iter().sum::<usize>() as f64;
    let floor = (2.0 * 0.01 * n_total).round().max(1.0);
    for s in &steps {
        let a = s.control_acc().unwrap();
        if a < prev - 1e-12 {
            assert!(
                s.backoffs > 0 || s.step_size * n_total <= floor,
                "A fell {prev} → {a} on an un-halved step"
            );
            assert!(
                s.step_size * n_total <= floor + 1e-9,
                "A fell {prev} → {a} on a step of {} filters",
                s.step_size * n_total
            );
        }
        prev = a;
    }
    // The curve still reaches max_rate.
    assert!((steps.last().unwrap().pruned.mask.rate() - cfg.pruning.max_rate).abs() < 0.02);

    // A tolerance no drop can exceed never backs off.
    let lax = with_control(
        &cfg,
        ControlSettings {
            tolerance: 10.0,
            ..ControlSettings::paper()
        },
    );
    assert!(decisions(&lax, &task).iter().all(|s| s.backoffs == 0));
}

/// Below a min_step of 1e-12 (the spec refuses it; a program may not) a refused step at
/// one filter was halved and measured again forever; the halvings that cannot change the
/// filters removed are now only counted, and the curve still ends at max_rate.
#[test]
fn a_vanishing_min_step_still_ends_every_backoff() {
    let (_dir, cfg) = tiny();
    let task = runner::prepare_task(&cfg, &Device::Cpu).unwrap();
    let strict = with_control(
        &cfg,
        ControlSettings {
            tolerance: 0.0,
            min_step: 1e-300,
            ..ControlSettings::paper()
        },
    );
    let steps = decisions(&strict, &task);
    assert!(
        steps.iter().any(|s| s.backoffs > 0),
        "no back-off although tolerance is 0"
    );
    assert!((steps.last().unwrap().pruned.mask.rate() - cfg.pruning.max_rate).abs() < 0.02);
}

#[test]
fn both_switches_off_is_plain_lrp() {
    let (_dir, cfg) = tiny();
    let task = runner::prepare_task(&cfg, &Device::Cpu).unwrap();
    let off = with_control(
        &cfg,
        ControlSettings {
            rate_control: false,
            order_control: false,
            ..ControlSettings::paper()
        },
    );
    let lrp = plain_method(&cfg, "lrp", MethodKind::Lrp);
    let (a, b) = (decisions(&off, &task), decisions(&lrp, &task));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.pruned.mask, y.pruned.mask);
        assert!((x.step_size - y.step_size).abs() < 1e-12);
    }
    // And order control alone changes the order (so the equality above is not vacuous).
    let order = with_control(
        &cfg,
        ControlSettings {
            rate_control: false,
            ..ControlSettings::paper()
        },
    );
    assert!(decisions(&order, &task)
        .iter()
        .zip(&b)
        .any(|(x, y)| x.pruned.mask != y.pruned.mask));
}

#[test]
fn switches_off_on_the_intact_relevance_is_one_shot_lrp() {
    use lrprune::spec::RelevanceSource;
    let (_dir, cfg) = tiny();
    let task = runner::prepare_task(&cfg, &Device::Cpu).unwrap();
    let off = with_control(
        &cfg,
        ControlSettings {
            rate_control: false,
            order_control: false,
            layer_aware: false,
            relevance: RelevanceSource::Intact,
            ..ControlSettings::default()
        },
    );
    let oneshot = plain_method(&cfg, "lrp-oneshot", MethodKind::LrpOneshot);
    let (a, b) = (decisions(&off, &task), decisions(&oneshot, &task));
    assert_eq!(a.len(), b.len());
    assert!(a
        .iter()
        .zip(&b)
        .all(|(x, y)| x.pruned.mask == y.pruned.mask));
}

/// `cfg` with the measured layer search on the smoothed A (rate control off).
fn searching(cfg: &RunConfig, take: lrprune::prune::search::Take, fraction: f64) -> RunConfig {
    let control = ControlSettings {
        rate_control: false,
        layer_search: true,
        search_take: take,
        search_fraction: fraction,
        signal: lrprune::spec::Signal::Confidence,
        ..ControlSettings::default()
    };
    with_control(cfg, control)
}

#[test]
fn layer_search_ignores_test_labels_and_meets_every_quota() {
    use lrprune::prune::search::Take;
    let (_dir, cfg) = tiny();
    for take in [Take::Best, Take::Lazy, Take::All] {
        let search = searching(&cfg, take, 0.1);
        let task = runner::prepare_task(&search, &Device::Cpu).unwrap();
        ignores_test_labels_and_meets_every_quota(&search, &task, &format!("{take:?}"));
    }
}

/// `cfg`'s decisions on `task` do not change when the test labels do, keep the fixed grid
/// exactly, and leave no layer below its floor.
fn ignores_test_labels_and_meets_every_quota(cfg: &RunConfig, task: &Task, what: &str) {
    let before = decisions(cfg, task);
    let mut shuffled = runner::prepare_task(cfg, &Device::Cpu).unwrap();
    shuffled.data.test.labels.reverse();
    assert!(same(&before, &decisions(cfg, &shuffled)), "{what}");
    let total = task.net.filters_per_conv().iter().sum::<usize>() as f64;
    for (k, s) in before.iter().enumerate() {
        let want = lrprune::prune::schedule::rate_at(k + 1, &cfg.pruning);
        assert!(
            (s.pruned.mask.rate() - want).abs() <= 0.5 / total + 1e-9,
            "{what} step {k}"
        );
        assert!(s.pruned.mask.per_layer().iter().all(|&n| n >= 1));
    }
}

/// What the layer search keeps between rounds is a matter of speed only: with nothing
/// kept (every candidate measured from the current network, as the search first did), with
/// a little and with everything, every take policy makes the same decisions, bit for bit.
#[test]
fn layer_search_decisions_do_not_depend_on_what_it_keeps() {
    use lrprune::prune::search::Take;
    let (_dir, cfg) = tiny();
    for take in [Take::Best, Take::Lazy, Take::All] {
        let search = searching(&cfg, take, 0.2);
        let task = runner::prepare_task(&search, &Device::Cpu).unwrap();
        let all = decisions_within(&search, &task, usize::MAX);
        assert!(!all.is_empty());
        for budget in [0, 64 << 10] {
            let got = decisions_within(&search, &task, budget);
            assert!(same(&all, &got), "{take:?}, budget {budget}");
        }
    }
    // The screen's own state on a few images a class is carried from step to step with the
    // search's: what it keeps changes no decision either.
    let mut by_images = screened(&cfg, 1, 0.2);
    let mut control = by_images.control.clone().unwrap();
    control.search_screen_images = 2;
    by_images = with_control(&by_images, control);
    let task = runner::prepare_task(&by_images, &Device::Cpu).unwrap();
    let all = decisions_within(&by_images, &task, usize::MAX);
    for budget in [0, 64 << 10] {
        let got = decisions_within(&by_images, &task, budget);
        assert!(same(&all, &got), "screened by images, budget {budget}");
    }
}

/// Under `restandardize` and `refit-head` the search reads each candidate with its head
/// re-standardised on the candidate's own features (and under `refit-head` starts from the
/// step's re-fitted head): its decisions differ from the fixed-head ones, still read no
/// test label, and still do not depend on what it keeps (the kept and the recomputed paths
/// give the same features bit for bit).
#[test]
fn the_search_reads_candidates_under_the_runs_head_policy() {
    use lrprune::prune::search::Take;
    let (_dir, cfg) = tiny();
    let mut search = searching(&cfg, Take::Best, 0.2);
    search.data.control_per_class = 2;
    let task = runner::prepare_task(&search, &Device::Cpu).unwrap();
    let fixed = decisions(&search, &task);
    for kind in [AfterStep::Restandardize, AfterStep::RefitHead] {
        let mut c = search.clone();
        c.pruning.after_step = kind;
        let all = decisions_within(&c, &task, usize::MAX);
        assert!(
            !same(&fixed, &all),
            "{kind:?} searched as with the head fixed"
        );
        assert!(same(&all, &decisions_within(&c, &task, 0)), "{kind:?}");
        test_labels_change_no_decision(&c);
    }
}

/// Rows of an (N, …) tensor, flattened.
fn rows(t: &candle_core::Tensor) -> Vec<Vec<f32>> {
    t.flatten_from(1).unwrap().to_vec2::<f32>().unwrap()
}

#[test]
fn a_held_out_control_set_is_disjoint_and_is_where_a_is_measured() {
    let (_dir, cfg) = tiny();
    let mut held = cfg.clone();
    held.data.control_per_class = 10;
    let plain = runner::prepare_task(&cfg, &Device::Cpu).unwrap();
    let task = runner::prepare_task(&held, &Device::Cpu).unwrap();
    assert!(plain.data.control.is_none());
    // The training and test draws of the seed are unchanged by the extra draw.
    assert_eq!(plain.data.train.labels, task.data.train.labels);
    assert_eq!(
        rows(&plain.data.train.images),
        rows(&task.data.train.images)
    );
    assert_eq!(rows(&plain.data.test.images), rows(&task.data.test.images));
    // Ten per class, none of them an image the head was trained on.
    let control = task.data.control.as_ref().unwrap();
    assert_eq!(control.labels.len(), 40);
    assert!((0..4).all(|c| control.labels.iter().filter(|&&l| l == c).count() == 10));
    let train = rows(&task.data.train.images);
    assert!(rows(&control.images).iter().all(|r| !train.contains(r)));
    // The controller reads A there, so its logged A differs from the one on the training split.
    let paper = ControlSettings::paper();
    let on_train = decisions(&with_control(&cfg, paper.clone()), &plain);
    let on_control = decisions(&with_control(&held, paper), &task);
    let acc = |steps: &[Step]| steps.iter().map(|s| s.control_acc()).collect::<Vec<_>>();
    assert_ne!(acc(&on_train), acc(&on_control));
}

/// `cfg` searching with a screen of `k` offers a round.
fn screened(cfg: &RunConfig, k: usize, fraction: f64) -> RunConfig {
    let mut c = searching(cfg, lrprune::prune::search::Take::Best, fraction);
    let mut control = c.control.clone().unwrap();
    control.search_screen = k;
    c = with_control(&c, control);
    c
}

/// A screen that lets every offer through measures what the exact search measures, so it
/// makes its decisions, bit for bit (the estimates are computed but choose nothing).
#[test]
fn the_screened_search_is_the_exact_search_when_k_covers_every_offer() {
    use lrprune::prune::search::Take;
    let (_dir, cfg) = tiny();
    let exact = searching(&cfg, Take::Best, 0.2);
    let task = runner::prepare_task(&exact, &Device::Cpu).unwrap();
    let want = decisions(&exact, &task);
    let groups = task.plan.groups.len();
    let got = decisions(&screened(&cfg, groups, 0.2), &task);
    assert!(same(&want, &got));
    // Ranked by measuring every offer on 3 control images a class, the same.
    let mut by_images = screened(&cfg, groups, 0.2);
    let mut control = by_images.control.clone().unwrap();
    control.search_screen_images = 3;
    by_images = with_control(&by_images, control);
    assert!(same(&want, &decisions(&by_images, &task)));
    // A narrower screen measures fewer offers and so may choose otherwise, but keeps the
    // grid, the floors and the test labels out of it (ranked by the estimate and by a few
    // images a class alike).
    for images in [0, 2] {
        let mut narrow = screened(&cfg, 1, 0.2);
        let mut control = narrow.control.clone().unwrap();
        control.search_screen_images = images;
        narrow = with_control(&narrow, control);
        ignores_test_labels_and_meets_every_quota(&narrow, &task, &format!("images {images}"));
    }
}

/// The lazy search on a few control images a class (`search_take = "lazy"`,
/// `search_screen_images = m`) decides on those images alone: the control split's other
/// images change no decision (only the A logged on the whole split). It meets every quota
/// and floor, reads no test label, and what it keeps changes nothing.
#[test]
fn the_lazy_search_on_a_few_images_decides_on_them_alone() {
    use lrprune::prune::search::Take;
    let (_dir, cfg) = tiny();
    let mut lazy = searching(&cfg, Take::Lazy, 0.2);
    lazy.data.control_per_class = 4;
    let mut control = lazy.control.clone().unwrap();
    control.search_screen_images = 2;
    lazy = with_control(&lazy, control);
    let task = runner::prepare_task(&lazy, &Device::Cpu).unwrap();
    ignores_test_labels_and_meets_every_quota(&lazy, &task, "lazy on images");
    let all = decisions_within(&lazy, &task, usize::MAX);
    assert!(same(&all, &decisions_within(&lazy, &task, 0)));
    // Zero every control image past the first 2 of its class: the same masks.
    let mut blanked = runner::prepare_task(&lazy, &Device::Cpu).unwrap();
    let split = blanked.data.control.as_mut().unwrap();
    let mut seen = std::collections::HashMap::new();
    let keep: Vec<f32> = (split.labels.iter())
        .map(|l| {
            let n = seen.entry(*l).or_insert(0);
            *n += 1;
            if *n <= 2 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let rows = keep.len();
    let keep = candle_core::Tensor::from_vec(keep, (rows, 1, 1, 1), &Device::Cpu).unwrap();
    split.images = split.images.broadcast_mul(&keep).unwrap();
    let masks = |steps: &[Step]| {
        steps
            .iter()
            .map(|s| s.pruned.mask.clone())
            .collect::<Vec<_>>()
    };
    let got = decisions(&lazy, &blanked);
    assert_eq!(masks(&all), masks(&got));
    // The search on every control image decides otherwise somewhere (it reads more).
    let mut on_all = lazy.clone();
    let mut control = on_all.control.clone().unwrap();
    control.search_screen_images = 0;
    on_all = with_control(&on_all, control);
    let whole = decisions(&on_all, &task);
    assert_ne!(
        masks(&all),
        masks(&whole),
        "the lazy search ignored its images"
    );
}

/// The lazy search screened to k (`search_take = "lazy"`, `search_screen = k`) accepts its
/// cheapest-looking offer only once the k cheapest-looking are measured on the current
/// network: with k covering every group it is the exact search, decision for decision; with
/// k = 1 it is the plain lazy search; in between it meets every quota and reads no test
/// label.
#[test]
fn the_lazy_search_screened_to_every_offer_is_the_exact_search() {
    use lrprune::prune::search::Take;
    let (_dir, cfg) = tiny();
    let exact = searching(&cfg, Take::Best, 0.1);
    let task = runner::prepare_task(&exact, &Device::Cpu).unwrap();
    let lazy = |k: usize| {
        let c = searching(&cfg, Take::Lazy, 0.1);
        let mut control = c.control.clone().unwrap();
        control.search_screen = k;
        with_control(&c, control)
    };
    let want = decisions(&exact, &task);
    let plain = decisions(&lazy(0), &task);
    assert!(
        !same(&want, &plain),
        "the fixture cannot tell lazy from exact"
    );
    let groups = task.plan.groups.len();
    assert!(same(&want, &decisions(&lazy(groups), &task)));
    assert!(same(&plain, &decisions(&lazy(1), &task)));
    ignores_test_labels_and_meets_every_quota(&lazy(2), &task, "lazy, k = 2");
}

/// One default per knob: an `aa-lrp` config made in code without a `control` table runs what
/// a spec's `aa-lrp` without one runs (the chosen variant), not the knobs' field defaults.
#[test]
fn an_aa_lrp_config_without_control_runs_the_chosen_variant() {
    let (_dir, cfg) = tiny();
    assert_eq!(cfg.control, Some(ControlSettings::chosen()));
    let mut bare = cfg.clone();
    bare.control = None;
    assert_eq!(bare.control_settings(), ControlSettings::chosen());
    assert!(runner::searches_layers(&bare));
    let task = runner::prepare_task(&cfg, &Device::Cpu).unwrap();
    assert!(same(&decisions(&cfg, &task), &decisions(&bare, &task)));
}

/// The screen's estimate is the derivative it claims to be: for every channel of every
/// group, the gate derivative ∂A/∂g_c equals a central difference of A with the channel
/// scaled by 1 ± ε — its conv's weight row and bias, or, for the group that feeds the
/// head, its standardised features (where removal zeroes them) — on the control split.
#[test]
fn the_screen_estimate_is_the_derivative_of_a_in_the_channel_gates() {
    use candle_core::Tensor;
    use lrprune::model::{Network, Op};
    use lrprune::prune::plan::Member;
    use lrprune::prune::screen;
    use lrprune::prune::signal::Reader;
    let (_dir, cfg) = tiny();
    let cfg = screened(&cfg, 1, 0.1);
    let task = runner::prepare_task(&cfg, &Device::Cpu).unwrap();
    let ctx = runner::context(&task, &cfg);
    let reader = Reader {
        control: ctx.control,
        signal: lrprune::spec::Signal::Confidence,
        floor: 1e-3,
        n_classes: task.data.n_classes(),
        batch: 7, // several batches, one of them short
        prefix: None,
        plan: &task.plan,
    };
    let full = FilterMask::all_alive(&task.plan.sizes());
    let values: Vec<Vec<Tensor>> =
        lrprune::model::network::batch_ranges(ctx.control.labels.len(), reader.batch)
            .map(|(s, n)| {
                task.net
                    .trace(&ctx.control.images.narrow(0, s, n).unwrap())
                    .unwrap()
            })
            .collect();
    let costs = screen::channel_costs(&task.net, &values, &reader).unwrap();
    // `v` scaled by 1 + t at the positions `range` of its dimension `dim`.
    let scaled = |v: &Tensor, dim: usize, range: std::ops::Range<usize>, t: f64| {
        let n = v.dims()[dim];
        let s: Vec<f32> = (0..n)
            .map(|i| {
                if range.contains(&i) {
                    1.0 + t as f32
                } else {
                    1.0
                }
            })
            .collect();
        let mut shape = vec![1; v.rank()];
        shape[dim] = n;
        v.broadcast_mul(&Tensor::from_vec(s, shape, v.device()).unwrap())
            .unwrap()
    };
    let a_with = |g: usize, c: usize, t: f64| -> f64 {
        let mut net: Network = task.net.clone();
        for m in &task.plan.groups[g].members {
            match *m {
                Member::In { node, hw, .. } => {
                    if let Op::Standardize { inv_std, .. } = &mut net.nodes[node].op {
                        *inv_std = scaled(inv_std, inv_std.rank() - 1, c * hw..(c + 1) * hw, t);
                    }
                }
                Member::Out(n)
                    if !task.plan.groups[g]
                        .members
                        .iter()
                        .any(|m| matches!(task.net.nodes[m.node()].op, Op::Standardize { .. })) =>
                {
                    if let Op::Conv(conv) = &mut net.nodes[n].op {
                        conv.weight = scaled(&conv.weight, 0, c..c + 1, t);
                        conv.bias = scaled(&conv.bias, 0, c..c + 1, t);
                    }
                }
                _ => {}
            }
        }
        reader.measure(&net, &full).unwrap().0
    };
    // Small: at 1e-2 the difference is 3.6% off the limit it converges to (0.6% here).
    let eps = 3e-3;
    let mut worst: f64 = 0.0;
    let mut largest: f64 = 0.0;
    for (g, row) in costs.iter().enumerate() {
        assert_eq!(
            row.len(),
            full.keep[g].len(),
            "group {g}: a cost per channel"
        );
        for (c, &cost) in row.iter().enumerate() {
            let fd = (a_with(g, c, eps) - a_with(g, c, -eps)) / (2.0 * eps);
            worst = worst.max((cost - fd).abs());
            largest = largest.max(fd.abs());
        }
    }
    assert!(largest > 1e-3, "the gates move A ({largest})");
    assert!(
        worst <= 0.02 * largest,
        "max |estimate − difference| = {worst} of {largest}"
    );
}
