//! A task's peak memory, estimated before its data and prefixes are built and held against
//! `--max-memory` (default: 80% of physical memory), so that a spec too big for the machine
//! is refused with its numbers and the fix instead of being killed by the kernel hours in.
//!
//! Batches are the spec's `data.batch_size`, never shrunk to fit: a batch size that
//! depended on the machine's memory would make results depend on it too (the per-class
//! relevance sums are added batch by batch). The estimate names the largest batch that fits.

use crate::model::geometry::Shape;
use crate::model::prefix;
use crate::model::Network;
use crate::spec::SettingError;
pub use crate::sysmem::{limit, physical, set_limit};
use anyhow::{bail, Result};

/// Memory in use per image of a batch, per byte of all its values: the forward pass keeps
/// every value for the reverse pass, which holds a relevance tensor per value and the z⁺
/// temporaries of the layer at hand. Calibrated on VGG16 at 224², batch 25: 5.8 and 6.2 GiB
/// measured (150 and 700 images), 6.6 GiB estimated (docs/performance.md, "Memory at 224²").
const BATCH_FACTOR: f64 = 2.2;

/// Memory the measured layer search may keep of its candidates' values (src/prune/search/):
/// a quarter of the limit, at most 4 GiB, and less when the process or the machine has less
/// room (the search measures that before every round). At 32² every candidate of VGG16 on a
/// 200-image control split fits in about 2 GiB; at 224² the deep layers' do, and the others
/// are measured from the current network each round (same decisions, slower).
pub fn search_budget() -> usize {
    (limit() / 4).min(4 << 30) as usize
}

/// `--max-memory` as given: `12G`, `800M`, `0.5T` or a byte count.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len()));
    let scale: u64 = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => bail!("--max-memory '{s}': unknown unit (fix: a number with K, M, G or T, e.g. 12G)"),
    };
    match num.trim().parse::<f64>() {
        // Under one byte (1e-12G) would refuse every task with a baffling 0-byte limit.
        Ok(v) if v.is_finite() && v * scale as f64 >= 1.0 => Ok((v * scale as f64) as u64),
        _ => bail!("--max-memory '{s}': not a positive size (fix: e.g. 12G)"),
    }
}

/// The parts of one task's peak, bytes.
#[derive(Debug, Clone, Copy)]
pub struct Estimate {
    /// Preprocessed images of every split.
    pub data: u64,
    /// The stored prefixes ([`prefix::PrefixCache`], bounded by its budget per split).
    pub prefix: u64,
    /// One batch's forward values and reverse pass.
    pub batch: u64,
    /// The same for one image.
    pub per_image: u64,
    /// The measured layer search's, for a run that uses it ([`Estimate::with_search`]): the
    /// current network's values on the control split.
    pub search: u64,
    /// What the search's kept candidates may add where memory allows, outside `total`: up to
    /// twice [`search_budget`] (kept values, and while a round runs the values replacing
    /// them). They give way to the rest of the process and the machine, so a run is refused
    /// only when it cannot hold the rest.
    pub search_cache: u64,
    /// The head's training ([`Estimate::with_head`]).
    pub head: u64,
}

impl Estimate {
    pub fn total(&self) -> u64 {
        self.data + self.prefix + self.batch + self.search + self.head
    }

    /// The largest batch whose estimate fits `limit`, if any does.
    pub fn max_batch(&self, limit: u64) -> Option<u64> {
        let room = limit.checked_sub(self.data + self.prefix + self.search + self.head)?;
        Some(room / self.per_image.max(1)).filter(|&b| b > 0)
    }

    /// The estimate with the head's training on `n_train` cached feature vectors, full
    /// batch with Adam (src/model/head.rs): its parameters four times (weights, gradients,
    /// two moments) and every layer's inputs and gradients on the whole split. A wide
    /// `head.hidden` is refused here, not by the kernel while its weights are allocated.
    pub fn with_head(
        self,
        net: &Network,
        hidden: &[usize],
        classes: usize,
        n_train: usize,
    ) -> Self {
        let features = match net.shapes().last() {
            Some(Shape::Map { c, .. }) => *c,
            Some(s) => s.elements(),
            None => 0,
        } as u64;
        let widths: Vec<u64> = std::iter::once(features)
            .chain(hidden.iter().map(|&w| w as u64))
            .chain([classes as u64])
            .collect();
        let params: u64 = widths.windows(2).map(|w| (w[0] + 1) * w[1]).sum();
        let values: u64 = widths.iter().sum::<u64>() * n_train as u64;
        Estimate {
            head: 4 * (4 * params + 3 * values),
            ..self
        }
    }

