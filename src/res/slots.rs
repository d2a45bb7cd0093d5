//! A growable table whose elements never move: chunks of doubling size, then of one size.
//!
//! A plain `Vec` of slots copies every slot each time it grows, which at a million entries
//! dominated the cost of adding (and touched twice the memory). Chunk `k` holds
//! `FIRST << k` slots up to the cap (`FIRST << cap_k`, at most [`MAX_CHUNK_BYTES`] of slots);
//! every later chunk holds exactly the cap. Index `i` in the doubling region lives in chunk
//! `log2(i / FIRST + 1)`, found with one leading-zeros count; past it, a shift and a mask.
//! Growing allocates one new chunk without touching the others. Capping the chunk size keeps
//! every chunk below glibc's mmap threshold (128 KiB by default), so chunks are recycled heap
//! memory instead of fresh, page-faulted mappings.

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

/// A table of `T` addressed by index, grown at the end in chunks.
///
/// The chunk the top of the table is in is held in its own field, `top`, out of the directory
/// of chunks: pushing and popping reach it without an index or a bounds check, and a table
/// that fits its first chunk (a device with a handful of entries) allocates no directory at
/// all (one allocation instead of two).
///
/// # Invariants
///
/// Chunk `k` has capacity exactly `FIRST << min(k, CAP)`; the chunks below `cur` are full, the
/// chunks above it empty (kept, ready for reuse), and `len` counts the elements of all of them.
/// Chunk `cur` is `top`. If `chunks` is empty, there is at most one chunk, chunk 0 (`cur` is 0,
/// and `top` has no capacity until the first push); otherwise `chunks` has one entry per chunk,
/// `chunks[k]` is chunk `k` for every `k != cur`, and `chunks[cur]` is an empty `Vec` without
/// capacity standing in for `top`.
pub(crate) struct Slots<T> {
    /// Chunk `cur`.
    top: Vec<T>,
    /// The directory of chunks (allocated when the table first outgrows chunk 0).
    chunks: Vec<Vec<T>>,
    /// The chunk the top of the table is in (0 when there is no chunk).
    cur: usize,
    len: usize,
}

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

impl<T> Slots<T> {
    /// `k` of the largest chunk for `T`.
    const CAP: u32 = cap_k(std::mem::size_of::<T>());

