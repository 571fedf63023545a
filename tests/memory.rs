//! The memory estimate of a run that uses the measured layer search: what it adds, and the
//! refusal that names it.

mod common;
use lrprune::runner::memory::{self, Estimate};

/// The search holds every value of the current network on the control split; a ReLU fused
/// into its conv is the conv's own tensor, so it is counted once.
#[test]
fn the_layer_search_adds_its_control_split_values_once_per_fused_relu() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("w.safetensors");
    common::tiny_weights(&w, 3);
    let net = common::tiny_backbone(&w, 16);
    let e = memory::estimate(&net, &[20, 30], 5);
    assert_eq!(e.search, 0);
    // 3×16² input; conv 8×16² (+ReLU), pool 8×8²; conv 16×8² (+ReLU), pool 16×4²;
    // conv 16×4² (+ReLU), pool 16×2²: 4,928 floats per image.
    let per_image = 4 * (768 + 2048 + 512 + 1024 + 256 + 256 + 64) as u64;
    let s = e.with_search(&net, 7);
    assert_eq!(s.search, 7 * per_image);
    assert_eq!(s.total(), e.total() + s.search);
    // Kept candidates come on top where there is room, and are not what refuses a run.
    assert_eq!(s.search_cache, 2 * memory::search_budget() as u64);
}

/// A run that fits without its search and not with it is refused with the search's share
/// and a fix that is about the search, not the batch size.
#[test]
fn a_search_over_the_limit_is_refused_naming_the_search() {
    let gib = 1u64 << 30;
    let e = Estimate {
        data: gib,
        prefix: gib,
        batch: gib,
        per_image: gib / 100,
        search: 3 * gib,
        search_cache: 8 * gib,
    };
    let msg = memory::refusal("method `aa`", &e, 100, 4 * gib).expect("6 GiB in 4 refused");
    for words in [
        "method `aa`",
        "needs about 6.0 GiB",
        "layer search",
        "control.layer_search",
        "control_per_class",
    ] {
        assert!(msg.contains(words), "`{words}` not in: {msg}");
    }
    assert!(!msg.contains("batch_size to"), "{msg}");
    assert!(memory::refusal("x", &e, 100, 6 * gib).is_none());
    // Without the search the same numbers are a batch-size matter.
    let plain = Estimate { search: 0, ..e };
    let msg = memory::refusal("x", &plain, 100, 2 * gib + gib / 2).unwrap();
    assert!(msg.contains("batch_size to 50 or less"), "{msg}");
}
