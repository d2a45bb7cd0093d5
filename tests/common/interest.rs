//! Keeps `tracing`'s call-site interest correct while test threads install and drop scoped
//! subscribers concurrently.
//!
//! `tracing-core` 0.1 has a shortcut for a process with exactly one registered dispatcher: it
//! asks the *calling thread's* default dispatcher for a call site's interest instead of the
//! registered one (tokio-rs/tracing#2874, #3611). A test thread without a subscriber that
//! reaches a call site first, while another thread's scoped subscriber is the only one
//! registered, caches "never" for that site, and the subscriber misses its events from then
//! on (seen as a recorded release whose `REL` events were missing). With two dispatchers
//! always registered the shortcut is never taken.
//!
//! The pinned dispatchers say "sometimes" for every call site, so a site's interest is asked of
//! the current thread's subscriber on every event and no cached answer can be stale. Their
//! level hint is `OFF`: with no test subscriber alive, `tracing`'s global level check still
//! turns everything off, so the untraced paths stay the untraced paths.
#![allow(dead_code, unreachable_pub)]

use std::sync::OnceLock;

use tracing::dispatcher::Dispatch;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

struct Pin;

impl Subscriber for Pin {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::OFF)
    }
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        false
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Registers the two pinned dispatchers (once per process; call before any test installs a
/// subscriber or reaches a call site).
pub fn pin() {
    static PINNED: OnceLock<[Dispatch; 2]> = OnceLock::new();
    PINNED.get_or_init(|| [Dispatch::new(Pin), Dispatch::new(Pin)]);
}
