//! Memory for small managed allocations, carved from chunks owned by the list.
//!
//! `malloc` + `free` per managed allocation cost as much as the rest of the bookkeeping
//! together. Most managed allocations are small and all of them die with their list, the case
//! APR pools and talloc pools are built for: blocks of up to [`MAX_POOLED`] bytes (alignment up
//! to 16) are bump-allocated from chunks that double in size, early frees go to a free list per
//! 16-byte size class and are reused first, and the chunks return to the system allocator when
//! the list is dropped. Larger or more aligned blocks go to the global allocator as before.
//!
//! The first chunk has no header: its bookkeeping lives in the [`Arena`] itself, so that it is
//! exactly [`FIRST_CHUNK`] bytes. A request of 1040 bytes (1024 + a 16-byte header) is above
//! glibc's thread-cache limit (1032 bytes) and took malloc's slow paths on every new device;
//! 1024 bytes is served from the thread cache like the floor's own boxes.
//!
//! The free lists ([`FreeLists`], 128 bytes) are not in the arena: an empty list needs none,
//! so they live in the list's front (the header of its slot table's first chunk, made by its
//! first add, whatever it adds), and the arena points to them. A bit mask in the arena says
//! which of them hold blocks, so that an allocation that finds none (the common case) does not
//! follow the pointer.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

use crate::error::{Error, Result};

/// Largest block served from the arena.
pub(crate) const MAX_POOLED: usize = 256;
/// Alignment of every pooled block (and the size granularity).
pub(crate) const POOL_ALIGN: usize = 16;
const CLASSES: usize = MAX_POOLED / POOL_ALIGN;
/// The first chunk's size (all of it usable: it has no header): a small device costs one small
/// chunk, which holds 16 blocks of 64 bytes.
const FIRST_CHUNK: usize = 1024;
/// Bytes at the start of every later chunk taken by its [`ChunkHeader`].
const HEADER: usize = POOL_ALIGN;
/// Usable bytes at which chunks stop doubling. A power of two, so that blocks of a
/// power-of-two size fill a chunk exactly (the header comes on top: 64 KiB + 16 bytes), and
/// the chunk stays below glibc's mmap threshold (128 KiB by default), so chunks are recycled
/// heap memory rather than fresh mappings page-faulted in on every use.
const MAX_CHUNK: usize = 64 * 1024;

/// The layout of the first chunk.
#[inline(always)]
fn first_layout() -> Layout {
    const L: Layout = match Layout::from_size_align(FIRST_CHUNK, POOL_ALIGN) {
        Ok(l) => l,
        Err(_) => panic!("FIRST_CHUNK is a valid size"),
    };
    L
}

/// Whether a block of this layout is served by the arena.
#[inline(always)]
pub(crate) fn is_pooled(layout: Layout) -> bool {
    is_pooled_size(layout.size(), layout.align())
}

/// [`is_pooled`] of the layout with this size and alignment, for a layout known to be valid.
#[inline(always)]
pub(crate) fn is_pooled_size(size: usize, align: usize) -> bool {
    size != 0 && size <= MAX_POOLED && align <= POOL_ALIGN
}

#[inline(always)]
fn class_of(size: usize) -> usize {
    debug_assert!(size != 0 && size <= MAX_POOLED);
    (size - 1) / POOL_ALIGN
}

/// A freed block, linked into its class's free list through its first word.
struct FreeBlock {
    next: Option<NonNull<FreeBlock>>,
}

/// The heads of an arena's free lists, one per size class, kept outside the arena (see the
/// [module documentation](self)) and attached to it with [`Arena::attach`].
pub(crate) struct FreeLists {
    heads: [Option<NonNull<FreeBlock>>; CLASSES],
}

// SAFETY: the heads point to blocks owned by the arena the lists are attached to, which reaches
// them only through `&mut Arena` (the list's state, behind its lock).
unsafe impl Send for FreeLists {}
// SAFETY: `&FreeLists` gives access to nothing but the heads' addresses.
unsafe impl Sync for FreeLists {}

impl FreeLists {
    /// Every list empty.
    pub(crate) const fn new() -> Self {
        FreeLists {
            heads: [None; CLASSES],
        }
    }
}

impl Default for FreeLists {
    fn default() -> Self {
        Self::new()
    }
}

