//! `kernel-model`: the seed patch's managed-resource algorithm, re-derived in Rust for the
//! benchmarks (never linked into the library).
//!
//! What is modelled, and how faithfully:
//!
//! * **One heap block per entry.** A block is a header (list links, an optional release function
//!   pointer, a name, the payload size) immediately followed by the payload bytes, allocated
//!   with one `alloc` of `header + size` (the size addition is checked, as the kernel's
//!   `check_add_overflow`). The payload is aligned to [`DATA_ALIGN`] (16, what `malloc`
//!   guarantees; the kernel uses `ARCH_KMALLOC_MINALIGN`). With 64 payload bytes a block is
//!   48 + 64 = 112 bytes, i.e. one 128-byte malloc chunk, like the kernel's kmalloc-128 slab.
//! * **One circular doubly linked list per device, under one lock.** The list head is embedded in
//!   the device next to the lock (like `drm_device.managed`); the lock is a `std::sync::Mutex<()>`
//!   guarding the head by convention, exactly as the kernel's spinlock guards its `list_head`.
//!   New entries are added at the head (newest first).
//! * **Release at the last reference** walks the list from the head (newest first), calls the
//!   release function (if any) with the device and the stored data word, unlinks and frees the
//!   block. Like the kernel it does not take the lock: the last reference is exclusive
//!   (`&mut self` in `Drop`).
//! * **Early free (`drmm_kfree`)** takes the lock and scans the list linearly from the head,
//!   comparing each block's payload address with the given pointer, unlinks the match
//!   (`list_del_init`), drops the lock and frees the block. Cost O(position in the list).
//! * **Actions (`drmm_add_action`)** are a block whose payload is one pointer-sized word and whose
//!   release function is a plain `fn(&Dev, *mut ())`: the C "function pointer + void *data"
//!   that a Rust closure capturing one word corresponds to.
//!
//! Not modelled: tracing (the kernel's `drm_dbg_drmres` is off by default, its cost is a
//! branch), `final_kfree` (the device's own memory is the `Arc` allocation, freed after the list
//! is released), NUMA node hints.
//!
//! The unplug gate of the kernel (`drm_dev_enter`/`drm_dev_exit`: an SRCU read-side section on a
//! global SRCU domain, then a check of `dev->unplugged`) is modelled by [`Gate`]; a read of one
//! value inside it (W7's kernel model) by [`srcu_read`].

use std::alloc::{self, Layout};
use std::cell::UnsafeCell;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex, PoisonError};

/// A release function: the kernel's `drmres_release_t`, `void (*)(struct drm_device *, void *)`.
pub(crate) type ReleaseFn = fn(&Dev, *mut ());

/// Alignment of the payload that follows the header (malloc's guarantee on 64-bit targets).
pub(crate) const DATA_ALIGN: usize = 16;

/// `struct list_head`.
#[repr(C)]
struct Links {
    next: *mut Links,
    prev: *mut Links,
}

/// `struct drmres_node`; `links` is the first field, so a `*mut Links` of a node is also a
/// `*mut Header` (the `container_of` of the kernel is a plain cast).
#[repr(C)]
struct Header {
    links: Links,
    release: Option<ReleaseFn>,
    name: &'static str,
    size: usize,
}

/// Offset of the payload in a block: the header rounded up to [`DATA_ALIGN`].
const DATA_OFFSET: usize = size_of::<Header>().next_multiple_of(DATA_ALIGN);

/// Layout of a block with `size` payload bytes, or `None` if `header + size` overflows.
fn block_layout(size: usize) -> Option<Layout> {
    let total = DATA_OFFSET.checked_add(size)?;
    Layout::from_size_align(total, DATA_ALIGN).ok()
}

/// Address of the payload of the block `node`.
fn data_of(node: *mut Header) -> *mut u8 {
    node.cast::<u8>().wrapping_add(DATA_OFFSET)
}

