//! Test support: a value that counts its drops, for the unit tests of the modules that hold
//! values (`fallible`, `set_once`, `list`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Adds one to its counter when dropped.
pub(crate) struct Counted(pub(crate) Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