/// The start of every chunk but the first: those chunks form a list, newest first, with no
/// directory to allocate.
struct ChunkHeader {
    /// The chunk allocated before this one (`None` for the second chunk: the first, headerless
    /// chunk is held by the [`Arena`] itself).
    prev: Option<NonNull<ChunkHeader>>,
    /// This chunk's size in bytes, header included (allocated with alignment [`POOL_ALIGN`]).
    size: usize,
}

const _: () = assert!(std::mem::size_of::<ChunkHeader>() <= HEADER);
// `grow` serves any pooled block from a fresh first chunk.
const _: () = assert!(MAX_POOLED <= FIRST_CHUNK && FIRST_CHUNK.is_multiple_of(POOL_ALIGN));

/// Chunks of memory and the free lists carved from them.
///
/// # Invariants
///
/// `first`, when set, is the first chunk, allocated with the global allocator and
/// [`first_layout`], with no header. `last` starts the list of the later chunks (linked through
/// their headers' `prev`); each was allocated with the global allocator and
/// `Layout::from_size_align(header.size, POOL_ALIGN)` and starts with its initialised
/// [`ChunkHeader`]. `last` is `None` while `first` is, and every chunk is freed only in `Drop`.
/// `[cursor, end)` is unused memory inside the newest chunk, past its header if it has one
/// (empty when there is no chunk), with `cursor` aligned to [`POOL_ALIGN`]. `free`, when set,
/// points to free lists valid for reads and writes, which only this arena uses, until it is
/// dropped; bit `c` of `nonempty` is set exactly when `free` is set and its list `c` is not
/// empty. Every block on list `c` lies inside a chunk past its header, is aligned to
/// [`POOL_ALIGN`], has room for class `c`'s size, and is owned by nobody else.
pub(crate) struct Arena {
    first: Option<NonNull<u8>>,
    last: Option<NonNull<ChunkHeader>>,
    cursor: *mut u8,
    end: *mut u8,
    /// The free lists, once attached ([`attach`](Self::attach)).
    free: Option<NonNull<FreeLists>>,
    /// Bit `c`: free list `c` holds a block.
    nonempty: u32,
}

const _: () = assert!(CLASSES <= u32::BITS as usize);

// SAFETY: the arena owns its chunks exclusively; the raw pointers are only used by whoever holds
// `&mut Arena` (the list's state, behind its lock).
unsafe impl Send for Arena {}
// SAFETY: `&Arena` gives access to nothing.
unsafe impl Sync for Arena {}

impl Arena {
    pub(crate) const fn new() -> Self {
        Arena {
            first: None,
            last: None,
            cursor: std::ptr::null_mut(),
            end: std::ptr::null_mut(),
            free: None,
            nonempty: 0,
        }
    }

    /// Gives the arena its free lists. Until then, a recycled block stays unused until the
    /// arena is reset or dropped.
    ///
    /// # Safety
    ///
    /// `free` must hold empty lists and be valid for reads and writes, used by nothing but
    /// this arena, until the arena is dropped; the arena must have no free lists yet.
    pub(crate) unsafe fn attach(&mut self, free: NonNull<FreeLists>) {
        debug_assert!(self.free.is_none());
        // INVARIANT: valid lists, all empty (the caller): no bit is set.
        self.free = Some(free);
    }

    /// Whether the arena has its free lists ([`attach`](Self::attach)).
    pub(crate) fn has_free_lists(&self) -> bool {
        self.free.is_some()
    }

    /// Takes the first block off free list `class`, whose bit in `nonempty` is set.
    #[inline]
    fn take_free(&mut self, class: usize) -> Option<NonNull<u8>> {
        let free = self.free?;
        // SAFETY: attached lists, valid and used by this arena only (the invariant), reached
        // through `&mut self`.
        let head = unsafe { &mut (*free.as_ptr()).heads[class] };
        let block = (*head)?;
        // SAFETY: by the invariant the block is a free, live, aligned block of this class;
        // its first word holds the link written by `recycle`.
        *head = unsafe { block.as_ref().next };
        if head.is_none() {
            // INVARIANT: the list is empty now.
            self.nonempty &= !(1 << class);
        }
        Some(block.cast())
    }

    /// A block for `layout` (which must satisfy [`is_pooled`]), uninitialised.
    #[inline]
    pub(crate) fn alloc(&mut self, layout: Layout) -> Result<NonNull<u8>> {
        debug_assert!(is_pooled(layout));
        self.alloc_size(layout.size())
    }

