//! lrprune's CPU conv kernels (Winograd F(4,3)/F(2,3), im2col + GEMM) against
//! `candle_nn::Conv2d`, on the shapes VGG and its compacted variants produce: odd channel
//! counts, maps of 1×1 to 33×33, padding 0/1, stride 2, fused ReLU; the depthwise kernel
//! and pooling against Candle's ops. (Every SIMD level: `tests/simd_levels.rs`, in its own
//! process because it caps a global.)

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig};
use lrprune::model::conv::{self, Kernel};
use lrprune::model::geometry::{Pad2d, Window};

mod common;

/// max |a − b| / max(1, max |b|): conv outputs of VGG-sized layers reach tens to hundreds.
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let scale = common::max_abs_diff(b, &b.zeros_like().unwrap());
    common::max_abs_diff(a, b) / scale.max(1.0)
}

struct Case {
    batch: usize,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    pad: usize,
    stride: usize,
}

fn check(case: &Case, relu: bool) -> (Kernel, f32) {
    let dev = Device::Cpu;
    // A ReLU'd input, as every conv but the first sees.
    let x = Tensor::randn(0f32, 1.0, (case.batch, case.cin, case.h, case.w), &dev)
        .unwrap()
        .relu()
        .unwrap();
    let std = (2.0 / (case.cin * 9) as f32).sqrt();
    let w = Tensor::randn(0f32, std, (case.cout, case.cin, 3, 3), &dev).unwrap();
    let b = Tensor::randn(0f32, 0.1, case.cout, &dev).unwrap();
    let reference = Conv2d::new(
        w.clone(),
        Some(b.clone()),
        Conv2dConfig {
            padding: case.pad,
            stride: case.stride,
            ..Default::default()
        },
    );
    let mut want = reference.forward(&x).unwrap();
    if relu {
        want = want.relu().unwrap();
    }
    let got = conv::conv2d(&x, &w, Some(&b), case.pad, case.stride, relu).unwrap();
    assert_eq!(got.dims(), want.dims());
    (conv::kernel_for(&x, &w, case.stride), rel_err(&got, &want))
}

fn cases() -> Vec<Case> {
    let c = |batch, cin, cout, h, w, pad, stride| Case {
        batch,
        cin,
        cout,
        h,
        w,
        pad,
        stride,
    };
    vec![
        c(2, 3, 64, 32, 32, 1, 1),  // VGG conv1: im2col
        c(2, 64, 64, 32, 32, 1, 1), // F(4,3)
        c(3, 37, 21, 9, 11, 1, 1),  // compacted: odd channels, partial tiles
        c(2, 128, 70, 8, 8, 1, 1),  // F(4,3), filters not a lane multiple
        c(4, 512, 512, 4, 4, 1, 1), // one F(4,3) tile per image
        c(5, 512, 300, 2, 2, 1, 1), // F(2,3), VGG's last block at 32²
        c(3, 40, 17, 1, 1, 1, 1),   // 1×1 map
        c(2, 33, 16, 33, 33, 1, 1), // many tiles, odd size
        c(2, 24, 8, 10, 10, 0, 1),  // no padding
        c(2, 20, 12, 11, 11, 1, 2), // stride 2: im2col
        c(1, 16, 16, 14, 14, 1, 1), // batch of one
    ]
}

#[test]
fn kernels_match_candle_nn_conv2d_to_1e4() {
    for case in cases() {
        for relu in [false, true] {
            let (kernel, err) = check(&case, relu);
            assert!(
                err <= 1e-4,
                "{}→{} at {}×{} pad {} stride {} relu {relu} ({kernel:?}): rel err {err:e}",
                case.cin,
                case.cout,
                case.h,
                case.w,
                case.pad,
                case.stride
            );
        }
    }
}

#[test]
fn kernel_choice_covers_both_paths_and_leaves_autograd_to_candle() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 64, 8, 8), DType::F32, &dev).unwrap();
    let w = Tensor::zeros((64, 64, 3, 3), DType::F32, &dev).unwrap();
    assert_eq!(conv::kernel_for(&x, &w, 1), Kernel::Winograd);
    assert_eq!(conv::kernel_for(&x, &w, 2), Kernel::Im2col);
    let w3 = Tensor::zeros((64, 3, 3, 3), DType::F32, &dev).unwrap();
    let x3 = Tensor::zeros((1, 3, 8, 8), DType::F32, &dev).unwrap();
    assert_eq!(conv::kernel_for(&x3, &w3, 1), Kernel::Im2col);
    // A tensor on the autograd tape (Taylor's probes) must use Candle's differentiable op.
    let v = candle_core::Var::zeros((1, 64, 8, 8), DType::F32, &dev).unwrap();
    assert_eq!(conv::kernel_for(v.as_tensor(), &w, 1), Kernel::Candle);
    // Its gradient is the transposed convolution: ∂⟨conv(x), s⟩/∂x = convᵀ(s).
    let wr = Tensor::randn(0f32, 0.2, (64, 64, 3, 3), &dev).unwrap();
    let s = Tensor::randn(0f32, 1.0, (1, 64, 8, 8), &dev).unwrap();
    let y = conv::conv2d(v.as_tensor(), &wr, None, 1, 1, false).unwrap();
    let grads = (y * &s).unwrap().sum_all().unwrap().backward().unwrap();
    let want = s.conv_transpose2d(&wr, 1, 0, 1, 1).unwrap();
    assert!(rel_err(grads.get(v.as_tensor()).unwrap(), &want) <= 1e-4);
    // f64 is not a fast-path dtype.
    let x64 = x.to_dtype(DType::F64).unwrap();
    assert_eq!(
        conv::kernel_for(&x64, &w.to_dtype(DType::F64).unwrap(), 1),
        Kernel::Candle
    );
}

