//! The resource list: entries in slots, released newest first, exactly once.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::res::action::Action;
use crate::res::alloc::Block;
use crate::res::arena::Arena;
use crate::res::erased::{EntryVTable, SiteTable, Word};
use crate::res::group::Marker;
use crate::res::handle::Managed;
use crate::res::info::{EntryInfo, EntryKind};
use crate::res::site::Site;
use crate::res::slots::Slots;
use crate::sync::lock::{ListGuard, ListLock};
use crate::sync::{AtomicBool, AtomicU64, Ordering};
use crate::trace::{self, Op};

/// A panic payload caught while releasing an entry.
pub(crate) type PanicPayload = Box<dyn Any + Send + 'static>;

/// What an entry owns.
pub(crate) enum Payload<C> {
    /// A release action, run at release.
    Action(Action<C>),
    /// A managed allocation, dropped and freed at release.
    Block(Block),
    /// A group marker (see `group.rs`); releasing it does nothing.
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

/// Where an entry is: which list, which slot, which incarnation of the slot.
///
/// `seq` is unique within the list and never reused, so it is both the entry's age (release
/// order) and its generation (a key whose slot now holds another entry no longer matches).
// `pub` (though unreachable) because the sealed `ResourceOwner` check names it.
#[allow(unreachable_pub)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub(crate) list: u64,
    pub(crate) index: u32,
    pub(crate) seq: u64,
}

const NO_SLOT: u32 = u32::MAX;

/// The part of an add's result that does not travel back in a register.
///
/// A `Result<Managed<[u8]>>` is 40 bytes, so it is returned through memory: the add stores it
/// field by field, and the caller moves it on with 16-byte loads, each spanning two 8-byte
/// stores still in the store buffer. Such a load cannot be forwarded from the buffer and waits
/// for both stores to reach the cache, about a dozen cycles per add (measured: creating a
/// device with 16 managed allocations took 10–20 % longer when the handles were read back
/// than when they were not). So the out-of-line part of [`ResourceList::alloc_bytes`] returns the
/// block's address in a register and leaves the index and sequence number here, each stored
/// and read back at its own width by the inlined part, which builds the handle in registers.
struct AddOut {
    index: u32,
    seq: u64,
    err: Option<Error>,
}

impl AddOut {
    #[inline(always)]
    fn new() -> Self {
        AddOut {
            index: 0,
            seq: 0,
            err: None,
        }
    }

    /// In the out-of-line part: keeps the key's parts (or the error), returns the pointer.
    #[inline(always)]
    fn record<U: ?Sized>(&mut self, added: Result<Managed<U>>) -> Option<NonNull<U>> {
        match added {
            Ok(m) => {
                self.index = m.key.index;
                self.seq = m.key.seq;
                Some(m.ptr)
            }
            Err(e) => {
                self.err = Some(e);
                None
            }
        }
    }

    /// In the inlined part: the handle, from `record`'s pointer and the list's identity.
    #[inline(always)]
    fn into_handle<U: ?Sized>(self, list: u64, ptr: Option<NonNull<U>>) -> Result<Managed<U>> {
        match ptr {
            Some(ptr) => {
                let key = Key {
                    list,
                    index: self.index,
                    seq: self.seq,
                };
                Ok(Managed::new(key, ptr))
            }
            None => {
                debug_assert!(self.err.is_some(), "a failed add leaves its error");
                Err(self.err.unwrap_or_else(slot_oom))
            }
        }
    }
}

/// Entries a bulk release takes off the list per lock.
const BATCH: usize = 32;
/// Inert entries a bulk release may release under one lock when nothing traces them.
const IN_PLACE_MAX: usize = 256;

/// One slot of the table: 20 bytes.
///
/// # Invariants
///
/// `tag` packs the sequence number and the site index, `seq | site << SEQ_BITS` (one 64-bit
/// field, so that both are written and read with one whole-word move: a value stored in two
/// parts and read back as one defeats the CPU's store forwarding, which cost more than the
/// rest of an add together). The struct is packed to 4-byte alignment so that a slot takes 20
/// bytes instead of 24; its fields are only ever copied in and out by value (unaligned moves),
/// never borrowed.
///
/// * Vacant: `tag == 0`; `aux` is the next vacant slot of the free list (or [`NO_SLOT`]).
/// * Occupied: `0 < seq <= MAX_SEQ` and the site is an index of the list's [`SiteTable`] (below
///   [`RESERVED_SITE`]), whose vtable, with `aux` and `word`, are the parts of an entry of the
///   list ([`Entry::into_raw`]), owned by the slot. A slot has no destructor: an occupied slot
///   is emptied only through [`State::unpack`], which hands its entry back.
#[repr(C, packed(4))]
pub(super) struct Slot {
    tag: u64,
    aux: u32,
    word: Word,
}

/// Bits of [`Slot::tag`] that hold the sequence number; the rest hold the site index.
const SEQ_BITS: u32 = 48;
/// The largest sequence number: a list accepts 2^48 - 1 adds in its life (at 10 ns per add,
/// a month of nothing but adds; an add beyond it fails with an error).
pub(super) const MAX_SEQ: u64 = (1 << SEQ_BITS) - 1;
/// A site index no slot holds (every real one is below it:
/// [`SITE_LIMIT`](crate::res::erased::SITE_LIMIT) of them), so that a tag at or above
/// [`RESERVED_TAG`] is never an occupied slot.
const RESERVED_SITE: u64 = (1 << (64 - SEQ_BITS)) - 1;
/// The smallest tag with the reserved site index.
const RESERVED_TAG: u64 = RESERVED_SITE << SEQ_BITS;

const _: () = assert!(crate::res::erased::SITE_LIMIT as u64 == RESERVED_SITE);

// SAFETY: an occupied slot owns an entry's payload: `Send` closures and blocks of `Send + Sync`
// values or bytes (see `Action` and `Block`); a slot is only reached through the list's lock.
unsafe impl Send for Slot {}
// SAFETY: `&Slot` gives access to no payload (only to the sequence number and indices).
unsafe impl Sync for Slot {}

const _: () = assert!(std::mem::size_of::<Slot>() == 20 || usize::BITS != 64);

impl Slot {
    /// An occupied slot: the entry `seq`'s parts (site index, `aux`, word).
    #[inline(always)]
    const fn new(seq: u64, site: u32, aux: u32, word: Word) -> Self {
        debug_assert!(seq != 0 && seq <= MAX_SEQ && (site as u64) < RESERVED_SITE);
        Slot {
            tag: seq | (site as u64) << SEQ_BITS,
            aux,
            word,
        }
    }

    #[inline(always)]
    const fn vacant(next_free: u32) -> Self {
        Slot {
            tag: 0,
            aux: next_free,
            word: Word::uninit(),
        }
    }

    /// A bitwise copy (which owns nothing: see [`State::unpack`]).
    #[inline(always)]
    fn copy(&self) -> Self {
        Slot {
            tag: self.tag,
            aux: self.aux,
            word: self.word,
        }
    }

    /// The sequence number field (of an occupied slot; 0 when vacant).
    #[inline(always)]
    fn seq(&self) -> u64 {
        self.tag & MAX_SEQ
    }

    /// The entry's sequence number, if the slot is occupied.
    #[inline(always)]
    pub(super) fn occupied(&self) -> Option<u64> {
        let tag = self.tag;
        (tag != 0 && tag < RESERVED_TAG).then_some(tag & MAX_SEQ)
    }

    /// The site index of an occupied slot.
    #[inline(always)]
    pub(super) fn site(&self) -> u32 {
        (self.tag >> SEQ_BITS) as u32
    }

    /// The `aux` of an occupied slot.
    #[inline(always)]
    pub(super) fn aux(&self) -> u32 {
        self.aux
    }