    /// A block of `size` bytes aligned to [`POOL_ALIGN`] (`0 < size <= MAX_POOLED`),
    /// uninitialised.
    #[inline]
    pub(crate) fn alloc_size(&mut self, size: usize) -> Result<NonNull<u8>> {
        debug_assert!(is_pooled_size(size, POOL_ALIGN));
        let class = class_of(size);
        if self.nonempty & (1 << class) != 0
            && let Some(block) = self.take_free(class)
        {
            return Ok(block);
        }
        let size = (class + 1) * POOL_ALIGN;
        if self.end.addr() - self.cursor.addr() < size {
            self.grow(size)?;
        }
        let p = self.cursor;
        // SAFETY: `[cursor, end)` is unused chunk memory at least `size` bytes long (checked or
        // just made so by `grow`), so `cursor + size` stays within (or one past) the chunk.
        self.cursor = unsafe { p.add(size) };
        // INVARIANT: `size` is a multiple of POOL_ALIGN, so the cursor stays aligned.
        // (Never null: a chunk was there or `grow` made one; the error only keeps this safe.)
        NonNull::new(p).ok_or_else(|| {
            Error::oom(Layout::from_size_align(size, POOL_ALIGN).unwrap_or(Layout::new::<u8>()))
        })
    }

    /// The usable size of the newest chunk (0 when there is none).
    fn last_usable(&self) -> usize {
        match (self.last, self.first) {
            // SAFETY: by the invariant the chunk starts with its initialised header.
            (Some(h), _) => unsafe { h.as_ref() }.size - HEADER,
            (None, Some(_)) => FIRST_CHUNK,
            (None, None) => 0,
        }
    }

    /// Makes a new chunk the current one, with room for at least `at_least` bytes (at most
    /// [`MAX_POOLED`]).
    #[cold]
    fn grow(&mut self, at_least: usize) -> Result<()> {
        debug_assert!(at_least <= MAX_POOLED);
        if self.first.is_none() {
            let layout = first_layout();
            // SAFETY: `layout` has a non-zero size.
            let p = NonNull::new(unsafe { alloc::alloc(layout) }).ok_or(Error::oom(layout))?;
            // INVARIANT: the first chunk, allocated with `first_layout`; no later chunk yet
            // (`last` is `None` while `first` is). The whole chunk is unused, aligned to
            // POOL_ALIGN.
            self.first = Some(p);
            self.cursor = p.as_ptr();
            // SAFETY: one past the end of the chunk just allocated.
            self.end = unsafe { p.as_ptr().add(FIRST_CHUNK) };
            return Ok(());
        }
        let usable = (self.last_usable() * 2).min(MAX_CHUNK).max(at_least);
        let size = usable + HEADER;
        let layout =
            Layout::from_size_align(size, POOL_ALIGN).map_err(|_| Error::SizeOverflow {
                what: "arena chunk",
            })?;
        // SAFETY: `layout` has a non-zero size.
        let p = NonNull::new(unsafe { alloc::alloc(layout) }).ok_or(Error::oom(layout))?;
        let header = p.cast::<ChunkHeader>();
        // SAFETY: a fresh allocation, aligned to POOL_ALIGN, with room for the header.
        unsafe {
            header.write(ChunkHeader {
                prev: self.last,
                size,
            })
        };
        // INVARIANT: the new chunk heads the list; its header is initialised.
        self.last = Some(header);
        // The rest of the previous chunk (less than one block) is abandoned.
        // INVARIANT: the fresh chunk past its header, aligned to POOL_ALIGN, entirely unused.
        // SAFETY: HEADER < size: inside the chunk.
        self.cursor = unsafe { p.as_ptr().add(HEADER) };
        // SAFETY: one past the end of the chunk just allocated.
        self.end = unsafe { p.as_ptr().add(size) };
        Ok(())
    }

    /// Returns a block for reuse.
    ///
    /// # Safety
    ///
    /// `block` must have been returned by [`alloc`](Self::alloc) of this arena with a layout of
    /// this `size`, must not be on a free list already, and must not be used afterwards.
    #[inline]
    pub(crate) unsafe fn recycle(&mut self, block: NonNull<u8>, size: usize) {
        let Some(free) = self.free else {
            // No free lists (never attached): the block stays with the arena, unused.
            return;
        };
        let class = class_of(size);
        let node = block.cast::<FreeBlock>();
        // SAFETY: attached lists, valid and used by this arena only (the invariant), reached
        // through `&mut self`.
        let head = unsafe { &mut (*free.as_ptr()).heads[class] };
        // SAFETY: the block is at least 16 bytes, aligned to 16 and owned by the arena again
        // (guaranteed by the caller), so it can hold the link.
        unsafe { node.as_ptr().write(FreeBlock { next: *head }) };
        // INVARIANT: a free block of this class, owned by nobody else; the list is not empty.
        *head = Some(node);
        self.nonempty |= 1 << class;
    }