    /// The estimate of a run whose method searches layers by measurement
    /// (src/prune/search/): it holds every value of the current network on the
    /// `control_images` of the control split, beside its candidates' where there is room.
    pub fn with_search(self, net: &Network, control_images: usize) -> Self {
        let per_image = 4 * net.trace_floats_per_image(0) as u64;
        Estimate {
            search: per_image * control_images as u64,
            search_cache: 2 * search_budget() as u64,
            ..self
        }
    }
}

/// The estimate for `net` (backbone) on splits of `splits` images, batches of `batch`.
pub fn estimate(net: &Network, splits: &[usize], batch: usize) -> Estimate {
    let bytes = |s: &Shape| 4 * s.elements() as u64;
    let shapes = net.shapes();
    let image = bytes(&shapes[0]);
    let values: u64 = shapes.iter().map(bytes).sum();
    let per_image = (values as f64 * BATCH_FACTOR) as u64;
    // The prefix keeps values front to back within its budget; at least the images.
    let prefix_per_split = |n: usize| {
        let mut used = 0u64;
        for s in &shapes {
            let b = bytes(s) * n as u64;
            if used > 0 && used + b > prefix::DEFAULT_BUDGET as u64 {
                break;
            }
            used += b;
        }
        used
    };
    let n: u64 = splits.iter().map(|&n| n as u64).sum();
    Estimate {
        data: n * image,
        prefix: splits.iter().map(|&n| prefix_per_split(n)).sum(),
        batch: per_image * batch as u64,
        per_image,
        search: 0,
        search_cache: 0,
        head: 0,
    }
}

/// Refuse a task (or a run) whose estimate exceeds the limit, with the numbers and the fix.
pub fn check(what: &str, e: &Estimate, batch: usize) -> Result<()> {
    match refusal(what, e, batch, limit()) {
        // Located at the spec key its fix names first.
        Some(why) => Err(SettingError {
            key: fix(e, limit()).0.into(),
            why,
        }
        .into()),
        None => Ok(()),
    }
}

/// The fix of a refusal, and the spec key it names first (where the error is located).
fn fix(e: &Estimate, limit: u64) -> (&'static str, String) {
    let without_search = Estimate { search: 0, ..*e };
    let without_head = Estimate { head: 0, ..*e };
    match e.max_batch(limit) {
        _ if e.head > 0 && without_head.total() <= limit => ("head.hidden", "use narrower [head] hidden layers (or fewer training images), or raise --max-memory".to_string()),
        _ if e.search > 0 && without_search.total() <= limit => ("data.train_per_class", "use fewer images on the control split (data.train_per_class, or data.control_per_class), a smaller input_size, or a method without control.layer_search, or raise --max-memory".to_string()),
        Some(b) => ("data.batch_size", format!("set [data] batch_size to {b} or less, or raise --max-memory")),
        None => ("data.train_per_class", "use fewer images per class or a smaller input_size, or raise --max-memory".into()),
    }
}

/// Why `e` does not fit `limit`, with the fix, or `None` when it does.
pub fn refusal(what: &str, e: &Estimate, batch: usize, limit: u64) -> Option<String> {
    if e.total() <= limit {
        return None;
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let (_, fix) = fix(e, limit);
    let mut search = if e.search > 0 {
        format!(
            " + the layer search's control-split values {:.1}",
            gib(e.search)
        )
    } else {
        String::new()
    };
    if e.head > 0 {
        search += &format!(" + the head's training {:.1}", gib(e.head));
    }
    Some(format!(
        "{what}: needs about {:.1} GiB (images {:.1} + stored prefixes {:.1} + one batch of {batch} {:.1}{search}), over the {:.1} GiB allowed (--max-memory, default 80% of RAM) (fix: {fix})",
        gib(e.total()),
        gib(e.data),
        gib(e.prefix),
        gib(e.batch),
        gib(limit)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_refuse_junk() {
        assert_eq!(parse_size("12G").unwrap(), 12 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("0.5g").unwrap(), 1 << 29);
        for bad in ["", "-1G", "12Q", "G", "nanG"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn max_batch_leaves_room_for_data_and_prefix() {
        let e = Estimate {
            data: 100,
            prefix: 100,
            batch: 0,
            per_image: 50,
            search: 0,
            search_cache: 0,
            head: 0,
        };
        assert_eq!(e.max_batch(1000), Some(16));
        assert_eq!(e.max_batch(220), None);
        assert_eq!(e.max_batch(150), None);
    }
}
