//! Grace periods for userspace: an SRCU-like read-side [`Domain`] and the closeable [`Gate`]
//! built on it.
//!
//! # The problem
//!
//! When a device is unplugged, code that is already running on other threads may be in the
//! middle of touching a hardware-facing resource. Before that resource can be released, the
//! releasing thread must know that every such user has finished, and it must be able to stop new
//! users from starting. The kernel answers with (S)RCU: readers mark a *read-side section*,
//! and `synchronize_srcu` waits for a *grace period*, that is until every section that was in
//! progress when it was called has ended. Readers never block and pay almost nothing.
//!
//! [`Domain`] is that primitive for userspace threads, one instance per object (or per group of
//! objects that are revoked together), and [`Gate`] adds the "closed" flag that turns it into the
//! `drm_dev_enter` / `drm_dev_exit` / `drm_dev_unplug` mechanism.
//!
//! # Design
//!
//! A domain has *shards*, 128 bytes apart, and each shard holds two reader counters, one per
//! *phase*. Every thread has a *slot*: a small integer, unique among the live threads, reused
//! after a thread exits. A domain has `n` *owned* shards, shard `i` for the thread whose slot
//! is `i` alone, and one *shared* shard for the threads with larger slots, so two threads
//! reading the same domain concurrently normally touch different cache lines. The owned
//! shards are allocated when a thread that owns one first reads (most domains, one per device,
//! never see a reader, and a device should cost one allocation); until then, or if that
//! allocation fails, readers use the shared shard, which lives inline. Entering a section is
//! one load of the current phase and one increment of `shard.count[phase]`; leaving
//! decrements the very counter that was incremented (the guard remembers it). A counter is
//! therefore never negative, and whether a given reader is still inside can be decided by
//! looking at its own shard alone.
//!
//! On a shard the thread owns alone, neither end of a section is an atomic read-modify-write:
//! nobody else writes that counter, so no update can be lost. Entering stores the incremented
//! value and issues a `SeqCst` fence (the kernel's `this_cpu_inc` + `smp_mb`); leaving is a
//! plain `Release` store of the decremented value (an ordinary store on x86). A locked
//! instruction on every entry and exit was most of the cost of a section; one fence per
//! section is about half of it (W6 in docs/performance.md). The shared shard uses
//! read-modify-writes. A slot is given
//! back at thread exit only if no section the thread entered on its own shard is still open
//! (one could be, in a thread-local destructor that runs later); otherwise it is never reused.
//! Sections entered after the slot was given back use the shared shard.
//!
//! [`Domain::synchronize`] (serialised by a mutex) works like classic SRCU:
//!
//! 1. wait until the *inactive* phase's counters are all zero: only stragglers of the previous
//!    grace period can be counted there (readers that loaded the phase just before the previous
//!    flip and incremented just after it);
//! 2. flip the phase, so that new readers count themselves in the other phase;
//! 3. wait until the previously active phase's counters are all zero.
//!
//! Before all that, and without the mutex, one scan of both phases' counters after a
//! `SeqCst` fence: if every counter reads zero, no section that was in progress at the call is
//! still running (the argument below, which scans both phases after the fence, needs nothing
//! more), and the grace period is over without a flip. That is the common case of an unplug or
//! a revocation with no reader inside; the phases exist for the case of readers that keep the
//! domain occupied.
//!
//! New readers arriving during step 3 go to the new phase, so a continuous stream of readers,
//! even overlapping ones that keep the domain permanently occupied, cannot starve the writer:
//! at most one straggler per thread can still land on a phase after it was flipped away (the
//! thread's next phase load is later in the single total order of `SeqCst` operations than its
//! own increment, hence later than the flip, hence sees the new phase).
//!
//! # Memory ordering
//!
//! The property users rely on is a Dekker pairing. A user clears a flag and then calls
//! `synchronize`; a reader enters and then checks the flag:
//!
//! ```text
//! reader (shared shard): count.fetch_add(1, SeqCst);                  flag.load(SeqCst)
//! reader (owned shard):  count.store(c + 1, Relaxed); fence(SeqCst);  flag.load(SeqCst)
//! writer: flag.store(_, SeqCst); fence(SeqCst); count.load(SeqCst) for every shard and phase
//! ```
//!
//! The `SeqCst` operations and fences sit in one total order *S* consistent with program
//! order. If the reader's flag load did not see the writer's store, the load precedes the
//! store in *S*, so the reader's increment (on an owned shard: the fence that follows it)
//! precedes the writer's fence, and every counter load of the writer therefore observes the
//! increment (or a later value): for the shared shard because both are `SeqCst` accesses of
//! one total order, for an owned shard by the fence-to-fence rule (a store sequenced before a
//! `SeqCst` fence that precedes another `SeqCst` fence in *S* is visible to loads sequenced
//! after the second). An owned counter's `Relaxed` increment is only ever read by a writer as
//! a non-zero count, which makes it wait; every zero it can read was stored by an exit
//! (`Release`) or is the initial value. Each counter only ever holds
//! "increments minus decrements of the readers that used it", and a reader's decrement follows
//! its increment in the counter's modification order, so reading zero means that reader has
//! left. Either the reader saw the flag, or the writer waits for it. Whichever phase the reader
//! loaded does not matter for this argument: step 1 and step 3 together scan both phases after
//! the fence. The phase only matters for progress (above).
//!
//! Readers leave with a `Release` decrement and the writer scans with `SeqCst` (hence acquire)
//! loads, so everything a reader did inside its section happens before whatever the writer does
//! after `synchronize` returns (for example dropping the protected value).
//!
//! [loom](https://docs.rs/loom) treats `SeqCst` loads and read-modify-writes as merely
//! acquire/release, and only understands the total order through `fence(SeqCst)`. Under
//! `cfg(loom)` a reader on the shared shard therefore issues an explicit `fence(SeqCst)` after
//! its increment; the C++20/Rust memory model does not need it (the argument above uses only
//! `SeqCst` accesses there), so real builds leave it out. A reader on an owned shard has its
//! real fence, which the loom models check as it is.
//!
//! # Waiting
//!
//! The writer spins briefly with [`std::hint::spin_loop`], then yields, then sleeps with an
//! exponential backoff capped at one millisecond. Readers never wait and never wake anyone.

