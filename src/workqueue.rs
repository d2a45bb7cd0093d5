//! An ordered work queue (`alloc_ordered_workqueue`): one named worker thread that runs the
//! closures queued on it one at a time, in the order they were queued.
//!
//! Managed forms tie its end to an owner: [`LogicalDevice::alloc_ordered_workqueue`]
//! (`drmm_alloc_ordered_workqueue`, destroyed at the last reference) and
//! [`Bound::alloc_ordered_workqueue`] (`devm_alloc_ordered_workqueue`, destroyed at unbind).
//! [`WorkQueue::new`] is the unmanaged form, destroyed by its last handle.
//!
//! # Decisions
//!
//! * **Destroy drains.** [`destroy_workqueue`](WorkQueue::destroy_workqueue) works like the
//!   kernel's: it stops accepting work from other threads, waits until everything queued has
//!   run — including work that running items queue on the same queue (chained work) — then
//!   stops the worker thread and joins it. Nothing queued is ever dropped unrun.
//! * **Exactly once.** The first destroy (explicit, managed release, or the last handle)
//!   does it; every later one is a no-op returning `false` that still waits for the worker to
//!   have finished. Destroying early and letting the owner's release destroy again is safe,
//!   unlike in C, where the second `destroy_workqueue` is a use-after-free.
//! * **Panics.** A work item that panics is caught on the worker: it is reported at once as an
//!   error event (target `drmm`, message `work item panicked`), counted
//!   ([`panicked`](WorkQueue::panicked), and the return of
//!   [`flush_workqueue`](WorkQueue::flush_workqueue)), and the later items still run. The
//!   first panic is resumed by the call that destroys the queue, after the worker was joined
//!   (in a managed release: by the release, once all its entries are released); while that
//!   thread is already unwinding it is logged instead. Later panics are only logged.
//! * **Destroy from the worker itself.** A work item may destroy its own queue (directly, by
//!   dropping the last handle, or by dropping the last reference of the device whose release
//!   destroys it). The worker cannot join itself: the call marks the queue destroyed and
//!   returns `true` at once; the worker finishes the current item and drains the rest, then
//!   ends on its own (detached). Panics kept until then are logged when it ends.
//! * **No internal lock around work.** Items run with no lock of the queue held, so they may
//!   queue more work, flush (a no-op on the worker), destroy the queue or release a device.
//!
//! Work items that touch hardware enter the unplug gate as usual:
//!
//! ```
//! let card = drmm::Device::new(());
//! let wq = card.alloc_ordered_workqueue("card0-commit")?;
//! let dev = card.clone();
//! wq.queue_work(move || {
//!     if let Some(_inside) = dev.enter() {
//!         // program the hardware; unplug() waits for this section
//!     }
//! })?;
//! card.unplug();
//! drop(card); // the last reference is the work item's: the queue is drained there
//! # Ok::<(), drmm::Error>(())
//! ```

use std::alloc::Layout;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle, ThreadId};

use crate::bus::Bound;
use crate::device::LogicalDevice;
use crate::error::{Error, Result};
use crate::res::list::{PanicPayload, PanicSink, drop_payload, panic_message};
use crate::sync::fallible::try_box;
use crate::trace;

type Work = Box<dyn FnOnce() + Send + 'static>;

/// A handle to an ordered work queue. See the [module docs](self) for the decisions: destroy
/// drains, exactly once, panics, destroy from the worker.
///
/// Handles are cheap to clone; the queue is destroyed by the first of: an explicit
/// [`destroy_workqueue`](Self::destroy_workqueue), the release of its owner (managed forms),
/// the drop of its last handle.
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
///
/// let wq = drmm::workqueue::WorkQueue::new("events")?;
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// for i in 0..3 {
///     let s = seen.clone();
///     wq.queue_work(move || s.lock().unwrap().push(i))?;
/// }
/// assert_eq!(wq.flush_workqueue(), 0); // no item panicked
/// assert_eq!(*seen.lock().unwrap(), [0, 1, 2]);
/// assert!(wq.destroy_workqueue());
/// assert!(!wq.destroy_workqueue()); // no double destroy
/// # Ok::<(), drmm::Error>(())
/// ```
#[doc(alias = "workqueue_struct")]
#[doc(alias = "alloc_ordered_workqueue")]
pub struct WorkQueue {
    shared: Arc<Shared>,
}

struct Shared {
    name: Box<str>,
    state: Mutex<State>,
    /// Signals the worker (work queued, closed) and the waiters (item done, worker ended).
    changed: Condvar,
    /// User handles alive; the last one destroys the queue.
    handles: AtomicUsize,
}

