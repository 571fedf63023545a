//! LRP: hand-worked rules, winner-take-all pooling, parity with zennit, and conservation on
//! the real VGG16.

mod common;
use candle_core::{Device, Tensor};
use lrprune::lrp::composite::{self, Composite};
use lrprune::lrp::propagate::{per_sample_filter_relevance, propagate};
use lrprune::lrp::rules::{self, LinearOp, Rule};
use lrprune::lrp::steps::max_pool_wta;
use lrprune::model::geometry::Window;
use lrprune::model::{Linear, Network, Op};

fn t2(v: &[f32], r: usize, c: usize) -> Tensor {
    Tensor::from_vec(v.to_vec(), (r, c), &Device::Cpu).unwrap()
}
fn t1(v: &[f32]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}
fn close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < tol, "{a:?} vs {b:?}");
    }
}

const EPS: Rule = Rule::Epsilon { epsilon: 1e-6 };

/// One linear layer, x = [1, 2], W = [[1, −1], [2, 1]], b = [0.5, −1], R(out) = [1, 1].
fn toy_layer(rule: Rule) -> Vec<f32> {
    let x = t2(&[1., 2.], 1, 2);
    let (w, b) = (t2(&[1., -1., 2., 1.], 2, 2), t1(&[0.5, -1.]));
    let r = rules::apply(rule, &LinearOp, &x, &w, &b, &t2(&[1., 1.], 1, 2), None).unwrap();
    r.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn epsilon_rule_two_layer_toy_by_hand() {
    // x = [1, 2]; z1 = W1 x + b1 = [−0.5, 3]; h = [0, 3]; z2 = [1 2]·h = 6; R(out) = 1.
    // Layer 2: R_h = h ⊙ (W2ᵀ (1/6)) = [0, 1]. Layer 1: s = [0, 1/3], R_x = x ⊙ W1ᵀ s = [2/3, 2/3].
    let net = Network::chain(
        vec![
            Op::Linear(Linear {
                weight: t2(&[1., -1., 2., 1.], 2, 2),
                bias: t1(&[0.5, -1.]),
            }),
            Op::Relu,
            Op::Linear(Linear {
                weight: t2(&[1., 2.], 1, 2),
                bias: t1(&[0.]),
            }),
        ],
        0,
        (2, 1, 1),
    );
    let comp = Composite {
        first_conv: EPS,
        conv: EPS,
        linear: EPS,
        bounds: None,
    };
    let rel = propagate(&net, &t2(&[1., 2.], 1, 2), &[0], &comp).unwrap();
    close(
        &rel.input
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        &[2. / 3., 2. / 3.],
        1e-5,
    );

    // One layer with R(out) = [1, 1]: s = [1/−0.5, 1/3], R_x = x ⊙ W1ᵀ s = [−4/3, 14/3].
    close(&toy_layer(EPS), &[-4. / 3., 14. / 3.], 1e-5);
}

#[test]
fn alpha2_beta1_by_hand() {
    // out 0: w = [1, −1], b = 0.5: z⁺ = 1 + 0.5, z⁻ = −2 → 2·[1, 0]/1.5 − [0, −2]/(−2) = [4/3, −1]
    // out 1: w = [2, 1],  b = −1:  z⁺ = 4,       z⁻ = −1 → 2·[2, 2]/4 − 0            = [1, 1]
    let ab = Rule::AlphaBeta {
        alpha: 2.0,
        beta: 1.0,
    };
    close(&toy_layer(ab), &[7. / 3., 0.], 1e-5);
}

fn win(kernel: usize, stride: usize, padding: usize) -> Window {
    Window::new(kernel, stride, padding)
}

#[test]
fn max_pool_routes_relevance_to_the_winner() {
    let x = Tensor::from_vec(
        vec![1f32, 3., 0., 2., 2., 0., 5., 1.],
        (1, 1, 2, 4),
        &Device::Cpu,
    )
    .unwrap();
    let r = Tensor::from_vec(vec![0.7f32, 0.3], (1, 1, 1, 2), &Device::Cpu).unwrap();
    let out = max_pool_wta(&x, &r, win(2, 2, 0))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    close(&out, &[0., 0.7, 0., 0., 0., 0., 0.3, 0.], 1e-7);
}

#[test]
fn fused_cpu_ops_equal_their_candle_op_versions() {
    use lrprune::lrp::fused;
    use lrprune::lrp::steps::max_pool_wta_ops;
    // Odd sizes (cropped border) and exact ties (quantised values, zeros after ReLU).
    let x = (Tensor::randn(0f32, 2.0, (3, 5, 7, 9), &Device::Cpu).unwrap())
        .round()
        .unwrap()
        .relu()
        .unwrap();
    let r = Tensor::randn(0f32, 1.0, (3, 5, 3, 4), &Device::Cpu).unwrap();
    let fast = fused::max_pool_wta(&x, &r, win(2, 2, 0))
        .unwrap()
        .expect("CPU f32 path");
    let ops = max_pool_wta_ops(&x, &r, 2, 2).unwrap();
    assert_eq!(fast.dims(), ops.dims());
    assert!(common::max_abs_diff(&fast, &ops) < 1e-6);
    // Relevance is conserved per window.
    let total = |t: &Tensor| t.sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert!((total(&fast) - total(&r)).abs() < 1e-3);

    let z = Tensor::new(&[[0f32, -0.5, 2.0, -1e-9]], &Device::Cpu).unwrap();
    let rr = Tensor::new(&[[1f32, 1.0, 3.0, 1.0]], &Device::Cpu).unwrap();
    let a = fused::ratio(&rr, &z, 1e-6).unwrap();
    let b = lrprune::model::conv::epilogue::stabilized_ratio_ops(&rr, &z, 1e-6).unwrap();
    let av = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let bv = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (x, y) in av.iter().zip(&bv) {
        assert!((x - y).abs() <= 1e-6 * y.abs(), "{x} vs {y}");
    }
    assert_eq!(av[0], 1e6); // z = 0 → +ε
    assert!((av[2] - 1.5).abs() < 1e-6);
}

#[test]
fn per_filter_relevance_matches_zennit_epsilon_plus() {
    let dir = std::path::Path::new("tests/fixtures/zennit");
    let opts = lrprune::lrp::explain::ExplainOptions {
        model: "8 8 M 16 M".into(),
        batch_norm: false,
        weights: dir.join("weights.safetensors"),
        inputs: dir.join("inputs.safetensors"),
        out: tempfile::tempdir().unwrap().keep().join("r.parquet"),
        composite: "epsilon-plus".into(),
        preprocess: lrprune::spec::Preprocess::CaffeBgr,
        heatmaps: None,
    };
    let ours = lrprune::lrp::explain::explain(&opts, &Device::Cpu).unwrap();
    let reference =
        candle_core::safetensors::load(dir.join("relevance.safetensors"), &Device::Cpu).unwrap();
    let layer = ours.column("layer").unwrap().i64().unwrap().clone();
    let value = ours.column("relevance").unwrap().f64().unwrap().clone();
    let (mut all_ours, mut all_ref) = (vec![], vec![]);
    for k in 0..3 {
        let r = reference[&format!("conv{k}")].to_vec1::<f64>().unwrap();
        let o: Vec<f64> = (0..layer.len())
            .filter(|&i| layer.get(i) == Some(k))
            .map(|i| value.get(i).unwrap())
            .collect();
        assert_eq!(o.len(), r.len());
        for (a, b) in o.iter().zip(&r) {
            let rel = (a - b).abs() / b.abs().max(1e-6);
            assert!(
                rel <= 1e-3,
                "conv {k}: ours {a} vs zennit {b} (relative error {rel})"
            );
        }
        all_ours.extend(o);
        all_ref.extend(r);
    }
    let rho = common::spearman(&all_ours, &all_ref);
    assert!(rho >= 0.999, "Spearman ρ = {rho}");
}

#[test]
fn z_plus_without_bias_conserves_relevance_on_real_vgg16() {
    let spec = lrprune::spec::load(std::path::Path::new("tests/fixtures/real_smoke.toml")).unwrap();
    let task = lrprune::runner::prepare_task(&spec.runs[0], &Device::Cpu).unwrap();
    let comp = composite::by_name(
        "epsilon-plus-nobias",
        lrprune::spec::Preprocess::CaffeBgr,
        &Device::Cpu,
    )
    .unwrap();
    let x = task.data.train.images.narrow(0, 0, 16).unwrap();
    let rel = propagate(&task.net, &x, &task.data.train.labels[..16], &comp).unwrap();
    // Through z⁺ without bias, WTA pooling and ReLU, every conv's output carries the same
    // total as the input image.
    let total = |t: &Tensor| {
        t.to_dtype(candle_core::DType::F64)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let input = total(rel.input.as_ref().unwrap());
    assert!(input.abs() > 1e-3, "no relevance reached the input");
    for (k, r) in rel.conv_outputs.iter().enumerate() {
        let s = total(r);
        assert!(
            (s - input).abs() <= 1e-3 * input.abs(),
            "conv {k}: Σ R = {s}, input Σ R = {input}"
        );
    }
    assert_eq!(per_sample_filter_relevance(&rel).unwrap().len(), 13);
}