use std::fmt;
use std::marker::PhantomData;
use std::ptr;

use crate::error::Error;

use crate::sync::{AtomicPtr, AtomicU64, AtomicUsize, Mutex, Ordering, fence, lock};

mod gate;

pub use gate::{Gate, GateGuard};

/// More readers than this in one counter can only come from leaked guards; the counter would
/// eventually wrap and a grace period could then end with readers inside, so we stop first
/// (the same policy as `Arc`'s reference count).
const MAX_READERS: usize = isize::MAX as usize;

/// The reader counters of one shard, padded to 128 bytes.
///
/// Consecutive shards' counters are 128 bytes apart, so they never share a cache line, nor an
/// aligned pair of lines (adjacent-line prefetchers on x86 pull lines in pairs, and some ARM
/// cores have 128-byte lines). Padding rather than `align(128)` keeps the shard array an
/// ordinary allocation: over-aligned requests take the allocator's slow path, and a domain is
/// made with every device.
struct Shard {
    /// Readers currently inside, per phase.
    count: [AtomicUsize; 2],
    /// Never read, so never written (a new device would otherwise spend stores on it).
    _pad: [std::mem::MaybeUninit<u8>; SHARD_PAD],
}

/// Bytes of padding after a shard's counters.
const SHARD_PAD: usize = 128 - 2 * std::mem::size_of::<AtomicUsize>();

/// An owned shard: a [`Shard`] aligned to 128 bytes, so that no two owned shards share an
/// aligned pair of cache lines (x86's adjacent-line prefetcher pulls lines in such pairs: two
/// threads writing neighbouring owned shards would otherwise disturb each other). Only the
/// owned shards, allocated once per domain on first use, pay for the over-aligned allocation;
/// the shared counters inside the domain are neither padded nor aligned (see [`Domain`]).
#[repr(C, align(128))]
struct OwnedShard(Shard);

// Owned shards are addressed as `Shard`s: same size, so the same stride.
const _: () = assert!(std::mem::size_of::<OwnedShard>() == std::mem::size_of::<Shard>());

impl Shard {
    fn new() -> Self {
        Shard {
            count: [AtomicUsize::new(0), AtomicUsize::new(0)],
            _pad: [std::mem::MaybeUninit::uninit(); SHARD_PAD],
        }
    }
}

