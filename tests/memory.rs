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
        head: 0,
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

/// A wide head is counted in the estimate (its parameters with Adam's state, its values on
/// the training split) and refused with a fix about the head: `inspect` once estimated
/// 0.6 GiB for a head that allocated 205 GB.
#[test]
fn a_wide_head_is_counted_and_refused_naming_the_head() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_weights(&dir.path().join("w.safetensors"), 1);
    let net = common::tiny_backbone(&dir.path().join("w.safetensors"), 16);
    let e = memory::estimate(&net, &[40, 80], 10);
    let narrow = e.with_head(&net, &[], 4, 40);
    // 16 features → 4 classes: 68 parameters, 20 values per image.
    assert_eq!(narrow.head, 4 * (4 * 68 + 3 * 20 * 40));
    let wide = e.with_head(&net, &[65536, 65536], 4, 40);
    assert!(wide.head > 32 << 30, "{}", wide.head);
    assert_eq!(wide.total(), e.total() + wide.head);
    let msg = memory::refusal("model `tiny`", &wide, 10, 8 << 30).expect("refused");
    assert!(
        msg.contains("head's training") && msg.contains("[head] hidden"),
        "{msg}"
    );
}
