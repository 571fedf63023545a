//! The Taylor criterion against a finite-difference derivative of the loss.

mod common;
use candle_core::{Device, Tensor};
use lrprune::data::split::Split;
use lrprune::model::{Network, Op};
use lrprune::prune::criteria::{Criterion, ScoreInput, Taylor};

fn loss(net: &Network, x: &Tensor, y: &Tensor) -> f64 {
    let logits = net
        .forward(x)
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap();
    candle_nn::loss::cross_entropy(&logits, y)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[test]
fn taylor_scores_match_finite_differences() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::tiny_spec(dir.path(), "taylor", r#"["taylor"]"#, "[1]");
    let cfg = &lrprune::spec::load(&spec).unwrap().runs[0];
    let task = lrprune::runner::prepare_task(cfg, &Device::Cpu).unwrap();
    // One reference image, so |mean over space of a·g| is |∂L/∂(filter scale)| / HW.
    let one = Split {
        images: task.data.train.images.narrow(0, 0, 1).unwrap(),
        labels: task.data.train.labels[..1].to_vec(),
    };
    let y = one.labels_tensor().unwrap();
    let scores = Taylor
        .score(&ScoreInput {
            net: &task.net,
            plan: &task.plan,
            reference: &one,
            batch_size: 1,
            from: None,
        })
        .unwrap();

    let layer = 1; // second conv: 16 filters on an 8×8 map
    let conv_idx = task.net.conv_nodes()[layer];
    let base = loss(&task.net, &one.images, &y);
    let delta = 1e-3;
    let fd: Vec<f64> = (0..16)
        .map(|f| {
            let mut net = task.net.clone();
            if let Op::Conv(c) = &mut net.nodes[conv_idx].op {
                let mut s = vec![1f32; 16];
                s[f] = 1.0 + delta as f32;
                let s = Tensor::new(s.as_slice(), &Device::Cpu).unwrap();
                c.weight = c
                    .weight
                    .broadcast_mul(&s.reshape((16, 1, 1, 1)).unwrap())
                    .unwrap();
                c.bias = (&c.bias * &s).unwrap();
            }
            ((loss(&net, &one.images, &y) - base) / delta).abs()
        })
        .collect();
    let norm = fd.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!(norm > 0.0);
    for (f, (t, d)) in scores[layer].iter().zip(&fd).enumerate() {
        assert!(
            (t - d / norm).abs() < 0.02,
            "filter {f}: taylor {t} vs finite difference {}",
            d / norm
        );
    }
    // Per-layer L2 normalisation.
    let l2: f64 = scores[0].iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!((l2 - 1.0).abs() < 1e-9);
}