/// How many shards a new domain gets.
///
/// A plain load once known (computing it twice in a race gives the same value), so that
/// building a domain calls nothing and can be written straight into its container.
#[cfg(not(loom))]
#[inline]
fn shard_count() -> usize {
    match SHARD_COUNT.load(std::sync::atomic::Ordering::Relaxed) {
        0 => shard_count_first(),
        n => n,
    }
}

#[cfg(not(loom))]
static SHARD_COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[cfg(not(loom))]
#[cold]
fn shard_count_first() -> usize {
    let n = std::thread::available_parallelism()
        .map_or(4, std::num::NonZeroUsize::get)
        .next_power_of_two()
        .clamp(4, 32);
    SHARD_COUNT.store(n, std::sync::atomic::Ordering::Relaxed);
    n
}

/// How many shards a new domain gets: two under loom, so that models also explore readers
/// on different shards while the state space stays small.
#[cfg(loom)]
fn shard_count() -> usize {
    2
}

/// Per-thread shard slots.
///
/// Slots are dense small integers: a thread takes a free slot on its first read section and gives
/// it back when it exits, so that `n` live threads use `n` distinct shards whenever the domain
/// has at least `n` of them. Correctness never depends on the slot: a guard leaves through the
/// counter it entered through, whichever thread owns which slot.
#[cfg(not(loom))]
mod slot {
    use std::cell::Cell;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Slots given back by exited threads.
    static FREE: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    /// Next never-used slot.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    /// Marks "no slot yet".
    const NONE: usize = usize::MAX;
    /// Marks "slot given back" (the thread is exiting): larger than any domain's shard count,
    /// so the thread's remaining sections use the shared shard.
    const GONE: usize = usize::MAX - 1;

    thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(NONE) };
        /// Sections open on this thread's own shards (in any domain).
        static OWN_OPEN: Cell<usize> = const { Cell::new(0) };
        static GIVE_BACK: GiveBack = const { GiveBack };
    }

    /// Returns the thread's slot to [`FREE`] when the thread exits, unless a section on one of
    /// its own shards is still open: the next owner of the slot would then write the same
    /// counter with plain stores, so the slot is never reused instead.
    struct GiveBack;

    impl Drop for GiveBack {
        fn drop(&mut self) {
            let slot = SLOT.with(|s| s.replace(GONE));
            if slot >= GONE || OWN_OPEN.with(Cell::get) != 0 {
                return;
            }
            let mut free = FREE
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Without memory for the record the slot is simply not reused.
            if free.try_reserve(1).is_ok() {
                free.push(slot);
            }
        }
    }

    /// The calling thread's slot.
    #[inline]
    pub(super) fn current() -> usize {
        let slot = SLOT.with(Cell::get);
        if slot != NONE { slot } else { assign() }
    }

    /// Counts a section opened on the thread's own shard.
    #[inline]
    pub(super) fn own_opened() {
        OWN_OPEN.with(|n| n.set(n.get() + 1));
    }

    /// Counts a section on the thread's own shard closed.
    #[inline]
    pub(super) fn own_closed() {
        // `try_with`: the guard may be dropped by a thread-local destructor after this one.
        let _ = OWN_OPEN.try_with(|n| n.set(n.get().wrapping_sub(1)));
    }

    /// The calling thread's slot if it has one, without taking one.
    pub(super) fn peek() -> Option<usize> {
        SLOT.try_with(Cell::get).ok().filter(|&s| s < GONE)
    }

    /// Whether `slot` is waiting in the free list to be reused.
    #[cfg(test)]
    pub(super) fn is_free(slot: usize) -> bool {
        FREE.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&slot)
    }

    #[cold]
    fn assign() -> usize {
        let reused = FREE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let slot = reused.unwrap_or_else(|| NEXT.fetch_add(1, Ordering::Relaxed) & (NONE >> 1));
        // INVARIANT (of the domains' shard ownership): `slot` is in use by no live thread.
        SLOT.with(|s| s.set(slot));
        // Registers the destructor that gives the slot back. It fails only while this thread's
        // thread-locals are being torn down; the slot is then simply never reused.
        let _ = GIVE_BACK.try_with(|_| ());
        slot
    }
}

