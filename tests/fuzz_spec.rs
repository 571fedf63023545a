//! Spec fuzzing: thousands of mutants of the shipped specs (lines dropped or repeated,
//! values replaced by hostile ones, keys renamed, bytes garbled) through the spec loader.
//! None may panic, and every error must be located: `FILE:LINE: key `K`: …`.
//! Then a few accepted mutants of a tiny spec run end to end under a time limit.

mod common;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

const HOSTILE: &[&str] = &[
    "0",
    "-1",
    "1e300",
    "1e-300",
    "nan",
    "inf",
    "-inf",
    "1.5",
    "100000000",
    "\"\"",
    "\"../../x\"",
    "\"a/b\"",
    "[]",
    "[0, 0]",
    "[99]",
    "{}",
    "true",
    "\"nope\"",
    "[\"M\"]",
    "[0]",
    "2.0",
];

/// One random mutation of `text`.
fn mutate(text: &str, rng: &mut ChaCha8Rng) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    if lines.is_empty() {
        return text.to_string();
    }
    let i = rng.random_range(0..lines.len());
    match rng.random_range(0..6) {
        0 => {
            lines.remove(i);
        }
        1 => {
            let l = lines[i].clone();
            lines.insert(i, l);
        }
        2 | 3 => {
            // Replace a value.
            if let Some((k, _)) = lines[i].split_once('=') {
                let v = HOSTILE[rng.random_range(0..HOSTILE.len())];
                lines[i] = format!("{k}= {v}");
            }
        }
        4 => {
            // Rename a key.
            if let Some((k, v)) = lines[i].split_once('=') {
                lines[i] = format!("{}x ={v}", k.trim_end());
            }
        }
        _ => {
            // Garble a character.
            let mut b: Vec<char> = lines[i].chars().collect();
            if !b.is_empty() {
                let j = rng.random_range(0..b.len());
                b[j] = ['[', ']', '"', '=', '\u{0}', 'é', '{'][rng.random_range(0..7)];
                lines[i] = b.into_iter().collect();
            }
        }
    }
    lines.join("\n")
}

#[test]
fn ten_thousand_mutated_specs_load_or_fail_located() {
    let shipped: Vec<(String, String)> = std::fs::read_dir("experiments")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    assert!(shipped.len() >= 5);
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..10_000 {
        let (file, text) = &shipped[case % shipped.len()];
        let mut mutant = text.clone();
        for _ in 0..rng.random_range(1..4) {
            mutant = mutate(&mutant, &mut rng);
        }
        let path = Path::new(file);
        let result = std::panic::catch_unwind(|| lrprune::spec::parse(path, &mutant))
            .unwrap_or_else(|_| panic!("case {case}: the loader panicked on:\n{mutant}"));
        match result {
            Ok(_) => accepted += 1,
            Err(e) => {
                refused += 1;
                let msg = e.to_string();
                let located = msg
                    .strip_prefix(&format!("{file}:"))
                    .and_then(|rest| rest.split(':').next())
                    .is_some_and(|line| line.parse::<usize>().is_ok_and(|l| l >= 1));
                assert!(
                    located,
                    "case {case}: unlocated error `{msg}` for:\n{mutant}"
                );
                assert!(msg.contains("key `"), "case {case}: no key in `{msg}`");
            }
        }
    }
    assert!(
        accepted > 100 && refused > 1000,
        "accepted {accepted}, refused {refused}"
    );
}

/// Accepted mutants of a tiny spec run to the end (or fail with a located message) within a
/// time limit: no panic, no hang.
#[test]
fn accepted_tiny_mutants_run_without_panic_or_hang() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut ran = 0;
    for case in 0..40 {
        if ran == 8 {
            break;
        }
        let dir = tempfile::tempdir().unwrap();
        let spec = common::tiny_spec(dir.path(), "fz", r#"["l1", "lrp"]"#, "[0]");
        let text = std::fs::read_to_string(&spec).unwrap();
        let mutant = mutate(&text, &mut rng);
        if lrprune::spec::parse(&spec, &mutant).is_err() {
            continue;
        }
        std::fs::write(&spec, &mutant).unwrap();
        ran += 1;
        let mut child = common::lrprune()
            .args(["run", "--quiet", "--resume"])
            .arg(&spec)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed().as_secs() > 120 {
                child.kill().unwrap();
                panic!("case {case}: still running after 120 s:\n{mutant}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(
            !err.contains("panicked"),
            "case {case}: panic:\n{err}\n{mutant}"
        );
        if !status.success() {
            assert!(
                err.contains("fz.toml"),
                "case {case}: error without the spec's name: {err}"
            );
        }
    }
    assert!(ran >= 4, "only {ran} accepted mutants ran");
}
