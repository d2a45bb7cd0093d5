//! A growable table whose elements never move: chunks of doubling size, then of one size; the
//! first chunk also carries a header of the owner's choosing.
//!
//! A plain `Vec` of slots copies every slot each time it grows, which at a million entries
//! dominated the cost of adding (and touched twice the memory). Chunk `k` holds
//! `FIRST << k` slots up to the cap (`FIRST << cap_k`, at most [`MAX_CHUNK_BYTES`] of slots);
//! every later chunk holds exactly the cap. Index `i` in the doubling region lives in chunk
//! `log2(i / FIRST + 1)`, found with one leading-zeros count; past it, a shift and a mask.
//! Growing allocates one new chunk without touching the others. Capping the chunk size keeps
//! every chunk below glibc's mmap threshold (128 KiB by default), so chunks are recycled heap
//! memory instead of fresh, page-faulted mappings.
//!
//! The header `H` shares the first chunk's allocation: what its owner needs only once the
//! table has elements (the list keeps its site table and the arena's free lists there) costs
//! an empty owner nothing and a non-empty one no extra allocation. Until the first chunk
//! exists, [`head`](Slots::head) is a `'static` header given to [`Slots::new`], read-only.

use std::alloc::{self, Layout};
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

/// Slots in the first chunk.
const FIRST: usize = 16;
/// Largest chunk, in bytes of slots.
pub(crate) const MAX_CHUNK_BYTES: usize = 64 * 1024;

/// `k` of the largest chunk for elements of `size` bytes: the largest `k` with
/// `(FIRST << k) * size <= MAX_CHUNK_BYTES` (at least 0).
const fn cap_k(size: usize) -> u32 {
    let size = if size == 0 { 1 } else { size };
    let mut k = 0;
    while k < 20 && (FIRST << (k + 1)) * size <= MAX_CHUNK_BYTES {
        k += 1;
    }
    k
}

/// The first chunk: the header, then [`FIRST`] elements (`repr(C)`: the header is at the start
/// of the allocation, so a pointer to it is a pointer to the chunk).
#[repr(C)]
struct First<H, T> {
    head: H,
    elems: [MaybeUninit<T>; FIRST],
}

/// A table of `T` addressed by index, grown at the end in chunks, with a header `H` in its
/// first chunk.
///
/// The chunk the top of the table is in is described by its own fields (`top`, `top_len`,
/// `top_cap`), out of the directory of chunks: pushing and popping reach it without an index
/// or a bounds check, and a table that fits its first chunk (a device with a handful of
/// entries) allocates no directory at all (one allocation instead of two).
///
/// `T` has no drop glue (checked at compile time): elements are copied in and out, and
/// forgetting them is dropping them.
///
/// # Invariants
///
/// * No chunk: `top_cap == 0`, `cur == 0`, `len == 0`, `dir` is empty, and `head` is the
///   `'static` header given to [`new`](Self::new), never written through.
/// * Otherwise `head` points to the start of the first chunk, a `First<H, T>` allocated with
///   the global allocator and `Layout::new::<First<H, T>>()`, whose header is initialised and
///   owned by the table. Chunk `k` has capacity exactly `cap_of(k)`; the chunks below `cur`
///   are full, the chunks above it empty (kept, ready for reuse), and `len` counts the
///   elements of all of them, which are initialised: in chunk `cur`, the first `top_len`.
///   `top` is chunk `cur`'s first element and `top_cap == cap_of(cur)`. If `dir` is empty
///   the first chunk is the only one (`cur` is 0); otherwise `dir[k]` is chunk `k`'s first
///   element for every chunk, and every chunk but the first was allocated with the global
///   allocator and `Layout::array::<T>(cap_of(k))`.
pub(crate) struct Slots<T, H: 'static> {
    /// The header: the first chunk's, or the `'static` one while there is no chunk.
    head: NonNull<H>,
    /// The first element of chunk `cur` (dangling while there is no chunk).
    top: NonNull<T>,
    /// Elements in chunk `cur`.
    top_len: usize,
    /// Capacity of chunk `cur` (0 while there is no chunk).
    top_cap: usize,
    /// The chunk the top of the table is in.
    cur: usize,
    len: usize,
    /// The first element of every chunk (allocated when the table first outgrows chunk 0).
    dir: Vec<NonNull<T>>,
    /// Owns the header and the elements.
    _own: PhantomData<(H, T)>,
}

