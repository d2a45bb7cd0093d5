//! The type-erased parts of an entry: one payload word and one vtable per entry type.
//!
//! A slot of the list is 20 bytes: the entry's 48-bit sequence number and a 16-bit index into
//! the list's table of call sites ([`SiteMeta`]: name, location and [`EntryVTable`]) in one
//! `u64`, a `u32` of auxiliary data and one [`Word`] (stored unaligned). What the auxiliary
//! data and the word hold is decided by the vtable:
//!
//! | entry | vtable | `aux` | `word` |
//! |---|---|---|---|
//! | action of closure type `F` | one per `F` | 0 | `F` itself if it fits one word, else a pointer to a heap `F` |
//! | typed block of `U` | one per `U` | element count, or [`BIG`] | data pointer, or pointer to a [`BigHeader`] |
//! | byte block | one per alignment class | byte count, or [`BIG`] | as above |
//! | group open marker | [`OPEN_VTABLE`] | high 32 bits of the close marker's seq | its low 32 bits (0: still open) |
//! | group close marker | [`CLOSE_VTABLE`] | high 32 bits of the group's seq | its low 32 bits |
//!
//! No enum tag is needed: the vtable's [`kind`](EntryVTable::kind) tells the cases apart.

use std::mem::MaybeUninit;
use std::panic::Location;
use std::ptr::NonNull;

use crate::error::Error;
use crate::res::info::EntryKind;

/// `aux` of a block whose length does not fit in a `u32` (then `word` points to a
/// [`BigHeader`]).
pub(crate) const BIG: u32 = u32::MAX;

/// The out-of-line description of a block of [`BIG`] length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BigHeader {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) len: usize,
}

/// One word of an entry's payload, kept with its pointer provenance.
///
/// # Invariants
///
/// A `Word` by itself owns nothing and says nothing about its contents: it is always paired
/// with an [`EntryVTable`] (and, for blocks and markers, an `aux` value) by whoever holds it (an
/// [`Action`](crate::res::action::Action), a [`Block`](crate::res::alloc::Block), a marker or
/// an occupied slot), and the pair's owner owns what the word holds, as listed in the table of
/// the [module documentation](self). In particular:
///
/// * an inline closure is stored at the start of the word, which has the size and alignment
///   of a pointer; its bytes may include uninitialised padding and pointers (hence
///   `MaybeUninit<*mut ()>`, which copies every byte, provenance included);
/// * a pointer (boxed closure, block data, [`BigHeader`]) is stored as `*mut ()` with its
///   provenance, never through an integer;
/// * a marker's value is stored as an address without provenance and read back as one;
/// * the word of a vacant slot is unused and may be uninitialised.
///
/// Copying a `Word` does not copy ownership: exactly one holder may drop or consume what it
/// holds.
#[derive(Clone, Copy)]
pub(crate) struct Word(MaybeUninit<*mut ()>);

impl Word {
    /// An unused word.
    #[inline(always)]
    pub(crate) const fn uninit() -> Self {
        Word(MaybeUninit::uninit())
    }

    /// A word holding the pointer `p`.
    #[inline(always)]
    pub(crate) fn from_ptr<T>(p: *mut T) -> Self {
        Word(MaybeUninit::new(p.cast()))
    }

    /// A word holding the plain value `v` (no provenance).
    #[inline(always)]
    pub(crate) fn from_bits(v: u32) -> Self {
        Word(MaybeUninit::new(std::ptr::without_provenance_mut(
            v as usize,
        )))
    }

    /// The pointer stored by [`from_ptr`](Self::from_ptr).
    ///
    /// # Safety
    ///
    /// The word must have been made by [`from_ptr`](Self::from_ptr) (or written with a pointer
    /// through [`as_mut_ptr`](Self::as_mut_ptr)).
    #[inline(always)]
    pub(crate) unsafe fn ptr<T>(self) -> *mut T {
        // SAFETY: the caller promises an initialised pointer.
        unsafe { self.0.assume_init() }.cast()
    }

    /// The value stored by [`from_bits`](Self::from_bits).
    ///
    /// # Safety
    ///
    /// The word must have been made by [`from_bits`](Self::from_bits).
    #[inline(always)]
    pub(crate) unsafe fn bits(self) -> u32 {
        // SAFETY: the caller promises an initialised value.
        unsafe { self.0.assume_init() }.addr() as u32
    }

    /// The word's storage, for a closure stored inline.
    #[inline(always)]
    pub(crate) fn as_mut_ptr(&mut self) -> *mut MaybeUninit<*mut ()> {
        &mut self.0
    }
}

