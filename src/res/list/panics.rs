//! Panic collection: the panics of a release are caught per entry, the first kept to be
//! resumed, the others logged (promise 5).

use super::*;

/// A panic payload caught while releasing an entry.
pub(crate) type PanicPayload = Box<dyn Any + Send + 'static>;

/// Collects the panics of a bulk release: the first is kept to be resumed, later ones are
/// logged and dropped, none is lost silently (promise 5).
#[derive(Default)]
pub(crate) struct PanicSink {
    first: Option<PanicPayload>,
    count: usize,
}

impl PanicSink {
    pub(crate) fn record<C>(&mut self, payload: PanicPayload, list: &ResourceList<C>, site: &Site) {
        let first = self.first.is_none();
        let message = panic_message(&*payload);
        // The report is an event too: a subscriber that panics again is not listened to.
        if let Some(p) = trace::caught(|| trace::release_panicked(list, site, message, first)) {
            drop_payload(p);
        }
        self.keep(payload);
    }

    /// Keeps `payload` if it is the first panic, else drops it (without a report: for panics
    /// of subscribers, which a report would only reach again).
    pub(crate) fn keep(&mut self, payload: PanicPayload) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(payload);
        } else {
            drop_payload(payload);
        }
    }

    /// Emits events with `emit` inside the panic net, keeping a subscriber's panic.
    #[inline]
    pub(crate) fn event(&mut self, emit: impl FnOnce()) {
        if trace::debug_possible()
            && let Some(p) = trace::caught(emit)
        {
            self.keep(p);
        }
    }

    /// The first panic, if any.
    pub(crate) fn into_first(self) -> Option<PanicPayload> {
        self.first
    }

    /// Resumes the first panic, or logs it if this thread is already unwinding (a second panic
    /// escaping a destructor during unwinding would abort the process).
    pub(crate) fn resume(payload: Option<PanicPayload>, owner: &str) {
        if let Some(p) = payload {
            if std::thread::panicking() {
                let message = panic_message(&*p);
                if let Some(q) = trace::caught(|| trace::panic_not_resumed(owner, message)) {
                    drop_payload(q);
                }
                drop_payload(p);
            } else {
                panic::resume_unwind(p);
            }
        }
    }
}

/// Drops a panic payload whose own destructor might panic, without letting that escape.
pub(crate) fn drop_payload(p: PanicPayload) {
    if let Err(inner) = panic::catch_unwind(AssertUnwindSafe(move || drop(p))) {
        std::mem::forget(inner);
    }
}

/// The message of a panic payload, when it is a string.
pub(crate) fn panic_message(p: &(dyn Any + Send)) -> &str {
    if let Some(s) = p.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = p.downcast_ref::<String>() {
        s
    } else {
        "<non-string panic payload>"
    }
}
