//! Early release and removal of one entry through its key: O(1), no scan.

use super::*;

impl<C> ResourceList<C> {
    /// Takes the entry `key` off the list without releasing it.
    ///
    /// An entry whose release runs no user code (a plain allocation) is released right here,
    /// under the same lock, its `op` event emitted after unlocking, and `None` is returned.
    /// Otherwise the entry is returned and the caller emits the event (in the panic net:
    /// [`finish_taken`](Self::finish_taken)).
    pub(super) fn take(&self, key: &Key, op: Op) -> Result<Option<Entry<C>>> {
        self.check_list(key)?;
        let mut st = self.state.lock();
        let Some(slot) = st.take_slot(key.index as usize, Some(key.seq)) else {
            return Err(Error::NotOnList);
        };
        let meta = *st.sites().get(slot.site());
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
    pub(super) fn finish_taken(&self, seq: u64, entry: Entry<C>, op: Op, ctx: Option<&C>) {
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
}
