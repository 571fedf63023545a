//! What an adversarial user can reach outside a spec's keys: destinations that are not
//! regular files, files written with the umask's mode, special files read as a spec or as
//! inputs, and `explain` inputs no check has seen (labels, empty batches, tiny images).

mod common;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// `cmd`'s output; a run past 60 s (a read blocked on a FIFO) or a panic fails the test.
fn output(mut cmd: Command) -> Output {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let t0 = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
    let out = loop {
        if let Ok(out) = rx.try_recv() {
            break out;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            // SAFETY: kill(2) on the child this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{cmd:?} blocked for 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked"),
        "a panic instead of an error: {err}"
    );
    out
}

/// `lrprune ARGS` under umask 022, as (exit ok, stderr).
fn lrprune(args: &[&std::ffi::OsStr]) -> (bool, String) {
    use std::os::unix::process::CommandExt;
    let mut cmd = common::lrprune();
    cmd.args(args);
    // SAFETY: umask(2) only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    let out = output(cmd);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

fn is_fifo(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Tiny features `8 M 16 M 16 M` with a 4-class linear head on global-average-pooled
/// features, and `extra` tensors beside them.
fn explain_weights(dir: &Path, extra: &[(&str, Tensor)]) -> PathBuf {
    let path = dir.join("w.safetensors");
    common::tiny_weights(&path, 5);
    let mut map = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let w = Tensor::randn(0f32, 0.3, (4, 16), &Device::Cpu).unwrap();
    map.insert("classifier.0.weight".into(), w);
    map.insert(
        "classifier.0.bias".into(),
        Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    for (k, t) in extra {
        map.insert(k.to_string(), t.clone());
    }
    candle_core::safetensors::save(&map, &path).unwrap();
    path
}

fn explain_inputs(dir: &Path, name: &str, n: usize, size: usize, labels: &[i64]) -> PathBuf {
    explain_inputs_of(dir, name, (n, 3, size, size), labels)
}

fn explain_inputs_of(
    dir: &Path,
    name: &str,
    shape: (usize, usize, usize, usize),
    labels: &[i64],
) -> PathBuf {
    let path = dir.join(name);
    let mut map = HashMap::new();
    let images = if shape.0 == 0 {
        Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu).unwrap()
    } else {
        Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap()
    };
    map.insert("images".to_string(), images);
    map.insert(
        "labels".to_string(),
        Tensor::new(labels, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&map, &path).unwrap();
    path
}

/// `lrprune explain` on the tiny checkpoint, writing `out`.
fn explain(weights: &Path, inputs: &Path, out: &Path) -> (bool, String) {
    lrprune(&[
        "explain".as_ref(),
        "--model".as_ref(),
        "8 M 16 M 16 M".as_ref(),
        "--weights".as_ref(),
        weights.as_os_str(),
        "--inputs".as_ref(),
        inputs.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ])
}

/// `--out` that is a FIFO, a symlink, a directory or a device is refused by name and left
/// as it was (a rename used to replace even /dev/null with a Parquet file); a regular file
/// is written with the umask's mode, 0644 under 022.
#[test]
fn explain_refuses_special_destinations_and_writes_with_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let w = explain_weights(d, &[]);
    let inputs = explain_inputs(d, "in.safetensors", 3, 16, &[0, 1, 3]);

    let fifo = d.join("fifo.parquet");
    mkfifo(&fifo);
    let (ok, err) = explain(&w, &inputs, &fifo);
    assert!(
        !ok && err.contains("fifo.parquet") && err.contains("a FIFO") && err.contains("fix"),
        "{err}"
    );
    assert!(is_fifo(&fifo), "the FIFO was replaced");

    let target = d.join("target.parquet");
    std::fs::write(&target, b"keep").unwrap();
    let link = d.join("link.parquet");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (ok, err) = explain(&w, &inputs, &link);
    assert!(
        !ok && err.contains("link.parquet") && err.contains("a symlink"),
        "{err}"
    );
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");

    let (ok, err) = explain(&w, &inputs, d);
    assert!(!ok && err.contains("a directory"), "{err}");

    let (ok, err) = explain(&w, &inputs, Path::new("/dev/null"));
    assert!(
        !ok && err.contains("/dev/null") && err.contains("a device"),
        "{err}"
    );
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());

    let out = d.join("r.parquet");
    let (ok, err) = explain(&w, &inputs, &out);
    assert!(ok, "{err}");
    assert_eq!(mode(&out), 0o644, "written under umask 022");
    // Over an existing regular file is fine.
    let (ok, err) = explain(&w, &inputs, &out);
    assert!(ok, "{err}");

    // Heatmaps go through the same check, file by file.
    let maps = d.join("maps");
    std::fs::create_dir(&maps).unwrap();
    mkfifo(&maps.join("sample_0001.png"));
    let with_maps = |maps: &Path| {
        lrprune(&[
            "explain".as_ref(),
            "--model".as_ref(),
            "8 M 16 M 16 M".as_ref(),
            "--weights".as_ref(),
            w.as_os_str(),
            "--inputs".as_ref(),
            inputs.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--heatmaps".as_ref(),
            maps.as_os_str(),
        ])
    };
    let (ok, err) = with_maps(&maps);
    assert!(
        !ok && err.contains("sample_0001.png") && err.contains("a FIFO"),
        "{err}"
    );
    assert!(is_fifo(&maps.join("sample_0001.png")));
    assert_eq!(mode(&maps.join("sample_0000.png")), 0o644);
    let (ok, err) = with_maps(&fifo);
    assert!(
        !ok && err.contains("--heatmaps") && err.contains("not a directory"),
        "{err}"
    );
}

/// `explain` checks what `run` checks at load: labels within the head's classes, a
/// non-empty batch, images at least the network's minimum, all-or-nothing
/// standardisation. Each is an error naming the tensor and the file, never a panic.
#[test]
fn explain_refuses_bad_inputs_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let w = explain_weights(d, &[]);
    let out = d.join("r.parquet");
    // (file, images, size, labels, words of the error)
    type Case<'a> = (&'a str, usize, usize, &'a [i64], &'a [&'a str]);
    let cases: [Case; 5] = [
        (
            "big.safetensors",
            2,
            16,
            &[0, 4],
            &["`labels`[1] = 4", "4 classes"],
        ),
        ("neg.safetensors", 2, 16, &[-1, 0], &["`labels`[0] = -1"]),
        ("empty.safetensors", 0, 16, &[], &["no image"]),
        ("tiny.safetensors", 2, 2, &[0, 1], &["2×2", "at least 8×8"]),
        ("count.safetensors", 2, 16, &[0], &["1 labels for 2 images"]),
    ];
    for (name, n, size, labels, words) in cases {
        let inputs = explain_inputs(d, name, n, size, labels);
        let (ok, err) = explain(&w, &inputs, &out);
        assert!(!ok, "{name} was accepted");
        for word in words.iter().chain(&[name, "--inputs", "fix"]) {
            assert!(err.contains(word), "{name}: `{word}` not in: {err}");
        }
        assert!(!out.exists(), "{name}: wrote a result");
    }
    // Grey images for an RGB network: named, not a conv's shape error.
    let grey = explain_inputs_of(d, "grey.safetensors", (2, 1, 16, 16), &[0, 1]);
    let (ok, err) = explain(&w, &grey, &out);
    assert!(
        !ok && err.contains("grey.safetensors")
            && err.contains("1×16×16")
            && err.contains("features.0.weight")
            && err.contains("fix"),
        "{err}"
    );
    // Half a standardisation is not silently skipped.
    let mean = Tensor::zeros(16, candle_core::DType::F32, &Device::Cpu).unwrap();
    let half = explain_weights(d, &[("standardize.inv_std", mean)]);
    let inputs = explain_inputs(d, "ok.safetensors", 2, 16, &[0, 1]);
    let (ok, err) = explain(&half, &inputs, &out);
    assert!(
        !ok && err.contains("standardize.mean") && err.contains("fix"),
        "{err}"
    );
}

/// A FIFO or a device as the spec or as `explain --inputs` is refused up front instead of
/// blocking (FIFO) or being read until memory runs out (/dev/zero); a spec over 16 MiB is
/// refused by name.
#[test]
fn special_and_oversized_input_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = d.join("spec.toml");
    mkfifo(&fifo);
    for spec in [fifo.as_path(), Path::new("/dev/zero")] {
        let (ok, err) = lrprune(&["inspect".as_ref(), spec.as_os_str()]);
        assert!(
            !ok && err.contains(&*spec.to_string_lossy()) && err.contains("not a regular file"),
            "{err}"
        );
    }
    let big = d.join("big.toml");
    std::fs::write(&big, vec![b'#'; (16 << 20) + 1]).unwrap();
    let (ok, err) = lrprune(&["inspect".as_ref(), big.as_os_str()]);
    assert!(
        !ok && err.contains("big.toml") && err.contains("bytes, over the"),
        "{err}"
    );

    let w = explain_weights(d, &[]);
    let (ok, err) = explain(&w, &fifo, &d.join("r.parquet"));
    assert!(
        !ok && err.contains("--inputs") && err.contains("a FIFO"),
        "{err}"
    );
    assert!(is_fifo(&fifo));
}

/// `report --out` and `export --out` (folders) must be a directory or absent; the report's
/// files are written with the umask's mode.
#[test]
fn report_and_export_destinations_are_checked_and_readable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("res");
    tiny_results(&d);

    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    for bad in [fifo.as_path(), Path::new("/dev/null")] {
        let (ok, err) = lrprune(&[
            "report".as_ref(),
            d.as_os_str(),
            "--out".as_ref(),
            bad.as_os_str(),
        ]);
        assert!(
            !ok && err.contains("--out") && err.contains("not a directory"),
            "{err}"
        );
    }
    assert!(is_fifo(&fifo));
    let (ok, err) = lrprune(&["report".as_ref(), d.as_os_str()]);
    assert!(ok, "{err}");
    for f in ["summary.parquet", "report/summary.md", "report/index.html"] {
        assert_eq!(mode(&d.join(f)), 0o644, "{f} under umask 022");
    }

    let spec = common::tiny_spec(dir.path(), "ex", r#"["l1"]"#, "[0]");
    let (ok, err) = lrprune(&[
        "export".as_ref(),
        spec.as_os_str(),
        "--out".as_ref(),
        "/dev/null".as_ref(),
    ]);
    assert!(
        !ok && err.contains("/dev/null") && err.contains("not a directory"),
        "{err}"
    );
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
}

/// `lrprune ARGS` with every file it writes capped at `limit` bytes (`ulimit -f`, SIGXFSZ
/// ignored: a write past the cap fails with EFBIG, the way one fails on a full disk), as
/// (exit ok, stderr).
fn lrprune_capped(args: &[&std::ffi::OsStr], limit: u64) -> (bool, String) {
    use std::os::unix::process::CommandExt;
    let mut cmd = common::lrprune();
    cmd.args(args);
    // SAFETY: signal(2) and setrlimit(2) only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let cap = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &cap) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = output(cmd);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One run's step rows in results folder `d` (model `m`, dataset `d`), for `report`; returns
/// the rows' frame.
fn tiny_results(d: &Path) -> polars::prelude::DataFrame {
    use lrprune::results::{self, RunIdentity, StepRecord};
    let rec = |step: i64, rate: f64| StepRecord {
        step,
        pruning_rate: rate,
        filters_remaining: 10,
        params: 100,
        flops: 100,
        top1: 0.5,
        balanced_acc: 0.5,
        harmonic_acc: 0.5,
        class_acc: vec![0.5, 0.5],
        layer_filters: vec![10],
        kept: vec![],
        control_acc: None,
        step_size: 0.5,
        backoffs: 0,
        wall_ms: 1.0,
    };
    let id = RunIdentity {
        run_id: "m-d-a-s0".into(),
        experiment: "t".into(),
        model: "m".into(),
        dataset: "d".into(),
        method: "a".into(),
        variant: String::new(),
        seed: 0,
    };
    let mut df = results::steps_frame(&id, &[rec(0, 0.0), rec(1, 0.5)]).unwrap();
    results::write_parquet_atomic(&results::steps_path(d, &id.run_id), &mut df).unwrap();
    df
}

/// Names in `dir` that are a writer's temp files.
fn partials(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".partial-"))
                .collect()
        })
        .unwrap_or_default()
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// A write that fails for want of space names the file and the cause in words: Parquet's
/// "Invalid thrift: transport error" hid a full disk, and a figure's failure was a Debug
/// dump of plotters' nested errors. Nothing half-written is left at the destination or as a
/// temp file.
#[test]
fn a_failed_write_names_the_file_and_the_cause_and_leaves_nothing() {
    use lrprune::results;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut df = tiny_results(&d.join("res"));

    // Parquet into /dev/full, whose every write fails with ENOSPC.
    let dest = d.join("steps.parquet");
    let e = results::write_atomic(&dest, |_tmp| {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full")?;
        results::write_parquet(full, &mut df)
    })
    .unwrap_err();
    let msg = format!("{e:#}");
    for word in ["steps.parquet", "the device is full", "ENOSPC", "fix"] {
        assert!(msg.contains(word), "`{word}` not in: {msg}");
    }
    assert!(!msg.contains("thrift"), "{msg}");
    assert!(!dest.exists() && partials(d).is_empty());

    // The binary, its files capped in size: first the report's Parquet summary fails,
    // then (with room for the tables) its first figure.
    let res = d.join("res");
    let report = || lrprune_capped(&["report".as_ref(), res.as_os_str()], 1 << 30);
    let (ok, err) = report();
    assert!(ok, "{err}");
    let before_figures = [
        "summary.parquet",
        "report/summary.md",
        "report/summary.csv",
        "report/summary.tex",
    ]
    .iter()
    .map(|f| size(&res.join(f)))
    .max()
    .unwrap();
    let png = res.join("report/top1_vs_rate-m-d.png");
    let room = before_figures + 1;
    assert!(size(&png) > room, "the figure must not fit under the cap");
    std::fs::remove_dir_all(res.join("report")).unwrap();
    std::fs::remove_file(res.join("summary.parquet")).unwrap();

    let capped = |limit| lrprune_capped(&["report".as_ref(), res.as_os_str()], limit);
    let (ok, err) = capped(64);
    assert!(!ok);
    for word in ["summary.parquet", "size limit", "EFBIG", "fix"] {
        assert!(err.contains(word), "`{word}` not in: {err}");
    }
    assert!(!err.contains("thrift"), "{err}");
    assert!(!res.join("summary.parquet").exists() && partials(&res).is_empty());

    let (ok, err) = capped(room);
    assert!(!ok);
    for word in ["top1_vs_rate-m-d.png", "size limit", "EFBIG", "fix"] {
        assert!(err.contains(word), "`{word}` not in: {err}");
    }
    for dump in [
        "BackendError",
        "DrawingError",
        "Os {",
        "ImageError(",
        "IoError(",
    ] {
        assert!(!err.contains(dump), "a Debug dump: {err}");
    }
    assert!(!png.exists() && partials(&res.join("report")).is_empty());
}

