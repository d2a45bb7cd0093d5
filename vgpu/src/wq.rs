//! The driver's ordered work queue: the library's [`drmm::WorkQueue`] (one named worker thread
//! running work items in the order they were queued), with the journal's bookkeeping.
//!
//! The driver owns it as userspace-visible state (submitted work belongs to open files), so it
//! is torn down at the last reference to the logical device, by the driver's own drmm action
//! (which journals it); under `DevmEverywhere` the same value lives on the binding instead.
//! The library's queue is unmanaged here ([`drmm::WorkQueue::new`]) because that choice of
//! owner, and the journal line, are the demo's story.

use std::sync::{Arc, Mutex, PoisonError};

use crate::journal::{Journal, Owner, Tracked};

/// A unit of work.
pub type Work = Box<dyn FnOnce() + Send + 'static>;

/// See the module docs.
#[derive(Debug)]
pub struct WorkQueue {
    queue: drmm::WorkQueue,
    /// The worker thread, for the journal's leak count: released once the worker is joined.
    thread: Mutex<Option<Tracked>>,
    tracked: Tracked,
}

impl WorkQueue {
    /// Starts the worker thread `name`.
    ///
    /// # Errors
    ///
    /// The library's error if the thread cannot be spawned.
    pub(crate) fn new(journal: &Arc<Journal>, name: &str) -> drmm::Result<Self> {
        let thread = journal.track("thread", None);
        let queue = drmm::WorkQueue::new(name.to_owned())?;
        Ok(WorkQueue {
            queue,
            thread: Mutex::new(Some(thread)),
            tracked: journal.track(
                "work queue",
                Some((Owner::Drmm, format!("work queue {name} freed"))),
            ),
        })
    }

    pub(crate) fn tracked_mut(&mut self) -> &mut Tracked {
        &mut self.tracked
    }

    /// The worker thread's name.
    pub fn name(&self) -> &str {
        self.queue.name()
    }

    /// Queues `work` (`queue_work`).
    ///
    /// # Errors
    ///
    /// [`drmm::Error::QueueClosed`] after [`shutdown`](Self::shutdown); `work` is dropped
    /// unrun (a fence it carries then reports the cancellation).
    pub fn queue(&self, work: Work) -> drmm::Result<()> {
        self.queue.queue_work(work)
    }

    /// Waits until everything queued before this call has run (`flush_workqueue`). Returns at
    /// once on the worker itself or after shutdown.
    pub fn flush(&self) {
        self.queue.flush_workqueue();
    }

    /// Runs what is queued, then stops the worker and waits for it (`destroy_workqueue`).
    /// Returns whether this call stopped it. On the worker itself the thread is left to end on
    /// its own once this work item returns.
    pub fn shutdown(&self) -> bool {
        let stopped = self.queue.destroy_workqueue();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(thread);
        stopped
    }
}

impl Drop for WorkQueue {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn work_runs_in_order_and_shutdown_drains_then_joins() {
        let journal = Journal::new();
        let wq = WorkQueue::new(&journal, "wq-test").unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        for i in 0..10 {
            let seen = seen.clone();
            assert!(
                wq.queue(Box::new(move || seen.lock().unwrap().push(i)))
                    .is_ok()
            );
        }
        wq.flush();
        assert_eq!(*seen.lock().unwrap(), (0..10).collect::<Vec<_>>());
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let queued = wq.queue(Box::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
        }));
        assert!(queued.is_ok());
        assert!(wq.shutdown());
        assert_eq!(
            ran.load(Ordering::SeqCst),
            1,
            "queued work ran before the stop"
        );
        assert!(wq.queue(Box::new(|| ())).is_err());
        assert!(!wq.shutdown());
        drop(wq);
        assert!(journal.leaks().is_empty(), "{:?}", journal.leaks());
    }
}
