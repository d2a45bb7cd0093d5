//! The resource-list engine shared by every owner (logical devices and bus bindings).
//!
//! A list holds *entries*: release actions (closures run at release) and managed allocations
//! (memory, optionally holding a typed value, freed at release). Entries are released newest
//! first, each exactly once: at the list's release, or earlier through the entry's handle.
//!
//! Compared with the kernel's `drm_managed.c`/`devres.c`:
//!
//! * early release and removal are O(1): a handle names its slot and the entry's sequence
//!   number, where the kernel scans the list (`drmm_kfree`, `devm_release_action`);
//! * an entry's bookkeeping is one 20-byte slot (sequence number, call-site index, one word of
//!   payload: a one-word closure is stored inline, larger ones are boxed), where the kernel puts
//!   a 40-byte header in front of the data; the price is a list's fixed limits (2^48 - 1 adds
//!   in its life, 65,535 distinct call sites), past which an add fails with an error; a managed allocation has no header at all (small
//!   ones come from the list's arena, larger ones are a single allocator call);
//! * an entry added while the list is being released is released too (the kernel's
//!   `drm_managed_release` skips it);
//! * a panicking action (or value destructor, or `tracing` subscriber) does not stop the
//!   release: the others still run and the panic is resumed once the release is complete;
//! * no user code (actions, destructors, subscribers) runs under the list's lock, so any of it
//!   may use the list again; and with or without a subscriber, an entry the release has
//!   already taken off answers an explicit free with `NotOnList`.
//!
//! # Moving an entry to another owner: not offered
//!
//! talloc's `talloc_steal` and Python's `ExitStack.pop_all` move an entry from one owner to
//! another. Here no entry changes lists, on purpose: the two owners stand for two lifetimes
//! (the binding, the last reference), and an entry moved from devres to drmm is the hardware
//! resource that outlives the hardware — the bug the model exists to prevent — while the move
//! the other way frees userspace-visible state at unplug. A moved entry would also break the
//! newest-first order of the list it joins, since its age comes from the list it left. A
//! handle names its list, so using it on another list is an error
//! ([`Error::ForeignHandle`](crate::Error::ForeignHandle)), not a move. To hand a value over,
//! own it outside the lists ([`Device::alloc`](crate::LogicalDevice::alloc) or an action
//! capturing it on the new owner) and [`remove_action`](crate::LogicalDevice::remove_action)
//! the old entry.
//!
//! # Layout
//!
//! Dependencies inside the module point one way, from the leaves up:
//!
//! 1. leaves, which know no list: `handle` (the typed handles and the `Key` they carry),
//!    `site`, `info`, `slots`, `arena`, and the entry payloads (`action`, `alloc`, `marker`,
//!    with their type-erased form in `erased`);
//! 2. `list`: the engine, built on the leaves (an entry is one of the payloads; an add returns
//!    a handle);
//! 3. built on `list`: `group` (nested ranges of a list, delimited by marker entries), `ops`
//!    and `realloc` (the typed API of an owner), `kref` (the owner whose last reference
//!    releases its list) and `scope` (the exclusive scope around a list and its groups).
//!
//! The list holds group markers as opaque entries and knows nothing of groups; handles name
//! entries by key and know nothing of the list. The primitives the engine runs on (its lock,
//! fallible allocation) are in the crate's `sync` module.
//!
//! # Examples
//!
//! The handles and entry descriptions this module exports, on a logical device's list:
//!
//! ```
//! use drmm::{ActionHandle, EntryKind, Managed};
//!
//! let dev = drmm::Device::new(());
//! let buf: Managed<[u8]> = dev.kzalloc(64)?;
//! let flush: ActionHandle = dev.add_action(|_| println!("flush"))?;
//! assert_eq!(dev.snapshot()[0].kind(), EntryKind::Action);
//! dev.release_action(flush)?; // O(1), runs now
//! dev.kfree(buf)?; // O(1), freed now
//! assert_eq!(dev.resource_count(), 0);
//! # Ok::<(), drmm::Error>(())
//! ```

mod action;
mod alloc;
mod arena;
mod erased;
pub(crate) mod group;
pub(crate) mod handle;
mod info;
pub(crate) mod kref;
pub(crate) mod list;
mod marker;
pub(crate) mod ops;
mod realloc;
pub(crate) mod scope;
mod site;
pub(crate) mod slots;

pub use alloc::{MAX_BYTE_ALIGN, MIN_BYTE_ALIGN};
pub use group::Group;
pub(crate) use handle::Key;
pub use handle::{ActionHandle, Managed, ResourceOwner};
pub use info::{EntryInfo, EntryKind};
pub(crate) use list::ResourceList;
pub use site::Site;
