//! Panics gathered on a bus path: the first is resumed once the path is done, the others are
//! logged.

use crate::res::list::{PanicPayload, PanicSink, drop_payload, panic_message};
use crate::trace;

/// Runs the automatic probes queued meanwhile (when this is the thread's outermost bus call),
/// then resumes the first panic and logs the others.
pub(super) fn resume<const N: usize>(owner: &str, panics: [Option<PanicPayload>; N]) {
    let first = first_logging_rest(owner, panics);
    let queued = super::driver::drain();
    PanicSink::resume(first_logging_rest(owner, [first, queued]), owner);
}

/// The first panic; the others are logged and dropped.
pub(super) fn first_logging_rest<const N: usize>(
    owner: &str,
    panics: [Option<PanicPayload>; N],
) -> Option<PanicPayload> {
    let mut first = None;
    for p in panics.into_iter().flatten() {
        if first.is_none() {
            first = Some(p);
        } else {
            let message = panic_message(&*p);
            // The report's subscriber is user code too: a panic of it is dropped.
            let report = trace::caught(|| {
                tracing::error!(
                    target: "drmm",
                    dev_name = owner,
                    detail = message,
                    "another panic during the same unbind is not resumed",
                );
            });
            report.into_iter().for_each(drop_payload);
            drop_payload(p);
        }
    }
    first
}
