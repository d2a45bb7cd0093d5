//! A growable table whose elements never move: chunks of doubling size.
//!
//! A plain `Vec` of slots copies every slot each time it grows, which at a million entries
//! dominated the cost of adding (and touched twice the memory). Chunk `k` holds
//! `FIRST << k` slots, so index `i` lives in chunk `log2(i / FIRST + 1)`, found with one
//! leading-zeros count, and growing allocates one new chunk without touching the others.

/// Slots in the first chunk.
const FIRST: usize = 16;

/// A table of `T` addressed by index, grown at the end in chunks.
pub(crate) struct Slots<T> {
    /// Chunk `k` has capacity exactly `FIRST << k` and is full unless it is the last one in
    /// use. Chunks past the last one in use are kept empty, ready for reuse.
    chunks: Vec<Vec<T>>,
    len: usize,
}

/// Chunk number and offset of index `i`.
#[inline]
fn locate(i: usize) -> (usize, usize) {
    let q = i / FIRST + 1;
    let k = (usize::BITS - 1 - q.leading_zeros()) as usize;
    (k, i - FIRST * ((1 << k) - 1))
}

impl<T> Slots<T> {
    pub(crate) const fn new() -> Self {
        Slots {
            chunks: Vec::new(),
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
        let (k, o) = locate(i);
        self.chunks[k].get(o)
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        if i >= self.len {
            return None;
        }
        let (k, o) = locate(i);
        self.chunks[k].get_mut(o)
    }

    /// Appends `value`; if a new chunk cannot be allocated, hands it back.
    #[inline]
    pub(crate) fn try_push(&mut self, value: T) -> Result<usize, T> {
        let (k, _) = locate(self.len);
        if k == self.chunks.len() && !self.add_chunk(k) {
            return Err(value);
        }
        // Capacity was reserved exactly, so this push never reallocates: elements never move.
        debug_assert!(self.chunks[k].len() < self.chunks[k].capacity());
        self.chunks[k].push(value);
        self.len += 1;
        Ok(self.len - 1)
    }

    /// Allocates chunk `k`; false if that failed.
    #[cold]
    fn add_chunk(&mut self, k: usize) -> bool {
        if self.chunks.try_reserve(1).is_err() {
            return false;
        }
        let mut chunk = Vec::new();
        if chunk.try_reserve_exact(FIRST << k).is_err() {
            return false;
        }
        self.chunks.push(chunk);
        true
    }

    /// Removes and returns the last element.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let (k, _) = locate(self.len - 1);
        self.len -= 1;
        self.chunks[k].pop()
    }

    /// Drops every element; keeps the first chunk's memory for reuse and frees the rest.
    pub(crate) fn clear(&mut self) {
        self.chunks.truncate(1);
        if let Some(c) = self.chunks.first_mut() {
            c.clear();
        }
        self.len = 0;
    }

    /// Moves every element out, oldest index first, leaving the table empty.
    pub(crate) fn drain_all(&mut self) -> impl Iterator<Item = T> {
        self.len = 0;
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
        let mut expect = (0, 0);
        for i in 0..10_000 {
            assert_eq!(locate(i), expect, "index {i}");
            expect.1 += 1;
            if expect.1 == FIRST << expect.0 {
                expect = (expect.0 + 1, 0);
            }
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
            assert_eq!(s.pop(), Some(want));
        }
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
