//! VGG16's conv parameter and MAC counts against the published figures.

use lrprune::model::arch::{self, vgg, Source, Tail};
use lrprune::model::{cost, Network};
use lrprune::spec::Arch;

fn vgg16(size: usize) -> Network {
    arch::build(
        Arch::Vgg16,
        &[],
        false,
        Source::Shapes,
        (3, size, size),
        Tail::Features,
    )
    .unwrap()
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
    // The one-time Keras conversion names the same 13 convs.
    assert_eq!(
        lrprune::assets::keras_vgg16::VGG16_FEATURE_INDICES.to_vec(),
        vgg::conv_keys(&cfg, false)
    );
}