/// Per-thread shard slots under loom: derived from loom's thread number, which is deterministic
/// across the executions of a model (a global counter would not be, and neither is hashing
/// loom's `ThreadId`, which includes the execution number). The number is only exposed through
/// `Debug` (`ThreadId(n)`).
#[cfg(loom)]
mod slot {
    /// Threads of a model never exit with sections open: nothing to count.
    pub(super) fn own_opened() {}

    pub(super) fn own_closed() {}

    pub(super) fn current() -> usize {
        let id = format!("{:?}", loom::thread::current().id());
        id.bytes().filter(u8::is_ascii_digit).fold(0usize, |n, d| {
            n.wrapping_mul(10).wrapping_add(usize::from(d - b'0'))
        })
    }
}

/// Debug-build bookkeeping of the domains the current thread is reading, used to turn the
/// self-deadlock "synchronize from inside one's own read section" into a panic.
#[cfg(all(debug_assertions, not(loom)))]
mod held {
    use std::cell::RefCell;

    thread_local! {
        static HELD: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn push(id: u64) {
        let _ = HELD.try_with(|h| h.borrow_mut().push(id));
    }

    pub(super) fn pop(id: u64) {
        let _ = HELD.try_with(|h| {
            let mut h = h.borrow_mut();
            if let Some(i) = h.iter().rposition(|&x| x == id) {
                h.swap_remove(i);
            }
        });
    }

    pub(super) fn contains(id: u64) -> bool {
        HELD.try_with(|h| h.borrow().contains(&id)).unwrap_or(false)
    }

    pub(super) fn next_id() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }
}

/// Release builds and loom models do not track held sections.
#[cfg(not(all(debug_assertions, not(loom))))]
mod held {
    #[inline(always)]
    pub(super) fn push(_: u64) {}
    #[inline(always)]
    pub(super) fn pop(_: u64) {}
    #[inline(always)]
    pub(super) fn contains(_: u64) -> bool {
        false
    }
    #[inline(always)]
    pub(super) fn next_id() -> u64 {
        0
    }
}

/// The full fence loom needs to see the reader's half of the Dekker pairing (see the module
/// docs, "Memory ordering"); real builds rely on the `SeqCst` increment and load instead.
#[inline(always)]
fn reader_model_fence() {
    #[cfg(loom)]
    fence(Ordering::SeqCst);
}

/// Spin, then yield, then sleep with exponential backoff.
struct Backoff {
    step: u32,
}

impl Backoff {
    #[cfg(not(loom))]
    const SPIN_STEPS: u32 = 6;
    #[cfg(not(loom))]
    const YIELD_STEPS: u32 = 16;

    fn new() -> Self {
        Backoff { step: 0 }
    }

    fn snooze(&mut self) {
        #[cfg(loom)]
        {
            crate::sync::yield_now();
        }
        #[cfg(not(loom))]
        {
            if self.step < Self::SPIN_STEPS {
                for _ in 0..(1u32 << self.step) {
                    std::hint::spin_loop();
                }
            } else if self.step < Self::YIELD_STEPS {
                crate::sync::yield_now();
            } else {
                let exp = (self.step - Self::YIELD_STEPS).min(10);
                std::thread::sleep(std::time::Duration::from_micros(1 << exp));
            }
        }
        self.step = self.step.saturating_add(1);
    }
}