// SAFETY: the table owns its chunks, header and elements (`T: Send`, `H: Send`); while there
// is no chunk it points to a `'static` header, which any thread may read (`H: Sync`).
unsafe impl<T: Send, H: Send + Sync> Send for Slots<T, H> {}
// SAFETY: `&Slots` hands out `&T` and read access to the header only.
unsafe impl<T: Sync, H: Sync> Sync for Slots<T, H> {}

/// Chunk number and offset of index `i` when chunks double up to `FIRST << cap` slots and
/// stay at that size.
#[inline(always)]
fn locate(i: usize, cap: u32) -> (usize, usize) {
    // The doubling region (chunks 0 .. cap) holds FIRST * (2^cap - 1) slots.
    let doubling = FIRST * ((1 << cap) - 1);
    if i < doubling {
        let q = i / FIRST + 1;
        let k = (usize::BITS - 1 - q.leading_zeros()) as usize;
        (k, i - FIRST * ((1 << k) - 1))
    } else {
        let j = i - doubling;
        let shift = FIRST.trailing_zeros() + cap;
        (cap as usize + (j >> shift), j & ((1 << shift) - 1))
    }
}

impl<T, H: 'static> Slots<T, H> {
    /// `k` of the largest chunk for `T`.
    const CAP: u32 = cap_k(std::mem::size_of::<T>());
    /// Elements are never dropped one by one, and chunks are never zero-sized.
    const PLAIN: () = assert!(
        !std::mem::needs_drop::<T>() && std::mem::size_of::<T>() != 0,
        "Slots holds elements without drop glue, of non-zero size"
    );

    /// An empty table, allocating nothing; `empty` is its header until the first chunk exists.
    pub(crate) fn new(empty: &'static H) -> Self {
        let () = Self::PLAIN;
        // INVARIANT: no chunk; the header is the `'static` one, reached only to be read.
        Slots {
            head: NonNull::from(empty),
            top: NonNull::dangling(),
            top_len: 0,
            top_cap: 0,
            cur: 0,
            len: 0,
            dir: Vec::new(),
            _own: PhantomData,
        }
    }

    /// The capacity of chunk `k`.
    #[inline(always)]
    fn cap_of(k: usize) -> usize {
        FIRST << k.min(Self::CAP as usize)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The header: the first chunk's, or the `'static` one given to [`new`](Self::new) while
    /// there is no chunk. Reading through it is valid for as long as the table is borrowed;
    /// writing only when [`first_head`](Self::first_head) returned it, through `&mut self`,
    /// and never to the `'static` one.
    #[inline(always)]
    pub(crate) fn head(&self) -> NonNull<H> {
        self.head
    }

    /// The first chunk's header, writable; the chunk is allocated now if there is none, its
    /// header made by `make`. `None` if that allocation failed (nothing changed).
    #[inline]
    pub(crate) fn first_head(&mut self, make: impl FnOnce() -> H) -> Option<NonNull<H>> {
        if self.top_cap == 0 {
            self.alloc_first(make())?;
        }
        Some(self.head)
    }

    /// Number of chunks allocated.
    fn chunk_count(&self) -> usize {
        match self.dir.len() {
            0 => usize::from(self.top_cap != 0),
            n => n,
        }
    }

    /// Allocates the first chunk with `head` as its header; `None` if that failed.
    #[cold]
    #[inline(never)]
    fn alloc_first(&mut self, head: H) -> Option<()> {
        debug_assert!(self.top_cap == 0 && self.len == 0 && self.dir.is_empty());
        let layout = Layout::new::<First<H, T>>();
        // SAFETY: `layout` has a non-zero size (FIRST elements of non-zero size).
        let p = NonNull::new(unsafe { alloc::alloc(layout) })?.cast::<First<H, T>>();
        // The header is at the start of the chunk (`repr(C)`, first field).
        let h = p.cast::<H>();
        // SAFETY: a fresh allocation for a `First<H, T>`: its header field is valid for writes.
        unsafe { h.write(head) };
        // INVARIANT: the first chunk, empty, with its header initialised, current.
        self.head = h;
        // SAFETY: the offset of a field of the allocation just made: inside it.
        self.top = unsafe { p.byte_add(std::mem::offset_of!(First<H, T>, elems)) }.cast();
        self.top_len = 0;
        self.top_cap = FIRST;
        Some(())
    }

    /// The first element of chunk `k`, which must exist.
    #[inline(always)]
    fn chunk(&self, k: usize) -> NonNull<T> {
        if k == self.cur { self.top } else { self.dir[k] }
    }

    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        let (k, o) = locate(i, Self::CAP);
        // SAFETY: `i < len`: `o` is within chunk `k`.
        let p = unsafe { self.chunk(k).add(o) };
        // SAFETY: an initialised element (the invariant); `&self` keeps it from being written
        // or freed.
        Some(unsafe { p.as_ref() })
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        if i >= self.len {
            return None;
        }
        let (k, o) = locate(i, Self::CAP);
        // SAFETY: as in `get`.
        let mut p = unsafe { self.chunk(k).add(o) };
        // SAFETY: as in `get`, with `&mut self` for exclusive access.
        Some(unsafe { p.as_mut() })
    }

    /// Appends `value`; if a new chunk cannot be allocated, hands it back.
    ///
    /// The value is only moved on the way in: the cold path that moves to the next chunk does
    /// not take it, so that the caller can keep a small `T` in registers (a `T` passed to an
    /// out-of-line function has to be materialised in memory first, and copying it from there
    /// with wider loads than it was written with stalls store forwarding).
    #[inline]
    pub(crate) fn try_push(&mut self, value: T) -> Result<usize, T>
    where
        H: Default,
    {
        if self.top_len == self.top_cap && !self.next_chunk() {
            return Err(value);
        }
        // SAFETY: `top_len < top_cap`: within chunk `cur`.
        let p = unsafe { self.top.add(self.top_len) };
        // SAFETY: a slot of chunk `cur` past its elements, owned by the table.
        unsafe { p.write(value) };
        // INVARIANT: one more initialised element, at the top.
        self.top_len += 1;
        self.len += 1;
        Ok(self.len - 1)
    }

    /// Makes the next chunk current, allocating it (and the directory) if needed; false if
    /// that failed, with nothing changed. Only called when the current chunk is full (or there
    /// is none: then the first chunk is made, with a default header).
    #[cold]
    #[inline(never)]
    fn next_chunk(&mut self) -> bool
    where
        H: Default,
    {
        if self.top_cap == 0 {
            return self.alloc_first(H::default()).is_some();
        }
        let next = self.cur + 1;
        if next == self.chunk_count() {
            // Room in the directory first (for chunk 0 too, the first time), so that a failure
            // leaves the table as it was.
            let entries = if self.dir.is_empty() { 2 } else { 1 };
            if self.dir.try_reserve(entries).is_err() {
                return false;
            }
            let Ok(layout) = Layout::array::<T>(Self::cap_of(next)) else {
                return false;
            };
            // SAFETY: `layout` has a non-zero size.
            let Some(p) = NonNull::new(unsafe { alloc::alloc(layout) }) else {
                return false;
            };
            if self.dir.is_empty() {
                // Only the first chunk so far, current.
                self.dir.push(self.top);
            }
            // INVARIANT: chunk `next`, allocated with its array layout, listed.
            self.dir.push(p.cast());
        }
        debug_assert_eq!(locate(self.len, Self::CAP), (next, 0));
        // INVARIANT: the full chunk `cur` stays listed; chunk `next` (empty) becomes current.
        self.top = self.dir[next];
        self.top_len = 0;
        self.top_cap = Self::cap_of(next);
        self.cur = next;
        true
    }

    /// Makes the chunk below the current one (full) current; the current one is empty.
    #[cold]
    #[inline(never)]
    fn prev_chunk(&mut self) {
        debug_assert!(self.top_len == 0 && self.cur > 0);
        let prev = self.cur - 1;
        // INVARIANT: chunk `prev`, full, becomes current.
        self.top = self.dir[prev];
        self.top_cap = Self::cap_of(prev);
        self.top_len = self.top_cap;
        self.cur = prev;
    }

    /// The last element.
    #[inline]
    pub(crate) fn last(&self) -> Option<&T> {
        let i = self.len.checked_sub(1)?;
        if self.top_len != 0 {
            // SAFETY: `0 < top_len <= top_cap`: within chunk `cur`.
            let p = unsafe { self.top.add(self.top_len - 1) };
            // SAFETY: the last initialised element of chunk `cur`, borrowed with `&self`.
            return Some(unsafe { p.as_ref() });
        }
        self.get(i)
    }

    /// Removes and returns the last element.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        if self.top_len == 0 {
            self.prev_chunk();
        }
        // INVARIANT: the last element leaves the table (moved out below).
        self.len -= 1;
        self.top_len -= 1;
        // SAFETY: `top_len < top_cap`: within chunk `cur`.
        let p = unsafe { self.top.add(self.top_len) };
        // SAFETY: the element that was the last initialised one of chunk `cur`, read once.
        Some(unsafe { p.read() })
    }

    /// Forgets every element (they have no drop glue); keeps the first chunk (and its header)
    /// for reuse and frees the rest.
    pub(crate) fn clear(&mut self) {
        if self.top_cap == 0 {
            return;
        }
        if let Some((&first, rest)) = self.dir.split_first() {
            for (k, &p) in rest.iter().enumerate() {
                // SAFETY: chunk `k + 1`, allocated with this layout (the invariant), freed once:
                // the directory is cleared below.
                unsafe { Self::free_chunk(p, k + 1) };
            }
            self.top = first;
        }
        // INVARIANT: chunk 0 only, current and empty, no directory entries.
        self.dir.clear();
        self.top_len = 0;
        self.top_cap = FIRST;
        self.cur = 0;
        self.len = 0;
    }

    /// Frees chunk `k` (not the first).
    ///
    /// # Safety
    ///
    /// `p` must be chunk `k`'s first element, allocated with its array layout, not used
    /// afterwards.
    unsafe fn free_chunk(p: NonNull<T>, k: usize) {
        debug_assert!(k > 0);
        // SAFETY: the layout the chunk was allocated with (the caller), valid then.
        let layout = unsafe { Layout::array::<T>(Self::cap_of(k)).unwrap_unchecked() };
        // SAFETY: allocated with the global allocator and this layout (the caller).
        unsafe { alloc::dealloc(p.as_ptr().cast(), layout) };
    }

    /// Chunk `k`'s first element and number of initialised elements (`k <= cur`).
    #[inline(always)]
    fn raw_chunk(&self, k: usize) -> (NonNull<T>, usize) {
        if k == self.cur {
            (self.top, self.top_len)
        } else {
            (self.dir[k], Self::cap_of(k))
        }
    }

    /// Chunks holding elements: `0 ..= cur`, or none.
    fn used_chunks(&self) -> std::ops::Range<usize> {
        0..if self.top_cap == 0 { 0 } else { self.cur + 1 }
    }

    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.used_chunks().flat_map(move |k| {
            let (p, n) = self.raw_chunk(k);
            // SAFETY: chunk `k` (at most `cur`), its initialised elements, borrowed with
            // `&self`.
            unsafe { std::slice::from_raw_parts(p.as_ptr(), n) }.iter()
        })
    }

    pub(crate) fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut T> {
        let chunks = self.used_chunks();
        let this: &Self = self;
        chunks.flat_map(move |k| {
            let (p, n) = this.raw_chunk(k);
            // SAFETY: chunk `k`'s initialised elements; each chunk is a separate allocation (or
            // the element part of the first) outside the table itself, visited once, under
            // the `&mut self` this iterator borrows.
            unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), n) }.iter_mut()
        })
    }
}

