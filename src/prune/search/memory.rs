//! How much of its candidates' values the search may keep between rounds.

use crate::sysmem::Gauge;

/// Memory left free beside the candidates' values kept: for the round's own runs, and for
/// the rest of the machine.
const RESERVE: u64 = 1 << 30;

/// Bytes of candidates' values the search may hold now: its `budget`, within what the
/// process's limit leaves beside the rest of its resident memory, and within what the
/// machine has available (other processes count there), as `gauge` reads them. While a
/// round runs, a kept candidate's new values exist beside the old ones they replace, so the
/// room is halved. A run is admitted on the rest (src/runner/memory.rs); this keeps the
/// part the search controls from pushing the process past the limit or the machine into
/// its out-of-memory killer. The decisions do not depend on it.
pub fn keep_allowed(budget: usize, kept: usize, gauge: &dyn Gauge) -> usize {
    let kept = kept as u64;
    let mut allowed = budget as u64;
    if let Some(r) = gauge.resident() {
        let rest = r.saturating_sub(kept);
        allowed = allowed.min(gauge.limit().saturating_sub(rest + RESERVE) / 2);
    }
    if let Some(a) = gauge.available() {
        allowed = allowed.min((kept + a).saturating_sub(RESERVE) / 2);
    }
    allowed as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;

    /// Fixed readings.
    struct Reading(u64, Option<u64>, Option<u64>);

    impl Gauge for Reading {
        fn limit(&self) -> u64 {
            self.0
        }
        fn resident(&self) -> Option<u64> {
            self.1
        }
        fn available(&self) -> Option<u64> {
            self.2
        }
    }

    #[test]
    fn the_kept_values_give_way_to_the_rest_of_the_process_and_the_machine() {
        let b = 4 * G as usize;
        let allowed = |kept, limit, resident, available| {
            keep_allowed(b, kept, &Reading(limit, resident, available))
        };
        // Room everywhere: the budget.
        assert_eq!(allowed(0, 16 * G, Some(2 * G), Some(20 * G)), b);
        assert_eq!(allowed(0, 16 * G, None, None), b);
        // The process holds 10 GiB of which 3 are kept values: 7 + 1 reserve leave 8, half
        // of it for kept values (the other half for those replacing them in a round).
        let k = 3 * G as usize;
        assert_eq!(allowed(k, 16 * G, Some(10 * G), None), b);
        // 4 GiB more elsewhere in the process: 2 GiB may stay.
        let two = 2 * G as usize;
        assert_eq!(allowed(k, 16 * G, Some(14 * G), None), two);
        // Over the limit without them: none.
        assert_eq!(allowed(k, 16 * G, Some(20 * G), None), 0);
        // The machine has 2 GiB left: of the 3 kept, 2 stay.
        assert_eq!(allowed(k, 64 * G, Some(4 * G), Some(2 * G)), two);
    }
}
