//! The slot table under the list's lock: the packed slots, the free list, and the walk of a
//! bulk release over the entries that existed when it began.

use super::*;

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
pub(in crate::res) struct Slot {
    pub(super) tag: u64,
    pub(super) aux: u32,
    pub(super) word: Word,
}

/// Bits of [`Slot::tag`] that hold the sequence number; the rest hold the site index.
pub(super) const SEQ_BITS: u32 = 48;
/// The largest sequence number: a list accepts 2^48 - 1 adds in its life (at 10 ns per add,
/// a month of nothing but adds; an add beyond it fails with an error).
pub(in crate::res) const MAX_SEQ: u64 = (1 << SEQ_BITS) - 1;
/// A site index no slot holds (every real one is below it:
/// [`SITE_LIMIT`](crate::res::erased::SITE_LIMIT) of them), so that a tag at or above
/// [`RESERVED_TAG`] is never an occupied slot.
pub(super) const RESERVED_SITE: u64 = (1 << (64 - SEQ_BITS)) - 1;
/// The smallest tag with the reserved site index.
pub(super) const RESERVED_TAG: u64 = RESERVED_SITE << SEQ_BITS;

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
    pub(super) const fn new(seq: u64, site: u32, aux: u32, word: Word) -> Self {
        debug_assert!(seq != 0 && seq <= MAX_SEQ && (site as u64) < RESERVED_SITE);
        Slot {
            tag: seq | (site as u64) << SEQ_BITS,
            aux,
            word,
        }
    }

    #[inline(always)]
    pub(super) const fn vacant(next_free: u32) -> Self {
        Slot {
            tag: 0,
            aux: next_free,
            word: Word::uninit(),
        }
    }

    /// A bitwise copy (which owns nothing: see [`State::unpack`]).
    #[inline(always)]
    pub(super) fn copy(&self) -> Self {
        Slot {
            tag: self.tag,
            aux: self.aux,
            word: self.word,
        }
    }

    /// The sequence number field (of an occupied slot; 0 when vacant).
    #[inline(always)]
    pub(super) fn seq(&self) -> u64 {
        self.tag & MAX_SEQ
    }

    /// The entry's sequence number, if the slot is occupied.
    #[inline(always)]
    pub(in crate::res) fn occupied(&self) -> Option<u64> {
        let tag = self.tag;
        (tag != 0 && tag < RESERVED_TAG).then_some(tag & MAX_SEQ)
    }

    /// The site index of an occupied slot.
    #[inline(always)]
    pub(in crate::res) fn site(&self) -> u32 {
        (self.tag >> SEQ_BITS) as u32
    }

    /// The `aux` of an occupied slot.
    #[inline(always)]
    pub(in crate::res) fn aux(&self) -> u32 {
        self.aux
    }

    /// The word of an occupied slot.
    #[inline(always)]
    pub(in crate::res) fn word(&self) -> Word {
        self.word
    }

    /// Replaces the payload parts of an occupied slot, keeping its sequence number. The old
    /// parts must have been taken over by the caller (they are overwritten, not dropped).
    #[inline]
    pub(in crate::res) fn replace_payload(&mut self, site: u32, aux: u32, word: Word) {
        debug_assert!(self.occupied().is_some());
        *self = Slot::new(self.seq(), site, aux, word);
    }
}

/// What a list needs only once something is added to it: the table of call sites the slots
/// refer to and the free lists of its arena (360 bytes). It is the header of the slot table's
/// first chunk, made by the list's first add in the allocation that add makes anyway, and kept
/// until the list is dropped (also while the list is empty again): an empty list (an idle
/// device) holds one pointer instead, and a list with entries no extra allocation.
pub(in crate::res) struct Front {
    /// The call sites (name, location, entry type) the slots refer to.
    sites: SiteTable,
    /// The free lists of the list's arena, attached to it when the front is made.
    free: FreeLists,
}

impl Front {
    const fn new() -> Self {
        Front {
            sites: SiteTable::new(),
            free: FreeLists::new(),
        }
    }
}

impl Default for Front {
    fn default() -> Self {
        Self::new()
    }
}

/// The front of every list that has none yet: empty, and never written (a list makes its own
/// before it writes to one).
pub(super) static NO_FRONT: Front = Front::new();