impl<T, H: 'static> Drop for Slots<T, H> {
    fn drop(&mut self) {
        if self.top_cap == 0 {
            return;
        }
        for (k, &p) in self.dir.iter().enumerate().skip(1) {
            // SAFETY: chunk `k`, allocated with its array layout (the invariant), freed once.
            unsafe { Self::free_chunk(p, k) };
        }
        // SAFETY: the first chunk exists (`top_cap != 0`): `head` is its initialised header,
        // owned by the table, dropped once, here.
        unsafe { std::ptr::drop_in_place(self.head.as_ptr()) };
        // SAFETY: `head` is the start of the first chunk (`repr(C)`), allocated with this
        // layout, freed once, here.
        unsafe { alloc::dealloc(self.head.as_ptr().cast(), Layout::new::<First<H, T>>()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header of the test tables while they have no chunk.
    static NO_HEAD: u64 = 0;

    fn table<T>() -> Slots<T, u64> {
        Slots::new(&NO_HEAD)
    }

    #[test]
    fn locate_covers_every_index_once() {
        for cap in [0, 1, 3, 6, 7] {
            let mut expect = (0, 0);
            for i in 0..20_000 {
                assert_eq!(locate(i, cap), expect, "index {i}, cap {cap}");
                expect.1 += 1;
                if expect.1 == FIRST << expect.0.min(cap as usize) {
                    expect = (expect.0 + 1, 0);
                }
            }
        }
    }

    #[test]
    fn the_header_is_the_static_one_until_the_first_chunk_then_lives_in_it() {
        let mut s = table::<u32>();
        assert!(std::ptr::eq(s.head().as_ptr(), &NO_HEAD));
        assert_eq!(s.chunk_count(), 0);
        let h = s.first_head(|| 7).unwrap();
        assert_eq!(s.chunk_count(), 1);
        assert!(!std::ptr::eq(h.as_ptr(), &NO_HEAD));
        assert_eq!(s.head(), h);
        // SAFETY: the first chunk's header, returned by `first_head`, no other access.
        unsafe { *h.as_ptr() += 1 };
        // The elements follow the header in the same allocation.
        s.try_push(5).unwrap();
        let gap = (s.get(0).unwrap() as *const u32).addr() - h.as_ptr().addr();
        assert_eq!(gap, std::mem::offset_of!(First<u64, u32>, elems));
        // Made once: a second call returns the same header, unchanged; clearing keeps it.
        assert_eq!(s.first_head(|| 0), Some(h));
        s.clear();
        assert_eq!(s.head(), h);
        // SAFETY: the header, read through `&s`.
        assert_eq!(unsafe { *s.head().as_ptr() }, 8);
        // A push into a table without a chunk makes the first chunk with a default header.
        let mut t = table::<u32>();
        t.try_push(1).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { *t.head().as_ptr() }, 0);
        assert!(!std::ptr::eq(t.head().as_ptr(), &NO_HEAD));
    }

    #[test]
    fn first_chunk_alone_then_listed_in_the_directory() {
        let mut s = table();
        assert_eq!(s.chunk_count(), 0);
        for i in 0..FIRST {
            assert_eq!(s.try_push(i).ok(), Some(i));
        }
        // A full first chunk and no directory allocated.
        assert_eq!((s.chunk_count(), s.top_cap, s.top_len), (1, FIRST, FIRST));
        assert_eq!(
            s.dir.capacity(),
            0,
            "no directory while the table fits chunk 0"
        );
        let first_addr = s.get(0).unwrap() as *const usize;
        // The next push spills into chunk 1; the directory lists both chunks.
        assert_eq!(s.try_push(FIRST).ok(), Some(FIRST));
        assert_eq!((s.chunk_count(), s.cur), (2, 1));
        assert_eq!(s.top_cap, FIRST << 1);
        assert_eq!(s.dir[0].as_ptr().cast_const(), first_addr);
        assert_eq!(s.get(FIRST), Some(&FIRST));
        assert_eq!(s.last(), Some(&FIRST));
        assert!(
            std::ptr::eq(s.get(0).unwrap(), first_addr),
            "chunk 0 did not move"
        );
        // Back down into chunk 0 and up again: chunk 1 is reused, not allocated again.
        let second = s.dir[1];
        assert_eq!(s.pop(), Some(FIRST));
        assert_eq!(s.last(), Some(&(FIRST - 1)));
        assert_eq!(s.pop(), Some(FIRST - 1));
        assert_eq!(s.cur, 0);
        assert!(
            std::ptr::eq(s.get(0).unwrap(), first_addr),
            "chunk 0 did not move"
        );
        *s.get_mut(3).unwrap() = 30;
        s.try_push(FIRST - 1).unwrap();
        s.try_push(FIRST).unwrap();
        assert_eq!(s.chunk_count(), 2);
        assert_eq!(s.dir[1], second, "chunk 1 reused");
        *s.get_mut(FIRST).unwrap() += 1;
        *s.get_mut(4).unwrap() = 40;
        let mut want: Vec<usize> = (0..=FIRST).collect();
        (want[3], want[4], want[FIRST]) = (30, 40, FIRST + 1);
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), want);
        assert_eq!(s.iter_mut().map(|v| *v).collect::<Vec<_>>(), want);
        assert_eq!(s.iter().next_back(), Some(&(FIRST + 1)));
        assert_eq!(s.iter_mut().next_back(), Some(&mut (FIRST + 1)));
        // Clearing keeps chunk 0 only, from whichever chunk the top was in.
        s.clear();
        assert_eq!((s.len(), s.chunk_count(), s.top_cap), (0, 1, FIRST));
        assert_eq!(s.dir.len(), 0);
        assert_eq!(s.try_push(7).ok(), Some(0));
        assert!(std::ptr::eq(s.get(0).unwrap(), first_addr), "chunk 0 kept");
        assert_eq!(s.last(), Some(&7));
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), vec![7]);
        // Cleared from the middle chunk of three.
        let n = FIRST + (FIRST << 1) + 5;
        for i in 1..n {
            s.try_push(i).unwrap();
        }
        for _ in 0..10 {
            s.pop();
        }
        assert_eq!(s.cur, 1);
        assert_eq!(s.chunk_count(), 3);
        assert_eq!(
            s.iter().copied().collect::<Vec<_>>(),
            std::iter::once(7).chain(1..n - 10).collect::<Vec<_>>()
        );
        s.clear();
        assert_eq!((s.len(), s.chunk_count(), s.cur), (0, 1, 0));
        assert!(s.iter().next().is_none());
    }

    #[test]
    fn fixed_size_region_push_get_pop() {
        // 4 KiB elements: the cap is the first chunk's size, so every chunk holds FIRST.
        let mut s: Slots<[u64; 512], u64> = table();
        let n = if cfg!(miri) { 40 } else { 200 };
        let mut addrs = Vec::new();
        for i in 0..n {
            assert_eq!(s.try_push([i as u64; 512]).ok(), Some(i));
            addrs.push(s.get(i).unwrap().as_ptr() as usize);
        }
        assert_eq!(s.top_cap, FIRST);
        for (i, addr) in addrs.iter().enumerate() {
            assert_eq!(s.get(i).unwrap()[0], i as u64);
            assert_eq!(s.get(i).unwrap().as_ptr() as usize, *addr, "moved");
        }
        for i in (0..n).rev() {
            assert_eq!(s.pop().map(|v| v[511]), Some(i as u64));
        }
    }

    #[test]
    fn push_get_pop_and_addresses_are_stable() {
        let mut s = table();
        let n = if cfg!(miri) { 200 } else { 5000 };
        let mut addrs = Vec::new();
        for i in 0..n {
            assert_eq!(s.try_push(i).ok(), Some(i));
            addrs.push(s.get(i).unwrap() as *const usize as usize);
        }
        for (i, addr) in addrs.iter().enumerate() {
            assert_eq!(*s.get(i).unwrap(), i);
            assert_eq!(s.get(i).unwrap() as *const usize as usize, *addr, "moved");
        }
        assert!(s.get(n).is_none());
        *s.get_mut(7).unwrap() = 70;
        assert_eq!(s.iter().nth(7), Some(&70));
        assert_eq!(s.iter().count(), n);
        assert_eq!(s.iter().rev().count(), n);
        for v in s.iter_mut() {
            *v += 1;
        }
        for v in s.iter_mut() {
            *v -= 1;
        }
        for i in (0..n).rev() {
            let want = if i == 7 { 70 } else { i };
            assert_eq!(s.last(), Some(&want));
            assert_eq!(s.pop(), Some(want));
            if i % 97 == 0 {
                // Pushing again after popping across a chunk boundary reuses the chunks.
                assert_eq!(s.try_push(want).ok(), Some(i));
                assert_eq!(s.get(i), Some(&want));
                assert_eq!(s.pop(), Some(want));
            }
        }
        assert_eq!(s.last(), None);
        assert_eq!(s.pop(), None);
        for i in 0..100 {
            s.try_push(i).unwrap();
        }
        assert_eq!(s.iter().sum::<usize>(), (0..100).sum::<usize>());
        s.clear();
        assert_eq!(s.len(), 0);
        assert_eq!(s.try_push(5).ok(), Some(0));
    }
}