/// How to handle one type of entry.
///
/// Every field is meaningful for one kind only; the others hold no-ops. One `'static` vtable
/// exists per closure type (actions), per element type (typed blocks), per alignment class
/// (byte blocks), and one per marker kind.
pub(crate) struct EntryVTable {
    /// Action, allocation, or marker.
    pub(crate) kind: EntryKind,
    /// Actions: `size_of::<F>()` (the trace's size). Blocks: the size of one element.
    pub(crate) size: usize,
    /// Blocks: the alignment of the block's layout.
    pub(crate) align: usize,
    /// Blocks: the element type's name.
    pub(crate) type_name: fn() -> &'static str,
    /// Whether releasing or discarding the entry runs code (user code must run outside the
    /// list's lock): actions always; blocks whose elements need dropping.
    pub(crate) needs_drop: bool,
    /// Actions: moves the closure out of the word and calls it with the context.
    ///
    /// # Safety
    ///
    /// The word must hold a live closure of the type this vtable was made for (it is consumed:
    /// the word must not be used again), and the pointer must be a valid `&C` of the context
    /// type it was made for, for the duration of the call.
    pub(crate) call: unsafe fn(*mut Word, NonNull<()>),
    /// Actions: drops the closure without calling it.
    ///
    /// # Safety
    ///
    /// As for `call`: a live closure of this vtable's type, consumed.
    pub(crate) drop_action: unsafe fn(*mut Word),
    /// Blocks: drops `len` elements in place (a no-op for bytes).
    ///
    /// # Safety
    ///
    /// The pointer must address `len` initialised, aligned elements of this vtable's element
    /// type that are not used afterwards.
    pub(crate) drop_elems: unsafe fn(*mut u8, usize),
}

/// # Safety
///
/// Always safe. (Unsafe only to fit the vtable's signature.)
pub(crate) unsafe fn no_call(_: *mut Word, _: NonNull<()>) {}
/// # Safety
///
/// Always safe. (Unsafe only to fit the vtable's signature.)
pub(crate) unsafe fn no_drop_action(_: *mut Word) {}
/// # Safety
///
/// Always safe. (Unsafe only to fit the vtable's signature.)
pub(crate) unsafe fn no_drop_elems(_: *mut u8, _: usize) {}

fn no_type_name() -> &'static str {
    ""
}

const fn marker_vtable(kind: EntryKind) -> EntryVTable {
    EntryVTable {
        kind,
        size: 0,
        align: 1,
        type_name: no_type_name,
        needs_drop: false,
        call: no_call,
        drop_action: no_drop_action,
        drop_elems: no_drop_elems,
    }
}

/// The vtable of group open markers.
pub(crate) static OPEN_VTABLE: EntryVTable = marker_vtable(EntryKind::GroupOpen);
/// The vtable of group close markers.
pub(crate) static CLOSE_VTABLE: EntryVTable = marker_vtable(EntryKind::GroupClose);

/// A call site and entry type: what the slots of a list refer to by index.
#[derive(Clone, Copy)]
pub(crate) struct SiteMeta {
    pub(crate) name: &'static str,
    pub(crate) location: &'static Location<'static>,
    pub(crate) vtable: &'static EntryVTable,
}

impl SiteMeta {
    #[inline(always)]
    fn same(
        &self,
        name: &'static str,
        location: &'static Location<'static>,
        vt: &'static EntryVTable,
    ) -> bool {
        std::ptr::eq(self.name, name)
            && std::ptr::eq(self.location, location)
            && std::ptr::eq(self.vtable, vt)
    }

    fn key(&self) -> (usize, usize, usize, usize) {
        key(self.name, self.location, self.vtable)
    }
}

fn key(
    name: &'static str,
    location: &'static Location<'static>,
    vt: &'static EntryVTable,
) -> (usize, usize, usize, usize) {
    (
        name.as_ptr().addr(),
        name.len(),
        std::ptr::from_ref(location).addr(),
        std::ptr::from_ref(vt).addr(),
    )
}

/// Entries of the direct-mapped cache in front of a [`SiteTable`].
const CACHE: usize = 16;
/// Above this many sites a miss of the cache is looked up in a hash map, not by a scan.
const SCAN_MAX: usize = 32;
/// Sites stored in the table itself: a device typically adds its entries from a handful of
/// call sites, and then its table allocates nothing.
const INLINE: usize = 4;

/// What the unused inline entries of a [`SiteTable`] hold (never handed out).
const UNUSED_SITE: SiteMeta = SiteMeta {
    name: "",
    location: Location::caller(),
    vtable: &OPEN_VTABLE,
};

/// Sites one [`SiteTable`] holds at most: a slot has 16 bits for the site index, and one
/// value is reserved (no occupied slot has it).
pub(crate) const SITE_LIMIT: u32 = 0xFFFF;

/// The map of a table past [`SCAN_MAX`] sites: site key to index.
type SiteMap = std::collections::HashMap<(usize, usize, usize, usize), u32>;