struct State {
    queue: VecDeque<Work>,
    /// Items queued since creation, and items finished (run or panicked).
    queued: u64,
    done: u64,
    /// Refuses work from other threads (draining or destroyed).
    draining: usize,
    destroyed: bool,
    /// The worker has returned from its loop.
    ended: bool,
    /// Destroyed from the worker itself: nobody joins it.
    detached: bool,
    worker: Option<ThreadId>,
    handle: Option<JoinHandle<()>>,
    panicked: usize,
    first_panic: Option<PanicPayload>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn on_worker(&self, st: &State) -> bool {
        st.worker == Some(thread::current().id())
    }

    fn wait<'a>(&self, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(st)
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The worker's loop: pops under the lock, runs with no lock held.
    fn run(&self) {
        let mut st = lock(&self.state);
        loop {
            if let Some(work) = st.queue.pop_front() {
                drop(st);
                let panic = panic::catch_unwind(AssertUnwindSafe(work)).err();
                let mut extra = None;
                if let Some(p) = panic {
                    self.report(&*p);
                    let mut s = lock(&self.state);
                    s.panicked += 1;
                    if s.first_panic.is_none() {
                        s.first_panic = Some(p);
                    } else {
                        extra = Some(p);
                    }
                    drop(s);
                }
                // A payload's drop is user code: outside the lock.
                if let Some(p) = extra {
                    drop_payload(p);
                }
                st = lock(&self.state);
                st.done += 1;
                self.changed.notify_all();
            } else if st.destroyed {
                break;
            } else {
                st = self.wait(st);
            }
        }
        st.ended = true;
        // Detached (destroyed from this thread): nobody will resume the first panic.
        let orphan = if st.detached {
            st.first_panic.take()
        } else {
            None
        };
        self.changed.notify_all();
        drop(st);
        if let Some(p) = orphan {
            let message = panic_message(&*p);
            if let Some(q) = trace::caught(|| trace::panic_not_resumed(&self.name, message)) {
                drop_payload(q);
            }
            drop_payload(p);
        }
    }

    fn report(&self, p: &(dyn std::any::Any + Send)) {
        let message = panic_message(p);
        if let Some(q) = trace::caught(|| {
            tracing::error!(
                target: "drmm",
                dev_name = &*self.name,
                detail = message,
                "work item panicked",
            );
        }) {
            drop_payload(q);
        }
    }
}

/// Drops its work queue handle count; the last destroys the queue.
impl Drop for WorkQueue {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.destroy_workqueue();
        }
    }
}

impl Clone for WorkQueue {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        WorkQueue {
            shared: self.shared.clone(),
        }
    }
}

impl fmt::Debug for WorkQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = lock(&self.shared.state);
        f.debug_struct("WorkQueue")
            .field("name", &self.shared.name)
            .field("pending", &st.queue.len())
            .field("destroyed", &st.destroyed)
            .field("panicked", &st.panicked)
            .finish()
    }
}

