use super::*;
use crate::res::action::Action;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as O};

use crate::sync::drop_counter::Counted;

/// The final (exclusive) release leaves inert arena blocks to the arena, drops every value
/// that needs it, frees blocks outside the arena, releases entries added by an action
/// during the release, and resets the arena; the list works afterwards.
#[test]
fn final_release_drops_values_and_resets_the_arena() {
    let l = Arc::new(ResourceList::<()>::new(Some("t".into()), "t"));
    let drops = Arc::new(AtomicUsize::new(0));
    let n = if cfg!(miri) { 40 } else { 3000 };
    let mut values = 0;
    for i in 0..n {
        let b = l
            .alloc_bytes(Site::caller("kzalloc"), 64, 16, true)
            .unwrap();
        // SAFETY: a live block of 64 bytes, not released yet.
        unsafe { b.ptr.as_ptr().cast::<u8>().write_bytes(0xa5, 64) };
        if i % 7 == 0 {
            let _ = l.alloc_value(Site::caller("counted"), Counted(drops.clone()));
            values += 1;
        }
        if i % 11 == 0 {
            let _ = l.alloc_bytes(Site::caller("big"), 1000, 16, false).unwrap();
            let _ = l
                .alloc_bytes(Site::caller("aligned"), 64, 64, false)
                .unwrap();
        }
        if i % 13 == 0 {
            let _ = l.alloc_value(Site::caller("u64"), 5u64).unwrap();
        }
    }
    let (l2, d2) = (l.clone(), drops.clone());
    let a = Action::new(move |_: &()| {
        for _ in 0..5 {
            let _ = l2.alloc_bytes(Site::caller("late"), 48, 16, true).unwrap();
            let _ = l2.alloc_value(Site::caller("late"), Counted(d2.clone()));
        }
    })
    .ok()
    .unwrap();
    l.push(Entry {
        site: Site::caller("adds"),
        payload: Payload::Action(a),
    })
    .ok()
    .unwrap();
    // SAFETY: no handle of this list is read during or after the release, and no other
    // thread uses it.
    let p = unsafe { l.release_all_exclusive(&()) };
    assert!(p.is_none());
    assert_eq!(drops.load(O::SeqCst), values + 5);
    assert_eq!(l.len(), 0);
    assert_eq!(l.state.lock().arena.reserved(), 0, "arena reset");
    let b = l.alloc_bytes(Site::caller("after"), 64, 16, true).unwrap();
    // SAFETY: a live, zeroed block of 64 bytes.
    assert!(unsafe { b.ptr.as_ref() }.iter().all(|&x| x == 0));
}

/// A slot tells vacant and occupied apart at the extremes of both packed fields.
#[test]
fn slot_states_at_the_limits_of_seq_and_site() {
    let last_site = crate::res::erased::SITE_LIMIT - 1;
    for seq in [1, 2, MAX_SEQ - 1, MAX_SEQ] {
        for site in [0, 1, last_site] {
            let s = Slot::new(seq, site, 7, Word::from_bits(9));
            assert_eq!(s.occupied(), Some(seq));
            assert_eq!((s.site(), s.aux()), (site, 7));
            // SAFETY: made by `from_bits`.
            assert_eq!(unsafe { s.word().bits() }, 9);
        }
    }
    let v = Slot::vacant(5);
    assert_eq!((v.occupied(), v.aux()), (None, 5));
    assert_eq!(std::mem::align_of::<Slot>(), 4);
}

/// Once a list has handed out its last sequence number, adds fail with a size error and
/// hand their entry back; the entries already there are released, newest first.
#[test]
fn adds_beyond_the_last_sequence_number_fail_and_the_list_stays_intact() {
    let l = ResourceList::<()>::new(Some("t".into()), "t");
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let action = |tag: u32| {
        let order = order.clone();
        Entry {
            site: Site::caller("record"),
            payload: Payload::Action(
                Action::new(move |_: &()| order.lock().unwrap().push(tag))
                    .ok()
                    .unwrap(),
            ),
        }
    };
    let first = l.push(action(1)).ok().unwrap();
    l.state.lock().next_seq = MAX_SEQ;
    let last = l.push(action(2)).ok().unwrap();
    assert_eq!((first.seq, last.seq), (1, MAX_SEQ));
    let Err((e, back)) = l.push(action(3)) else {
        panic!("an add past MAX_SEQ succeeded");
    };
    assert!(matches!(e, Error::SizeOverflow { .. }), "{e:?}");
    drop(back);
    let e = l.alloc_bytes(Site::caller("kzalloc"), 64, 16, true).err();
    assert!(matches!(e, Some(Error::SizeOverflow { .. })), "{e:?}");
    assert_eq!(l.len(), 2);
    l.check_live(&last).unwrap();
    // SAFETY: no other thread uses the list, no handle is read afterwards.
    assert!(unsafe { l.release_all_exclusive(&()) }.is_none());
    assert_eq!(
        *order.lock().unwrap(),
        [2, 1],
        "the refused entry never ran"
    );
}