/// The call sites of one list, each interned once, referred to by `u32` index.
///
/// # Invariants
///
/// The table holds `len` sites: sites `0 .. min(len, INLINE)` in `inline`, sites `INLINE ..`
/// in `spill` (`spill.len() == len - INLINE` when `len > INLINE`, else empty). `cache[h]` is 0
/// or one more than the index of a site; `map`, when present, maps the key of every site to
/// its index. Sites are never removed: an index, once handed out, stays valid for the table's
/// life.
pub(crate) struct SiteTable {
    inline: [SiteMeta; INLINE],
    spill: Vec<SiteMeta>,
    len: u32,
    cache: [u32; CACHE],
    /// Boxed: made only for tables with many sites, it should not make every list larger.
    map: Option<Box<SiteMap>>,
}

impl Default for SiteTable {
    fn default() -> Self {
        Self::new()
    }
}

impl SiteTable {
    pub(crate) const fn new() -> Self {
        SiteTable {
            inline: [UNUSED_SITE; INLINE],
            spill: Vec::new(),
            len: 0,
            cache: [0; CACHE],
            map: None,
        }
    }

    /// The site with index `i` (an index handed out by [`intern`](Self::intern)).
    #[inline(always)]
    pub(crate) fn get(&self, i: u32) -> &SiteMeta {
        let i = i as usize;
        if i < INLINE {
            &self.inline[i]
        } else {
            &self.spill[i - INLINE]
        }
    }

    /// Every site, by index.
    fn iter(&self) -> impl Iterator<Item = &SiteMeta> {
        let inline = (self.len as usize).min(INLINE);
        self.inline[..inline].iter().chain(&self.spill)
    }

    /// Why [`intern`](Self::intern) of a new site failed: the table is full
    /// ([`SITE_LIMIT`] sites), or it could not grow.
    #[cold]
    pub(crate) fn intern_error(&self) -> Error {
        if self.len >= SITE_LIMIT {
            Error::SizeOverflow {
                what: "more than 65,535 distinct sites (name, location, entry type) on one list",
            }
        } else {
            Error::oom(std::alloc::Layout::new::<SiteMeta>())
        }
    }

    /// The cache entry of a site.
    #[inline(always)]
    fn cache_slot(location: &'static Location<'static>, vt: &'static EntryVTable) -> usize {
        ((std::ptr::from_ref(location).addr() >> 3) ^ (std::ptr::from_ref(vt).addr() >> 4)) % CACHE
    }

    /// The index of the site `(name, location, vt)` if the cache in front of the table has
    /// it (always `None` for an empty table). Reads only.
    #[inline(always)]
    pub(crate) fn cached(
        &self,
        name: &'static str,
        location: &'static Location<'static>,
        vt: &'static EntryVTable,
    ) -> Option<u32> {
        let c = self.cache[Self::cache_slot(location, vt)];
        (c != 0 && self.get(c - 1).same(name, location, vt)).then(|| c - 1)
    }

    /// The index of the site `(name, location, vt)`, added if new; `None` if the table is
    /// full ([`SITE_LIMIT`] sites) or could not grow ([`intern_error`](Self::intern_error)
    /// says which).
    #[inline(always)]
    pub(crate) fn intern(
        &mut self,
        name: &'static str,
        location: &'static Location<'static>,
        vt: &'static EntryVTable,
    ) -> Option<u32> {
        if let Some(i) = self.cached(name, location, vt) {
            return Some(i);
        }
        let i = self.intern_slow(name, location, vt)?;
        self.cache[Self::cache_slot(location, vt)] = i + 1;
        Some(i)
    }

    #[cold]
    fn intern_slow(
        &mut self,
        name: &'static str,
        location: &'static Location<'static>,
        vt: &'static EntryVTable,
    ) -> Option<u32> {
        let found = match &self.map {
            Some(map) => map.get(&key(name, location, vt)).copied(),
            None => self
                .iter()
                .position(|m| m.same(name, location, vt))
                .map(|i| i as u32),
        };
        if found.is_some() {
            return found;
        }
        let i = self.len;
        if i >= SITE_LIMIT {
            return None;
        }
        // Every allocation first, so that a failure leaves the table as it was.
        if i as usize >= INLINE {
            self.spill.try_reserve(1).ok()?;
        }
        if self.map.is_none() && i as usize >= SCAN_MAX {
            let mut map = SiteMap::new();
            map.try_reserve(i as usize * 2).ok()?;
            map.extend(self.iter().enumerate().map(|(j, m)| (m.key(), j as u32)));
            self.map = Some(crate::sync::fallible::try_box(map).ok()?);
        }
        if let Some(map) = &mut self.map {
            map.try_reserve(1).ok()?;
            map.insert(key(name, location, vt), i);
        }
        let meta = SiteMeta {
            name,
            location,
            vtable: vt,
        };
        // INVARIANT: site `i` stored where `get` looks for it, then counted.
        if (i as usize) < INLINE {
            self.inline[i as usize] = meta;
        } else {
            self.spill.push(meta);
        }
        self.len = i + 1;
        Some(i)
    }
}