    /// Frees every chunk: the arena is empty again, as new (its free lists stay attached,
    /// emptied).
    ///
    /// # Safety
    ///
    /// Every block this arena handed out must be unused from now on (the list is empty and no
    /// block is in flight): their memory is freed.
    pub(crate) unsafe fn reset(&mut self) {
        let free = self.free;
        if let Some(lists) = free
            && self.nonempty != 0
        {
            // SAFETY: attached lists, valid and used by this arena only (the invariant).
            unsafe { (*lists.as_ptr()).heads = [None; CLASSES] };
        }
        *self = Arena::new();
        // INVARIANT: the same lists, all empty; `nonempty` is 0.
        self.free = free;
    }

    /// Bytes held from the system allocator.
    pub(crate) fn reserved(&self) -> usize {
        let mut total = if self.first.is_some() { FIRST_CHUNK } else { 0 };
        let mut next = self.last;
        while let Some(h) = next {
            // SAFETY: by the invariant every chunk of the list starts with its header.
            let h = unsafe { h.as_ref() };
            total += h.size;
            next = h.prev;
        }
        total
    }

    /// Number of chunks.
    fn chunks(&self) -> usize {
        let mut n = usize::from(self.first.is_some());
        let mut next = self.last;
        while let Some(h) = next {
            // SAFETY: by the invariant every chunk of the list starts with its header.
            next = unsafe { h.as_ref() }.prev;
            n += 1;
        }
        n
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        let mut next = self.last.take();
        while let Some(h) = next {
            // SAFETY: by the invariant the chunk starts with its initialised header.
            let ChunkHeader { prev, size } = unsafe { h.as_ptr().read() };
            next = prev;
            // SAFETY: `grow` checked this size and alignment with `Layout::from_size_align`.
            let layout = unsafe { Layout::from_size_align_unchecked(size, POOL_ALIGN) };
            // SAFETY: allocated in `grow` with exactly this layout (the invariant), freed once,
            // here: the list no longer reaches it.
            unsafe { alloc::dealloc(h.as_ptr().cast(), layout) };
        }
        if let Some(p) = self.first.take() {
            // SAFETY: allocated in `grow` with `first_layout` (the invariant), freed once, here.
            unsafe { alloc::dealloc(p.as_ptr(), first_layout()) };
        }
    }
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("chunks", &self.chunks())
            .field("reserved", &self.reserved())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(size: usize) -> Layout {
        Layout::from_size_align(size, 16).unwrap()
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_recycled() {
        let mut lists = FreeLists::new();
        let mut a = Arena::new();
        // SAFETY: empty lists, outliving the arena (declared before it), used by it alone.
        unsafe { a.attach(NonNull::from(&mut lists)) };
        let mut blocks = Vec::new();
        for i in 1..=200usize {
            let size = 1 + (i * 37) % MAX_POOLED;
            let p = a.alloc(l(size)).unwrap();
            assert_eq!(p.as_ptr() as usize % 16, 0);
            // SAFETY: a fresh block of `size` bytes.
            unsafe { p.as_ptr().write_bytes(i as u8, size) };
            blocks.push((p, size, i as u8));
        }
        for (p, size, v) in &blocks {
            // SAFETY: live blocks, written above, never overlapping (checked by the values).
            let s = unsafe { std::slice::from_raw_parts(p.as_ptr(), *size) };
            assert!(s.iter().all(|b| b == v), "blocks overlap");
        }
        let (p, size, _) = blocks.swap_remove(3);
        // SAFETY: from this arena, with this size, not used again.
        unsafe { a.recycle(p, size) };
        let q = a.alloc(l(size)).unwrap();
        assert_eq!(p, q, "a freed block is reused first");
        assert!(a.reserved() >= FIRST_CHUNK);
    }

    /// Free lists: a recycled block is handed out again, newest first, then the cursor
    /// moves on; without attached lists a recycled block is not reused; a reset empties the
    /// lists (a block freed with its chunk is never handed out again).
    #[test]
    fn free_lists_are_used_when_attached_and_emptied_by_a_reset() {
        let mut lists = FreeLists::new();
        let mut a = Arena::new();
        let b: Vec<_> = (0..4).map(|_| a.alloc(l(64)).unwrap()).collect();
        // SAFETY: from this arena, with this size, not used again.
        unsafe { a.recycle(b[1], 64) };
        assert_eq!(a.nonempty, 0, "no lists: nothing recorded");
        let fresh = a.alloc(l(64)).unwrap();
        assert!(!b.contains(&fresh), "not reused without free lists");
        // SAFETY: empty lists, outliving the arena (declared before it), used by it alone.
        unsafe { a.attach(NonNull::from(&mut lists)) };
        // SAFETY: as above.
        unsafe { a.recycle(b[2], 64) };
        // SAFETY: as above.
        unsafe { a.recycle(b[3], 50) };
        assert_eq!(a.nonempty, 1 << class_of(64));
        assert_eq!(a.alloc(l(64)).unwrap(), b[3], "newest first");
        assert_eq!(a.alloc(l(49)).unwrap(), b[2]);
        assert_eq!(a.nonempty, 0, "the list is empty again");
        let next = a.alloc(l(64)).unwrap();
        assert!(!b.contains(&next) && next != fresh, "then the cursor");
        // SAFETY: as above.
        unsafe { a.recycle(next, 64) };
        // SAFETY: no block is used any more.
        unsafe { a.reset() };
        assert_eq!(a.nonempty, 0);
        let free = a.free.unwrap();
        // SAFETY: the arena's lists, read while it is not used.
        let heads = unsafe { &free.as_ref().heads };
        assert!(heads.iter().all(Option::is_none));
        let p = a.alloc(l(64)).unwrap();
        // SAFETY: a fresh block of 64 bytes in a new chunk (miri checks it is live).
        unsafe { p.as_ptr().write_bytes(1, 64) };
        assert_eq!(a.reserved(), FIRST_CHUNK);
        // SAFETY: as above.
        unsafe { a.recycle(p, 64) };
        assert_eq!(a.alloc(l(64)).unwrap(), p, "still attached after the reset");
    }

    #[test]
    fn first_chunk_is_headerless_and_holds_sixteen_64_byte_blocks() {
        let mut a = Arena::new();
        assert_eq!((a.chunks(), a.reserved()), (0, 0));
        let blocks: Vec<_> = (0..16).map(|_| a.alloc(l(64)).unwrap()).collect();
        assert_eq!(
            (a.chunks(), a.reserved()),
            (1, FIRST_CHUNK),
            "one 1024-byte chunk"
        );
        // The blocks tile the chunk from its start: no header in front.
        for (i, p) in blocks.iter().enumerate() {
            assert_eq!(p.as_ptr().addr() - blocks[0].as_ptr().addr(), i * 64);
        }
        // The 17th block opens a second chunk, with a header and twice the usable size.
        a.alloc(l(64)).unwrap();
        assert_eq!(a.chunks(), 2);
        assert_eq!(a.reserved(), FIRST_CHUNK + 2 * FIRST_CHUNK + HEADER);
        a.alloc(l(MAX_POOLED)).unwrap();
        // SAFETY: no block is used any more.
        unsafe { a.reset() };
        assert_eq!((a.chunks(), a.reserved()), (0, 0), "every chunk freed");
        // As new: the next block opens a headerless first chunk again.
        let p = a.alloc(l(MAX_POOLED)).unwrap();
        // SAFETY: a fresh block of MAX_POOLED bytes.
        unsafe { p.as_ptr().write_bytes(1, MAX_POOLED) };
        assert_eq!((a.chunks(), a.reserved()), (1, FIRST_CHUNK));
    }

    #[test]
    fn chunks_double_past_the_first() {
        let mut a = Arena::new();
        let mut sizes = Vec::new();
        while a.chunks() < 9 {
            let before = a.reserved();
            a.alloc(l(MAX_POOLED)).unwrap();
            if a.reserved() != before {
                sizes.push(a.reserved() - before);
            }
        }
        let mut want = vec![FIRST_CHUNK];
        for k in 1..9 {
            want.push((FIRST_CHUNK << k).min(MAX_CHUNK) + HEADER);
        }
        assert_eq!(sizes, want);
    }

    #[test]
    fn pooled_layouts() {
        assert!(is_pooled(l(1)));
        assert!(is_pooled(l(256)));
        assert!(!is_pooled(l(257)));
        assert!(!is_pooled(l(0)));
        assert!(!is_pooled(Layout::from_size_align(64, 32).unwrap()));
    }
}
