//! The resource list: entries in slots, released newest first, exactly once.
//!
//! This module holds the entry, the key and the list itself; each path through it has its own
//! file: [`insert`] (adds), [`free`] (early release and removal through a key), [`release`]
//! (the bulk release, in batches), [`state`] (the slot table under the lock) and [`panics`]
//! (panics caught on release paths).

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe, Location};
use std::ptr::NonNull;
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::res::action::Action;
use crate::res::alloc::Block;
use crate::res::arena::{Arena, FreeLists};
use crate::res::erased::{EntryVTable, SiteTable, Word};
use crate::res::handle::{Key, Managed};
use crate::res::info::{EntryInfo, EntryKind};
use crate::res::marker::Marker;
use crate::res::site::Site;
use crate::res::slots::Slots;
use crate::sync::lock::{ListGuard, ListLock};
use crate::sync::{AtomicBool, AtomicU64, Ordering};
use crate::trace::{self, Op};

mod free;
mod insert;
mod panics;
mod release;
mod state;
#[cfg(all(test, not(loom)))]
mod tests;

pub(crate) use panics::{PanicPayload, PanicSink, drop_payload, panic_message};
use state::{Buffers, Walk};
pub(in crate::res) use state::{MAX_SEQ, Slot, State, releases_with_arena};

/// What an entry owns.
pub(crate) enum Payload<C> {
    /// A release action, run at release.
    Action(Action<C>),
    /// A managed allocation, dropped and freed at release.
    Block(Block),
    /// A group marker (see `marker.rs` and `group.rs`); releasing it does nothing.
    Marker(Marker),
}

/// One entry of a list.
pub(crate) struct Entry<C> {
    pub(crate) site: Site,
    pub(crate) payload: Payload<C>,
}

impl<C> Entry<C> {
    pub(super) fn kind(&self) -> EntryKind {
        match &self.payload {
            Payload::Action(_) => EntryKind::Action,
            Payload::Block(_) => EntryKind::Alloc,
            Payload::Marker(m) => m.kind(),
        }
    }

    pub(super) fn size(&self) -> usize {
        match &self.payload {
            Payload::Action(a) => a.size(),
            Payload::Block(b) => b.size(),
            Payload::Marker(_) => 0,
        }
    }

    /// Releases the entry: runs the action or drops and frees the allocation. Returns the
    /// arena block to recycle, if the allocation lived in the list's arena.
    #[inline]
    pub(super) fn release(self, ctx: &C) -> Option<(NonNull<u8>, usize)> {
        match self.payload {
            Payload::Action(a) => {
                a.call(ctx);
                None
            }
            Payload::Block(b) => b.dispose(),
            Payload::Marker(_) => None,
        }
    }

    /// Drops the entry without running it. Returns the arena block to recycle, if any.
    #[inline]
    pub(super) fn discard(self) -> Option<(NonNull<u8>, usize)> {
        match self.payload {
            Payload::Block(b) => b.dispose(),
            Payload::Action(_) | Payload::Marker(_) => None,
        }
    }

    /// Splits the entry into what a slot stores: the vtable, `aux` and the word (see
    /// [`erased`](crate::res::erased)); the site is interned by the caller.
    #[inline(always)]
    fn into_raw(self) -> (Site, &'static EntryVTable, u32, Word) {
        let site = self.site;
        let (vt, aux, word) = match self.payload {
            Payload::Action(a) => {
                let (vt, word) = a.into_raw();
                (vt, 0, word)
            }
            Payload::Block(b) => b.into_raw(),
            Payload::Marker(m) => {
                let (vt, v) = m.into_raw();
                (vt, (v >> 32) as u32, Word::from_bits(v as u32))
            }
        };
        (site, vt, aux, word)
    }