/// More than [`SITE_LIMIT`] distinct site names without leaking anything: every non-empty
/// slice of one static string (sites compare names by pointer and length). For tests.
#[cfg(all(test, not(loom)))]
pub(crate) fn distinct_names() -> impl Iterator<Item = &'static str> {
    // 390 bytes: 76,245 slices.
    static TEXT: &str = concat!(
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdef",
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdef",
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdef",
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdef",
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdef",
    );
    (0..TEXT.len()).flat_map(|a| (a + 1..=TEXT.len()).map(move |b| &TEXT[a..b]))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn sites_inline_then_spilled() {
        let mut t = SiteTable::new();
        static NAMES: &str = "abcdefgh";
        let names: Vec<&'static str> = (0..8).map(|i| &NAMES[i..=i]).collect();
        let loc = Location::caller();
        for (i, n) in names.iter().enumerate().take(INLINE) {
            assert_eq!(t.intern(n, loc, &CLOSE_VTABLE), Some(i as u32));
        }
        assert_eq!(
            t.spill.capacity(),
            0,
            "no allocation while the sites fit inline"
        );
        for (i, n) in names.iter().enumerate().skip(INLINE) {
            assert_eq!(t.intern(n, loc, &CLOSE_VTABLE), Some(i as u32));
        }
        assert_eq!((t.len as usize, t.spill.len()), (8, 8 - INLINE));
        // Found again through the cache, and through the scan of both parts without it.
        for pass in 0..2 {
            if pass == 1 {
                t.cache = [0; CACHE];
            }
            for (i, n) in names.iter().enumerate() {
                assert_eq!(t.intern(n, loc, &CLOSE_VTABLE), Some(i as u32));
                assert!(std::ptr::eq(t.get(i as u32).name, *n));
                assert!(std::ptr::eq(t.get(i as u32).vtable, &CLOSE_VTABLE));
            }
        }
        assert_eq!(t.len, 8, "nothing interned twice");
    }

    #[test]
    fn interning_is_stable_through_cache_scan_and_map() {
        let mut t = SiteTable::new();
        // 100 distinct names (distinct pointers) without leaking anything.
        static ALL: &str = concat!(
            "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
            "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
        );
        let names: Vec<&'static str> = (0..100).map(|i| &ALL[i..=i]).collect();
        let loc = Location::caller();
        let first: Vec<u32> = names
            .iter()
            .map(|n| t.intern(n, loc, &OPEN_VTABLE).unwrap())
            .collect();
        assert_eq!(first, (0..100).collect::<Vec<_>>());
        for (i, n) in names.iter().enumerate().rev() {
            assert_eq!(t.intern(n, loc, &OPEN_VTABLE), Some(i as u32));
            assert_eq!(t.intern(n, loc, &CLOSE_VTABLE), Some(100 + (99 - i) as u32));
            assert!(std::ptr::eq(t.get(i as u32).name, *n));
        }
        assert!(t.map.is_some());
    }

    /// The table holds `SITE_LIMIT` sites; a new one beyond that is refused with a size error
    /// (not an allocation failure), and every site already in it is still found.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "65,535 interns are too slow under miri; no unsafe code here"
    )]
    fn a_full_table_refuses_new_sites_and_keeps_the_old_ones() {
        let mut t = SiteTable::new();
        let mut names = distinct_names();
        let loc = Location::caller();
        let first = names.next().unwrap();
        assert_eq!(t.intern(first, loc, &OPEN_VTABLE), Some(0));
        for i in 1..SITE_LIMIT {
            assert_eq!(t.intern(names.next().unwrap(), loc, &OPEN_VTABLE), Some(i));
        }
        let extra = names.next().unwrap();
        assert_eq!(t.intern(extra, loc, &OPEN_VTABLE), None);
        assert!(
            matches!(t.intern_error(), Error::SizeOverflow { .. }),
            "{:?}",
            t.intern_error()
        );
        assert_eq!(t.len, SITE_LIMIT, "the refused site was not added");
        assert_eq!(t.intern(first, loc, &OPEN_VTABLE), Some(0));
        assert_eq!(
            t.intern(first, loc, &CLOSE_VTABLE),
            None,
            "new: refused too"
        );
        // A table that is not full reports a refusal as an allocation failure.
        assert!(matches!(
            SiteTable::new().intern_error(),
            Error::OutOfMemory { .. }
        ));
    }
}