/// A grace-period domain: read-side sections that never block, and a writer-side
/// [`synchronize`](Domain::synchronize) that waits until every section in progress has ended.
///
/// This is the userspace analogue of an SRCU `srcu_struct`: sections may nest and may be held
/// for as long as the reader likes (including while sleeping), and each domain is independent,
/// so a long section in one domain never delays a grace period of another. See the
/// [module docs](self) for the algorithm and its correctness argument.
///
/// # Invariants
///
/// * `owned_count` is a power of two; `owned` is null or points to `owned_count` shards
///   allocated as a `Box<[OwnedShard]>`, freed only by `Drop`, and never replaced once set. Shard
///   `i` of them is owned by the live thread whose slot is `i`.
/// * An owned shard's counters are written only by its owner while any section is open on it
///   (slots are unique among live threads, and a slot is given back only when no section on
///   an owned shard of its thread is open).
/// * Every counter equals the number of [`ReadGuard`]s alive (or leaked) that entered through
///   it; it never underflows because each guard decrements exactly the counter it
///   incremented, exactly once.
/// * `phase` is modified only while `gp_lock` is held.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use drmm::revoke::grace::Domain;
///
/// let domain = Domain::new();
/// let live = AtomicBool::new(true);
///
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         let _section = domain.read();
///         if live.load(Ordering::SeqCst) {
///             // Everything here finishes before `synchronize` below returns.
///         }
///     });
///     live.store(false, Ordering::SeqCst);
///     domain.synchronize();
///     // No section that could have seen `live == true` is still running.
/// });
/// assert_eq!(domain.grace_periods(), 1);
/// ```
#[doc(alias = "srcu_struct")]
pub struct Domain {
    /// The counters of threads that own no shard here (more threads read the domain than it
    /// has shards) and of every thread if the owned shards could not be allocated. Rarely
    /// written, so not padded: a padded shard would make every idle device 112 bytes larger.
    shared: [AtomicUsize; 2],
    /// The owned shards, made on first use (null before).
    owned: AtomicPtr<Shard>,
    /// Number of owned shards.
    owned_count: usize,
    /// Phase new readers count themselves in (only bit 0 is used).
    phase: AtomicUsize,
    /// Serialises grace periods.
    gp_lock: Mutex<()>,
    /// Completed grace periods.
    grace_periods: AtomicU64,
    /// Identifies the domain in the debug-build self-deadlock check.
    id: u64,
}

impl Domain {
    /// Creates a domain with no reader inside. Allocates nothing: the per-thread shards are
    /// made when a thread first reads.
    ///
    /// # Examples
    ///
    /// ```
    /// let domain = drmm::revoke::grace::Domain::new();
    /// assert_eq!(domain.grace_periods(), 0);
    /// ```
    // Inline: built straight into its container (a device) instead of copied there.
    #[inline]
    pub fn new() -> Self {
        // INVARIANT: `shard_count` returns a power of two; no owned shards yet, no guard.
        Domain {
            shared: [AtomicUsize::new(0), AtomicUsize::new(0)],
            owned: AtomicPtr::new(ptr::null_mut()),
            owned_count: shard_count(),
            phase: AtomicUsize::new(0),
            gp_lock: Mutex::new(()),
            grace_periods: AtomicU64::new(0),
            id: held::next_id(),
        }
    }

    /// The owned shard of the thread with `slot`, if the domain has one for it and the owned
    /// shards exist or can be made now.
    #[inline]
    fn owned_shard(&self, slot: usize) -> Option<&Shard> {
        if slot >= self.owned_count {
            return None;
        }
        let mut shards = self.owned.load(Ordering::Acquire);
        if shards.is_null() {
            shards = self.make_owned()?;
        }
        // SAFETY: by the type invariant a non-null `owned` points to `owned_count` shards that
        // live as long as `self`, and `slot < owned_count`.
        let shard = unsafe { shards.add(slot) };
        // SAFETY: as above: a live, initialised shard, only ever accessed through shared
        // references (its counters are atomics).
        Some(unsafe { &*shard })
    }

    /// Makes the owned shards now, so that readers never allocate (what a device does when it
    /// is registered, that is made reachable by other threads).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`] if they cannot be allocated.
    pub(crate) fn prepare(&self) -> Result<(), Error> {
        if self.owned.load(Ordering::Acquire).is_null() && self.make_owned().is_none() {
            let layout = std::alloc::Layout::new::<Shard>();
            return Err(Error::OutOfMemory {
                size: layout.size() * self.owned_count,
                align: layout.align(),
            });
        }
        Ok(())
    }

