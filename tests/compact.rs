//! A zero-masked network and its physically compacted copy compute the same function, and
//! the compacted cost matches the closed-form count.

mod common;
use candle_core::{Device, Tensor};
use lrprune::model::{cost, Linear, Network, Op};
use lrprune::prune::{compact::compact, zeroed, FilterMask, Plan};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn tiny_net(head_flatten: bool) -> Network {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("w.safetensors");
    common::tiny_weights(&w, 3);
    let mut net = common::tiny_backbone(&w, 16);
    let mut layers = Vec::new();
    // 16×16 input → 2×2×16 maps after three pools.
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let features = if head_flatten {
        layers.push(Op::Flatten);
        64
    } else {
        // GAP then a standardised head input, as the runner builds it.
        layers.push(Op::GlobalAvgPool);
        let mean: Vec<f32> = (0..16).map(|_| rng.random_range(0.5..2.0f32)).collect();
        let inv: Vec<f32> = (0..16).map(|_| rng.random_range(0.5..3.0f32)).collect();
        layers.push(Op::Standardize {
            mean: Tensor::new(mean.as_slice(), &Device::Cpu).unwrap(),
            inv_std: Tensor::new(inv.as_slice(), &Device::Cpu).unwrap(),
        });
        16
    };
    let mut lin = |i: usize, o: usize| {
        let w: Vec<f32> = (0..i * o).map(|_| rng.random_range(-0.5..0.5f32)).collect();
        let b: Vec<f32> = (0..o).map(|_| rng.random_range(-0.5..0.5f32)).collect();
        Op::Linear(Linear {
            weight: Tensor::from_vec(w, (o, i), &Device::Cpu).unwrap(),
            bias: Tensor::from_vec(b, o, &Device::Cpu).unwrap(),
        })
    };
    layers.push(lin(features, 12));
    layers.push(Op::Relu);
    layers.push(lin(12, 5));
    // The head is the three linear-layer ops at the end.
    net.head_start = net.nodes.len() + layers.len() - 3;
    for op in layers {
        net.push_chain(op);
    }
    net
}

fn plan(net: &Network) -> Plan {
    Plan::build(net, Default::default(), Default::default()).unwrap()
}

#[test]
fn masked_and_compacted_networks_agree_on_random_masks() {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let x = Tensor::randn(0f32, 1.0, (6, 3, 16, 16), &Device::Cpu).unwrap();
    for head_flatten in [false, true] {
        let net = tiny_net(head_flatten);
        let plan = plan(&net);
        assert_eq!(
            plan.sizes(),
            net.filters_per_conv(),
            "a VGG: one group per conv"
        );
        for trial in 0..10 {
            let mut m = FilterMask::all_alive(&plan.sizes());
            for row in &mut m.keep {
                for k in row.iter_mut() {
                    *k = rng.random::<f64>() > 0.4;
                }
                let n = row.len();
                row[trial % n] = true; // keep every layer non-empty
            }
            let masked = zeroed::zeroed(&net, &plan, &m).unwrap();
            let small = compact(&net, &plan, &m).unwrap();
            assert_eq!(small.filters_per_conv(), m.per_layer());
            let a = masked.forward(&x).unwrap();
            let b = small.forward(&x).unwrap();
            let diff = common::max_abs_diff(&a, &b);
            assert!(
                diff < 1e-4,
                "trial {trial} flatten={head_flatten}: max |Δlogit| = {diff}"
            );
            // Compacted cost = closed form: Σ conv out·in·9·HW + head.
            let alive = m.per_layer();
            let hw = [16 * 16, 8 * 8, 4 * 4];
            let mut conv_macs = 0u64;
            let mut in_c = 3;
            for (l, &a) in alive.iter().enumerate() {
                conv_macs += (a * in_c * 9 * hw[l]) as u64;
                in_c = a;
            }
            let feat = if head_flatten { alive[2] * 4 } else { alive[2] };
            let head_macs = (feat * 12 + 12 * 5) as u64;
            let c = cost::cost(&small);
            assert_eq!(c.conv_macs, conv_macs);
            assert_eq!(c.flops(), 2 * (conv_macs + head_macs));
        }
    }
}