/// `alloc_dr`: one heap block with an initialised header (self-linked, like `INIT_LIST_HEAD`).
fn alloc_dr(
    release: Option<ReleaseFn>,
    size: usize,
    name: &'static str,
) -> Option<NonNull<Header>> {
    let layout = block_layout(size)?;
    // SAFETY: `layout` has a non-zero size (it contains the header).
    let raw = unsafe { alloc::alloc(layout) };
    let node = NonNull::new(raw.cast::<Header>())?;
    let links = node.as_ptr().cast::<Links>();
    let header = Header {
        links: Links {
            next: links,
            prev: links,
        },
        release,
        name,
        size,
    };
    // SAFETY: `node` is a fresh allocation of `layout`, large enough and aligned for a `Header`.
    unsafe { node.as_ptr().write(header) };
    Some(node)
}

/// Frees a block allocated by [`alloc_dr`].
///
/// # Safety
///
/// `node` came from [`alloc_dr`], is on no list, and is not used afterwards.
unsafe fn free_dr(node: *mut Header) {
    // SAFETY: `node` is a live block (caller), its header is initialised.
    let size = unsafe { (*node).size };
    let layout = block_layout(size).expect("layout was valid at allocation");
    // SAFETY: allocated by `alloc::alloc` with this very layout (same size, same alignment).
    unsafe { alloc::dealloc(node.cast::<u8>(), layout) };
}

/// `list_add`: inserts `new` right after `head`.
///
/// # Safety
///
/// The caller has exclusive access to the list (holds its lock); `head` is on the list and
/// `new` is a live block on no list.
unsafe fn list_add(new: *mut Links, head: *mut Links) {
    // SAFETY: `head` is a live element of the list (caller).
    let next = unsafe { (*head).next };
    // SAFETY: `new` is a live block that only we reference (caller).
    unsafe { new.write(Links { next, prev: head }) };
    // SAFETY: `next` is a live element of the list, accessed under the lock (caller).
    unsafe { (*next).prev = new };
    // SAFETY: as above for `head`.
    unsafe { (*head).next = new };
}

/// `list_del`: unlinks `entry`; `reinit` additionally self-links it (`list_del_init`).
///
/// # Safety
///
/// The caller has exclusive access to the list and `entry` is one of its blocks (not the head).
unsafe fn list_del(entry: *mut Links, reinit: bool) {
    // SAFETY: `entry` is a live element of the list (caller).
    let Links { next, prev } = unsafe { entry.read() };
    // SAFETY: neighbours of a live element are live elements, accessed under the lock.
    unsafe { (*next).prev = prev };
    // SAFETY: as above.
    unsafe { (*prev).next = next };
    if reinit {
        // SAFETY: `entry` is live and now unlinked, only we reference it.
        unsafe {
            entry.write(Links {
                next: entry,
                prev: entry,
            });
        }
    }
}

/// The logical device of the model: the `managed` part of `struct drm_device` (lock + list head).
pub(crate) struct Dev {
    lock: Mutex<()>,
    resources: UnsafeCell<Links>,
}

// SAFETY: the raw pointers in `resources` point only to blocks owned by this list; every access
// to the list goes through `lock` (or through `&mut self` in `Drop`), and what the blocks hold
// (a payload of plain bytes or a data word plus a `fn` pointer) may be released on any thread.
unsafe impl Send for Dev {}
// SAFETY: shared access only reaches the list under `lock` (see `Send`).
unsafe impl Sync for Dev {}

impl Dev {
    /// Creates a device with an empty list (`drm_dev_init`'s `INIT_LIST_HEAD`). The device lives
    /// in an `Arc` so that its embedded list head never moves.
    pub(crate) fn new() -> Arc<Dev> {
        let dev = Arc::new(Dev {
            lock: Mutex::new(()),
            resources: UnsafeCell::new(Links {
                next: ptr::null_mut(),
                prev: ptr::null_mut(),
            }),
        });
        let head = dev.resources.get();
        // SAFETY: `head` points into the fresh `Arc` allocation, which no one else can see yet
        // and which never moves; it becomes an empty circular list.
        unsafe {
            head.write(Links {
                next: head,
                prev: head,
            });
        }
        dev
    }

    /// `add_dr`: links `node` at the head of the list, under the lock.
    fn add_dr(&self, node: NonNull<Header>) {
        let head = self.resources.get();
        let guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: we hold the lock; `head` is the list head, `node` a fresh unlinked block.
        unsafe { list_add(node.as_ptr().cast::<Links>(), head) };
        drop(guard);
    }