    /// Allocates the owned shards and installs them (or those another thread installed
    /// first); `None` if there is no memory for them: readers then use the shared shard.
    #[cold]
    #[inline(never)]
    fn make_owned(&self) -> Option<*mut Shard> {
        let n = self.owned_count;
        let mut shards = Vec::new();
        shards.try_reserve_exact(n).ok()?;
        shards.extend((0..n).map(|_| OwnedShard(Shard::new())));
        // Full (length = capacity): boxing does not reallocate. `OwnedShard` is a `repr(C)`
        // wrapper of the same size: its pointer is a pointer to its `Shard`.
        let mine = Box::into_raw(shards.into_boxed_slice()).cast::<Shard>();
        // SeqCst: a writer scanning after its fence must see the shards a reader counted
        // itself in (see `wait_drained`).
        match self.owned.compare_exchange(
            ptr::null_mut(),
            mine,
            Ordering::SeqCst,
            Ordering::Acquire,
        ) {
            // INVARIANT: `n` fresh shards from a `Box<[OwnedShard]>`, set once.
            Ok(_) => Some(mine),
            Err(theirs) => {
                // SAFETY: `mine` came from `Box::into_raw` of `n` owned shards just above and
                // was never shared.
                drop(unsafe {
                    Box::from_raw(ptr::slice_from_raw_parts_mut(mine.cast::<OwnedShard>(), n))
                });
                Some(theirs)
            }
        }
    }

