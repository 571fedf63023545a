//! Memory the conv kernels keep between calls.
//!
//! - Transformed filters, per weight tensor: a network evaluated batch by batch runs every
//!   conv with the same weights many times, and for 512×512 filters the Winograd transform
//!   (36 MB for F(4,3)) costs as much as the convolution of a small map. Inference engines
//!   pre-pack weights for the same reason. Keyed by Candle's `TensorId`, which is never
//!   reused within a process, so a stale entry can only waste memory, never be wrong.
//! - Where a weight tensor came from: a pruned conv's weights are a channel selection of
//!   the unpruned ones, and so are their transformed filters (each filter/channel pair is
//!   transformed on its own), so a miss whose source is cached is served by selecting
//!   from it instead of transforming again. The measured layer search builds a dozen such
//!   networks per round.
//! - Weights derived from a weight tensor (W⁺, W⁻, the flipped transpose LRP's reverse pass
//!   convolves with), per source tensor and kind: a relevance pass derives them from the
//!   same weights batch after batch, and a derived tensor that keeps its identity keeps its
//!   transformed filters in the cache above too, as the forward's weights do.
//! - Scratch buffers, per thread: fresh multi-MB allocations are mmapped and page-faulted
//!   on every call (glibc), which cost as much as the arithmetic on small maps.

