//! Adding entries: pushing actions and markers, managed allocations (values, bytes, copies),
//! and the add path's out-of-line parts.

use super::*;

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
pub(super) struct AddOut {
    index: u32,
    seq: u64,
    err: Option<Error>,
}

impl AddOut {
    #[inline(always)]
    pub(super) fn new() -> Self {
        AddOut {
            index: 0,
            seq: 0,
            err: None,
        }
    }

    /// In the out-of-line part: keeps the key's parts (or the error), returns the pointer.
    #[inline(always)]
    pub(super) fn record<U: ?Sized>(&mut self, added: Result<Managed<U>>) -> Option<NonNull<U>> {
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
    pub(super) fn into_handle<U: ?Sized>(
        self,
        list: u64,
        ptr: Option<NonNull<U>>,
    ) -> Result<Managed<U>> {
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

impl<C> ResourceList<C> {
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
    pub(in crate::res) fn insert(
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
    pub(super) fn insert_parts(
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
        let site_index = match st.intern(site.name(), site.location(), vt) {
            Ok(i) => i,
            Err(e) => return Err((e, seq)),
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
    pub(in crate::res) fn note_added(&self, key: &Key, site: &Site, kind: EntryKind) {
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
    pub(super) fn alloc_value_raw<U: Send + Sync + 'static>(
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
    pub(super) fn alloc_bytes_raw(
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
    pub(super) fn push_block_locked<U: ?Sized>(
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
    pub(super) fn add_failed(&self, site: &Site, e: Error) -> Error {
        trace::add_failed(self, site, &e);
        e
    }

    /// Returns arena blocks to the arena.
    pub(in crate::res) fn recycle(&self, blocks: impl IntoIterator<Item = (NonNull<u8>, usize)>) {
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
}