/// The slot table and the bookkeeping around it, under the list's lock.
///
/// # Invariants
///
/// The arena's free lists, once attached, are the `free` field of the slot table's front (its
/// first chunk's header), which lives until the table is dropped, after the arena; the front's
/// `sites` field is written only through `&mut State`, by [`intern`](Self::intern). The
/// arena's blocks recycled before its lists are attached stay unused.
pub(crate) struct State<C> {
    /// Memory of small managed allocations. Entries still on the list when it is dropped are
    /// unpacked and dropped by [`ResourceList`]'s `Drop`, before the arena. (Declared before
    /// the slot table, whose front holds its free lists: dropped first.)
    pub(in crate::res) arena: Arena,
    pub(in crate::res) slots: Slots<Slot, Front>,
    pub(super) free_head: u32,
    pub(super) next_seq: u64,
    pub(super) live: usize,
    /// A vacant slot below an occupied one was reused, so slot order is no longer age order.
    pub(super) reordered: bool,
    /// Bulk releases in progress. While one runs, slots are not reused, so entries added during
    /// the release are appended above everything that existed when it began.
    pub(super) releasing: usize,
    /// Every entry added since the list was last empty is released by resetting the arena
    /// ([`releases_with_arena`]): a final release with nobody tracing entries then has nothing
    /// to do entry by entry. Only ever cleared by an add (or a resize) and set again when the
    /// list is empty, so it may be false while every live entry is such an entry, never the
    /// other way round.
    pub(in crate::res) all_inert: bool,
    pub(super) _ctx: PhantomData<fn(&C)>,
}

/// Whether releasing an entry with these parts ([`Entry::into_raw`]) amounts to nothing once
/// the list's arena is reset: a group marker, or a block in the arena whose elements need no
/// dropping. Actions, values with destructors and blocks from the global allocator are not.
#[inline(always)]
pub(in crate::res) fn releases_with_arena(vt: &EntryVTable, aux: u32) -> bool {
    match vt.kind {
        EntryKind::Action => false,
        EntryKind::Alloc => !vt.needs_drop && Block::in_arena(vt, aux),
        _ => true,
    }
}

impl<C> State<C> {
    /// An empty state: no slot, no site, no arena chunk; nothing allocated.
    pub(super) fn new() -> Self {
        State {
            arena: Arena::new(),
            slots: Slots::new(&NO_FRONT),
            _ctx: PhantomData,
            free_head: NO_SLOT,
            next_seq: 1,
            live: 0,
            reordered: false,
            releasing: 0,
            all_inert: true,
        }
    }

    /// The call sites the slots refer to (an empty table until the list's first add).
    #[inline(always)]
    pub(in crate::res) fn sites(&self) -> &SiteTable {
        // SAFETY: the slot table's header is its front, which lives as long as the table, or
        // `NO_FRONT`; its `sites` field is written only through `&mut self` (the invariant),
        // so it may be read for as long as `self` is borrowed. Only that field is borrowed:
        // the arena writes the other one.
        unsafe { &(*self.slots.head().as_ptr()).sites }
    }

    /// The index of the site `(name, location, vt)` in the site table, interned if new.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`] if the front (at the list's first add) or the site table could
    /// not be allocated, [`Error::SizeOverflow`] if the table is full. Nothing changes then.
    #[inline(always)]
    pub(in crate::res) fn intern(
        &mut self,
        name: &'static str,
        location: &'static Location<'static>,
        vt: &'static EntryVTable,
    ) -> Result<u32> {
        match self.sites().cached(name, location, vt) {
            Some(i) => Ok(i),
            None => self.intern_slow(name, location, vt),
        }
    }

    /// [`intern`](Self::intern) of a site the cache does not have: makes the front if the
    /// list has none yet.
    #[cold]
    #[inline(never)]
    fn intern_slow(
        &mut self,
        name: &'static str,
        location: &'static Location<'static>,
        vt: &'static EntryVTable,
    ) -> Result<u32> {
        let front = self.front().ok_or_else(slot_oom)?;
        // SAFETY: the list's own front (made above if needed), reached through `&mut self`;
        // only its `sites` field is borrowed (the arena's pointer is to the other one).
        let sites = unsafe { &mut (*front.as_ptr()).sites };
        sites
            .intern(name, location, vt)
            .ok_or_else(|| sites.intern_error())
    }