impl WorkQueue {
    /// Starts an unmanaged ordered work queue whose worker thread is called `name`
    /// (`alloc_ordered_workqueue`). It is destroyed by
    /// [`destroy_workqueue`](Self::destroy_workqueue) or by the drop of its last handle.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`] if the thread could not be started (the kernel's `NULL`). The
    /// operating system's refusal is reported so; an allocation failure while creating the
    /// thread aborts the process instead, as `std::thread::spawn` does (the queue's own
    /// allocations on later calls, [`queue_work`](Self::queue_work)'s, are fallible).
    ///
    /// # Examples
    ///
    /// ```
    /// let wq = drmm::workqueue::WorkQueue::new("events")?;
    /// assert_eq!(wq.name(), "events");
    /// wq.queue_work(|| assert_eq!(std::thread::current().name(), Some("events")))?;
    /// drop(wq); // the last handle: drained and joined here
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "alloc_ordered_workqueue")]
    pub fn new(name: impl Into<Cow<'static, str>>) -> Result<Self> {
        let name: Box<str> = match name.into() {
            Cow::Borrowed(s) => s.into(),
            Cow::Owned(s) => s.into_boxed_str(),
        };
        let shared = Arc::new(Shared {
            name: name.clone(),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued: 0,
                done: 0,
                draining: 0,
                destroyed: false,
                ended: false,
                detached: false,
                worker: None,
                handle: None,
                panicked: 0,
                first_panic: None,
            }),
            changed: Condvar::new(),
            handles: AtomicUsize::new(1),
        });
        let theirs = shared.clone();
        let handle = thread::Builder::new()
            .name(name.into())
            .spawn(move || theirs.run())
            .map_err(|_| Error::OutOfMemory { size: 0, align: 1 })?;
        let mut st = lock(&shared.state);
        st.worker = Some(handle.thread().id());
        st.handle = Some(handle);
        drop(st);
        Ok(WorkQueue { shared })
    }

    /// The worker thread's name.
    ///
    /// # Examples
    ///
    /// ```
    /// let card = drmm::Device::new(());
    /// assert_eq!(card.alloc_ordered_workqueue("commit")?.name(), "commit");
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Queues `work` to run after everything queued before it (`queue_work`). It runs on the
    /// worker thread, with no lock of the queue held.
    ///
    /// # Errors
    ///
    /// [`Error::QueueClosed`] if the queue is destroyed, or draining and the caller is not a
    /// work item of this queue (the kernel allows only chained work while draining);
    /// [`Error::OutOfMemory`] if the item or the queue could not grow. Either way `work` is
    /// dropped unrun, with no lock of the queue held.
    ///
    /// # Examples
    ///
    /// ```
    /// let wq = drmm::workqueue::WorkQueue::new("events")?;
    /// let again = wq.clone();
    /// wq.queue_work(move || {
    ///     // chained work: allowed even while the queue drains
    ///     again.queue_work(|| println!("second")).unwrap();
    /// })?;
    /// wq.destroy_workqueue(); // drains both
    /// assert_eq!(wq.queue_work(|| ()), Err(drmm::Error::QueueClosed));
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn queue_work(&self, work: impl FnOnce() + Send + 'static) -> Result<()> {
        // Dropped unrun if the box cannot be allocated.
        let work: Work = try_box(work)?;
        let mut st = lock(&self.shared.state);
        if st.queue.try_reserve(1).is_err() {
            drop(st);
            drop(work);
            return Err(Error::oom(Layout::new::<Work>()));
        }
        let refused = st.ended || (st.draining > 0 && !self.shared.on_worker(&st));
        if refused {
            drop(st);
            // The captures' drop is user code: outside the lock.
            drop(work);
            return Err(Error::QueueClosed);
        }
        st.queue.push_back(work);
        st.queued += 1;
        drop(st);
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Waits until every item queued before this call has run (`flush_workqueue`), and
    /// returns how many items of this queue have panicked so far.
    ///
    /// On the worker itself it returns at once: an item cannot wait for the items after it
    /// (the kernel would deadlock).
    ///
    /// # Examples
    ///
    /// ```
    /// let wq = drmm::workqueue::WorkQueue::new("events")?;
    /// wq.queue_work(|| panic!("bad item"))?;
    /// assert_eq!(wq.flush_workqueue(), 1); // reported, and the queue goes on
    /// wq.queue_work(|| ())?;
    /// assert_eq!(wq.flush_workqueue(), 1);
    /// # let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wq.destroy_workqueue()));
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn flush_workqueue(&self) -> usize {
        let mut st = lock(&self.shared.state);
        if !self.shared.on_worker(&st) {
            let target = st.queued;
            while st.done < target && !st.ended {
                st = self.shared.wait(st);
            }
        }
        st.panicked
    }

    /// Waits until the queue is empty, including work queued by its own items meanwhile
    /// (`drain_workqueue`); other threads' `queue_work` is refused until it returns. The
    /// queue stays usable afterwards. On the worker itself it returns at once.
    ///
    /// # Examples
    ///
    /// ```
    /// let wq = drmm::workqueue::WorkQueue::new("events")?;
    /// let again = wq.clone();
    /// wq.queue_work(move || again.queue_work(|| ()).unwrap())?;
    /// wq.drain_workqueue(); // both ran
    /// wq.queue_work(|| ())?; // usable again
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn drain_workqueue(&self) {
        let mut st = lock(&self.shared.state);
        if self.shared.on_worker(&st) {
            return;
        }
        st.draining += 1;
        while st.done < st.queued && !st.ended {
            st = self.shared.wait(st);
        }
        st.draining -= 1;
    }

    /// Number of work items of this queue that panicked so far.
    ///
    /// # Examples
    ///
    /// ```
    /// let wq = drmm::workqueue::WorkQueue::new("events")?;
    /// wq.flush_workqueue();
    /// assert_eq!(wq.panicked(), 0);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn panicked(&self) -> usize {
        lock(&self.shared.state).panicked
    }

    /// Whether the queue has been destroyed.
    ///
    /// # Examples
    ///
    /// ```
    /// let wq = drmm::workqueue::WorkQueue::new("events")?;
    /// wq.destroy_workqueue();
    /// assert!(wq.is_destroyed());
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn is_destroyed(&self) -> bool {
        lock(&self.shared.state).destroyed
    }

    /// Drains the queue, stops the worker and joins it (`destroy_workqueue`). Returns `true`
    /// if this call destroyed it, `false` if it was already destroyed (no double destroy);
    /// either way every queued item has run when it returns — except on the worker itself,
    /// which cannot join itself: there the queue is marked destroyed, and the worker drains
    /// the rest and ends on its own once the current item returns.
    ///
    /// # Panics
    ///
    /// Resumes the first panic of a work item, once the worker was joined (only the call that
    /// destroyed the queue, and not on the worker; logged instead while this thread unwinds).
    ///
    /// # Examples
    ///
    /// ```
    /// let card = drmm::Device::new(());
    /// let wq = card.alloc_ordered_workqueue("commit")?;
    /// wq.queue_work(|| ())?;
    /// assert!(wq.destroy_workqueue()); // early, by the driver
    /// drop(card); // the managed release finds it destroyed: nothing twice
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn destroy_workqueue(&self) -> bool {
        let shared = &*self.shared;
        let mut st = lock(&shared.state);
        let on_worker = shared.on_worker(&st);
        if st.destroyed {
            while !on_worker && !st.ended {
                st = shared.wait(st);
            }
            return false;
        }
        st.destroyed = true;
        // Other threads may not queue any more; the worker may (chained work).
        st.draining += 1;
        st.detached = on_worker;
        let handle = st.handle.take();
        drop(st);
        shared.changed.notify_all();
        if on_worker {
            // Detached: the worker ends after the current item and the rest.
            drop(handle);
            return true;
        }
        if let Some(h) = handle {
            // The worker catches every item's panic; an error here can only be a panic of
            // the loop itself, kept like an item's.
            if let Err(p) = h.join() {
                let mut st = lock(&shared.state);
                if st.first_panic.is_none() {
                    st.first_panic = Some(p);
                } else {
                    drop(st);
                    drop_payload(p);
                }
            }
        }
        let first = lock(&shared.state).first_panic.take();
        PanicSink::resume(first, &shared.name);
        true
    }
}