/// A file where a folder must be (the asset cache's downloads folder, a results folder, a
/// parent of one) is named with the fix, not reported as a bare `File exists (os error 17)`.
#[test]
fn a_file_in_a_folders_place_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cache = d.join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::write(cache.join("downloads"), b"not a folder").unwrap();
    // Fails before any download: the package client is never started.
    let out = output({
        let mut c = common::lrprune();
        c.args(["fetch", "mnist-5k"]).env("LRPRUNE_CACHE", &cache);
        c
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let downloads = cache.join("downloads").display().to_string();
    assert!(
        err.contains(&downloads) && err.contains("a regular file") && err.contains("fix"),
        "{err}"
    );

    let spec = common::tiny_spec(d, "fe", r#"["l1"]"#, "[0]");
    let file = d.join("taken");
    std::fs::write(&file, b"x").unwrap();
    for (results, words) in [
        (file.clone(), ["taken", "not a folder"]),
        (file.join("sub"), ["taken is a file", "not a folder"]),
    ] {
        let (ok, err) = lrprune(&[
            "run".as_ref(),
            "--quiet".as_ref(),
            "--results-dir".as_ref(),
            results.as_os_str(),
            spec.as_os_str(),
        ]);
        assert!(!ok);
        for word in words.iter().chain(&["fix"]) {
            assert!(err.contains(word), "`{word}` not in: {err}");
        }
        assert!(!err.contains("(os error"), "{err}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

/// Standardisation vectors of the wrong length in an exported checkpoint are refused
/// naming the tensor, the file and the length the head reads, not as a shape error from
/// deep in the forward pass.
#[test]
fn explain_refuses_a_standardisation_of_the_wrong_length() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("r.parquet");
    let inputs = explain_inputs(d, "in.safetensors", 2, 16, &[0, 1]);
    let vec = |n: usize| Tensor::ones(n, candle_core::DType::F32, &Device::Cpu).unwrap();
    let good = explain_weights(
        d,
        &[
            ("standardize.mean", vec(16)),
            ("standardize.inv_std", vec(16)),
        ],
    );
    let (ok, err) = explain(&good, &inputs, &out);
    assert!(ok, "{err}");
    for (mean, inv_std, bad) in [(30, 16, "standardize.mean"), (16, 5, "standardize.inv_std")] {
        let w = explain_weights(
            d,
            &[
                ("standardize.mean", vec(mean)),
                ("standardize.inv_std", vec(inv_std)),
            ],
        );
        let (ok, err) = explain(&w, &inputs, &out);
        assert!(!ok, "{bad} accepted");
        for word in [bad, "w.safetensors", "16 features", "fix"] {
            assert!(err.contains(word), "`{word}` not in: {err}");
        }
        assert!(!err.contains("shape mismatch"), "{err}");
    }
}