    pub(crate) const fn new() -> Self {
        Slots {
            top: Vec::new(),
            chunks: Vec::new(),
            cur: 0,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Number of chunks allocated.
    fn chunk_count(&self) -> usize {
        match self.chunks.len() {
            0 => usize::from(self.top.capacity() != 0),
            n => n,
        }
    }

    /// Chunk `k`, which must exist.
    #[inline(always)]
    fn chunk(&self, k: usize) -> &Vec<T> {
        if k == self.cur {
            &self.top
        } else {
            &self.chunks[k]
        }
    }

    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        let (k, o) = locate(i, Self::CAP);
        self.chunk(k).get(o)
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        if i >= self.len {
            return None;
        }
        let (k, o) = locate(i, Self::CAP);
        let chunk = if k == self.cur {
            &mut self.top
        } else {
            &mut self.chunks[k]
        };
        chunk.get_mut(o)
    }

    /// Appends `value`; if a new chunk cannot be allocated, hands it back.
    ///
    /// The value is only moved on the way in: the cold path that moves to the next chunk does
    /// not take it, so that the caller can keep a small `T` in registers (a `T` passed to an
    /// out-of-line function has to be materialised in memory first, and copying it from there
    /// with wider loads than it was written with stalls store forwarding).
    #[inline]
    pub(crate) fn try_push(&mut self, value: T) -> Result<usize, T> {
        if self.top.len() == self.top.capacity() && !self.next_chunk() {
            return Err(value);
        }
        // Capacity was reserved exactly, so this push never reallocates: elements never move.
        self.top.push(value);
        self.len += 1;
        Ok(self.len - 1)
    }

    /// Makes the next chunk current, allocating it (and the directory) if needed; false if
    /// that failed, with nothing changed. Only called when the current chunk is full (or there
    /// is none).
    #[cold]
    #[inline(never)]
    fn next_chunk(&mut self) -> bool {
        if self.top.capacity() == 0 {
            // No chunk yet: chunk 0 goes straight into `top`, no directory needed.
            debug_assert!(self.chunks.is_empty() && self.len == 0);
            return self.top.try_reserve_exact(FIRST).is_ok();
        }
        let next = self.cur + 1;
        if next == self.chunk_count() {
            // Room in the directory first (for chunk 0's stand-in too, the first time), so
            // that a failure leaves the table as it was.
            let entries = if self.chunks.is_empty() { 2 } else { 1 };
            if self.chunks.try_reserve(entries).is_err() {
                return false;
            }
            let mut chunk = Vec::new();
            if chunk
                .try_reserve_exact(FIRST << next.min(Self::CAP as usize))
                .is_err()
            {
                return false;
            }
            if self.chunks.is_empty() {
                self.chunks.push(Vec::new());
            }
            self.chunks.push(chunk);
        }
        debug_assert_eq!(locate(self.len, Self::CAP), (next, 0));
        // INVARIANT: the full chunk `cur` goes back to the directory, chunk `next` (empty)
        // becomes `top` and leaves a stand-in without capacity behind.
        let next_chunk = std::mem::take(&mut self.chunks[next]);
        self.chunks[self.cur] = std::mem::replace(&mut self.top, next_chunk);
        self.cur = next;
        true
    }

    /// Makes the chunk below the current one (full) current; the current one is empty.
    #[cold]
    #[inline(never)]
    fn prev_chunk(&mut self) {
        debug_assert!(self.top.is_empty() && self.cur > 0);
        let prev = self.cur - 1;
        // INVARIANT: as in `next_chunk`, one chunk down.
        let prev_chunk = std::mem::take(&mut self.chunks[prev]);
        self.chunks[self.cur] = std::mem::replace(&mut self.top, prev_chunk);
        self.cur = prev;
    }

    /// The last element.
    #[inline]
    pub(crate) fn last(&self) -> Option<&T> {
        match self.top.last() {
            Some(v) => Some(v),
            None if self.cur > 0 => self.chunks[self.cur - 1].last(),
            None => None,
        }
    }

    /// Removes and returns the last element.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        if self.top.is_empty() {
            self.prev_chunk();
        }
        self.len -= 1;
        self.top.pop()
    }

    /// Drops every element; keeps the first chunk's memory for reuse and frees the rest.
    pub(crate) fn clear(&mut self) {
        if self.cur != 0 {
            self.top = std::mem::take(&mut self.chunks[0]);
        }
        // INVARIANT: chunk 0 only, in `top`, no directory entries.
        self.chunks.clear();
        self.top.clear();
        self.cur = 0;
        self.len = 0;
    }

    /// Moves every element out, oldest index first, leaving the table empty.
    pub(crate) fn drain_all(&mut self) -> impl Iterator<Item = T> {
        self.len = 0;
        let cur = std::mem::replace(&mut self.cur, 0);
        let top = std::mem::take(&mut self.top);
        let mut chunks = std::mem::take(&mut self.chunks);
        let alone = if chunks.is_empty() {
            Some(top)
        } else {
            chunks[cur] = top;
            None
        };
        alone.into_iter().chain(chunks).flatten()
    }

    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &T> {
        (0..self.chunks.len().max(1)).flat_map(|k| self.chunk(k).iter())
    }

    pub(crate) fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut T> {
        let cur = self.cur;
        let mut top = Some(&mut self.top);
        let alone = if self.chunks.is_empty() {
            top.take()
        } else {
            None
        };
        let rest = self.chunks.iter_mut().enumerate().flat_map(move |(k, c)| {
            // `top` stands at `cur` in the directory's order.
            let c = if k == cur { top.take().unwrap_or(c) } else { c };
            c.iter_mut()
        });
        alone.into_iter().flat_map(|c| c.iter_mut()).chain(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn first_chunk_inline_then_spilled_to_the_directory() {
        let mut s = Slots::new();
        assert_eq!(s.chunk_count(), 0);
        for i in 0..FIRST {
            assert_eq!(s.try_push(i).ok(), Some(i));
        }
        // A full first chunk and no directory allocated.
        assert_eq!((s.chunk_count(), s.top.capacity()), (1, FIRST));
        assert_eq!(
            s.chunks.capacity(),
            0,
            "no directory while the table fits chunk 0"
        );
        let first_addr = s.get(0).unwrap() as *const usize;
        // The next push spills into chunk 1; the directory lists both chunks.
        assert_eq!(s.try_push(FIRST).ok(), Some(FIRST));
        assert_eq!((s.chunk_count(), s.cur), (2, 1));
        assert_eq!(s.top.capacity(), FIRST << 1);
        assert_eq!(s.chunks[0].capacity(), FIRST);
        assert_eq!(s.get(FIRST), Some(&FIRST));
        assert_eq!(s.last(), Some(&FIRST));
        assert!(
            std::ptr::eq(s.get(0).unwrap(), first_addr),
            "chunk 0 did not move"
        );
        // Back down into chunk 0 and up again: chunk 1 is reused, not allocated again.
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
        assert_eq!((s.len(), s.chunk_count(), s.top.capacity()), (0, 1, FIRST));
        assert_eq!(s.chunks.len(), 0);
        assert_eq!(s.try_push(7).ok(), Some(0));
        assert_eq!(s.last(), Some(&7));
        assert_eq!(s.drain_all().collect::<Vec<_>>(), vec![7]);
        assert_eq!((s.len(), s.chunk_count()), (0, 0));
        // Drained from the middle chunk of three: every element, oldest first.
        let n = FIRST + (FIRST << 1) + 5;
        for i in 0..n {
            s.try_push(i).unwrap();
        }
        for _ in 0..10 {
            s.pop();
        }
        assert_eq!(s.cur, 1);
        assert_eq!(
            s.drain_all().collect::<Vec<_>>(),
            (0..n - 10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn fixed_size_region_push_get_pop() {
        // 4 KiB elements: the cap is the first chunk's size, so every chunk holds FIRST.
        let mut s: Slots<[u64; 512]> = Slots::new();
        let n = if cfg!(miri) { 40 } else { 200 };
        let mut addrs = Vec::new();
        for i in 0..n {
            assert_eq!(s.try_push([i as u64; 512]).ok(), Some(i));
            addrs.push(s.get(i).unwrap().as_ptr() as usize);
        }
        assert_eq!(s.top.capacity(), FIRST);
        assert!(
            s.chunks
                .iter()
                .all(|c| c.capacity() == FIRST || c.capacity() == 0)
        );
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
        let mut s = Slots::new();
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
        assert_eq!(s.drain_all().sum::<usize>(), (0..100).sum::<usize>());
        assert_eq!(s.len(), 0);
        s.try_push(1).unwrap();
        s.clear();
        assert_eq!(s.len(), 0);
        assert_eq!(s.try_push(5).ok(), Some(0));
    }
}