    /// The list's front, made now (in the slot table's first chunk, with the arena's free
    /// lists attached) if it has none; `None` if that allocation failed (nothing changed).
    fn front(&mut self) -> Option<NonNull<Front>> {
        let front = self.slots.first_head(Front::new)?;
        if !self.arena.has_free_lists() {
            // SAFETY: the offset of a field of the front: inside it.
            let free = unsafe { front.byte_add(std::mem::offset_of!(Front, free)) }.cast();
            // SAFETY: the front was just made (a table's first chunk is made once, and the
            // lists are attached when it is): empty lists, living until the slot table is
            // dropped, after the arena, and reached by nothing but the arena (the invariant).
            unsafe { self.arena.attach(free) };
        }
        Some(front)
    }

    /// The entry an occupied slot owned, and its sequence number.
    ///
    /// # Safety
    ///
    /// `slot` must be an occupied slot of this list, taken out of the table (or a bitwise copy
    /// whose original is never unpacked again).
    #[inline(always)]
    pub(in crate::res) unsafe fn unpack(&self, slot: Slot) -> (u64, Entry<C>) {
        debug_assert!(slot.occupied().is_some());
        let meta = self.sites().get(slot.site());
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
    pub(super) unsafe fn discard_inert(&mut self, slot: Slot) {
        let vt = self.sites().get(slot.site()).vtable;
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
    pub(in crate::res) fn peek(&self, slot: &Slot) -> std::mem::ManuallyDrop<Entry<C>> {
        // SAFETY: `slot` is occupied (the callers check); the copy is never dropped or consumed
        // (`ManuallyDrop`, and every consuming method takes the entry by value, which safe code
        // cannot get out of the `ManuallyDrop` without `into_inner`, never called on a view).
        std::mem::ManuallyDrop::new(unsafe { self.unpack(slot.copy()) }.1)
    }

    /// The sequence number and the marker in slot `index`, if it holds a group marker.
    pub(in crate::res) fn marker_at(&self, index: usize) -> Option<(u64, Marker)> {
        let slot = self.slots.get(index)?;
        let seq = slot.occupied()?;
        let vt = self.sites().get(slot.site()).vtable;
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
    pub(in crate::res) fn set_closed_at(&mut self, index: usize, close: u64) {
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
    pub(in crate::res) fn take(
        &mut self,
        index: usize,
        seq: Option<u64>,
    ) -> Option<(u64, Entry<C>)> {
        let old = self.take_slot(index, seq)?;
        // SAFETY: an occupied slot, taken out of the table.
        Some(unsafe { self.unpack(old) })
    }

    /// Empties the slot at `index` if it holds the entry `seq`, handing back the occupied
    /// slot (which then owns the entry: see [`unpack`](Self::unpack)).
    #[inline(always)]
    pub(super) fn take_slot(&mut self, index: usize, seq: Option<u64>) -> Option<Slot> {
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
    pub(super) fn reset(&mut self) {
        debug_assert_eq!(self.live, 0);
        self.slots.clear();
        self.free_head = NO_SLOT;
        self.reordered = false;
        self.all_inert = true;
    }

    /// Rebuilds the free list after a bulk release that left entries behind (added
    /// concurrently after it finished scanning).
    pub(super) fn rebuild_free_list(&mut self) {
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
    pub(super) fn pop_above(&mut self, floor: usize, min_seq: u64) -> Option<(u64, Entry<C>)> {
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
    pub(super) fn next_to_release(
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
    pub(super) fn release_top_in_place(
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
                        let vt = self.sites().get(site).vtable;
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
    pub(super) fn newest_below(&self, floor: usize) -> Option<usize> {
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
pub(super) type Buffers<C> = (
    [Option<(u64, Entry<C>)>; BATCH],
    [Option<(NonNull<u8>, usize)>; BATCH],
);

/// How a bulk release walks the entries that existed when it began.
pub(super) enum Walk {
    /// Slot order is age order: walk down from the cursor.
    Down { cursor: usize },
    /// Slots were reused: (seq, index) sorted newest first.
    Sorted { order: Vec<(u64, u32)>, next: usize },
    /// Slots were reused and no sort buffer could be allocated: scan for the newest each time.
    Scan,
}