#[test]
fn max_pool_matches_candle() {
    let x = Tensor::randn(0f32, 1.0, (3, 5, 9, 7), &Device::Cpu).unwrap();
    let win = Window::new;
    let ours = lrprune::model::pool::max_pool(&x, win(2, 2, 0)).unwrap();
    let theirs = x.max_pool2d_with_stride(2, 2).unwrap();
    assert_eq!(ours.dims(), theirs.dims());
    assert_eq!(rel_err(&ours, &theirs), 0.0);
    // Overlapping and padded (AlexNet's 3/2, ResNet's stem 3/2 pad 1), by hand on a 1×1×3×3
    // map of negative values, so a zero-padded border would win every window.
    let m = Tensor::new(
        &[[[[-1f32, -2., -3.], [-4., -5., -6.], [-7., -8., -9.]]]],
        &Device::Cpu,
    )
    .unwrap();
    let p = lrprune::model::pool::max_pool(&m, win(3, 2, 1)).unwrap();
    assert_eq!(
        p.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        [-1., -2., -4., -5.]
    );
    let o = lrprune::model::pool::max_pool(&m, win(2, 1, 0)).unwrap();
    assert_eq!(
        o.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        [-1., -2., -4., -5.]
    );
}

#[test]
fn depthwise_kernel_and_its_transpose_match_candle() {
    let dev = Device::Cpu;
    for (stride, pad, relu) in [(1, 1, false), (2, 1, true), (2, 0, false), (1, 2, true)] {
        let x = Tensor::randn(0f32, 1.0, (2, 12, 9, 8), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.5, (12, 1, 3, 3), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, 12, &dev).unwrap();
        let got = conv::conv2d_full(&x, &w, Some(&b), Pad2d::same(pad), stride, 12, relu).unwrap();
        let mut want = x
            .conv2d(&w, pad, stride, 1, 12)
            .unwrap()
            .broadcast_add(&b.reshape((1, 12, 1, 1)).unwrap())
            .unwrap();
        if relu {
            want = want.relu().unwrap();
        }
        assert!(rel_err(&got, &want) <= 1e-5, "stride {stride} pad {pad}");
    }
    // Asymmetric (TF-"SAME") padding equals padding the input first.
    let x = Tensor::randn(0f32, 1.0, (1, 4, 7, 7), &dev).unwrap();
    let w = Tensor::randn(0f32, 0.5, (6, 4, 3, 3), &dev).unwrap();
    let pad = Pad2d {
        h: (0, 1),
        w: (1, 0),
    };
    let got = conv::conv2d_full(&x, &w, None, pad, 2, 1, false).unwrap();
    let want = conv::pad_zeros(&x, pad)
        .unwrap()
        .conv2d(&w, 0, 2, 1, 1)
        .unwrap();
    assert!(rel_err(&got, &want) <= 1e-5);
}

/// Removing filters leaves every other output channel bit for bit as it was: the measured
/// layer search takes a pruned conv's output as a channel selection of the unpruned one
/// (src/prune/search/), and its decisions must not depend on which way it went.
#[test]
fn dropping_filters_leaves_the_other_channels_bit_for_bit() {
    let dev = Device::Cpu;
    for (cin, cout, hw, batch) in [
        (64, 64, 32, 7),
        (3, 64, 32, 5),
        (128, 256, 8, 9),
        (512, 512, 2, 11),
        (256, 512, 4, 3),
        (40, 51, 5, 2),
    ] {
        let x = Tensor::randn(0f32, 1.0, (batch, cin, hw, hw), &dev)
            .unwrap()
            .relu()
            .unwrap();
        let w = Tensor::randn(0f32, 0.05, (cout, cin, 3, 3), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, cout, &dev).unwrap();
        let keep: Vec<u32> = (0..cout as u32)
            .filter(|o| o % 7 != 3 && o % 5 != 1)
            .collect();
        let ids = Tensor::new(keep.as_slice(), &dev).unwrap();
        for relu in [false, true] {
            let full = conv::conv2d(&x, &w, Some(&b), 1, 1, relu).unwrap();
            let pruned = conv::conv2d(
                &x,
                &w.index_select(&ids, 0).unwrap(),
                Some(&b.index_select(&ids, 0).unwrap()),
                1,
                1,
                relu,
            )
            .unwrap();
            let selected = full.index_select(&ids, 1).unwrap();
            let a = pruned.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let s = selected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let same = a.iter().zip(&s).all(|(p, q)| p.to_bits() == q.to_bits());
            assert!(
                same,
                "cin {cin} cout {cout} {hw}² relu {relu}: {:?}",
                conv::kernel_for(&x, &w, 1)
            );
        }
    }
}