impl<T> LogicalDevice<T> {
    /// Allocates an ordered work queue destroyed when the device is released
    /// (`drmm_alloc_ordered_workqueue`): at the last reference, a drmm action drains and joins
    /// it, newest first with the other entries. An earlier
    /// [`destroy_workqueue`](WorkQueue::destroy_workqueue) makes that action a no-op.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`] if the thread could not be started or the list could not grow
    /// (the queue is then destroyed at once).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    ///
    /// let card = drmm::Device::new(());
    /// let wq = card.alloc_ordered_workqueue("card0-commit")?;
    /// let log = Arc::new(Mutex::new(Vec::new()));
    /// for i in 0..3 {
    ///     let l = log.clone();
    ///     wq.queue_work(move || l.lock().unwrap().push(i))?;
    /// }
    /// drop(card); // last reference: drained, then joined
    /// assert_eq!(*log.lock().unwrap(), [0, 1, 2]);
    /// assert!(wq.is_destroyed());
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "drmm_alloc_ordered_workqueue")]
    #[track_caller]
    pub fn alloc_ordered_workqueue(&self, name: impl Into<Cow<'static, str>>) -> Result<WorkQueue> {
        let wq = WorkQueue::new(name)?;
        let theirs = wq.clone();
        let _ =
            self.add_action_or_reset_named("destroy_workqueue", move |_: &LogicalDevice<T>| {
                theirs.destroy_workqueue();
            })?;
        Ok(wq)
    }
}

impl Bound<'_> {
    /// Allocates an ordered work queue destroyed when the binding ends
    /// (`devm_alloc_ordered_workqueue`): a devres action drains and joins it at unbind. An
    /// earlier [`destroy_workqueue`](WorkQueue::destroy_workqueue) makes that action a no-op.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`] if the thread could not be started or the list could not grow
    /// (the queue is then destroyed at once).
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// let wq = dev.try_with_driverless(|b| b.alloc_ordered_workqueue("gpu.0-irq"))?;
    /// wq.queue_work(|| ())?;
    /// dev.remove()?; // the binding's end: drained and joined
    /// assert!(wq.is_destroyed());
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devm_alloc_ordered_workqueue")]
    #[track_caller]
    pub fn alloc_ordered_workqueue(&self, name: impl Into<Cow<'static, str>>) -> Result<WorkQueue> {
        let wq = WorkQueue::new(name)?;
        let theirs = wq.clone();
        let _ = self.add_action_or_reset_named("destroy_workqueue", move || {
            theirs.destroy_workqueue();
        })?;
        Ok(wq)
    }
}