/// An add with a new site on a list whose site table is full fails with a size error and
/// hands its entry back; adds from known sites still work.
#[test]
#[cfg_attr(miri, ignore = "65,535 adds are too slow under miri")]
fn adds_from_too_many_sites_fail_and_the_list_stays_intact() {
    let l = ResourceList::<()>::new(Some("t".into()), "t");
    let mut names = crate::res::erased::distinct_names();
    let first = names.next().unwrap();
    // One location for all: a site is (name, location, entry type).
    let at = |name| Site::new(name, std::panic::Location::caller());
    let _ = l.alloc_bytes(at(first), 8, 16, false).unwrap();
    for _ in 1..crate::res::erased::SITE_LIMIT {
        let _ = l
            .alloc_bytes(at(names.next().unwrap()), 8, 16, false)
            .unwrap();
    }
    let e = l.alloc_bytes(at(names.next().unwrap()), 8, 16, false).err();
    assert!(matches!(e, Some(Error::SizeOverflow { .. })), "{e:?}");
    let mut known = l.alloc_bytes(at(first), 8, 16, false).unwrap();
    assert_eq!(l.len(), crate::res::erased::SITE_LIMIT as usize + 1);
    l.check_live(&known.key).unwrap();
    // Resizing keeps the entry's site (its vtable is its alignment class's), so a full
    // site table does not stop it: from the arena to a heap block and back.
    l.realloc_bytes(&mut known, 4096, true).unwrap();
    l.realloc_bytes(&mut known, 16, false).unwrap();
    assert_eq!(known.ptr.len(), 16);
    // SAFETY: no other thread uses the list, no handle is read afterwards.
    assert!(unsafe { l.release_all_exclusive(&()) }.is_none());
    assert_eq!(l.len(), 0);
}

/// Runs a final release of a list holding `n` inert arena blocks and group markers plus
/// what `add` adds, and returns whether the list still counted as all inert before it.
fn final_release_after(n: usize, add: impl FnOnce(&ResourceList<()>)) -> bool {
    let l = ResourceList::<()>::new(Some("t".into()), "t");
    for i in 0..n {
        let _ = l
            .alloc_bytes(Site::caller("kzalloc"), 64, 16, true)
            .unwrap();
        let _ = l.alloc_value(Site::caller("u64"), i as u64).unwrap();
    }
    let g = l.open_group(Site::caller("group")).unwrap();
    let _ = l
        .alloc_bytes(Site::caller("in group"), 200, 16, false)
        .unwrap();
    l.close_group(&g, Site::caller("close")).unwrap();
    add(&l);
    let all_inert = l.state.lock().all_inert;
    let live = l.len();
    // SAFETY: no handle of this list is read during or after the release, and no other
    // thread uses it.
    assert!(unsafe { l.release_all_exclusive(&()) }.is_none());
    assert_eq!(l.len(), 0, "{live} entries released");
    assert_eq!(l.state.lock().arena.reserved(), 0, "arena reset");
    assert!(l.state.lock().all_inert, "empty again");
    all_inert
}

/// A final release of markers and inert arena blocks only is done in one step (the
/// arena reset frees them all); anything else on the list sends it through the entry by
/// entry release, which still drops, frees and runs what it must. Under miri a block from
/// the global allocator that the short path forgot would show up as a leak.
#[test]
fn final_release_of_inert_arena_blocks_alone_is_one_step() {
    let n = if cfg!(miri) { 20 } else { 500 };
    assert!(final_release_after(n, |_| {}));
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    assert!(!final_release_after(n, move |l| {
        let _ = l.alloc_value(Site::caller("counted"), Counted(d));
    }));
    assert_eq!(
        drops.load(O::SeqCst),
        1,
        "a value with a destructor is dropped"
    );
    assert!(!final_release_after(n, |l| {
        let _ = l.alloc_bytes(Site::caller("big"), 1000, 16, false).unwrap();
    }));
    let d = drops.clone();
    assert!(!final_release_after(n, move |l| {
        let a = Action::new(move |_: &()| {
            d.fetch_add(1, O::SeqCst);
        })
        .ok()
        .unwrap();
        l.push(Entry {
            site: Site::caller("action"),
            payload: Payload::Action(a),
        })
        .ok()
        .unwrap();
    }));
    assert_eq!(drops.load(O::SeqCst), 2, "an action runs");
    // A block resized out of the arena is no longer released by the reset.
    assert!(!final_release_after(n, |l| {
        let mut b = l.alloc_bytes(Site::caller("grows"), 64, 16, true).unwrap();
        l.realloc_bytes(&mut b, 4096, true).unwrap();
    }));
}

