//! Results stay what they were: every method on the real assets gives, bit for bit (all
//! columns but `wall_ms`), the step rows the code before the graph model wrote. The digests
//! in `tests/fixtures/golden/golden.digest` come from that code (`lrprune digest`), those of
//! `aa-search-best` and `aa-search-all` from the measured search before it kept candidates'
//! values between rounds and steps (so its speed-ups are held to the same decisions), that
//! of `aa-lrp` from its re-chosen default (#13: the measured search, docs/method.md); the
//! quickstart's own digests are checked by `scripts/check_golden.sh` (4–7 min).

mod common;

#[test]
fn every_method_reproduces_the_committed_step_rows() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("out");
    common::run_ok(&[
        "run".as_ref(),
        "--quiet".as_ref(),
        "tests/fixtures/golden/golden.toml".as_ref(),
        "--results-dir".as_ref(),
        results.as_os_str(),
    ]);
    let got = lrprune::results::digests(&results).unwrap();
    let want: Vec<(String, String)> =
        std::fs::read_to_string("tests/fixtures/golden/golden.digest")
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut it = l.split_whitespace();
                (
                    it.next().unwrap().to_string(),
                    it.next().unwrap().to_string(),
                )
            })
            .collect();
    assert_eq!(got.len(), want.len(), "one run per method: {got:?}");
    for ((id, d), (want_id, want_d)) in got.iter().zip(&want) {
        assert_eq!(id, want_id, "run ids must not change (they key --resume)");
        assert_eq!(d, want_d, "{id}: step rows differ from the committed ones");
    }
}
