//! Turning scores into a mask: the globally lowest-scored alive filters go first, never
//! emptying a layer below `min_filters_per_layer`.

use super::mask::FilterMask;
use anyhow::{bail, Result};

/// Scores in the unpruned network's indexing (`scores[layer][filter]`); entries of already
/// pruned filters are ignored.
pub type Scores = Vec<Vec<f64>>;

/// Number of filters removed in total at `rate` of `total`.
pub fn target_count(rate: f64, total: usize) -> usize {
    ((rate * total as f64).round() as usize).min(total)
}

/// Remove `n` more filters from `mask`, lowest score first (ties: earlier layer, lower index).
pub fn prune_lowest(
    mask: &FilterMask,
    scores: &Scores,
    n: usize,
    min_per_layer: usize,
) -> Result<FilterMask> {
    let mut cand = Vec::new();
    for (l, row) in mask.keep.iter().enumerate() {
        for (f, &alive) in row.iter().enumerate() {
            if alive {
                let s = scores[l][f];
                if s.is_nan() {
                    bail!("criterion produced NaN for conv {l} filter {f} (check the weights and inputs for NaN/Inf)");
                }
                cand.push((s, l, f));
            }
        }
    }
    cand.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut out = mask.clone();
    let mut alive = mask.per_layer();
    let mut removed = 0;
    for (_, l, f) in cand {
        if removed == n {
            break;
        }
        if alive[l] > min_per_layer {
            out.keep[l][f] = false;
            alive[l] -= 1;
            removed += 1;
        }
    }
    Ok(out)
}

/// Expand per-alive-filter scores of a compacted network to the unpruned indexing.
pub fn expand(mask: &FilterMask, compact_scores: &[Vec<f64>]) -> Scores {
    mask.keep
        .iter()
        .enumerate()
        .map(|(l, row)| {
            let mut full = vec![f64::INFINITY; row.len()];
            for (j, i) in mask.alive_indices(l).into_iter().enumerate() {
                full[i as usize] = compact_scores[l][j];
            }
            full
        })
        .collect()
}