    /// Enters a read-side section, which lasts until the returned guard is dropped.
    ///
    /// On the thread's own shard (a cache line normally private to it) entering costs a load
    /// of the phase, a store of the incremented counter and a full fence, and leaving a plain
    /// store; on the shared shard, an atomic increment and an atomic decrement. The first read
    /// of a thread that owns a shard may allocate the owned shards (once per domain; without
    /// memory it uses the shared shard). Sections nest freely, may be held while sleeping, and
    /// never wait for a writer.
    ///
    /// The guard is `!Send`: a section is left on the thread that entered it.
    /// Leaking the guard (for example with [`mem::forget`](std::mem::forget)) is safe but
    /// makes every later [`synchronize`](Self::synchronize) wait forever.
    ///
    /// # Examples
    ///
    /// ```
    /// let domain = drmm::revoke::grace::Domain::new();
    /// let outer = domain.read();
    /// let inner = domain.read(); // nesting is fine
    /// drop(outer);
    /// drop(inner); // in any order
    /// domain.synchronize();
    /// ```
    #[doc(alias = "srcu_read_lock")]
    #[inline]
    pub fn read(&self) -> ReadGuard<'_> {
        let (counts, owned) = match self.owned_shard(slot::current()) {
            Some(shard) => (&shard.count, true),
            None => (&self.shared, false),
        };
        let phase = self.phase.load(Ordering::SeqCst) & 1;
        let counter = &counts[phase];
        let prev = if owned {
            // Only this thread writes its own counter (type invariant), so a load and a store
            // cannot lose an update; the SeqCst fence after the store is the reader's half of
            // the Dekker pairing described in the module docs (the kernel's `this_cpu_inc` +
            // `smp_mb`). One fence costs less than a locked read-modify-write on the machines
            // measured (W6 in docs/performance.md). A writer that reads this Relaxed store only
            // ever sees a non-zero count, which makes it wait; every zero it can read was
            // stored by an exit (`Release`) or is the initial value.
            let prev = counter.load(Ordering::Relaxed);
            counter.store(prev.wrapping_add(1), Ordering::Relaxed);
            fence(Ordering::SeqCst);
            prev
        } else {
            // SeqCst: the reader's half of the Dekker pairing, on a shared counter.
            let prev = counter.fetch_add(1, Ordering::SeqCst);
            reader_model_fence();
            prev
        };
        if prev >= MAX_READERS {
            too_many_readers();
        }
        if owned {
            slot::own_opened();
        }
        held::push(self.id);
        // INVARIANT: the guard holds exactly the counter it incremented, and whether the shard
        // is this thread's own.
        ReadGuard {
            counter,
            owned,
            id: self.id,
            _not_send: PhantomData,
        }
    }

    /// Waits for a grace period: returns only after every read section that was in progress when
    /// it was called has ended. Sections that begin during the call may or may not be waited for.
    ///
    /// Any `SeqCst` store made before the call is seen by every section that the call does not
    /// wait for, provided the section checks it with a `SeqCst` load after entering, and
    /// everything done inside a waited-for section happens before the return. That is what makes
    /// "clear a flag, synchronize, free" safe against "enter, check the flag, use".
    ///
    /// Never starved by new readers: readers that start after the call count themselves in the
    /// other phase. Waiting spins briefly, then yields, then sleeps (at most 1 ms at a time).
    /// With no reader inside it returns after one scan of the counters; concurrent calls that
    /// find readers are serialised, each waits for its own grace period.
    ///
    /// # Panics
    ///
    /// Panics if the calling thread is itself inside a read section of this domain: the call
    /// could never return. Debug builds always detect it; release builds when the section went
    /// through the thread's own shard (unless more threads read the domain than it has shards)
    /// and deadlock otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// let domain = drmm::revoke::grace::Domain::new();
    /// domain.synchronize(); // no reader: returns at once
    /// assert_eq!(domain.grace_periods(), 1);
    /// ```
    #[doc(alias = "synchronize_srcu")]
    #[doc(alias = "synchronize_rcu")]
    pub fn synchronize(&self) {
        self.assert_not_reading();
        self.synchronize_checked();
    }

    /// [`synchronize`](Self::synchronize) for a caller that has already called
    /// [`assert_not_reading`](Self::assert_not_reading).
    pub(crate) fn synchronize_checked(&self) {
        // The writer's half of the Dekker pairing, then the scan without flipping (module
        // docs): with no reader inside, the grace period ends here.
        fence(Ordering::SeqCst);
        if self.idle() {
            self.grace_periods.fetch_add(1, Ordering::Release);
            return;
        }
        let _serial = lock(&self.gp_lock);
        // Orders the caller's earlier stores (the flag the readers check) before the counter
        // loads below: the writer's half of the Dekker pairing.
        fence(Ordering::SeqCst);
        let active = self.phase.load(Ordering::Relaxed) & 1;
        // Stragglers of the previous grace period, counted in the phase that is inactive now.
        self.wait_drained(active ^ 1);
        self.phase.store(active ^ 1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.wait_drained(active);
        self.grace_periods.fetch_add(1, Ordering::Release);
    }

    /// Number of grace periods this domain has completed (calls of
    /// [`synchronize`](Self::synchronize) that returned). Meant for tests and diagnostics, for
    /// example to check that a batch revocation waited only once.
    ///
    /// # Examples
    ///
    /// ```
    /// let domain = drmm::revoke::grace::Domain::new();
    /// domain.synchronize();
    /// domain.synchronize();
    /// assert_eq!(domain.grace_periods(), 2);
    /// ```
    pub fn grace_periods(&self) -> u64 {
        self.grace_periods.load(Ordering::Acquire)
    }

    /// Panics if the calling thread is inside a read section of this domain: always in debug
    /// builds, and in release builds when the section went through a shard of the thread's
    /// own (see [`reading_on_own_shard`](Self::reading_on_own_shard)).
    #[track_caller]
    pub(crate) fn assert_not_reading(&self) {
        if held::contains(self.id) || self.reading_on_own_shard() {
            panic!(
                "grace period requested from inside a read section of the same domain \
                 on the same thread: this would wait forever"
            );
        }
    }

    /// Whether the calling thread is inside a read section of this domain that it entered
    /// through its own shard: only the owner of a shard counts itself in it, and a thread's
    /// sections end on that thread (guards are `!Send`), so a non-zero count there is this
    /// thread's. Sections entered through the shared shard (more reading threads than shards)
    /// are not seen. Costs the writer two loads; readers pay nothing.
    #[cfg(not(loom))]
    fn reading_on_own_shard(&self) -> bool {
        let Some(slot) = slot::peek() else {
            return false;
        };
        // Not made here if missing: then no section of this thread went through them.
        if self.owned.load(Ordering::Acquire).is_null() {
            return false;
        }
        let Some(shard) = self.owned_shard(slot) else {
            return false;
        };
        // Relaxed: only this thread writes these counters, and it sees its own stores.
        shard.count.iter().any(|c| c.load(Ordering::Relaxed) != 0)
    }

    /// Loom models do not check (their slots are not exclusive to a thread).
    #[cfg(loom)]
    fn reading_on_own_shard(&self) -> bool {
        false
    }

    /// Whether every counter of both phases reads zero (one scan, no waiting). Called after a
    /// `SeqCst` fence, like [`wait_drained`](Self::wait_drained), for the same reason.
    fn idle(&self) -> bool {
        let zero = |c: &[AtomicUsize; 2]| {
            c[0].load(Ordering::SeqCst) == 0 && c[1].load(Ordering::SeqCst) == 0
        };
        if !zero(&self.shared) {
            return false;
        }
        let owned = self.owned.load(Ordering::SeqCst);
        if owned.is_null() {
            return true;
        }
        // SAFETY: by the type invariant, `owned_count` shards that live as long as `self`.
        let owned = unsafe { std::slice::from_raw_parts(owned, self.owned_count) };
        owned.iter().all(|shard| zero(&shard.count))
    }

    /// Waits until every shard's counter for `phase` reads zero.
    ///
    /// Called after a `SeqCst` fence: if a reader counted itself in the owned shards, their
    /// installation (a `SeqCst` exchange, before the reader's increment) precedes the fence, so
    /// the load below sees them.
    fn wait_drained(&self, phase: usize) {
        let drain = |counts: &[AtomicUsize; 2]| {
            let mut backoff = Backoff::new();
            while counts[phase].load(Ordering::SeqCst) != 0 {
                backoff.snooze();
            }
        };
        drain(&self.shared);
        let owned = self.owned.load(Ordering::SeqCst);
        if !owned.is_null() {
            // SAFETY: by the type invariant, `owned_count` shards that live as long as `self`.
            let owned = unsafe { std::slice::from_raw_parts(owned, self.owned_count) };
            owned.iter().for_each(|shard| drain(&shard.count));
        }
    }
}