/// An empty list holds no front: its slot table points to the shared empty one and its arena
/// has no free lists. The first add, whatever it adds, makes the front (sites and free lists
/// in the slot table's first chunk), which then serves every later add and early free, also
/// after a release has reset the arena (which empties the free lists).
#[test]
fn the_first_add_makes_the_front_and_the_arena_reuses_freed_blocks_through_it() {
    let l = ResourceList::<()>::new(Some("t".into()), "t");
    {
        let st = l.state.lock();
        assert!(std::ptr::eq(st.slots.head().as_ptr(), &state::NO_FRONT));
        assert!(!st.arena.has_free_lists());
        assert_eq!(
            st.sites().cached(
                "x",
                std::panic::Location::caller(),
                &crate::res::erased::OPEN_VTABLE
            ),
            None
        );
    }
    let a = Action::new(|_: &()| {}).ok().unwrap();
    let first = l
        .push(Entry {
            site: Site::caller("first"),
            payload: Payload::Action(a),
        })
        .ok()
        .unwrap();
    let front = {
        let st = l.state.lock();
        assert!(!std::ptr::eq(st.slots.head().as_ptr(), &state::NO_FRONT));
        assert!(st.arena.has_free_lists(), "attached with the front");
        assert_eq!(st.sites().get(0).name, "first");
        st.slots.head()
    };
    // Early frees go to the free lists: the next block of the class is the one freed last.
    let blocks: Vec<_> = (0..3)
        .map(|_| {
            l.alloc_bytes(Site::caller("kzalloc"), 64, 16, true)
                .unwrap()
        })
        .collect();
    let addr = |m: &Managed<[u8]>| m.ptr.cast::<u8>();
    let (a1, a2) = (addr(&blocks[1]), addr(&blocks[2]));
    let mut blocks = blocks.into_iter();
    let (b0, b1, b2) = (
        blocks.next().unwrap(),
        blocks.next().unwrap(),
        blocks.next().unwrap(),
    );
    l.release(&b1.key, &()).unwrap();
    l.release(&b2.key, &()).unwrap();
    let c = l
        .alloc_bytes(Site::caller("kzalloc"), 64, 16, true)
        .unwrap();
    assert_eq!(addr(&c), a2, "the block freed last is reused first");
    // SAFETY: a live, zeroed block of 64 bytes.
    assert!(unsafe { c.ptr.as_ref() }.iter().all(|&x| x == 0));
    let d = l
        .alloc_bytes(Site::caller("kzalloc"), 64, 16, true)
        .unwrap();
    assert_eq!(addr(&d), a1);
    // A freed block is on a list when the release resets the arena: the reset empties the
    // lists (the block's chunk is freed), and the list keeps using the same front.
    l.release(&b0.key, &()).unwrap();
    // SAFETY: no other thread uses the list, no handle is read afterwards.
    assert!(unsafe { l.release_all_exclusive(&()) }.is_none());
    assert_eq!(l.state.lock().arena.reserved(), 0, "arena reset");
    drop((first, c, d));
    // The freed chunk's memory, taken by someone else (so that the arena's next chunk is
    // elsewhere): a block handed out from it now would be another owner's memory.
    let taken = Vec::<u8>::with_capacity(1024);
    let e = l
        .alloc_bytes(Site::caller("kzalloc"), 64, 16, true)
        .unwrap();
    let f = l
        .alloc_bytes(Site::caller("kzalloc"), 64, 16, true)
        .unwrap();
    l.release(&e.key, &()).unwrap();
    let g = l
        .alloc_bytes(Site::caller("kzalloc"), 64, 16, true)
        .unwrap();
    assert_eq!(addr(&g), addr(&e));
    let h = l
        .alloc_bytes(Site::caller("kzalloc"), 64, 16, true)
        .unwrap();
    let gap = addr(&h)
        .as_ptr()
        .addr()
        .wrapping_sub(addr(&f).as_ptr().addr());
    assert_eq!(
        gap, 64,
        "a fresh block from the cursor, not one of the freed chunk"
    );
    assert_eq!(l.state.lock().slots.head(), front, "made once");
    drop(taken);
}

/// The bytes an idle logical device holds (`Device::new(())`, never entered, no entries): at
/// most 512 with its 8-byte reference count (W10). What only a device with entries needs
/// lives in the front.
#[test]
#[cfg(all(target_pointer_width = "64", not(feature = "registry")))]
fn an_idle_device_fits_in_512_bytes() {
    let size = std::mem::size_of::<crate::device::LogicalDevice<()>>();
    assert!(size + 8 <= 512, "LogicalDevice<()> is {size} bytes");
}
