//! The test suites run subscribers on some threads and none on others at the same time. This
//! binary holds one test, so the library's call sites are fresh when it starts: it checks that
//! a thread with no subscriber reaching them first does not hide them from a subscriber on
//! another thread (see `tests/common/interest.rs`; without the pin this test fails).

#[path = "common/interest.rs"]
mod interest;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Counts `drmm` events.
struct Count(Arc<AtomicUsize>);

impl Subscriber for Count {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.target() == "drmm"
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Creates a device with an action and a value and drops it: `CREATE`, two `ADD`s,
/// `LAST_REF`, `RELEASE_BEGIN`, two `REL`s, `RELEASE_END`.
fn device_life() {
    let dev = drmm::Device::with_name("card0", ());
    let _ = dev.add_action_named("a", |_| {}).unwrap();
    let _ = dev.alloc(1u32).unwrap();
    drop(dev);
}

#[test]
fn an_untraced_thread_reaching_call_sites_first_does_not_hide_them() {
    interest::pin();
    let seen = Arc::new(AtomicUsize::new(0));
    let installed = Arc::new(Barrier::new(2));
    let reached = Arc::new(Barrier::new(2));
    let traced = {
        let (seen, installed, reached) = (seen.clone(), installed.clone(), reached.clone());
        std::thread::spawn(move || {
            tracing::subscriber::with_default(Count(seen), || {
                installed.wait();
                // The untraced thread now reaches every call site first.
                reached.wait();
                device_life();
            })
        })
    };
    installed.wait();
    device_life();
    reached.wait();
    traced.join().unwrap();
    let seen = seen.load(Ordering::Relaxed);
    assert!(
        seen >= 8,
        "the traced thread saw {seen} events of a device's life (8 expected)"
    );
}
