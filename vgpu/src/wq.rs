//! An ordered work queue (`alloc_ordered_workqueue`): one named worker thread running work
//! items in the order they were queued.
//!
//! The driver owns it as userspace-visible state (submitted work belongs to open files), so it
//! is torn down at the last reference to the logical device. It is a plain value with
//! [`queue`](WorkQueue::queue), [`flush`](WorkQueue::flush) and
//! [`shutdown`](WorkQueue::shutdown), so that a managed work queue of the library can replace
//! it without touching its callers.

use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle, ThreadId};

use crate::journal::{Journal, Owner, Tracked};

/// A unit of work.
pub type Work = Box<dyn FnOnce() + Send + 'static>;

/// See the module docs.
#[derive(Debug)]
pub struct WorkQueue {
    name: String,
    tx: Mutex<Option<Sender<Work>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    worker_id: ThreadId,
    tracked: Tracked,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl WorkQueue {
    /// Starts the worker thread `name`.
    ///
    /// # Errors
    ///
    /// The operating system's error if the thread cannot be spawned.
    pub(crate) fn new(journal: &Arc<Journal>, name: &str) -> std::io::Result<Self> {
        let (tx, rx) = channel::<Work>();
        let thread_guard = journal.track("thread", None);
        let worker = thread::Builder::new().name(name.into()).spawn(move || {
            let _alive = thread_guard;
            // Ends when every sender is gone (shutdown), after the work already queued.
            for work in rx {
                work();
            }
        })?;
        Ok(WorkQueue {
            name: name.into(),
            worker_id: worker.thread().id(),
            tx: Mutex::new(Some(tx)),
            worker: Mutex::new(Some(worker)),
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
        &self.name
    }

    /// Queues `work`; gives it back if the queue has been shut down.
    ///
    /// # Errors
    ///
    /// `work` itself, not run, after [`shutdown`](Self::shutdown).
    pub fn queue(&self, work: Work) -> Result<(), Work> {
        match &*lock(&self.tx) {
            Some(tx) => tx.send(work).map_err(|e| e.0),
            None => Err(work),
        }
    }

    /// Waits until everything queued before this call has run (`flush_workqueue`). Returns at
    /// once on the worker itself (it would wait for itself) or after shutdown.
    pub fn flush(&self) {
        if thread::current().id() == self.worker_id {
            return;
        }
        let (done_tx, done_rx) = channel::<()>();
        if self
            .queue(Box::new(move || {
                let _ = done_tx.send(());
            }))
            .is_ok()
        {
            // An error means the barrier was dropped unrun: the worker is gone.
            let _ = done_rx.recv();
        }
    }

    /// Runs what is queued, then stops the worker and waits for it (`destroy_workqueue`).
    /// Returns whether this call stopped it. On the worker itself the thread is left to end on
    /// its own once this work item returns.
    pub fn shutdown(&self) -> bool {
        let Some(tx) = lock(&self.tx).take() else {
            return false;
        };
        drop(tx);
        let worker = lock(&self.worker).take();
        if let Some(worker) = worker
            && worker.thread().id() != thread::current().id()
        {
            // A panicking work item already reported itself on the worker.
            let _ = worker.join();
        }
        true
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
