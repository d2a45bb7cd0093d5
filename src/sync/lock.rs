//! The lock that protects a resource list: a test-and-test-and-set lock without poisoning.
//!
//! Nothing but the library's own bookkeeping runs under it (user code — actions, destructors,
//! `tracing` subscribers behind the events — always runs after unlocking; the lock is not
//! reentrant, so user code under it would deadlock as soon as it read the list), so it is
//! held for a few dozen instructions. For that,
//! `std::sync::Mutex` costs twice what it needs to: a locked exchange on unlock and a look at
//! the thread's panic count on both lock and unlock (for poisoning, which this lock does not
//! need: a panic cannot leave a list half-updated because no user code runs while it is held).
//! Waiters spin briefly, yield a few times, then sleep with a growing period, so threads
//! waiting for a preempted holder do not burn the core it needs.
//!
//! Under `--cfg loom` it is loom's mutex, so the models explore every interleaving.

#[cfg(not(loom))]
mod imp {
    use std::cell::UnsafeCell;
    use std::ops::{Deref, DerefMut};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A lock around a `T`.
    ///
    /// # Invariants
    ///
    /// `value` is accessed only through a [`ListGuard`] (which exists only while `locked` was
    /// set by its creation) or through `&mut self`.
    pub(crate) struct ListLock<T> {
        locked: AtomicBool,
        value: UnsafeCell<T>,
    }

    // SAFETY: the lock hands out access to `T` to one thread at a time, so it can be shared
    // when `T` can be sent between threads (like `Mutex<T>`).
    unsafe impl<T: Send> Sync for ListLock<T> {}
    // SAFETY: owning the lock is owning the `T`.
    unsafe impl<T: Send> Send for ListLock<T> {}

    impl<T> ListLock<T> {
        pub(crate) const fn new(value: T) -> Self {
            ListLock {
                locked: AtomicBool::new(false),
                value: UnsafeCell::new(value),
            }
        }

        #[inline]
        pub(crate) fn lock(&self) -> ListGuard<'_, T> {
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                self.lock_contended();
            }
            // INVARIANT: `locked` was set by this call.
            ListGuard { lock: self }
        }

        #[cold]
        fn lock_contended(&self) {
            // Three stages, each for a longer wait than the one before:
            //
            // * exponential backoff between looks at the lock word: a waiter that keeps reading
            //   it pulls its cache line away from the holder on every look, which then pays a
            //   transfer to release it; backing off lets the holder finish (and often run its
            //   next short section) with the line, the list's state and the slots hot in its
            //   cache;
            // * a few yields: the holder may be waiting for this very core;
            // * sleeps, doubling from 1 µs to 1 ms: the lock is held for a few dozen
            //   instructions, so a wait this long means the holder was preempted and needs a
            //   core, which a waiter that keeps yielding would compete for. Sleeping (rather
            //   than parking on a queue that `unlock` would have to look at) keeps the unlock a
            //   plain store: the uncontended path pays nothing for this stage.
            const SPIN_ROUNDS: u32 = 8;
            const YIELDS: u32 = 8;
            const FIRST_SLEEP_NS: u64 = 1_000;
            const MAX_SLEEP_NS: u64 = 1_000_000;
            let mut round = 0u32;
            let mut sleep_ns = FIRST_SLEEP_NS;
            loop {
                #[cfg(test)]
                super::tests::LOOKS.with(|n| n.set(n.get() + 1));
                if round < SPIN_ROUNDS {
                    for _ in 0..(1u32 << round) {
                        std::hint::spin_loop();
                    }
                    round += 1;
                } else if round < SPIN_ROUNDS + YIELDS {
                    std::thread::yield_now();
                    round += 1;
                } else {
                    std::thread::sleep(std::time::Duration::from_nanos(sleep_ns));
                    sleep_ns = (sleep_ns * 2).min(MAX_SLEEP_NS);
                }
                if !self.locked.load(Ordering::Relaxed)
                    && self
                        .locked
                        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                {
                    return;
                }
            }
        }

        /// Locks without the atomic read-modify-write of [`lock`](Self::lock), for an owner
        /// that knows no other thread can reach the lock (the final release of a list whose
        /// owner's last reference is gone). The guard is the same as `lock`'s: it still marks
        /// the lock taken, so that a broken promise shows up as a wait (or, in debug builds, an
        /// assertion), never as two accesses at once on this thread.
        ///
        /// # Safety
        ///
        /// While the guard lives, no other thread may use this lock.
        #[inline]
        pub(crate) unsafe fn lock_exclusive(&self) -> ListGuard<'_, T> {
            debug_assert!(
                !self.locked.load(Ordering::Relaxed),
                "exclusive lock of a lock already held"
            );
            // A plain store: no other thread reads `locked` meanwhile (the caller's promise).
            self.locked.store(true, Ordering::Relaxed);
            // INVARIANT: `locked` was set by this call, and nobody else can set it until the
            // guard stores `false` on drop.
            ListGuard { lock: self }
        }

        pub(crate) fn get_mut(&mut self) -> &mut T {
            self.value.get_mut()
        }
    }

    /// Access to the locked `T`; unlocks on drop.
    pub(crate) struct ListGuard<'a, T> {
        lock: &'a ListLock<T>,
    }

    impl<T> Deref for ListGuard<'_, T> {
        type Target = T;
        #[inline]
        fn deref(&self) -> &T {
            // SAFETY: the guard holds the lock, so no other access to the value exists.
            unsafe { &*self.lock.value.get() }
        }
    }

    impl<T> DerefMut for ListGuard<'_, T> {
        #[inline]
        fn deref_mut(&mut self) -> &mut T {
            // SAFETY: as for `deref`, and the guard is borrowed mutably.
            unsafe { &mut *self.lock.value.get() }
        }
    }

    impl<T> Drop for ListGuard<'_, T> {
        #[inline]
        fn drop(&mut self) {
            self.lock.locked.store(false, Ordering::Release);
        }
    }
}

