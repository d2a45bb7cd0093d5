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
pub(crate) struct Slots<T> {
    /// Chunk `k` has capacity exactly `FIRST << min(k, CAP)` and is full unless it is the last one in
    /// use. Chunks past the last one in use are kept empty, ready for reuse.
    chunks: Vec<Vec<T>>,
    /// The chunk the top of the table is in: every chunk below it is full, every chunk above
    /// it empty (0 when there is no chunk). Pushing and popping work on it directly, without
    /// [`locate`].
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
            chunks: Vec::new(),
            cur: 0,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        let (k, o) = locate(i, Self::CAP);
        self.chunks[k].get(o)
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        if i >= self.len {
            return None;
        }
        let (k, o) = locate(i, Self::CAP);
        self.chunks[k].get_mut(o)
    }

    /// Appends `value`; if a new chunk cannot be allocated, hands it back.
    ///
    /// The value is only moved on the way in: the cold path that moves to the next chunk does
    /// not take it, so that the caller can keep a small `T` in registers (a `T` passed to an
    /// out-of-line function has to be materialised in memory first, and copying it from there
    /// with wider loads than it was written with stalls store forwarding).
    #[inline]
    pub(crate) fn try_push(&mut self, value: T) -> Result<usize, T> {
        let room = matches!(self.chunks.get(self.cur), Some(c) if c.len() < c.capacity());
        if !room && !self.next_chunk() {
            return Err(value);
        }
        // Capacity was reserved exactly, so this push never reallocates: elements never move.
        self.chunks[self.cur].push(value);
        self.len += 1;
        Ok(self.len - 1)
    }

    /// Makes the next chunk current, allocating it if needed; false if that failed. Only
    /// called when the current chunk is full (or there is none).
    #[cold]
    #[inline(never)]
    fn next_chunk(&mut self) -> bool {
        let next = if self.chunks.is_empty() {
            0
        } else {
            self.cur + 1
        };
        if next == self.chunks.len() && !self.add_chunk(next) {
            return false;
        }
        debug_assert_eq!(locate(self.len, Self::CAP), (next, 0));
        self.cur = next;
        true
    }

    /// Allocates chunk `k`; false if that failed.
    #[cold]
    fn add_chunk(&mut self, k: usize) -> bool {
        if self.chunks.try_reserve(1).is_err() {
            return false;
        }
        let mut chunk = Vec::new();
        if chunk
            .try_reserve_exact(FIRST << k.min(Self::CAP as usize))
            .is_err()
        {
            return false;
        }
        self.chunks.push(chunk);
        true
    }

    /// The last element.
    #[inline]
    pub(crate) fn last(&self) -> Option<&T> {
        match self.chunks.get(self.cur)?.last() {
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
        if self.chunks[self.cur].is_empty() {
            self.cur -= 1;
        }
        self.len -= 1;
        self.chunks[self.cur].pop()
    }

    /// Drops every element; keeps the first chunk's memory for reuse and frees the rest.
    pub(crate) fn clear(&mut self) {
        self.chunks.truncate(1);
        if let Some(c) = self.chunks.first_mut() {
            c.clear();
        }
        self.cur = 0;
        self.len = 0;
    }

    /// Moves every element out, oldest index first, leaving the table empty.
    pub(crate) fn drain_all(&mut self) -> impl Iterator<Item = T> {
        self.len = 0;
        self.cur = 0;
        std::mem::take(&mut self.chunks).into_iter().flatten()
    }

    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    pub(crate) fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut T> {
        self.chunks.iter_mut().flat_map(|c| c.iter_mut())
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
    fn fixed_size_region_push_get_pop() {
        // 4 KiB elements: the cap is the first chunk's size, so every chunk holds FIRST.
        let mut s: Slots<[u64; 512]> = Slots::new();
        let n = if cfg!(miri) { 40 } else { 200 };
        let mut addrs = Vec::new();
        for i in 0..n {
            assert_eq!(s.try_push([i as u64; 512]).ok(), Some(i));
            addrs.push(s.get(i).unwrap().as_ptr() as usize);
        }
        assert!(s.chunks.iter().all(|c| c.capacity() == FIRST));
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
        assert_eq!(s.drain_all().sum::<usize>(), (0..100).sum());
        assert_eq!(s.len(), 0);
        s.try_push(1).unwrap();
        s.clear();
        assert_eq!(s.len(), 0);
        assert_eq!(s.try_push(5).ok(), Some(0));
    }
}