use candle_core::{Result, Tensor, TensorId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Upper bound on the transformed filters kept. All of VGG16's take ~235 MB at 224²
/// (~170 MB at 32²), and a relevance pass reads three sets (W, W⁺ and W⁺'s flipped
/// transpose): with room for fewer, a pass's cyclic order would evict each before reuse.
const CACHE_BYTES: usize = 768 << 20;

/// Values by key, most recently used last, within a bound on their bytes: the one policy
/// of both caches here.
struct Lru<K, V> {
    entries: Vec<(K, V, usize)>,
    cap: usize,
}

impl<K: PartialEq, V: Clone> Lru<K, V> {
    const fn new(cap: usize) -> Self {
        Self {
            entries: Vec::new(),
            cap,
        }
    }

    /// The value at `k`, now the most recently used.
    fn get(&mut self, k: &K) -> Option<V> {
        let i = self.entries.iter().position(|e| e.0 == *k)?;
        let e = self.entries.remove(i);
        let v = e.1.clone();
        self.entries.push(e);
        Some(v)
    }

    /// Keep `v` (`bytes` large) at `k` and return it; if another caller stored one at `k`
    /// meanwhile, that one is kept and returned instead, so a key has one value. The least
    /// recently used go while the bound is exceeded.
    fn insert(&mut self, k: K, v: V, bytes: usize) -> V {
        if let Some(kept) = self.get(&k) {
            return kept;
        }
        self.entries.push((k, v.clone(), bytes));
        let mut total: usize = self.entries.iter().map(|e| e.2).sum();
        while total > self.cap && self.entries.len() > 1 {
            total -= self.entries.remove(0).2;
        }
        v
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Transformed filters by weight tensor and tile size.
type FilterCache = Lru<(TensorId, usize), Arc<Vec<f32>>>;

static FILTERS: Mutex<FilterCache> = Mutex::new(Lru::new(CACHE_BYTES));

/// A weight tensor made by selecting `indices` along `dim` (0: filters, 1: channels) of
/// the tensor `source`.
#[derive(Clone)]
pub struct Selection {
    pub source: TensorId,
    pub dim: usize,
    pub indices: Arc<Vec<u32>>,
}

/// Selections recorded at most; beyond, the record starts over (old sources are gone).
const LINEAGE_MAX: usize = 4096;

static LINEAGE: Mutex<Option<HashMap<TensorId, Selection>>> = Mutex::new(None);

/// Record that weight `id` is `sel` of another weight tensor.
pub fn record_selection(id: TensorId, sel: Selection) {
    let mut map = lock(&LINEAGE);
    let map = map.get_or_insert_with(HashMap::new);
    if map.len() >= LINEAGE_MAX {
        map.clear();
    }
    map.insert(id, sel);
}

fn cached(id: TensorId, m: usize) -> Option<Arc<Vec<f32>>> {
    lock(&FILTERS).get(&(id, m))
}

/// The transformed filters of weight `id` for tile size `m`: cached, else selected by
/// `derive` from those of the tensor `id` was selected from (when they are cached), else
/// computed by `make`. Most recently used entries are kept, within [`CACHE_BYTES`].
pub fn filters(
    id: Option<TensorId>,
    m: usize,
    make: impl FnOnce() -> Vec<f32>,
    derive: impl FnOnce(&[f32], &Selection) -> Vec<f32>,
) -> Arc<Vec<f32>> {
    let Some(id) = id else {
        return Arc::new(make());
    };
    if let Some(u) = cached(id, m) {
        return u;
    }
    let lineage = lock(&LINEAGE)
        .as_ref()
        .and_then(|map| map.get(&id).cloned());
    let source = lineage.and_then(|sel| Some((cached(sel.source, m)?, sel)));
    let u = Arc::new(match source {
        Some((src, sel)) => derive(&src, &sel),
        None => make(),
    });
    let bytes = u.len() * 4;
    lock(&FILTERS).insert((id, m), u, bytes)
}

/// Upper bound on the derived weights kept: W⁺ and its flipped transpose for all of VGG16
/// take ~118 MB at any input size, the largest built-in backbone's set.
const DERIVED_BYTES: usize = 128 << 20;

static DERIVED: Mutex<Lru<(TensorId, &'static str), Tensor>> = Mutex::new(Lru::new(DERIVED_BYTES));

/// `make(w)`, made once per weight tensor `w` and `kind` and kept (most recently used
/// entries, within [`DERIVED_BYTES`]). `make` must depend on `w`'s values alone, which a
/// tensor never changes, so an entry is never stale while its key is alive.
pub fn derived(
    w: &Tensor,
    kind: &'static str,
    make: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let key = (w.id(), kind);
    if let Some(t) = lock(&DERIVED).get(&key) {
        return Ok(t);
    }
    let t = make(w)?;
    let bytes = t.elem_count() * t.dtype().size_in_bytes();
    Ok(lock(&DERIVED).insert(key, t, bytes))
}

thread_local! {
    static SCRATCH: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// Run `f` with a buffer of `n` floats from this thread's pool. Contents are arbitrary:
/// `f` must write every element it reads.
pub fn with_scratch<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    // The smallest pooled buffer that fits, else the largest one (grown): the pool settles
    // on a few buffers covering the sizes a sweep needs.
    let mut buf = SCRATCH
        .with(|p| {
            let mut p = p.borrow_mut();
            let fit = (0..p.len())
                .filter(|&i| p[i].capacity() >= n)
                .min_by_key(|&i| p[i].capacity());
            let any = (0..p.len()).max_by_key(|&i| p[i].capacity());
            fit.or(any).map(|i| p.swap_remove(i))
        })
        .unwrap_or_default();
    if buf.len() < n {
        buf.reserve(n - buf.len());
        // SAFETY: f32 has no invalid bit patterns; callers write before they read.
        #[allow(clippy::uninit_vec)]
        unsafe {
            buf.set_len(n)
        };
    }
    let r = f(&mut buf[..n]);
    SCRATCH.with(|p| {
        let mut p = p.borrow_mut();
        p.push(buf);
        // Keep the few largest buffers only.
        if p.len() > 4 {
            p.sort_by_key(|b| std::cmp::Reverse(b.capacity()));
            p.truncate(4);
        }
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn a_derived_weight_is_made_once_per_tensor_and_kind() {
        let w = Tensor::new(&[[-1f32, 2.0], [3.0, -4.0]], &Device::Cpu).unwrap();
        let made = std::cell::Cell::new(0);
        let pos = |w: &Tensor| {
            made.set(made.get() + 1);
            w.relu()
        };
        let a = derived(&w, "test-pos", pos).unwrap();
        let b = derived(&w, "test-pos", pos).unwrap();
        assert_eq!(made.get(), 1);
        assert_eq!(
            a.id(),
            b.id(),
            "the same tensor, so its transformed filters stay cached"
        );
        assert_eq!(a.to_vec2::<f32>().unwrap(), [[0.0, 2.0], [3.0, 0.0]]);
        let n = derived(&w, "test-neg", |w| w.minimum(0.0)).unwrap();
        assert_eq!(n.to_vec2::<f32>().unwrap(), [[-1.0, 0.0], [0.0, -4.0]]);
        let other = w.copy().unwrap();
        derived(&other, "test-pos", pos).unwrap();
        assert_eq!(
            made.get(),
            2,
            "another tensor, even with equal values, is its own key"
        );
    }
}
