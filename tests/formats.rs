//! Input formats a user with internet brings: PyTorch `.pth` checkpoints and ImageFolder trees.

mod common;

use candle_core::Device;
use lrprune::data::{self, image_folder, ImageSource};
use lrprune::spec::{DataFormat, DataSettings, DatasetSpec, Preprocess};
use rand::SeedableRng;
use std::path::Path;

#[test]
fn pth_checkpoint_loads_the_same_tensors_as_safetensors() {
    let dir = Path::new("tests/fixtures/zennit");
    let a = lrprune::model::weights::load(&dir.join("weights.safetensors"), &Device::Cpu).unwrap();
    let b = lrprune::model::weights::load(&dir.join("weights.pth"), &Device::Cpu).unwrap();
    assert_eq!(a.len(), b.len());
    for (k, t) in &a {
        assert_eq!(common::max_abs_diff(t, &b[k]), 0.0, "{k}");
    }
}

/// A 20×12 PNG whose red and blue channels are `value`-constant; green varies with `x` and
/// with `variant`, so the images of a class differ (exact duplicates are dropped at load).
fn write_png(path: &Path, value: u8, variant: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(20, 12, |x, _| {
        image::Rgb([value, (x * 10) as u8 + variant, 255 - value])
    });
    img.save(path).unwrap();
}

#[test]
fn image_folder_tree_is_split_and_preprocessed() {
    let dir = tempfile::tempdir().unwrap();
    for (c, v) in [("cat", 10u8), ("dog", 200u8)] {
        for i in 0..5 {
            write_png(&dir.path().join(format!("{c}/{i}.png")), v, i);
        }
    }
    std::fs::write(dir.path().join("cat/notes.txt"), "not an image").unwrap();
    let spec = DatasetSpec {
        name: "pets".into(),
        format: DataFormat::ImageFolder,
        source: dir.path().display().to_string(),
    };
    let sources = data::open(&spec, dir.path()).unwrap();
    assert_eq!(sources.train.class_names(), ["cat", "dog"]);
    assert!(
        sources.test.is_none(),
        "one tree: the test images are held out of it"
    );
    let cfg = DataSettings {
        train_per_class: 2,
        test_per_class: 3,
        classes: vec![],
        batch_size: 4,
        ..DataSettings::default()
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut split = |cfg: &DataSettings| {
        data::split::make(
            &sources,
            cfg,
            16,
            Preprocess::CaffeBgr,
            &mut rng,
            &Device::Cpu,
        )
    };
    let task = split(&cfg).unwrap();
    assert_eq!(task.train.images.dims(), [4, 3, 16, 16]);
    assert_eq!(task.test.labels, [0, 0, 0, 1, 1, 1]);
    // caffe-bgr: channel 0 is blue (255 − v) minus 103.939.
    let px = task
        .train
        .images
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!((px - (245.0 - 103.939)).abs() < 1e-3, "{px}");
    // Asking for more than the tree holds is a clear error.
    let too_many = DataSettings {
        train_per_class: 4,
        ..cfg.clone()
    };
    let e = split(&too_many).err().unwrap();
    assert!(e.to_string().contains("test_per_class"), "{e}");
    // So is a held-out control set the tree has no images left for (2 + 3 of 5 are taken).
    let control = DataSettings {
        control_per_class: 1,
        ..cfg
    };
    let e = split(&control).err().unwrap();
    assert!(e.to_string().contains("data.control_per_class"), "{e}");
    // The tree as scanned: both classes, in name order, with every image found.
    let scanned = image_folder::ImageFolder::scan(dir.path()).unwrap();
    assert_eq!(scanned.class_names(), ["cat", "dog"]);
    // Five images per class (the notes file is not one), sorted by file name.
    assert_eq!(scanned.labels(), [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
    assert_eq!(scanned.image(5).unwrap().data[0], 200);
}

/// Class names are stored as a list, so a `|` inside one (an ImageFolder class named
/// `cat|dog`) no longer shifts the per-class legend.
#[test]
fn class_names_with_a_bar_survive_the_runs_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pets");
    for (c, v) in [("cat|dog", 10u8), ("cow", 200u8)] {
        for i in 0..6 {
            write_png(&data.join(format!("{c}/{i}.png")), v, i);
        }
    }
    common::tiny_weights(&dir.path().join("tiny.safetensors"), 3);
    let spec = dir.path().join("bar.toml");
    std::fs::write(
        &spec,
        format!(
            r#"[experiment]
name = "bar"
seeds = [0]
models = ["tiny"]
datasets = ["pets"]
methods = ["l1"]
results_dir = "{}"

[data]
train_per_class = 2
test_per_class = 2

[pruning]
step = 0.5
max_rate = 0.5

[head]
epochs = 5

[[model]]
name = "tiny"
arch = "custom"
cfg = {}
weights = "tiny.safetensors"
input_size = 16

[[dataset]]
name = "pets"
format = "image-folder"
source = "pets"
"#,
            dir.path().join("out").display(),
            common::TINY_CFG
        ),
    )
    .unwrap();
    common::run_ok(&["run".as_ref(), "--quiet".as_ref(), spec.as_os_str()]);
    let runs = std::fs::read_dir(dir.path().join("out/runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let df = lrprune::results::read_parquet(&runs).unwrap();
    assert_eq!(common::str_list(&df, "class_names"), ["cat|dog", "cow"]);
}

/// An IDX file with a zero image side is refused by name (it used to panic in
/// preprocessing).
#[test]
fn an_idx_file_with_a_zero_dimension_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x-images-idx3-ubyte.gz");
    common::write_idx_gz(&f, &[5, 0, 28], &[]);
    let e = lrprune::data::idx::read(&f).unwrap_err().to_string();
    assert!(
        e.contains("x-images-idx3-ubyte.gz") && e.contains("dimension of 0"),
        "{e}"
    );
}