    /// The word of an occupied slot.
    #[inline(always)]
    pub(super) fn word(&self) -> Word {
        self.word
    }

    /// Replaces the payload parts of an occupied slot, keeping its sequence number. The old
    /// parts must have been taken over by the caller (they are overwritten, not dropped).
    #[inline]
    pub(super) fn replace_payload(&mut self, site: u32, aux: u32, word: Word) {
        debug_assert!(self.occupied().is_some());
        *self = Slot::new(self.seq(), site, aux, word);
    }
}

pub(crate) struct State<C> {
    pub(super) slots: Slots<Slot>,
    /// The call sites (name, location, entry type) the slots refer to.
    pub(super) sites: SiteTable,
    free_head: u32,
    next_seq: u64,
    live: usize,
    /// A vacant slot below an occupied one was reused, so slot order is no longer age order.
    reordered: bool,
    /// Bulk releases in progress. While one runs, slots are not reused, so entries added during
    /// the release are appended above everything that existed when it began.
    releasing: usize,
    /// Memory of small managed allocations. Entries still on the list when it is dropped are
    /// unpacked and dropped by [`ResourceList`]'s `Drop`, before the arena.
    pub(super) arena: Arena,
    /// Every entry added since the list was last empty is released by resetting the arena
    /// ([`releases_with_arena`]): a final release with nobody tracing entries then has nothing
    /// to do entry by entry. Only ever cleared by an add (or a resize) and set again when the
    /// list is empty, so it may be false while every live entry is such an entry, never the
    /// other way round.
    pub(super) all_inert: bool,
    _ctx: PhantomData<fn(&C)>,
}

/// Whether releasing an entry with these parts ([`Entry::into_raw`]) amounts to nothing once
/// the list's arena is reset: a group marker, or a block in the arena whose elements need no
/// dropping. Actions, values with destructors and blocks from the global allocator are not.
#[inline(always)]
pub(super) fn releases_with_arena(vt: &EntryVTable, aux: u32) -> bool {
    match vt.kind {
        EntryKind::Action => false,
        EntryKind::Alloc => !vt.needs_drop && Block::in_arena(vt, aux),
        _ => true,
    }
}

impl<C> State<C> {
    /// The entry an occupied slot owned, and its sequence number.
    ///
    /// # Safety
    ///
    /// `slot` must be an occupied slot of this list, taken out of the table (or a bitwise copy
    /// whose original is never unpacked again).
    #[inline(always)]
    pub(super) unsafe fn unpack(&self, slot: Slot) -> (u64, Entry<C>) {
        debug_assert!(slot.occupied().is_some());
        let meta = self.sites.get(slot.site());
        let site = Site::new(meta.name, meta.location);
        let seq = slot.seq();
        // SAFETY: an occupied slot's parts (the caller), stored by `insert_parts` from an
        // `Entry<C>`'s parts.
        let entry = unsafe { Entry::from_raw(seq, site, meta.vtable, slot.aux(), slot.word()) };
        (seq, entry)
    }

    /// Releases the entry of an inert slot (a block whose elements need no dropping, or a
    /// marker) without making an [`Entry`] of it: frees or recycles its memory.
    ///
    /// # Safety
    ///
    /// `slot` must be an occupied slot of this list, taken out of the table, whose vtable's
    /// `needs_drop` is false.
    #[inline(always)]
    unsafe fn discard_inert(&mut self, slot: Slot) {
        let vt = self.sites.get(slot.site()).vtable;
        debug_assert!(!vt.needs_drop);
        if vt.kind == EntryKind::Alloc {
            // SAFETY: the parts of a block (the kind says so), owned by the slot (the caller).
            let block = unsafe { Block::from_raw(vt, slot.aux(), slot.word) };
            if let Some((p, size)) = block.dispose() {
                // SAFETY: as in `ResourceList::recycle`: an arena block of this list, now free.
                unsafe { self.arena.recycle(p, size) };
            }
        }
    }

    /// A read-only view of the entry in an occupied slot, for its kind, size, site and type.
    /// The view must not be released, discarded or dropped (`ManuallyDrop`).
    #[inline]
    pub(super) fn peek(&self, slot: &Slot) -> std::mem::ManuallyDrop<Entry<C>> {
        // SAFETY: `slot` is occupied (the callers check); the copy is never dropped or consumed
        // (`ManuallyDrop`, and every consuming method takes the entry by value, which safe code
        // cannot get out of the `ManuallyDrop` without `into_inner`, never called on a view).
        std::mem::ManuallyDrop::new(unsafe { self.unpack(slot.copy()) }.1)
    }

    /// The sequence number and the marker in slot `index`, if it holds a group marker.
    pub(super) fn marker_at(&self, index: usize) -> Option<(u64, Marker)> {
        let slot = self.slots.get(index)?;
        let seq = slot.occupied()?;
        let vt = self.sites.get(slot.site()).vtable;
        if !matches!(vt.kind, EntryKind::GroupOpen | EntryKind::GroupClose) {
            return None;
        }
        // SAFETY: a marker's word holds a plain value (`Entry::into_raw`).
        let lo = unsafe { slot.word.bits() };
        let v = (u64::from(slot.aux()) << 32) | u64::from(lo);
        Some((seq, Marker::from_raw(seq, vt, v)))
    }

    /// Records in the open marker in slot `index` that its group was closed by the marker
    /// `close`.
    pub(super) fn set_closed_at(&mut self, index: usize, close: u64) {
        debug_assert!(
            matches!(self.marker_at(index), Some((_, m)) if m.kind() == EntryKind::GroupOpen)
        );
        if let Some(slot) = self.slots.get_mut(index) {
            // INVARIANT: an open marker's parts: the close marker's seq, split.
            slot.replace_payload(
                slot.site(),
                (close >> 32) as u32,
                Word::from_bits(close as u32),
            );
        }
    }

    /// Empties the slot at `index` if it holds the entry `seq`.
    #[inline]
    pub(super) fn take(&mut self, index: usize, seq: Option<u64>) -> Option<(u64, Entry<C>)> {
        let old = self.take_slot(index, seq)?;
        // SAFETY: an occupied slot, taken out of the table.
        Some(unsafe { self.unpack(old) })
    }

    /// Empties the slot at `index` if it holds the entry `seq`, handing back the occupied
    /// slot (which then owns the entry: see [`unpack`](Self::unpack)).
    #[inline(always)]
    fn take_slot(&mut self, index: usize, seq: Option<u64>) -> Option<Slot> {
        let next_free = if self.releasing == 0 {
            self.free_head
        } else {
            NO_SLOT
        };
        let slot = self.slots.get_mut(index)?;
        let s = slot.occupied()?;
        if seq.is_some_and(|want| want != s) {
            return None;
        }
        let old = std::mem::replace(slot, Slot::vacant(next_free));
        if self.releasing == 0 {
            self.free_head = index as u32;
        }
        self.live -= 1;
        if self.live == 0 && self.releasing == 0 {
            self.reset();
        }
        Some(old)
    }

    /// Forgets every vacant slot: the list is empty, so slot order is age order again.
    #[cold]
    fn reset(&mut self) {
        debug_assert_eq!(self.live, 0);
        self.slots.clear();
        self.free_head = NO_SLOT;
        self.reordered = false;
        self.all_inert = true;
    }