    /// The entry `seq` whose parts [`into_raw`](Self::into_raw) returned.
    ///
    /// # Safety
    ///
    /// `(vt, aux, word)` must come from [`into_raw`](Self::into_raw) of an `Entry<C>` (same
    /// `C`) with sequence number `seq`, and not be used again.
    #[inline(always)]
    unsafe fn from_raw(
        seq: u64,
        site: Site,
        vt: &'static EntryVTable,
        aux: u32,
        word: Word,
    ) -> Self {
        let payload = match vt.kind {
            // SAFETY: the parts of an `Action<C>` (the caller's promise; the kind says which).
            EntryKind::Action => Payload::Action(unsafe { Action::from_raw(vt, word) }),
            // SAFETY: the parts of a `Block`, as above.
            EntryKind::Alloc => Payload::Block(unsafe { Block::from_raw(vt, aux, word) }),
            // SAFETY: a marker's word holds a plain value (`into_raw`).
            _ => Payload::Marker(Marker::from_raw(
                seq,
                vt,
                (u64::from(aux) << 32) | u64::from(unsafe { word.bits() }),
            )),
        };
        Entry { site, payload }
    }

    /// Whether releasing or discarding runs no user code, so it may happen under the lock.
    fn is_inert(&self) -> bool {
        match &self.payload {
            Payload::Block(b) => !b.needs_drop(),
            Payload::Marker(_) => true,
            Payload::Action(_) => false,
        }
    }
}

const NO_SLOT: u32 = u32::MAX;

/// Entries a bulk release takes off the list per lock.
const BATCH: usize = 32;
/// Inert entries a bulk release may release under one lock when nothing traces them.
const IN_PLACE_MAX: usize = 256;

/// The error of a list that would exceed `u32::MAX - 1` slots, or whose next add would have
/// the sequence number `seq`, beyond [`MAX_SEQ`].
#[cold]
fn too_many(seq: u64) -> Error {
    Error::SizeOverflow {
        what: if seq > MAX_SEQ {
            "more than 2^48 - 1 adds in the life of one list"
        } else {
            "more than u32::MAX - 1 entries on one list"
        },
    }
}

/// The error of a slot or site table that could not grow.
#[cold]
fn slot_oom() -> Error {
    Error::oom(std::alloc::Layout::new::<Slot>())
}

/// Unique identities for lists, so that a handle of one list is recognised on another.
static NEXT_LIST_ID: AtomicU64Static = AtomicU64Static::new(1);

// The list id counter is a process-wide static; loom cannot model statics, and the id is only
// an identity, not a synchronisation point, so it uses std's atomic even under loom.
type AtomicU64Static = std::sync::atomic::AtomicU64;

/// `"{prefix}{id}"` in a fixed buffer: a `u64` has at most 20 digits and prefixes are short.
struct NumberedName {
    len: u8,
    buf: [u8; 32],
}

impl NumberedName {
    fn new(prefix: &str, id: u64) -> Self {
        struct Fill<'a>(&'a mut NumberedName);
        impl fmt::Write for Fill<'_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                let start = usize::from(self.0.len);
                let dst = self
                    .0
                    .buf
                    .get_mut(start..start + s.len())
                    .ok_or(fmt::Error)?;
                dst.copy_from_slice(s.as_bytes());
                self.0.len += s.len() as u8; // at most 32: `get_mut` checked it
                Ok(())
            }
        }
        let mut name = NumberedName {
            len: 0,
            buf: [0; 32],
        };
        // Only a prefix longer than 12 bytes can fail to fit; the name is then cut short.
        let _ = fmt::Write::write_fmt(&mut Fill(&mut name), format_args!("{prefix}{id}"));
        name
    }

    fn as_str(&self) -> &str {
        // Whole `str` pieces only were copied in, so the prefix is valid UTF-8.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }
}

