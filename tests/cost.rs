//! VGG16's conv parameter and MAC counts against the published figures.

use candle_core::{DType, Device, Tensor};
use lrprune::model::{cost, vgg, Network};
use std::collections::HashMap;

fn vgg16(size: usize) -> Network {
    let cfg = vgg::config("vgg16").unwrap();
    let mut t = HashMap::new();
    let mut in_c = 3;
    for (k, out_c) in vgg::conv_keys(&cfg, false)
        .into_iter()
        .zip(cfg.iter().flatten())
    {
        t.insert(
            format!("features.{k}.weight"),
            Tensor::zeros((*out_c, in_c, 3, 3), DType::F32, &Device::Cpu).unwrap(),
        );
        t.insert(
            format!("features.{k}.bias"),
            Tensor::zeros(*out_c, DType::F32, &Device::Cpu).unwrap(),
        );
        in_c = *out_c;
    }
    let layers = vgg::build_features(&cfg, false, 3, &t, &Device::Cpu).unwrap();
    let head_start = layers.len();
    Network {
        layers,
        head_start,
        input_shape: (3, size, size),
    }
}

#[test]
fn vgg16_conv_params_and_macs() {
    let c224 = cost::cost(&vgg16(224));
    assert_eq!(c224.conv_params, 14_714_688);
    assert_eq!(c224.conv_macs, 15_346_630_656);
    let c32 = cost::cost(&vgg16(32));
    assert_eq!(c32.conv_macs, 313_196_544);
    assert_eq!(vgg16(32).filters_per_conv().iter().sum::<usize>(), 4224);
}

#[test]
fn torchvision_keys_with_batch_norm() {
    let cfg = vgg::config("vgg16").unwrap();
    assert_eq!(
        vgg::conv_keys(&cfg, false),
        vec![0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    );
    assert_eq!(vgg::conv_keys(&cfg, true)[..4], [0, 3, 7, 10]);
}
