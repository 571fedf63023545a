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
    let cand = ranked(mask, scores)?;
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

/// Prune every group to `rate` of its own width (Li et al.'s layer-uniform schedule):
/// each loses its lowest-scored alive filters until `round(rate · width)` are gone, never
/// going below `min_per_layer`.
pub fn prune_uniform(
    mask: &FilterMask,
    scores: &Scores,
    rate: f64,
    min_per_layer: usize,
) -> Result<FilterMask> {
    let mut out = mask.clone();
    let mut alive = mask.per_layer();
    for (_, l, f) in ranked(mask, scores)? {
        let width = mask.keep[l].len();
        let keep = (width - target_count(rate, width)).max(min_per_layer);
        if alive[l] > keep {
            out.keep[l][f] = false;
            alive[l] -= 1;
        }
    }
    Ok(out)
}

/// Alive filters as (score, layer, filter), lowest score first (ties: earlier layer, lower
/// index); a NaN score is an error naming the filter.
fn ranked(mask: &FilterMask, scores: &Scores) -> Result<Vec<(f64, usize, usize)>> {
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
    Ok(cand)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_first_across_layers_and_never_below_the_floor() {
        let mask = FilterMask::all_alive(&[3, 2]);
        let scores = vec![vec![0.5, 0.1, 0.9], vec![0.2, 0.05]];
        // Lowest: (1,1)=0.05, (0,1)=0.1, then (1,0)=0.2 is skipped (layer 1 at its floor of 1).
        let m = prune_lowest(&mask, &scores, 3, 1).unwrap();
        assert_eq!(m.keep, vec![vec![false, false, true], vec![true, false]]);
        assert_eq!(target_count(0.5, 5), 3);
        let nan = vec![vec![f64::NAN, 0.0, 0.0], vec![0.0, 0.0]];
        assert!(prune_lowest(&mask, &nan, 1, 1).is_err());
    }

    #[test]
    fn expand_maps_compacted_positions_back() {
        let mut mask = FilterMask::all_alive(&[4]);
        mask.keep[0][1] = false;
        let full = expand(&mask, &[vec![7.0, 8.0, 9.0]]);
        assert_eq!(full[0], vec![7.0, f64::INFINITY, 8.0, 9.0]);
    }
}