    /// `drmm_kmalloc`: `size` uninitialised managed bytes, freed at release or by [`Dev::kfree`].
    pub(crate) fn kmalloc(&self, size: usize) -> Option<NonNull<u8>> {
        let node = alloc_dr(None, size, "kmalloc")?;
        self.add_dr(node);
        NonNull::new(data_of(node.as_ptr()))
    }

    /// `drmm_kzalloc`: [`Dev::kmalloc`] with the payload zeroed (the Rust floors allocate
    /// zeroed `[u8; 64]` boxes, so this is the fair counterpart).
    pub(crate) fn kzalloc(&self, size: usize) -> Option<NonNull<u8>> {
        let data = self.kmalloc(size)?;
        // SAFETY: `data` is the payload of a live block, `size` bytes long and writable; the
        // block is on the list but nothing reads payloads except its owner (us, now).
        unsafe { data.as_ptr().write_bytes(0, size) };
        Some(data)
    }

    /// `drmm_add_action`: `action(dev, data)` runs at release. Returns `false` on allocation
    /// failure (`-ENOMEM`).
    pub(crate) fn add_action(&self, action: ReleaseFn, data: *mut (), name: &'static str) -> bool {
        let size = if data.is_null() {
            0
        } else {
            size_of::<*mut ()>()
        };
        let Some(node) = alloc_dr(Some(action), size, name) else {
            return false;
        };
        if !data.is_null() {
            // SAFETY: the payload has room for one pointer and is 16-byte aligned.
            unsafe { data_of(node.as_ptr()).cast::<*mut ()>().write(data) };
        }
        self.add_dr(node);
        true
    }

    /// `drmm_kfree`: finds the block whose payload is `data` by a linear scan from the head,
    /// unlinks it under the lock and frees it. Returns `false` (the kernel's `WARN_ON`) if
    /// `data` is not on the list.
    pub(crate) fn kfree(&self, data: NonNull<u8>) -> bool {
        let head = self.resources.get();
        let guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: we hold the lock; `head` is the list head.
        let mut cur = unsafe { (*head).next };
        let mut found = None;
        while cur != head {
            if data_of(cur.cast::<Header>()) == data.as_ptr() {
                // SAFETY: we hold the lock and `cur` is a block of the list.
                unsafe { list_del(cur, true) };
                found = Some(cur);
                break;
            }
            // SAFETY: we hold the lock and `cur` is a live element of the list.
            cur = unsafe { (*cur).next };
        }
        drop(guard);
        match found {
            Some(node) => {
                // SAFETY: unlinked above, so no one else can reach it; allocated by `alloc_dr`.
                unsafe { free_dr(node.cast::<Header>()) };
                true
            }
            None => false,
        }
    }
}

impl Drop for Dev {
    /// `drm_managed_release`: newest first, release function, unlink, free. No lock: the last
    /// reference is exclusive.
    fn drop(&mut self) {
        let head = self.resources.get();
        // SAFETY: `&mut self`: nothing else can reach the list; `head` is the list head.
        let mut cur = unsafe { (*head).next };
        while cur != head {
            let node = cur.cast::<Header>();
            // SAFETY: `node` is a live block of the list; its header is initialised.
            let Header {
                links: Links { next, .. },
                release,
                size,
                ..
            } = unsafe { node.read() };
            if let Some(release) = release {
                let data = if size == 0 {
                    ptr::null_mut()
                } else {
                    // SAFETY: an action's payload holds one pointer written by `add_action`.
                    unsafe { data_of(node).cast::<*mut ()>().read() }
                };
                release(self, data);
            }
            // SAFETY: exclusive access (`&mut self`), `cur` is a block of the list.
            unsafe { list_del(cur, false) };
            // SAFETY: unlinked above; allocated by `alloc_dr`; not used afterwards.
            unsafe { free_dr(node) };
            cur = next;
        }
    }
}

/// A cache line (two on CPUs with adjacent-line prefetch) of per-CPU SRCU counters.
#[repr(align(128))]
struct PerCpu {
    lock_count: [AtomicUsize; 2],
    unlock_count: [AtomicUsize; 2],
}

