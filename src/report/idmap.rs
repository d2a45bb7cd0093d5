//! Maps keyed by ids handed out by counters (device ids, reference ids): hashed with one
//! multiplication, and never shrunk, so that an insert after a remove does not allocate.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Fibonacci hashing of one `u64`: consecutive ids spread over the whole hash, high bits
/// included (the table's control bytes are taken from them).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; anything else still hashes, slowly.
        for &b in bytes {
            self.write_u64(u64::from(b) ^ self.0.rotate_left(8));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map from ids to `V`.
pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// An empty [`IdMap`] (no allocation until the first insert).
pub(crate) const fn id_map<V>() -> IdMap<V> {
    HashMap::with_hasher(BuildHasherDefault::new())
}
