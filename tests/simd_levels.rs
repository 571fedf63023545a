//! Every SIMD level of the conv kernels (baseline, AVX2, and AVX-512 where the CPU has it)
//! gives the same result on the same operands, for both kernels. In its own test binary:
//! it caps a process-wide level, which must not change what other tests run on.

use candle_core::{Device, Tensor};
use lrprune::model::conv::{self, lanes, Kernel};

mod common;

#[test]
fn every_simd_level_gives_the_same_result() {
    let dev = Device::Cpu;
    // (input channels, stride): a Winograd case and an im2col case.
    for (cin, stride, kernel) in [(48, 1, Kernel::Winograd), (8, 2, Kernel::Im2col)] {
        let x = Tensor::randn(0f32, 1.0, (2, cin, 12, 10), &dev)
            .unwrap()
            .relu()
            .unwrap();
        let w = Tensor::randn(0f32, 0.2, (40, cin, 3, 3), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, 40, &dev).unwrap();
        assert_eq!(conv::kernel_for(&x, &w, stride), kernel);
        let want = x
            .conv2d(&w, 1, stride, 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, 40, 1, 1)).unwrap())
            .unwrap()
            .relu()
            .unwrap();
        let mut outs = Vec::new();
        for cap in [Some(lanes::Level::Baseline), Some(lanes::Level::Avx2), None] {
            lanes::cap_level(cap);
            let y = conv::conv2d(&x, &w, Some(&b), 1, stride, true).unwrap();
            outs.push((lanes::level(), y));
        }
        lanes::cap_level(None);
        let scale = common::max_abs_diff(&want, &want.zeros_like().unwrap()).max(1.0);
        for (level, y) in &outs {
            let err = common::max_abs_diff(y, &want) / scale;
            assert!(
                err <= 1e-4,
                "{kernel:?} at {level:?}: rel err {err:e} against Candle"
            );
            let spread = common::max_abs_diff(y, &outs[0].1) / scale;
            assert!(
                spread <= 1e-5,
                "{kernel:?}: {level:?} differs from {:?} by {spread:e}",
                outs[0].0
            );
        }
    }
}