/// A pruned conv's transformed filters, selected from the unpruned ones' (a recorded
/// selection, as compaction records it), give the very outputs a fresh transform gives.
#[test]
fn transformed_filters_selected_from_the_source_equal_fresh_ones() {
    use lrprune::model::conv::reuse::{record_selection, Selection};
    let dev = Device::Cpu;
    for (cin, cout, hw) in [(64, 64, 8), (128, 256, 4), (512, 512, 2), (40, 51, 6)] {
        let x = Tensor::randn(0f32, 1.0, (3, cin, hw, hw), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.05, (cout, cin, 3, 3), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, cout, &dev).unwrap();
        conv::conv2d(&x, &w, Some(&b), 1, 1, false).unwrap(); // caches w's transform
        for dim in [0usize, 1] {
            let n = w.dims()[dim];
            let keep: Vec<u32> = (0..n as u32).filter(|i| i % 3 != 1).collect();
            let ids = Tensor::new(keep.as_slice(), &dev).unwrap();
            let selected = w.index_select(&ids, dim).unwrap();
            let source = Selection {
                source: w.id(),
                dim,
                indices: std::sync::Arc::new(keep.clone()),
            };
            record_selection(selected.id(), source);
            let fresh = selected.copy().unwrap(); // same values, no recorded source
            let (xs, bs) = match dim {
                0 => (x.clone(), b.index_select(&ids, 0).unwrap()),
                _ => (x.index_select(&ids, 1).unwrap(), b.clone()),
            };
            let got = conv::conv2d(&xs, &selected, Some(&bs), 1, 1, true).unwrap();
            let want = conv::conv2d(&xs, &fresh, Some(&bs), 1, 1, true).unwrap();
            let (g, w2) = (
                got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert!(
                g.iter().zip(&w2).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{cin}→{cout} {hw}² dim {dim}"
            );
        }
    }
}

/// The fused stores (`conv2d_then`: product with a tensor, LRP's stabilised quotient) give
/// the bits of the conv followed by the separate op, on both kernels; the one-pass
/// flipped-swapped kernel equals the index_select construction it replaced.
#[test]
fn fused_epilogues_and_the_flipped_kernel_equal_the_separate_ops_bit_for_bit() {
    use lrprune::model::conv::transpose::flipped_swapped;
    use lrprune::model::conv::Epilogue;
    let dev = Device::Cpu;
    for case in cases() {
        let x = Tensor::randn(0f32, 1.0, (case.batch, case.cin, case.h, case.w), &dev)
            .unwrap()
            .relu()
            .unwrap();
        let w = Tensor::randn(0f32, 0.2, (case.cout, case.cin, 3, 3), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, case.cout, &dev).unwrap();
        let plain = conv::conv2d(&x, &w, Some(&b), case.pad, case.stride, false).unwrap();
        let m = Tensor::randn(0f32, 1.0, plain.shape(), &dev).unwrap();
        let then = |e: Epilogue| conv::conv2d_then(&x, &w, Some(&b), case.pad, case.stride, e);
        let times = then(Epilogue::Times(m.clone())).unwrap();
        assert_eq!(common::bits(&times), common::bits(&(&m * &plain).unwrap()));
        let ratio = then(Epilogue::Ratio {
            r: m.clone(),
            eps: 1e-6,
        })
        .unwrap();
        let want = lrprune::lrp::fused::ratio(&m, &plain, 1e-6).unwrap();
        assert_eq!(common::bits(&ratio), common::bits(&want));
        // The same quotient on Candle's ops (other devices): zennit's stabiliser.
        let ops = lrprune::model::conv::epilogue::stabilized_ratio_ops(&m, &plain, 1e-6).unwrap();
        assert!(
            common::max_abs_diff(&ops, &want)
                <= 1e-6 * common::max_abs_diff(&want, &want.zeros_like().unwrap()).max(1.0)
        );
        // A wrong-sized operand is an error, not a read out of bounds.
        let short = m.narrow(0, 0, 1).unwrap();
        if case.batch > 1 {
            assert!(then(Epilogue::Times(short)).is_err());
        }
    }
    let w = Tensor::randn(0f32, 1.0, (7, 5, 3, 3), &dev).unwrap();
    let rev = |n: usize| Tensor::new((0..n as u32).rev().collect::<Vec<_>>().as_slice(), &dev);
    let slow = w
        .index_select(&rev(3).unwrap(), 2)
        .unwrap()
        .index_select(&rev(3).unwrap(), 3)
        .unwrap()
        .transpose(0, 1)
        .unwrap()
        .contiguous()
        .unwrap();
    let fast = flipped_swapped(&w).unwrap();
    assert_eq!(fast.dims(), &[5, 7, 3, 3]);
    assert_eq!(common::bits(&fast), common::bits(&slow));
}