/// The kernel's unplug gate: `drm_dev_enter` is `srcu_read_lock` on the global
/// `drm_unplug_srcu` domain followed by a check of `dev->unplugged`; `drm_dev_exit` is
/// `srcu_read_unlock`. The SRCU read side is per-CPU: read the domain's current index, increment
/// this CPU's lock counter for that index with a plain (non-atomic) `this_cpu_inc`, full
/// barrier; unlock is full barrier, increment this CPU's unlock counter. Userspace has no cheap
/// "current CPU", so the caller passes a slot index (its thread number); only that thread writes
/// its slot, which makes the plain load + store increment correct, as `this_cpu_inc` is.
pub(crate) struct Gate {
    unplugged: AtomicBool,
    srcu_idx: AtomicUsize,
    cpus: Box<[PerCpu]>,
}

impl Gate {
    /// A gate with `slots` per-CPU counter slots.
    pub(crate) fn new(slots: usize) -> Gate {
        let cpus = (0..slots.max(1))
            .map(|_| PerCpu {
                lock_count: [AtomicUsize::new(0), AtomicUsize::new(0)],
                unlock_count: [AtomicUsize::new(0), AtomicUsize::new(0)],
            })
            .collect();
        Gate {
            unplugged: AtomicBool::new(false),
            srcu_idx: AtomicUsize::new(0),
            cpus,
        }
    }

    /// `drm_dev_enter`: `Some(srcu index)` if the device is not unplugged.
    #[inline]
    pub(crate) fn enter(&self, cpu: usize) -> Option<usize> {
        let idx = self.srcu_idx.load(Ordering::Relaxed) & 1;
        let count = &self.cpus[cpu].lock_count[idx];
        count.store(
            count.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
        fence(Ordering::SeqCst);
        if self.unplugged.load(Ordering::Relaxed) {
            self.exit(cpu, idx);
            return None;
        }
        Some(idx)
    }

    /// `drm_dev_exit`.
    #[inline]
    pub(crate) fn exit(&self, cpu: usize, idx: usize) {
        fence(Ordering::SeqCst);
        let count = &self.cpus[cpu].unlock_count[idx];
        count.store(
            count.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }
}

/// The kernel's SRCU-style revocable read (W7): `drm_dev_enter`, read the value, `drm_dev_exit`
/// on the global gate, as a driver fences one register read. `None` once unplugged.
#[inline]
pub(crate) fn srcu_read<T: Copy>(gate: &Gate, cpu: usize, value: &T) -> Option<T> {
    let idx = gate.enter(cpu)?;
    let v = *value;
    gate.exit(cpu, idx);
    Some(v)
}

/// Cheap functional self-check, run once before the benchmarks so that a broken model cannot
/// produce flattering numbers: order of release, early free, not-found free, the gate.
pub(crate) fn self_check() {
    use std::sync::atomic::AtomicUsize as Counter;
    static LOG: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    static RELEASED: Counter = Counter::new(0);
    fn record(_dev: &Dev, data: *mut ()) {
        LOG.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(data.addr());
        RELEASED.fetch_add(1, Ordering::Relaxed);
    }
    let dev = Dev::new();
    for i in 1..=3 {
        assert!(dev.add_action(record, ptr::without_provenance_mut(i), "record"));
    }
    let a = dev.kzalloc(64).expect("alloc");
    let b = dev.kmalloc(7).expect("alloc");
    assert_eq!(a.as_ptr().addr() % DATA_ALIGN, 0);
    assert!(dev.kfree(a));
    assert!(!dev.kfree(a), "a freed block must not be found again");
    let _ = b;
    drop(dev);
    assert_eq!(
        *LOG.lock().unwrap_or_else(PoisonError::into_inner),
        vec![3, 2, 1]
    );
    assert_eq!(RELEASED.load(Ordering::Relaxed), 3);
    assert!(block_layout(usize::MAX).is_none());

    let gate = Gate::new(2);
    let idx = gate.enter(1).expect("not unplugged");
    gate.exit(1, idx);
    gate.unplugged.store(true, Ordering::Relaxed);
    assert!(gate.enter(0).is_none());
    assert_eq!(srcu_read(&gate, 0, &7u64), None);
    assert_eq!(srcu_read(&Gate::new(1), 0, &7u64), Some(7));
}