#[cfg(loom)]
mod imp {
    /// Loom's mutex, so that models explore the list's interleavings.
    pub(crate) struct ListLock<T>(loom::sync::Mutex<T>);
    pub(crate) type ListGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> ListLock<T> {
        pub(crate) fn new(value: T) -> Self {
            ListLock(loom::sync::Mutex::new(value))
        }
        pub(crate) fn lock(&self) -> ListGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
        /// Under loom, the ordinary lock: models keep checking the exclusivity promise.
        ///
        /// # Safety
        ///
        /// None beyond [`lock`](Self::lock)'s (the signature matches the non-loom version).
        pub(crate) unsafe fn lock_exclusive(&self) -> ListGuard<'_, T> {
            self.lock()
        }
        pub(crate) fn get_mut(&mut self) -> &mut T {
            self.0.get_mut().unwrap_or_else(|e| e.into_inner())
        }
    }
}

pub(crate) use imp::{ListGuard, ListLock};

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    thread_local! {
        /// Rounds of the contended wait on this thread (each ends with a look at the lock).
        pub(super) static LOOKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    #[test]
    fn excludes_across_threads() {
        let l = std::sync::Arc::new(ListLock::new(0u64));
        let n = if cfg!(miri) { 50 } else { 20_000 };
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..n {
                        *l.lock() += 1;
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(*l.lock(), 4 * n);
    }

    #[test]
    fn exclusive_lock_unlocks_for_the_next_taker() {
        let l = ListLock::new(1u32);
        {
            // SAFETY: the lock is local to this thread.
            let mut g = unsafe { l.lock_exclusive() };
            *g += 1;
        }
        *l.lock() += 1;
        assert_eq!(*l.lock(), 3);
    }

    /// CPU time this thread has used, in clock ticks (user + system), from
    /// `/proc/thread-self/stat`.
    #[cfg(target_os = "linux")]
    fn thread_cpu_ticks() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // The fields after the command name (which is in parentheses and may hold spaces):
        // state is the 3rd field of the line, utime the 14th, stime the 15th.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// A waiter for a holder that keeps the lock for long (a preempted holder, here one that
    /// sleeps) sleeps too: it uses a small part of the wait's CPU time, where spinning or
    /// yielding alone would use all of it.
    #[test]
    #[cfg(target_os = "linux")]
    #[cfg_attr(miri, ignore = "reads /proc; miri's clock is virtual")]
    fn a_long_wait_sleeps_instead_of_burning_a_core() {
        use std::sync::{Arc, Barrier};
        use std::time::Duration;
        const HOLD: Duration = Duration::from_millis(400);
        let l = Arc::new(ListLock::new(0u32));
        let held = Arc::new(Barrier::new(2));
        let holder = {
            let (l, held) = (l.clone(), held.clone());
            std::thread::spawn(move || {
                let mut g = l.lock();
                held.wait();
                std::thread::sleep(HOLD);
                *g += 1;
            })
        };
        held.wait();
        let before = thread_cpu_ticks();
        LOOKS.with(|n| n.set(0));
        *l.lock() += 1;
        let used = thread_cpu_ticks() - before;
        let looks = LOOKS.with(|n| n.get());
        holder.join().unwrap();
        assert_eq!(*l.lock(), 2);
        // 400 ms is 40 ticks at the usual 100 Hz; a sleeping waiter uses about none of them.
        // (On an idle machine a yielding waiter uses all of them; on a loaded one its yields
        // give the core away, so its rounds are counted too: with sleeps of up to 1 ms there
        // are a few hundred, a yielding or spinning waiter makes thousands.)
        assert!(
            used <= 10,
            "the waiter used {used} ticks of CPU time during a {HOLD:?} wait"
        );
        assert!(
            looks <= 2_000,
            "the waiter looked at the lock {looks} times during a {HOLD:?} wait"
        );
    }
}