    /// Rebuilds the free list after a bulk release that left entries behind (added
    /// concurrently after it finished scanning).
    fn rebuild_free_list(&mut self) {
        self.free_head = NO_SLOT;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.occupied().is_none() {
                *slot = Slot::vacant(self.free_head);
                self.free_head = i as u32;
            }
        }
    }

    /// Removes and returns the newest entry appended at or above `floor` if its sequence
    /// number is at least `min_seq`, trimming vacant slots off the top on the way (never below
    /// `floor`, so that entries added later still land at or above it).
    fn pop_above(&mut self, floor: usize, min_seq: u64) -> Option<(u64, Entry<C>)> {
        while self.slots.len() > floor {
            let top = self.slots.len() - 1;
            match self.slots.last().and_then(Slot::occupied) {
                Some(seq) if seq < min_seq => return None,
                Some(_) => {
                    let taken = self.take(top, None);
                    self.slots.pop();
                    return taken;
                }
                None => {
                    self.slots.pop();
                }
            }
        }
        None
    }

    /// The next entry a bulk release should release: entries added during the release first
    /// (they sit at or above `floor`), then the ones that existed when it began, in `walk`
    /// order.
    ///
    /// Returns the slot index too, when the slot still exists (entries popped off the top no
    /// longer have one).
    fn next_to_release(
        &mut self,
        floor: usize,
        walk: &mut Walk,
    ) -> Option<(Option<usize>, u64, Entry<C>)> {
        if let Some((seq, e)) = self.pop_above(floor, 0) {
            return Some((None, seq, e));
        }
        let (index, (seq, entry)) = match walk {
            Walk::Down { cursor } => loop {
                if *cursor == 0 {
                    return None;
                }
                *cursor -= 1;
                if let Some(e) = self.take(*cursor, None) {
                    break (*cursor, e);
                }
            },
            Walk::Sorted { order, next } => loop {
                let &(seq, index) = order.get(*next)?;
                *next += 1;
                if let Some(e) = self.take(index as usize, Some(seq)) {
                    break (index as usize, e);
                }
            },
            Walk::Scan => {
                let i = self.newest_below(floor)?;
                (i, self.take(i, None)?)
            }
        };
        Some((Some(index), seq, entry))
    }

    /// The quiet fast path of a bulk release (nobody traces `REL` events): while the newest
    /// entry is the top slot of the table, pops it. Inert entries are released right here,
    /// their arena memory recycled (or, if `leave_pooled`, left to the arena: see below); the
    /// first entry that runs user code is popped and returned, to be released outside the lock.
    /// Returns the number of inert entries released.
    ///
    /// Stops after `budget` inert entries, or where the top slot is not the
    /// newest entry (slots were reused: the `walk` is not [`Walk::Down`] at the top), leaving
    /// the rest to [`next_to_release`](Self::next_to_release). Popping a slot below `floor`
    /// lowers `floor` (and the walk's cursor) with it, so that entries added later still land
    /// at or above `floor`, above every entry that existed when the release began.
    ///
    /// With `leave_pooled` (a final release, after which the arena is reset or dropped as a
    /// whole), an inert block in the arena is not put on a free list: that would write a link
    /// into every block, a cache miss each, for memory about to go back in one piece.
    #[inline]
    fn release_top_in_place(
        &mut self,
        floor: &mut usize,
        walk: &mut Walk,
        budget: usize,
        leave_pooled: bool,
        last: &mut Option<(u32, &'static EntryVTable)>,
    ) -> (usize, Option<(Slot, &'static EntryVTable)>) {
        let mut released = 0;
        while released < budget {
            let len = self.slots.len();
            if len == 0 {
                break;
            }
            let below = len <= *floor;
            if below && !matches!(walk, Walk::Down { cursor } if *cursor == len) {
                break;
            }
            let Some(top) = self.slots.last() else {
                break;
            };
            // A bitwise copy: once the slot is popped below, the copy owns its entry.
            let popped = top.copy();
            let vt = if top.occupied().is_some() {
                let site = top.site();
                Some(match *last {
                    Some((s, vt)) if s == site => vt,
                    _ => {
                        let vt = self.sites.get(site).vtable;
                        *last = Some((site, vt));
                        vt
                    }
                })
            } else {
                None // vacant: nothing to release
            };
            let _ = self.slots.pop();
            if below {
                *floor = len - 1;
                *walk = Walk::Down { cursor: len - 1 };
            }
            let Some(vt) = vt else {
                continue;
            };
            self.live -= 1;
            if vt.needs_drop {
                // An occupied slot, taken out of the table: the caller owns its entry.
                return (released, Some((popped, vt)));
            }
            released += 1;
            if leave_pooled && vt.kind == EntryKind::Alloc && Block::in_arena(vt, popped.aux()) {
                // Inert (bytes or a type without drop glue): nothing to run, and the arena
                // memory stays with the arena until it is reset or dropped.
                continue;
            }
            // SAFETY: an occupied slot taken out of the table, whose vtable runs no code.
            unsafe { self.discard_inert(popped) };
        }
        (released, None)
    }

    /// Index of the newest entry below `floor`, by a full scan (the fallback order when slot
    /// order is not age order and no sort buffer could be allocated).
    fn newest_below(&self, floor: usize) -> Option<usize> {
        self.slots
            .iter()
            .take(floor)
            .enumerate()
            .filter_map(|(i, s)| Some((s.occupied()?, i)))
            .max()
            .map(|(_, i)| i)
    }
}

/// A bulk release's buffers for entries released outside the lock: the entries, and the
/// arena blocks they leave to recycle.
type Buffers<C> = (
    [Option<(u64, Entry<C>)>; BATCH],
    [Option<(NonNull<u8>, usize)>; BATCH],
);

/// How a bulk release walks the entries that existed when it began.
enum Walk {
    /// Slot order is age order: walk down from the cursor.
    Down { cursor: usize },
    /// Slots were reused: (seq, index) sorted newest first.
    Sorted { order: Vec<(u64, u32)>, next: usize },
    /// Slots were reused and no sort buffer could be allocated: scan for the newest each time.
    Scan,
}

/// Collects the panics of a bulk release: the first is kept to be resumed, later ones are
/// logged and dropped, none is lost silently (promise 5).
#[derive(Default)]
pub(crate) struct PanicSink {
    first: Option<PanicPayload>,
    count: usize,
}

impl PanicSink {
    pub(crate) fn record<C>(&mut self, payload: PanicPayload, list: &ResourceList<C>, site: &Site) {
        let first = self.first.is_none();
        let message = panic_message(&*payload);
        // The report is an event too: a subscriber that panics again is not listened to.
        if let Some(p) = trace::caught(|| trace::release_panicked(list, site, message, first)) {
            drop_payload(p);
        }
        self.keep(payload);
    }

    /// Keeps `payload` if it is the first panic, else drops it (without a report: for panics
    /// of subscribers, which a report would only reach again).
    pub(crate) fn keep(&mut self, payload: PanicPayload) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(payload);
        } else {
            drop_payload(payload);
        }
    }

    /// Emits events with `emit` inside the panic net, keeping a subscriber's panic.
    #[inline]
    pub(crate) fn event(&mut self, emit: impl FnOnce()) {
        if trace::debug_possible()
            && let Some(p) = trace::caught(emit)
        {
            self.keep(p);
        }
    }

    /// The first panic, if any.
    pub(crate) fn into_first(self) -> Option<PanicPayload> {
        self.first
    }

    /// Resumes the first panic, or logs it if this thread is already unwinding (a second panic
    /// escaping a destructor during unwinding would abort the process).
    pub(crate) fn resume(payload: Option<PanicPayload>, owner: &str) {
        if let Some(p) = payload {
            if std::thread::panicking() {
                let message = panic_message(&*p);
                if let Some(q) = trace::caught(|| trace::panic_not_resumed(owner, message)) {
                    drop_payload(q);
                }
                drop_payload(p);
            } else {
                panic::resume_unwind(p);
            }
        }
    }
}