impl Default for Domain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        let owned = self.owned.load(Ordering::Acquire);
        if !owned.is_null() {
            // SAFETY: by the type invariant, `owned_count` shards from a `Box<[OwnedShard]>`;
            // no guard can be alive (they borrow the domain), so nothing uses them any more.
            drop(unsafe {
                Box::from_raw(ptr::slice_from_raw_parts_mut(
                    owned.cast::<OwnedShard>(),
                    self.owned_count,
                ))
            });
        }
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Domain")
            .field("owned_shards", &self.owned_count)
            .field("grace_periods", &self.grace_periods())
            .finish_non_exhaustive()
    }
}

#[cold]
#[inline(never)]
fn too_many_readers() -> ! {
    // Unwinding would leave the counter incremented; nothing sane can follow, as with `Arc`.
    std::process::abort()
}

/// A read-side section of a [`Domain`]; the section ends when the guard is dropped.
///
/// `!Send`, like an RCU read lock: a section begins and ends on one thread.
///
/// ```compile_fail
/// let domain = drmm::revoke::grace::Domain::new();
/// std::thread::scope(|s| {
///     let guard = domain.read();
///     s.spawn(move || drop(guard)); // error: `ReadGuard` cannot be sent between threads
/// });
/// ```
///
/// Covariant in `'a`, as a shared borrow of the domain is; the guard cannot outlive it:
///
/// ```compile_fail
/// let domain = drmm::revoke::grace::Domain::new();
/// let guard = domain.read();
/// drop(domain); // error: `domain` is borrowed by `guard`
/// drop(guard);
/// ```
///
/// # Invariants
///
/// `counter` is the shard counter of the domain that was incremented when this guard was
/// created; it is decremented exactly once, by `Drop`. If `owned`, it belongs to a shard owned
/// by the thread that created the guard (which is the thread that drops it: the guard is not
/// `Send`), and stays owned until the guard is dropped.
#[doc(alias = "srcu_read_unlock")]
#[must_use = "the read section ends as soon as the guard is dropped"]
pub struct ReadGuard<'a> {
    counter: &'a AtomicUsize,
    owned: bool,
    id: u64,
    _not_send: PhantomData<*const ()>,
}

impl Drop for ReadGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        held::pop(self.id);
        // Release: everything done inside the section happens before a writer that observes the
        // decrement (its scan loads are SeqCst, hence acquire).
        if self.owned {
            // Only this thread writes an owned counter (type invariant), so loading and storing
            // cannot lose an update; a writer that reads the stored value, or one written by a
            // later read-modify-write of this thread, synchronizes with this store.
            let inside = self.counter.load(Ordering::Relaxed);
            self.counter.store(inside - 1, Ordering::Release);
            slot::own_closed();
        } else {
            self.counter.fetch_sub(1, Ordering::Release);
        }
    }
}

impl fmt::Debug for ReadGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadGuard").finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
