//! Seed derivation: every random choice comes from the spec's seed.
//!
//! Each consumer (split, head init, random criterion, ...) gets its own stream derived from
//! `(seed, purpose)`, so adding a random draw in one place never shifts another's numbers.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// A deterministic generator for `purpose` under the run's `seed`.
pub fn stream(seed: u64, purpose: &str) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(purpose.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(&digest);
    ChaCha8Rng::from_seed(bytes)
}
