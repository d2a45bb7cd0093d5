//! A cell written at most once, readable from any thread: the device's driver data.
//!
//! `std::sync::OnceLock` would do, but even `OnceLock::from(value)` goes through its one-time
//! initialisation machinery (a `Once` call and its closure), about 3 % of creating and
//! dropping a small device. Almost every device gets its data at construction
//! ([`SetOnce::with`]: no atomic operation at all); only `Device::try_new_with` sets it later,
//! once, from the thread that built the device while its `init` may have handed
//! `&LogicalDevice` to other threads that read it.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;

use crate::sync::{AtomicUsize, Ordering};

/// `state`: no value, and nobody is writing one.
const EMPTY: usize = 0;
/// `state`: a `set` won the race and is writing the value.
const WRITING: usize = 1;
/// `state`: the value is written and will not change until the cell is dropped.
const SET: usize = 2;

/// A value that is set at most once, then only read.
///
/// # Invariants
///
/// `state` only moves `EMPTY → WRITING → SET`. `value` is initialised exactly when `state` is
/// `SET`; it is written only by the one `set` that moved `state` from `EMPTY` to `WRITING`
/// (or by [`with`](Self::with), before the cell is shared), and read only after observing
/// `SET` with `Acquire` (pairing with the `Release` store that published it).
pub(crate) struct SetOnce<T> {
    state: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: a shared `SetOnce` hands out `&T` to any thread (needs `T: Sync`) and `set` moves a
// `T` in from whichever thread calls it (needs `T: Send`), as `OnceLock<T>` requires.
unsafe impl<T: Send + Sync> Sync for SetOnce<T> {}
// SAFETY: owning the cell is owning the `T` (if set).
unsafe impl<T: Send> Send for SetOnce<T> {}

impl<T> SetOnce<T> {
    /// An empty cell.
    pub(crate) fn new() -> Self {
        // INVARIANT: EMPTY, value uninitialised.
        SetOnce {
            state: AtomicUsize::new(EMPTY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// A cell already holding `value`.
    pub(crate) fn with(value: T) -> Self {
        // INVARIANT: SET, value initialised; nobody else can see the cell yet.
        SetOnce {
            state: AtomicUsize::new(SET),
            value: UnsafeCell::new(MaybeUninit::new(value)),
        }
    }

    /// The value, or `None` if it is not set (or still being written).
    #[inline]
    pub(crate) fn get(&self) -> Option<&T> {
        if self.state.load(Ordering::Acquire) == SET {
            // SAFETY: SET observed with Acquire: the value is initialised, its write happens
            // before this read, and it is never written again while `&self` lives.
            let value = unsafe { &*self.value.get() };
            // SAFETY: initialised (above).
            Some(unsafe { value.assume_init_ref() })
        } else {
            None
        }
    }

    /// Sets the value; hands it back if the cell was already set (or being set).
    ///
    /// # Errors
    ///
    /// `Err(value)` if another `set` (or [`with`](Self::with)) came first.
    pub(crate) fn set(&self, value: T) -> Result<(), T> {
        if self
            .state
            .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(value);
        }
        // SAFETY: this call moved EMPTY → WRITING, so it is the only writer, and readers do
        // not read before SET.
        unsafe { (*self.value.get()).write(value) };
        // INVARIANT: the value is initialised; publish it.
        self.state.store(SET, Ordering::Release);
        Ok(())
    }
}

impl<T> Drop for SetOnce<T> {
    fn drop(&mut self) {
        // `&mut self`: no other access. Under loom, `with_mut` reads the atomic without an
        // ordering (std's `get_mut` is not modelled there).
        #[cfg(not(loom))]
        let set = *self.state.get_mut() == SET;
        #[cfg(loom)]
        let set = self.state.with_mut(|s| *s == SET);
        if set {
            // SAFETY: SET means initialised (invariant); dropped once, here.
            unsafe { self.value.get_mut().assume_init_drop() };
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for SetOnce<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.get() {
            Some(v) => f.debug_tuple("SetOnce").field(v).finish(),
            None => f.write_str("SetOnce(<unset>)"),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize as StdAtomic;

    use crate::sync::drop_counter::Counted;

    #[test]
    fn with_is_set_and_a_second_set_is_refused() {
        let c = SetOnce::with(5u32);
        assert_eq!(c.get(), Some(&5));
        assert_eq!(c.set(6), Err(6));
        assert_eq!(c.get(), Some(&5));
    }

    #[test]
    fn new_is_empty_until_set_once() {
        let c = SetOnce::new();
        assert_eq!(c.get(), None);
        assert_eq!(c.set(String::from("a")), Ok(()));
        assert_eq!(c.get().map(String::as_str), Some("a"));
        assert_eq!(c.set(String::from("b")), Err(String::from("b")));
        assert_eq!(format!("{c:?}"), "SetOnce(\"a\")");
        assert_eq!(format!("{:?}", SetOnce::<u8>::new()), "SetOnce(<unset>)");
    }

    #[test]
    fn drops_the_value_once_and_nothing_when_unset() {
        let drops = Arc::new(StdAtomic::new(0));
        drop(SetOnce::with(Counted(drops.clone())));
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        let c = SetOnce::new();
        assert!(c.set(Counted(drops.clone())).is_ok());
        let refused = c.set(Counted(drops.clone()));
        drop(refused);
        assert_eq!(drops.load(Ordering::Relaxed), 2);
        drop(c);
        assert_eq!(drops.load(Ordering::Relaxed), 3);
        drop(SetOnce::<Counted>::new());
        assert_eq!(drops.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn racing_setters_store_one_value_that_every_reader_sees() {
        let c = Arc::new(SetOnce::new());
        let n = if cfg!(miri) { 3 } else { 8 };
        let winners: usize = (0..n)
            .map(|i| {
                let c = c.clone();
                std::thread::spawn(move || {
                    let won = c.set(i).is_ok();
                    // A loser may look while the winner is still writing.
                    let seen = loop {
                        if let Some(v) = c.get() {
                            break *v;
                        }
                        std::hint::spin_loop();
                    };
                    (won, seen)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| {
                let (won, seen) = h.join().unwrap();
                assert_eq!(Some(&seen), c.get());
                usize::from(won)
            })
            .sum();
        assert_eq!(winners, 1);
    }
}