/// A list of managed resources, released newest first, each exactly once.
///
/// `C` is what release actions receive: the list's owner (a logical device, a bus device).
///
/// # Invariants
///
/// Every occupied slot's `seq` is unique and smaller than `next_seq`; `live` counts the
/// occupied slots; the free list links exactly the vacant slots when no bulk release is running.
pub(crate) struct ResourceList<C> {
    id: u64,
    name: Option<Cow<'static, str>>,
    /// `"{prefix}{id}"`, made on first use for a list with no name (most lists are never
    /// named in a trace, and formatting every device's name cost as much as creating it).
    /// Inline, so that naming the owner in a trace never allocates.
    default_name: OnceLock<NumberedName>,
    prefix: &'static str,
    /// Set once a bulk (or group) release has begun; from then on a handle read checks its slot.
    pub(super) bulk: AtomicBool,
    /// The sequence number of the newest entry ever added: lets a bulk release notice, without
    /// taking the lock, that an action it ran added entries.
    tail_seq: AtomicU64,
    pub(super) state: ListLock<State<C>>,
}

impl<C> ResourceList<C> {
    /// An empty list whose traces name `owner`, or `"{prefix}{id}"` when no name is given.
    pub(crate) fn new(owner: Option<Cow<'static, str>>, prefix: &'static str) -> Self {
        let id = NEXT_LIST_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ResourceList {
            id,
            name: owner,
            default_name: OnceLock::new(),
            prefix,
            bulk: AtomicBool::new(false),
            tail_seq: AtomicU64::new(0),
            state: ListLock::new(State::new()),
        }
    }

    /// The list's identity.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The prefix of the owner's default name, which says what kind of owner it is.
    pub(crate) fn prefix(&self) -> &'static str {
        self.prefix
    }

    /// The owner's name, as used in traces.
    pub(crate) fn owner(&self) -> &str {
        match &self.name {
            Some(n) => n,
            None => self
                .default_name
                .get_or_init(|| NumberedName::new(self.prefix, self.id))
                .as_str(),
        }
    }

    /// Number of entries on the list.
    pub(crate) fn len(&self) -> usize {
        self.state.lock().live
    }

    /// The live entries, newest first.
    pub(crate) fn snapshot(&self) -> Vec<EntryInfo> {
        let st = self.state.lock();
        let mut v: Vec<EntryInfo> = st
            .slots
            .iter()
            .filter_map(|s| {
                let seq = s.occupied()?;
                let entry = st.peek(s);
                Some(EntryInfo::new(
                    seq,
                    entry.site,
                    entry.kind(),
                    entry.size(),
                    match &entry.payload {
                        Payload::Block(b) => Some(b.type_name()),
                        Payload::Action(_) | Payload::Marker(_) => None,
                    },
                ))
            })
            .collect();
        v.sort_unstable_by_key(|e| std::cmp::Reverse(e.seq()));
        v
    }
}

impl<C> Drop for ResourceList<C> {
    /// A list dropped with entries left (its owner never released it) drops them newest
    /// first without running actions: there is no owner left to pass them. Owners in this
    /// crate always release first.
    fn drop(&mut self) {
        let st = self.state.get_mut();
        if st.live == 0 {
            return;
        }
        let mut entries: Vec<(u64, Entry<C>)> = st
            .slots
            .iter()
            .filter(|s| s.occupied().is_some())
            // SAFETY: bitwise copies of occupied slots, whose originals are forgotten below
            // (the table is cleared) without being unpacked again.
            .map(|s| unsafe { st.unpack(s.copy()) })
            .collect();
        st.slots.clear();
        st.live = 0;
        entries.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
        // Destructors and subscribers are user code: each in the panic net, so that one
        // panic does not leak the rest; the first is resumed (only logged while unwinding).
        let mut sink = PanicSink::default();
        for (seq, e) in entries {
            let site = e.site;
            if let Some(p) = trace::entry_caught(Op::Rem, self, seq, &site, e.kind(), e.size()) {
                sink.record(p, self, &site);
            }
            if let Err(p) = panic::catch_unwind(AssertUnwindSafe(move || drop(e))) {
                sink.record(p, self, &site);
            }
        }
        PanicSink::resume(sink.into_first(), self.owner());
    }
}

impl<C> std::fmt::Debug for ResourceList<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceList")
            .field("id", &self.id)
            .field("owner", &self.owner())
            .field("len", &self.len())
            .finish()
    }
}
