//! Which channels of each pruning group are alive, in the unpruned network's indexing.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterMask {
    /// `keep[group][channel]`, one row per pruning group ([`Plan`](super::plan::Plan)) in order; for a VGG,
    /// one row per conv.
    pub keep: Vec<Vec<bool>>,
}

impl FilterMask {
    pub fn all_alive(filters: &[usize]) -> Self {
        Self {
            keep: filters.iter().map(|&n| vec![true; n]).collect(),
        }
    }
    /// One string per group, `1` for a kept channel and `0` for a pruned one (the steps
    /// file's `kept` column).
    pub fn to_strings(&self) -> Vec<String> {
        let bit = |&k: &bool| if k { '1' } else { '0' };
        self.keep
            .iter()
            .map(|row| row.iter().map(bit).collect())
            .collect()
    }

    /// The mask [`Self::to_strings`] wrote, checked against the groups' sizes; the error
    /// says what does not fit.
    pub fn from_strings(rows: &[String], sizes: &[usize]) -> Result<Self, String> {
        if rows.len() != sizes.len() {
            return Err(format!(
                "{} groups recorded, the network has {}",
                rows.len(),
                sizes.len()
            ));
        }
        let mut keep = Vec::with_capacity(rows.len());
        for (g, (row, &n)) in rows.iter().zip(sizes).enumerate() {
            if row.len() != n || !row.bytes().all(|b| b == b'0' || b == b'1') {
                return Err(format!(
                    "group {g}: `{}…` is not {n} characters of 0 and 1",
                    row.chars().take(16).collect::<String>()
                ));
            }
            keep.push(row.bytes().map(|b| b == b'1').collect());
        }
        Ok(Self { keep })
    }

    pub fn total(&self) -> usize {
        self.keep.iter().map(Vec::len).sum()
    }
    pub fn alive(&self) -> usize {
        self.keep
            .iter()
            .map(|l| l.iter().filter(|k| **k).count())
            .sum()
    }
    /// Fraction of all prunable channels (filters) removed.
    pub fn rate(&self) -> f64 {
        1.0 - self.alive() as f64 / self.total() as f64
    }
    pub fn alive_in(&self, layer: usize) -> usize {
        self.keep[layer].iter().filter(|k| **k).count()
    }
    pub fn per_layer(&self) -> Vec<usize> {
        (0..self.keep.len()).map(|l| self.alive_in(l)).collect()
    }
    /// Original indices of the alive filters of `layer`, ascending (= compacted order).
    pub fn alive_indices(&self, layer: usize) -> Vec<u32> {
        (0..self.keep[layer].len())
            .filter(|&i| self.keep[layer][i])
            .map(|i| i as u32)
            .collect()
    }

    /// The `q` alive channels of `group` with the lowest `scores` (original indices; ties:
    /// the lower index first).
    pub fn lowest_alive(&self, group: usize, scores: &[f64], q: usize) -> Vec<usize> {
        let keep = &self.keep[group];
        let mut alive: Vec<usize> = (0..keep.len()).filter(|&f| keep[f]).collect();
        alive.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
        alive.truncate(q);
        alive
    }

    /// This mask with `channels` of `group` removed too.
    pub fn without(&self, group: usize, channels: &[usize]) -> Self {
        let mut m = self.clone();
        for &c in channels {
            m.keep[group][c] = false;
        }
        m
    }

    /// `after` (within this mask) in the indexing of a network compacted to this mask.
    pub fn relative(&self, after: &FilterMask) -> FilterMask {
        let keep = (self.keep.iter().zip(&after.keep))
            .map(|(b, a)| (0..b.len()).filter(|&i| b[i]).map(|i| a[i]).collect())
            .collect();
        FilterMask { keep }
    }
}

/// Positions, among the channels alive in `before`, of those alive in `after` too (one
/// group's row of two masks, the second within the first).
pub fn kept_positions(before: &[bool], after: &[bool]) -> Vec<u32> {
    let alive = (0..before.len()).filter(|&i| before[i]);
    alive
        .enumerate()
        .filter(|&(_, i)| after[i])
        .map(|(j, _)| j as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::FilterMask;

    #[test]
    fn a_mask_survives_its_strings_and_a_misfit_is_named() {
        let m = FilterMask {
            keep: vec![vec![true, false, true], vec![false, true]],
        };
        let s = m.to_strings();
        assert_eq!(s, ["101", "01"]);
        assert_eq!(FilterMask::from_strings(&s, &[3, 2]).unwrap(), m);
        let e = FilterMask::from_strings(&s, &[3]).unwrap_err();
        assert!(e.contains("2 groups recorded, the network has 1"), "{e}");
        let e = FilterMask::from_strings(&s, &[3, 3]).unwrap_err();
        assert!(e.contains("group 1"), "{e}");
        let bad = ["1x1".to_string(), "01".to_string()];
        assert!(FilterMask::from_strings(&bad, &[3, 2]).is_err());
    }
}