#[test]
fn masking_only_weights_is_not_removal() {
    // Zeroing a filter's weight but not its (positive) bias leaves ReLU(bias) alive, so the
    // output differs from removing the filter; zeroing both equals removal.
    let mut net = tiny_net(false);
    let plan = plan(&net);
    if let Op::Conv(c) = &mut net.nodes[0].op {
        let mut b = c.bias.to_vec1::<f32>().unwrap();
        b[0] = 0.5;
        c.bias = Tensor::new(b.as_slice(), &Device::Cpu).unwrap();
    }
    let mut m = FilterMask::all_alive(&plan.sizes());
    m.keep[0][0] = false;
    let x = Tensor::randn(0f32, 1.0, (2, 3, 16, 16), &Device::Cpu).unwrap();
    let mut weight_only = net.clone();
    if let Op::Conv(c) = &mut weight_only.nodes[0].op {
        let zero = Tensor::zeros((1, 3, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        c.weight = Tensor::cat(&[zero, c.weight.narrow(0, 1, 7).unwrap()], 0).unwrap();
    }
    let removed = compact(&net, &plan, &m).unwrap().forward(&x).unwrap();
    let both = zeroed::zeroed(&net, &plan, &m)
        .unwrap()
        .forward(&x)
        .unwrap();
    let leaky = weight_only.forward(&x).unwrap();
    assert!(common::max_abs_diff(&removed, &both) < 1e-5);
    assert!(
        common::max_abs_diff(&removed, &leaky) > 1e-4,
        "ReLU(bias) must leak through a weight-only mask"
    );
}

#[test]
fn starting_from_the_intact_prefix_changes_nothing() {
    use lrprune::data::split::Split;
    use lrprune::lrp::{composite, filters::filter_relevance};
    use lrprune::model::prefix::PrefixCache;
    let net = tiny_net(false);
    let plan = plan(&net);
    let split = Split {
        images: Tensor::randn(0f32, 1.0, (7, 3, 16, 16), &Device::Cpu)
            .unwrap()
            .abs()
            .unwrap(),
        labels: vec![0, 1, 2, 3, 4, 0, 1],
    };
    let comp = composite::by_name(
        "epsilon-plus",
        lrprune::spec::Preprocess::Torchvision,
        &Device::Cpu,
    )
    .unwrap();
    // Batches of 3 over 7 images: the stored prefix is sliced across a ragged last batch.
    let cache = PrefixCache::build(&net, &split.images, 3, usize::MAX).unwrap();
    let tight = PrefixCache::build(&net, &split.images, 3, 7 * 8 * 16 * 16 * 4).unwrap();
    assert!(tight.depth() < cache.depth(), "the budget limits the depth");
    let mut masks = vec![FilterMask::all_alive(&plan.sizes())];
    for first in 0..3 {
        let mut m = FilterMask::all_alive(&plan.sizes());
        m.keep[first][1] = false;
        m.keep[2][3] = false;
        masks.push(m);
    }
    for m in &masks {
        let small = compact(&net, &plan, m).unwrap();
        let plain = lrprune::eval::logits(&small, &split, 3, None).unwrap();
        let plain_rel = filter_relevance(&small, &split, &comp, 5, 3, None).unwrap();
        for c in [&cache, &tight] {
            let from = plan.start(c, m);
            let fast = lrprune::eval::logits(&small, &split, 3, Some(from)).unwrap();
            assert!(common::max_abs_diff(&plain, &fast) < 1e-5);
            let rel = filter_relevance(&small, &split, &comp, 5, 3, Some(from)).unwrap();
            for (a, b) in plain_rel
                .total()
                .iter()
                .flatten()
                .zip(rel.total().iter().flatten())
            {
                assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{a} vs {b}");
            }
        }
    }
    // Unpruned: the start is the deepest stored layer; pruning conv k starts at conv k.
    let conv_at = net.conv_nodes();
    assert_eq!(plan.start(&cache, &masks[0]).layer, cache.depth() - 1);
    assert_eq!(plan.start(&cache, &masks[2]).layer, conv_at[1]);
}
