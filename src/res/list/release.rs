//! The bulk release: every entry newest first, in batches taken off under the lock and
//! released outside it, including entries added while it runs.

use super::*;

impl<C> ResourceList<C> {
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
    pub(super) unsafe fn lock_for_release(&self, exclusive: bool) -> ListGuard<'_, State<C>> {
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
    pub(super) unsafe fn release_all_inner(
        &self,
        ctx: &C,
        exclusive: bool,
    ) -> Option<PanicPayload> {
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
    pub(super) unsafe fn release_quiet(
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
                        .then(|| *st.sites().get(slot.site()));
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
                        .sites()
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
    pub(super) fn release_one(
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
    pub(super) unsafe fn release_newer(
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
}