/// Drops a panic payload whose own destructor might panic, without letting that escape.
pub(crate) fn drop_payload(p: PanicPayload) {
    if let Err(inner) = panic::catch_unwind(AssertUnwindSafe(move || drop(p))) {
        std::mem::forget(inner);
    }
}

/// The message of a panic payload, when it is a string.
pub(crate) fn panic_message(p: &(dyn Any + Send)) -> &str {
    if let Some(s) = p.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = p.downcast_ref::<String>() {
        s
    } else {
        "<non-string panic payload>"
    }
}

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
            state: ListLock::new(State {
                slots: Slots::new(),
                sites: SiteTable::new(),
                _ctx: PhantomData,
                free_head: NO_SLOT,
                next_seq: 1,
                live: 0,
                reordered: false,
                releasing: 0,
                arena: Arena::new(),
                all_inert: true,
            }),
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

    /// Adds `entry` as the newest entry. On failure (the slot table could not grow) the entry
    /// is handed back untouched.
    ///
    /// Always inlined (into the owner's generic add methods), so that the entry reaches the
    /// slot in registers rather than through memory.
    #[inline(always)]
    pub(crate) fn push(&self, entry: Entry<C>) -> Result<Key, (Error, Entry<C>)> {
        let (size, kind) = (entry.size(), entry.kind());
        let (site, vt, aux, word) = entry.into_raw();
        // Its own statement: the lock guard, a temporary, is dropped at its end, before the
        // event below (a subscriber may read the list; the lock is not reentrant).
        let inserted = self.insert_parts(&mut self.state.lock(), &site, vt, aux, word);
        match inserted {
            Ok(key) => {
                trace::entry(Op::Add, self, key.seq, &site, kind, size);
                Ok(key)
            }
            // SAFETY: the parts just taken from the entry, still owned here (`insert_parts`
            // failed), not used again; the sequence number it would have had.
            Err((e, seq)) => Err((e, unsafe { Entry::from_raw(seq, site, vt, aux, word) })),
        }
    }

    /// Puts `entry` in a slot as the newest entry, under the caller's lock (no trace).
    #[inline]
    pub(super) fn insert(
        &self,
        st: &mut State<C>,
        entry: Entry<C>,
    ) -> Result<Key, (Error, Entry<C>)> {
        let (site, vt, aux, word) = entry.into_raw();
        self.insert_parts(st, &site, vt, aux, word)
            // SAFETY: as in `push`.
            .map_err(|(e, seq)| (e, unsafe { Entry::from_raw(seq, site, vt, aux, word) }))
    }

    /// Puts the parts of an entry ([`Entry::into_raw`]) in a slot as the newest entry, under
    /// the caller's lock (no trace). On success the slot owns them; on failure (too many
    /// entries, or the slot or site table could not grow) they still belong to the caller, and
    /// the sequence number the entry would have had is returned with the error (a marker's
    /// parts need it to be rebuilt).
    ///
    /// Scalars in, scalars stored: the hot path of every add, kept free of the `Entry` enum so
    /// that the compiler keeps the parts in registers.
    #[inline(always)]
    fn insert_parts(
        &self,
        st: &mut State<C>,
        site: &Site,
        vt: &'static EntryVTable,
        aux: u32,
        word: Word,
    ) -> Result<Key, (Error, u64)> {
        let seq = st.next_seq;
        debug_assert!(seq != 0);
        let reuse = st.free_head != NO_SLOT && st.releasing == 0;
        if (!reuse && st.slots.len() >= NO_SLOT as usize) || seq > MAX_SEQ {
            return Err((too_many(seq), seq));
        }
        let Some(site_index) = st.sites.intern(site.name(), site.location(), vt) else {
            return Err((st.sites.intern_error(), seq));
        };
        // INVARIANT (once stored): an occupied slot owning the entry's parts, its site
        // interned. If it cannot be stored it is dropped unused (a slot has no destructor) and
        // the caller keeps the parts.
        let packed = Slot::new(seq, site_index, aux, word);
        let index = if reuse {
            let index = st.free_head as usize;
            let len = st.slots.len();
            let slot = st
                .slots
                .get_mut(index)
                .expect("free list links existing slots");
            debug_assert!(slot.tag == 0, "free list links vacant slots only");
            let next_free = slot.aux();
            *slot = packed;
            st.free_head = next_free;
            if index + 1 != len {
                st.reordered = true;
            }
            index
        } else {
            match st.slots.try_push(packed) {
                Ok(index) => index,
                Err(_) => return Err((slot_oom(), seq)),
            }
        };
        st.next_seq += 1;
        st.live += 1;
        st.all_inert &= releases_with_arena(vt, aux);
        self.tail_seq.store(seq, Ordering::Relaxed);
        Ok(Key {
            list: self.id,
            index: index as u32,
            seq,
        })
    }

    /// Counts an entry added with [`insert`](Self::insert) and traces it.
    pub(super) fn note_added(&self, key: &Key, site: &Site, kind: EntryKind) {
        trace::entry(Op::Add, self, key.seq, site, kind, 0);
    }

    /// Checks that `key` belongs to this list.
    pub(crate) fn check_list(&self, key: &Key) -> Result<()> {
        if key.list == self.id {
            Ok(())
        } else {
            Err(Error::ForeignHandle {
                handle_list: key.list,
                list: self.id,
            })
        }
    }

    /// Checks that the entry `key` is still on the list.
    ///
    /// Until the first bulk release the only way to take an entry off is through its handle,
    /// which the caller still holds, so the slot need not be looked at.
    pub(crate) fn check_live(&self, key: &Key) -> Result<()> {
        self.check_list(key)?;
        if !self.bulk.load(Ordering::Acquire) {
            return Ok(());
        }
        let st = self.state.lock();
        match st.slots.get(key.index as usize) {
            Some(slot) if slot.occupied() == Some(key.seq) => Ok(()),
            _ => Err(Error::NotOnList),
        }
    }

    /// Moves `value` into a managed allocation (from the arena when it is small) and adds it
    /// as the newest entry.
    ///
    /// Inlined around an out-of-line part, as [`alloc_bytes`](Self::alloc_bytes).
    #[inline]
    pub(crate) fn alloc_value<U: Send + Sync + 'static>(
        &self,
        site: Site,
        value: U,
    ) -> Result<Managed<U>> {
        let mut out = AddOut::new();
        let ptr = self.alloc_value_raw(&site, value, &mut out);
        out.into_handle(self.id, ptr)
    }

    /// [`alloc_value`](Self::alloc_value)'s work, returning as
    /// [`alloc_bytes_raw`](Self::alloc_bytes_raw) does.
    #[inline(never)]
    fn alloc_value_raw<U: Send + Sync + 'static>(
        &self,
        site: &Site,
        value: U,
        out: &mut AddOut,
    ) -> Option<NonNull<U>> {
        let mut st = self.state.lock();
        let added = match Block::value(&mut st.arena, value) {
            Ok((block, ptr)) => self.push_block_locked(st, site, block, ptr),
            Err((e, value)) => {
                drop(st);
                let e = self.add_failed(site, e);
                drop(value); // outside the lock: its destructor is user code
                Err(e)
            }
        };
        out.record(added)
    }

    /// `len` bytes aligned to `align`, zeroed if asked, as the newest entry.
    ///
    /// Inlined into the caller, around an out-of-line [`alloc_bytes_raw`](Self::alloc_bytes_raw)
    /// that returns the pointer in a register: see [`AddOut`].
    #[inline]
    pub(crate) fn alloc_bytes(
        &self,
        site: Site,
        len: usize,
        align: usize,
        zeroed: bool,
    ) -> Result<Managed<[u8]>> {
        let mut out = AddOut::new();
        let ptr = self.alloc_bytes_raw(&site, len, align, zeroed, &mut out);
        out.into_handle(self.id, ptr.map(|p| NonNull::slice_from_raw_parts(p, len)))
    }

    /// [`alloc_bytes`](Self::alloc_bytes)' work: the block's address, or `None` with the
    /// error in `out.err`; the new entry's index and sequence number in `out`.
    #[inline(never)]
    fn alloc_bytes_raw(
        &self,
        site: &Site,
        len: usize,
        align: usize,
        zeroed: bool,
        out: &mut AddOut,
    ) -> Option<NonNull<u8>> {
        let mut st = self.state.lock();
        let added = match Block::bytes(&mut st.arena, len, align, zeroed) {
            Ok((block, ptr)) => {
                debug_assert_eq!(ptr.len(), len);
                self.push_block_locked(st, site, block, ptr)
            }
            Err(e) => {
                drop(st);
                Err(self.add_failed(site, e))
            }
        };
        out.record(added).map(NonNull::cast)
    }

    /// A copy of `src` as the newest entry.
    pub(crate) fn alloc_copy<U: Copy + Send + Sync + 'static>(
        &self,
        site: Site,
        src: &[U],
    ) -> Result<Managed<[U]>> {
        let mut st = self.state.lock();
        match Block::copied(&mut st.arena, src) {
            Ok((block, ptr)) => self.push_block_locked(st, &site, block, ptr),
            Err(e) => {
                drop(st);
                Err(self.add_failed(&site, e))
            }
        }
    }

    /// Adds a block made under the lock `st` as the newest entry, then unlocks.
    #[inline]
    fn push_block_locked<U: ?Sized>(
        &self,
        mut st: ListGuard<'_, State<C>>,
        site: &Site,
        block: Block,
        ptr: NonNull<U>,
    ) -> Result<Managed<U>> {
        let size = block.size();
        let (vt, aux, word) = block.into_raw();
        match self.insert_parts(&mut st, site, vt, aux, word) {
            Ok(key) => {
                drop(st);
                trace::entry(Op::Add, self, key.seq, site, EntryKind::Alloc, size);
                Ok(Managed::new(key, ptr))
            }
            Err((e, _)) => {
                drop(st);
                let e = self.add_failed(site, e);
                // The block's value is dropped outside the lock; its arena memory stays with
                // the arena (a failed push is rare enough not to recycle it).
                // SAFETY: the parts taken from `block` above, still owned here.
                drop(unsafe { Block::from_raw(vt, aux, word) });
                Err(e)
            }
        }
    }

    /// Traces a failed add (out of line, off the add paths).
    #[cold]
    #[inline(never)]
    fn add_failed(&self, site: &Site, e: Error) -> Error {
        trace::add_failed(self, site, &e);
        e
    }

    /// Returns arena blocks to the arena.
    pub(super) fn recycle(&self, blocks: impl IntoIterator<Item = (NonNull<u8>, usize)>) {
        let mut blocks = blocks.into_iter().peekable();
        if blocks.peek().is_none() {
            return;
        }
        let mut st = self.state.lock();
        for (p, size) in blocks {
            // SAFETY: `p` came from `Block::dispose` of an entry of this list, whose memory
            // was allocated from this arena with this size; the entry is gone and its elements
            // dropped, and `dispose` hands each block out once.
            unsafe { st.arena.recycle(p, size) };
        }
    }

    /// Takes the entry `key` off the list without releasing it.
    ///
    /// An entry whose release runs no user code (a plain allocation) is released right here,
    /// under the same lock, its `op` event emitted after unlocking, and `None` is returned.
    /// Otherwise the entry is returned and the caller emits the event (in the panic net:
    /// [`finish_taken`](Self::finish_taken)).
    fn take(&self, key: &Key, op: Op) -> Result<Option<Entry<C>>> {
        self.check_list(key)?;
        let mut st = self.state.lock();
        let Some(slot) = st.take_slot(key.index as usize, Some(key.seq)) else {
            return Err(Error::NotOnList);
        };
        let meta = *st.sites.get(slot.site());
        let (site, vt) = (Site::new(meta.name, meta.location), meta.vtable);
        if vt.needs_drop {
            drop(st);
            // SAFETY: an occupied slot of this list taken out of the table, its site's vtable:
            // the parts of an `Entry<C>`, used once, here.
            let entry = unsafe { Entry::from_raw(slot.seq(), site, vt, slot.aux(), slot.word()) };
            return Ok(Some(entry));
        }
        // Inert (a block whose elements need no dropping, or a marker): released right here,
        // from the slot's parts, without building an `Entry` (which the compiler would move
        // through memory, stalling store forwarding: the largest cost of an early free).
        let size = if vt.kind == EntryKind::Alloc {
            // SAFETY: the parts of a block (the kind says so) owned by the slot taken out of
            // the table, used once, here.
            let block = unsafe { Block::from_raw(vt, slot.aux(), slot.word) };
            let size = block.size();
            if let Some((p, n)) = block.dispose() {
                // SAFETY: as in `recycle`: an arena block of this list, now free.
                unsafe { st.arena.recycle(p, n) };
            }
            size
        } else {
            0
        };
        drop(st);
        // Released already: a panicking subscriber leaves nothing undone, and its panic is
        // resumed (only logged while the thread unwinds).
        if let Some(p) = trace::entry_caught(op, self, key.seq, &site, vt.kind, size) {
            PanicSink::resume(Some(p), self.owner());
        }
        Ok(None)
    }

    /// Emits the `op` event of an entry [`take`](Self::take) handed back, then releases it
    /// (`ctx`) or discards it (`None`). A panic of the subscriber does not keep the entry from
    /// being released; it is resumed afterwards, before a panic of the action (which is then
    /// logged).
    #[inline]
    fn finish_taken(&self, seq: u64, entry: Entry<C>, op: Op, ctx: Option<&C>) {
        let event = trace::entry_caught(op, self, seq, &entry.site, entry.kind(), entry.size());
        let Some(p) = event else {
            self.recycle(match ctx {
                Some(ctx) => entry.release(ctx),
                None => entry.discard(),
            });
            return;
        };
        let mut sink = PanicSink::default();
        let site = entry.site;
        sink.record(p, self, &site);
        let done = panic::catch_unwind(AssertUnwindSafe(|| match ctx {
            Some(ctx) => entry.release(ctx),
            None => entry.discard(),
        }));
        match done {
            Ok(freed) => self.recycle(freed),
            Err(p) => sink.record(p, self, &site),
        }
        PanicSink::resume(sink.into_first(), self.owner());
    }

    /// Takes the entry `key` off and releases it now (`drmm_release_action`, `drmm_kfree`).
    /// A panic of the action propagates to the caller; the entry is gone either way.
    pub(crate) fn release(&self, key: &Key, ctx: &C) -> Result<()> {
        if let Some(entry) = self.take(key, Op::Del)? {
            self.finish_taken(key.seq, entry, Op::Del, Some(ctx));
        }
        Ok(())
    }

    /// Takes the entry `key` off without running it (`devm_remove_action`). The action's
    /// captured state (or the allocation) is dropped.
    pub(crate) fn remove(&self, key: &Key) -> Result<()> {
        if let Some(entry) = self.take(key, Op::Rem)? {
            self.finish_taken(key.seq, entry, Op::Rem, None);
        }
        Ok(())
    }

    /// Releases every entry, newest first, including entries added while this runs. Panics
    /// are caught per entry; the first is returned, the others logged.
    ///
    /// # Safety
    ///
    /// While this runs, no reference obtained from a handle of this list through
    /// [`check_live`](Self::check_live) may be alive or be created on another thread: the
    /// entries it points into are being freed. (References created by the release actions
    /// themselves cannot outlive the action, whose argument lifetime bounds them.)
    pub(crate) unsafe fn release_all(&self, ctx: &C) -> Option<PanicPayload> {
        // SAFETY: the caller's promise, passed on; `exclusive` is false.
        unsafe { self.release_all_inner(ctx, false) }
    }

    /// [`release_all`](Self::release_all) for an owner whose last reference is gone: the list
    /// is then reachable only from the release actions, which run on this thread, one at a
    /// time, while the release holds no access to the list. The release takes its lock without
    /// an atomic read-modify-write (see [`ListLock::lock_exclusive`]); the actions lock as
    /// usual.
    ///
    /// # Safety
    ///
    /// As for [`release_all`](Self::release_all), and no other thread may use this list
    /// while this runs (release actions may, on this thread: an action can still release an
    /// older entry early or add new ones).
    pub(crate) unsafe fn release_all_exclusive(&self, ctx: &C) -> Option<PanicPayload> {
        // SAFETY: the caller's promises, passed on.
        unsafe { self.release_all_inner(ctx, true) }
    }

    /// Locks the list for a bulk release.
    ///
    /// # Safety
    ///
    /// If `exclusive`, no other thread may use the list while the guard lives.
    #[inline]
    unsafe fn lock_for_release(&self, exclusive: bool) -> ListGuard<'_, State<C>> {
        if exclusive {
            // SAFETY: the caller's promise.
            unsafe { self.state.lock_exclusive() }
        } else {
            self.state.lock()
        }
    }

    /// # Safety
    ///
    /// As for [`release_all`](Self::release_all); if `exclusive`, as for
    /// [`release_all_exclusive`](Self::release_all_exclusive).
    unsafe fn release_all_inner(&self, ctx: &C, exclusive: bool) -> Option<PanicPayload> {
        self.bulk.store(true, Ordering::Release);
        // Every event of a release is emitted inside the panic net: a panicking subscriber
        // neither stops the release nor escapes it while the thread unwinds.
        let mut sink = PanicSink::default();
        sink.event(|| trace::release_begin(self));
        if exclusive && !trace::entry_events_enabled() {
            // SAFETY: the caller's promise covers `exclusive`.
            let mut st = unsafe { self.lock_for_release(exclusive) };
            if st.all_inert && st.releasing == 0 {
                // Every entry is a marker or an inert arena block (`all_inert`): releasing
                // them newest first would run nothing and free nothing one by one, and nobody
                // watches entry events, so they are released all at once, by forgetting the
                // slots and resetting the arena. (No release in progress: no
                // block in flight.)
                let released = st.live;
                st.live = 0;
                st.reset();
                // SAFETY: the list is empty and, exclusive with no release in progress, no
                // block is held anywhere else.
                unsafe { st.arena.reset() };
                drop(st);
                sink.event(|| trace::release_end(self, released));
                return sink.into_first();
            }
        }
        let (mut floor, mut walk) = {
            // SAFETY: the caller's promise covers `exclusive`.
            let mut st = unsafe { self.lock_for_release(exclusive) };
            st.releasing += 1;
            let floor = st.slots.len();
            let walk = if !st.reordered {
                Walk::Down { cursor: floor }
            } else {
                let mut order = Vec::new();
                if order.try_reserve_exact(st.live).is_ok() {
                    order.extend(
                        st.slots
                            .iter()
                            .enumerate()
                            .filter_map(|(i, s)| Some((s.occupied()?, i as u32))),
                    );
                    order.sort_unstable_by(|a, b| b.cmp(a));
                    Walk::Sorted { order, next: 0 }
                } else {
                    Walk::Scan
                }
            };
            (floor, walk)
        };
        let mut released = 0usize;
        // Inert entries (plain memory, markers: no user code to run) are taken off in batches,
        // one lock per batch, their slots left vacant exactly as the quiet path leaves them
        // (which releases them in place): an explicit free of one meanwhile, from another
        // thread or from a release action, finds it gone (`NotOnList`) whether or not a
        // subscriber is listening, and a slot is never left marked while user code runs. An
        // entry that runs user code (an action, a value
        // with a destructor) ends the batch and is released on its own, exactly as if taken
        // alone, so that an action can still release an older entry early; if it adds entries
        // (seen through `tail_seq`, without locking), those are released next.
        // Made on first use: most releases never leave the quiet path.
        let mut buffers: Option<Buffers<C>> = None;
        let mut nfreed = 0;
        loop {
            if nfreed == 0 && !trace::entry_events_enabled() {
                // SAFETY: the caller's promise covers `exclusive`.
                let (count, emptied) =
                    unsafe { self.release_quiet(&mut floor, &mut walk, ctx, &mut sink, exclusive) };
                released += count;
                if emptied {
                    break;
                }
            }
            let (batch, freed) =
                buffers.get_or_insert_with(|| (std::array::from_fn(|_| None), [None; BATCH]));
            let (n, single, next_seq) = {
                // SAFETY: the caller's promise covers `exclusive`.
                let mut st = unsafe { self.lock_for_release(exclusive) };
                for block in freed[..nfreed].iter_mut().filter_map(Option::take) {
                    // SAFETY: as in `recycle`: an arena block of this list, now free.
                    unsafe { st.arena.recycle(block.0, block.1) };
                }
                nfreed = 0;
                let mut n = 0;
                let mut single = None;
                // With nobody listening for REL events, an inert entry needs nothing outside
                // the lock: release it right here (bounded, so the lock is not held long, unless
                // nobody else can be waiting for it).
                let quiet = !trace::entry_events_enabled();
                let mut in_place = 0;
                while n < BATCH {
                    let Some((_, seq, entry)) = st.next_to_release(floor, &mut walk) else {
                        break;
                    };
                    if !entry.is_inert() {
                        single = Some((seq, entry));
                        break;
                    }
                    if quiet && in_place < IN_PLACE_MAX {
                        in_place += 1;
                        if let Some((p, size)) = entry.discard() {
                            // SAFETY: as in `recycle`: an arena block of this list, now free.
                            unsafe { st.arena.recycle(p, size) };
                        }
                        released += 1;
                        continue;
                    }
                    batch[n] = Some((seq, entry));
                    n += 1;
                }
                (n, single, st.next_seq)
            };
            if n == 0 && single.is_none() {
                break;
            }
            for (slot, freed) in batch[..n].iter_mut().zip(freed.iter_mut()) {
                let (seq, entry) = slot.take().expect("filled above");
                *freed = self.release_one(seq, entry, ctx, &mut sink);
                released += 1;
            }
            nfreed = n;
            if let Some((seq, entry)) = single {
                if let Some(block) = self.release_one(seq, entry, ctx, &mut sink) {
                    self.recycle(Some(block));
                }
                released += 1;
                if self.tail_seq.load(Ordering::Relaxed) >= next_seq {
                    // SAFETY: the caller's promise covers `exclusive`.
                    released +=
                        unsafe { self.release_newer(floor, next_seq, ctx, &mut sink, exclusive) };
                }
            }
        }
        if let Some((_, freed)) = &mut buffers {
            self.recycle(freed[..nfreed].iter_mut().filter_map(Option::take));
        }
        {
            // SAFETY: the caller's promise covers `exclusive`.
            let mut st = unsafe { self.lock_for_release(exclusive) };
            st.releasing -= 1;
            if st.releasing == 0 {
                if st.live == 0 {
                    st.reset();
                    if exclusive {
                        // Every block is free: the ones the quiet path left to the arena
                        // (`leave_pooled`) are reclaimed here, in one piece. (Exclusive: no
                        // block is in flight on another thread; the actions of this thread
                        // that took blocks off have returned them.)
                        // SAFETY: the list is empty and, exclusive, nothing else holds a block
                        // (above).
                        unsafe { st.arena.reset() };
                    }
                } else {
                    st.rebuild_free_list();
                }
            }
        }
        sink.event(|| trace::release_end(self, released));
        sink.into_first()
    }

    /// The quiet fast path of a bulk release, while nobody traces `REL` events: releases the
    /// newest entry from the top of the table again and again (see
    /// [`State::release_top_in_place`]), inert ones under the lock, others after unlocking,
    /// one at a time, so that an action can still release an older entry early, and entries
    /// it adds (on top: the newest) are released next. Returns the number of entries
    /// released and whether it left the table empty (then nothing is left to release: an
    /// entry added later, by another thread, is left on the list, as by the general walk);
    /// leaves whatever it cannot take from the top to the general walk.
    ///
    /// # Safety
    ///
    /// If `exclusive`, no other thread may use the list while this runs.
    unsafe fn release_quiet(
        &self,
        floor: &mut usize,
        walk: &mut Walk,
        ctx: &C,
        sink: &mut PanicSink,
        exclusive: bool,
    ) -> (usize, bool) {
        let budget = if exclusive { usize::MAX } else { IN_PLACE_MAX };
        let mut released = 0;
        let mut pending: Option<(NonNull<u8>, usize)> = None;
        // The last site looked up and its vtable: neighbouring entries mostly share one.
        let mut last = None;
        loop {
            let (found, emptied) = {
                // SAFETY: the caller's promise covers `exclusive`.
                let mut st = unsafe { self.lock_for_release(exclusive) };
                if let Some((p, size)) = pending.take() {
                    // SAFETY: as in `recycle`: an arena block of this list, now free.
                    unsafe { st.arena.recycle(p, size) };
                }
                let (count, found) =
                    st.release_top_in_place(floor, walk, budget, exclusive, &mut last);
                released += count;
                // The entry's name and location, needed by an `Entry` and by a trace (an
                // action that is not traced needs neither: it is looked up again if it panics).
                let found = found.map(|(slot, vt)| {
                    let meta = (vt.kind != EntryKind::Action || trace::debug_possible())
                        .then(|| *st.sites.get(slot.site()));
                    (slot, vt, meta)
                });
                (found, st.slots.len() == 0)
            };
            let Some((slot, vt, meta)) = found else {
                return (released, emptied);
            };
            if vt.kind == EntryKind::Action {
                // The common case, an action, run without going through `Entry` (whose moves
                // through memory between functions cost more than the call).
                if let Some(meta) = meta {
                    let site = Site::new(meta.name, meta.location);
                    let (seq, size) = (slot.seq(), vt.size);
                    if let Some(p) =
                        trace::entry_caught(Op::Rel, self, seq, &site, EntryKind::Action, size)
                    {
                        sink.record(p, self, &site);
                    }
                }
                // SAFETY: the parts of an action of this list (the kind says so), owned by the
                // slot taken out of the table, used once, here.
                let action = unsafe { Action::<C>::from_raw(vt, slot.word) };
                if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| action.call(ctx))) {
                    // SAFETY: the caller's promise covers `exclusive`.
                    let meta = *unsafe { self.lock_for_release(exclusive) }
                        .sites
                        .get(slot.site());
                    sink.record(p, self, &Site::new(meta.name, meta.location));
                }
            } else {
                let meta = meta.expect("looked up for every entry but an action");
                let site = Site::new(meta.name, meta.location);
                let seq = slot.seq();
                // SAFETY: an occupied slot of this list taken out of the table, its site's
                // vtable: the parts of an `Entry<C>`, used once, here.
                let entry = unsafe { Entry::from_raw(seq, site, vt, slot.aux(), slot.word()) };
                pending = self.release_one(seq, entry, ctx, sink);
            }
            released += 1;
            if trace::entry_events_enabled() {
                self.recycle(pending);
                return (released, false);
            }
        }
    }

    /// Releases one entry taken off by a bulk release, catching its panic. Returns the arena
    /// block to recycle, if any.
    #[inline]
    fn release_one(
        &self,
        seq: u64,
        entry: Entry<C>,
        ctx: &C,
        sink: &mut PanicSink,
    ) -> Option<(NonNull<u8>, usize)> {
        let site = entry.site;
        // The event's subscriber is user code: inside the panic net, and the entry is
        // released whatever it does.
        if let Some(p) = trace::entry_caught(Op::Rel, self, seq, &site, entry.kind(), entry.size())
        {
            sink.record(p, self, &site);
        }
        match panic::catch_unwind(AssertUnwindSafe(|| entry.release(ctx))) {
            Ok(freed) => freed,
            Err(p) => {
                sink.record(p, self, &site);
                None
            }
        }
    }

    /// Releases, newest first, every entry with a sequence number of at least `min_seq` (all
    /// added during the current batch: they sit at the top of the table, above `floor`).
    ///
    /// # Safety
    ///
    /// If `exclusive`, no other thread may use the list while this runs.
    unsafe fn release_newer(
        &self,
        floor: usize,
        min_seq: u64,
        ctx: &C,
        sink: &mut PanicSink,
        exclusive: bool,
    ) -> usize {
        let mut released = 0;
        loop {
            // SAFETY: the caller's promise covers `exclusive`.
            let next = unsafe { self.lock_for_release(exclusive) }.pop_above(floor, min_seq);
            let Some((seq, entry)) = next else {
                return released;
            };
            let freed = self.release_one(seq, entry, ctx, sink);
            self.recycle(freed);
            released += 1;
        }
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
        let mut slots = std::mem::replace(&mut st.slots, Slots::new());
        let mut entries: Vec<(u64, Entry<C>)> = slots
            .drain_all()
            .filter(|s| s.occupied().is_some())
            // SAFETY: occupied slots, taken out of the table.
            .map(|s| unsafe { st.unpack(s) })
            .collect();
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::res::action::Action;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering as O};

    use crate::sync::drop_counter::Counted;

    /// The final (exclusive) release leaves inert arena blocks to the arena, drops every value
    /// that needs it, frees blocks outside the arena, releases entries added by an action
    /// during the release, and resets the arena; the list works afterwards.
    #[test]
    fn final_release_drops_values_and_resets_the_arena() {
        let l = Arc::new(ResourceList::<()>::new(Some("t".into()), "t"));
        let drops = Arc::new(AtomicUsize::new(0));
        let n = if cfg!(miri) { 40 } else { 3000 };
        let mut values = 0;
        for i in 0..n {
            let b = l
                .alloc_bytes(Site::caller("kzalloc"), 64, 16, true)
                .unwrap();
            // SAFETY: a live block of 64 bytes, not released yet.
            unsafe { b.ptr.as_ptr().cast::<u8>().write_bytes(0xa5, 64) };
            if i % 7 == 0 {
                let _ = l.alloc_value(Site::caller("counted"), Counted(drops.clone()));
                values += 1;
            }
            if i % 11 == 0 {
                let _ = l.alloc_bytes(Site::caller("big"), 1000, 16, false).unwrap();
                let _ = l
                    .alloc_bytes(Site::caller("aligned"), 64, 64, false)
                    .unwrap();
            }
            if i % 13 == 0 {
                let _ = l.alloc_value(Site::caller("u64"), 5u64).unwrap();
            }
        }
        let (l2, d2) = (l.clone(), drops.clone());
        let a = Action::new(move |_: &()| {
            for _ in 0..5 {
                let _ = l2.alloc_bytes(Site::caller("late"), 48, 16, true).unwrap();
                let _ = l2.alloc_value(Site::caller("late"), Counted(d2.clone()));
            }
        })
        .ok()
        .unwrap();
        l.push(Entry {
            site: Site::caller("adds"),
            payload: Payload::Action(a),
        })
        .ok()
        .unwrap();
        // SAFETY: no handle of this list is read during or after the release, and no other
        // thread uses it.
        let p = unsafe { l.release_all_exclusive(&()) };
        assert!(p.is_none());
        assert_eq!(drops.load(O::SeqCst), values + 5);
        assert_eq!(l.len(), 0);
        assert_eq!(l.state.lock().arena.reserved(), 0, "arena reset");
        let b = l.alloc_bytes(Site::caller("after"), 64, 16, true).unwrap();
        // SAFETY: a live, zeroed block of 64 bytes.
        assert!(unsafe { b.ptr.as_ref() }.iter().all(|&x| x == 0));
    }

    /// A slot tells vacant and occupied apart at the extremes of both packed fields.
    #[test]
    fn slot_states_at_the_limits_of_seq_and_site() {
        let last_site = crate::res::erased::SITE_LIMIT - 1;
        for seq in [1, 2, MAX_SEQ - 1, MAX_SEQ] {
            for site in [0, 1, last_site] {
                let s = Slot::new(seq, site, 7, Word::from_bits(9));
                assert_eq!(s.occupied(), Some(seq));
                assert_eq!((s.site(), s.aux()), (site, 7));
                // SAFETY: made by `from_bits`.
                assert_eq!(unsafe { s.word().bits() }, 9);
            }
        }
        let v = Slot::vacant(5);
        assert_eq!((v.occupied(), v.aux()), (None, 5));
        assert_eq!(std::mem::align_of::<Slot>(), 4);
    }

    /// Once a list has handed out its last sequence number, adds fail with a size error and
    /// hand their entry back; the entries already there are released, newest first.
    #[test]
    fn adds_beyond_the_last_sequence_number_fail_and_the_list_stays_intact() {
        let l = ResourceList::<()>::new(Some("t".into()), "t");
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let action = |tag: u32| {
            let order = order.clone();
            Entry {
                site: Site::caller("record"),
                payload: Payload::Action(
                    Action::new(move |_: &()| order.lock().unwrap().push(tag))
                        .ok()
                        .unwrap(),
                ),
            }
        };
        let first = l.push(action(1)).ok().unwrap();
        l.state.lock().next_seq = MAX_SEQ;
        let last = l.push(action(2)).ok().unwrap();
        assert_eq!((first.seq, last.seq), (1, MAX_SEQ));
        let Err((e, back)) = l.push(action(3)) else {
            panic!("an add past MAX_SEQ succeeded");
        };
        assert!(matches!(e, Error::SizeOverflow { .. }), "{e:?}");
        drop(back);
        let e = l.alloc_bytes(Site::caller("kzalloc"), 64, 16, true).err();
        assert!(matches!(e, Some(Error::SizeOverflow { .. })), "{e:?}");
        assert_eq!(l.len(), 2);
        l.check_live(&last).unwrap();
        // SAFETY: no other thread uses the list, no handle is read afterwards.
        assert!(unsafe { l.release_all_exclusive(&()) }.is_none());
        assert_eq!(
            *order.lock().unwrap(),
            [2, 1],
            "the refused entry never ran"
        );
    }

    /// An add with a new site on a list whose site table is full fails with a size error and
    /// hands its entry back; adds from known sites still work.
    #[test]
    #[cfg_attr(miri, ignore = "65,535 adds are too slow under miri")]
    fn adds_from_too_many_sites_fail_and_the_list_stays_intact() {
        let l = ResourceList::<()>::new(Some("t".into()), "t");
        let mut names = crate::res::erased::distinct_names();
        let first = names.next().unwrap();
        // One location for all: a site is (name, location, entry type).
        let at = |name| Site::new(name, std::panic::Location::caller());
        let _ = l.alloc_bytes(at(first), 8, 16, false).unwrap();
        for _ in 1..crate::res::erased::SITE_LIMIT {
            let _ = l
                .alloc_bytes(at(names.next().unwrap()), 8, 16, false)
                .unwrap();
        }
        let e = l.alloc_bytes(at(names.next().unwrap()), 8, 16, false).err();
        assert!(matches!(e, Some(Error::SizeOverflow { .. })), "{e:?}");
        let mut known = l.alloc_bytes(at(first), 8, 16, false).unwrap();
        assert_eq!(l.len(), crate::res::erased::SITE_LIMIT as usize + 1);
        l.check_live(&known.key).unwrap();
        // Resizing keeps the entry's site (its vtable is its alignment class's), so a full
        // site table does not stop it: from the arena to a heap block and back.
        l.realloc_bytes(&mut known, 4096, true).unwrap();
        l.realloc_bytes(&mut known, 16, false).unwrap();
        assert_eq!(known.ptr.len(), 16);
        // SAFETY: no other thread uses the list, no handle is read afterwards.
        assert!(unsafe { l.release_all_exclusive(&()) }.is_none());
        assert_eq!(l.len(), 0);
    }

    /// Runs a final release of a list holding `n` inert arena blocks and group markers plus
    /// what `add` adds, and returns whether the list still counted as all inert before it.
    fn final_release_after(n: usize, add: impl FnOnce(&ResourceList<()>)) -> bool {
        let l = ResourceList::<()>::new(Some("t".into()), "t");
        for i in 0..n {
            let _ = l
                .alloc_bytes(Site::caller("kzalloc"), 64, 16, true)
                .unwrap();
            let _ = l.alloc_value(Site::caller("u64"), i as u64).unwrap();
        }
        let g = l.open_group(Site::caller("group")).unwrap();
        let _ = l
            .alloc_bytes(Site::caller("in group"), 200, 16, false)
            .unwrap();
        l.close_group(&g, Site::caller("close")).unwrap();
        add(&l);
        let all_inert = l.state.lock().all_inert;
        let live = l.len();
        // SAFETY: no handle of this list is read during or after the release, and no other
        // thread uses it.
        assert!(unsafe { l.release_all_exclusive(&()) }.is_none());
        assert_eq!(l.len(), 0, "{live} entries released");
        assert_eq!(l.state.lock().arena.reserved(), 0, "arena reset");
        assert!(l.state.lock().all_inert, "empty again");
        all_inert
    }

    /// A final release of markers and inert arena blocks only is done in one step (the
    /// arena reset frees them all); anything else on the list sends it through the entry by
    /// entry release, which still drops, frees and runs what it must. Under miri a block from
    /// the global allocator that the short path forgot would show up as a leak.
    #[test]
    fn final_release_of_inert_arena_blocks_alone_is_one_step() {
        let n = if cfg!(miri) { 20 } else { 500 };
        assert!(final_release_after(n, |_| {}));
        let drops = Arc::new(AtomicUsize::new(0));
        let d = drops.clone();
        assert!(!final_release_after(n, move |l| {
            let _ = l.alloc_value(Site::caller("counted"), Counted(d));
        }));
        assert_eq!(
            drops.load(O::SeqCst),
            1,
            "a value with a destructor is dropped"
        );
        assert!(!final_release_after(n, |l| {
            let _ = l.alloc_bytes(Site::caller("big"), 1000, 16, false).unwrap();
        }));
        let d = drops.clone();
        assert!(!final_release_after(n, move |l| {
            let a = Action::new(move |_: &()| {
                d.fetch_add(1, O::SeqCst);
            })
            .ok()
            .unwrap();
            l.push(Entry {
                site: Site::caller("action"),
                payload: Payload::Action(a),
            })
            .ok()
            .unwrap();
        }));
        assert_eq!(drops.load(O::SeqCst), 2, "an action runs");
        // A block resized out of the arena is no longer released by the reset.
        assert!(!final_release_after(n, |l| {
            let mut b = l.alloc_bytes(Site::caller("grows"), 64, 16, true).unwrap();
            l.realloc_bytes(&mut b, 4096, true).unwrap();
        }));
    }
}
