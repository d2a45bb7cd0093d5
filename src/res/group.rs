//! Groups: markers that delimit a stretch of a list so that it can be released (or forgotten)
//! as one unit, like the kernel's `devres_open_group` / `devres_close_group` /
//! `devres_release_group` / `devres_remove_group`.
//!
//! A group is two marker entries on the list: an *open* marker, pushed when the group is
//! opened, and a *close* marker, pushed when it is closed. Entries are ordered by their
//! sequence number, so a group's range is every entry whose sequence number lies between its
//! two markers (or after its open marker while it is still open).
//!
//! Releasing a group releases, newest first, every non-marker entry in its range, and the
//! markers of every group that lies *wholly* inside the range (both markers in range, or the
//! open marker of a group that is still open): properly nested groups go with their parent. A
//! group that only *partially* overlaps the range (one marker inside, one outside) keeps its
//! markers: the entries it shares with the released range are released, the rest of it stays.
//! These are the kernel's rules (its "colour" pass in `remove_nodes`), restated on sequence
//! numbers.

use std::fmt;

use crate::error::{Error, Result};
use crate::res::handle::Key;
use crate::res::info::EntryKind;
use crate::res::list::{Entry, PanicPayload, PanicSink, Payload, ResourceList, Slot, State};
use crate::res::marker::Marker;
use crate::res::site::Site;
use crate::sync::Ordering;
use crate::trace::{self, Op};

/// A group of entries on one resource list (`devres_open_group`'s returned id).
///
/// Not `Clone`: releasing or removing the group consumes it. Dropping it leaves the group's
/// markers on the list; they are released with the list like any other entry.
///
/// # Examples
///
/// ```
/// let bus = drmm::Bus::new("platform");
/// let dev = bus.add_device("gpu.0");
/// dev.with_driverless(|b| -> drmm::Result<()> {
///     let group: drmm::Group = b.open_group()?; // devres_open_group
///     let _regs = b.kzalloc(64)?;
///     b.close_group(&group)?;
///     assert_eq!(group.list_id(), dev.list_id());
///     assert_eq!(b.release_group(group)?, 1); // consumed: it cannot be released twice
///     Ok(())
/// })??;
/// # Ok::<(), drmm::Error>(())
/// ```
#[must_use = "dropping the group handle leaves it open; close, release or remove it"]
pub struct Group {
    pub(crate) key: Key,
}

impl Group {
    /// The identity of the list the group is on.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let (a, b) = (bus.add_device("a"), bus.add_device("b"));
    /// let group = a.with_driverless(|bound| bound.open_group())??;
    /// assert_eq!(group.list_id(), a.list_id());
    /// // A group of another device is an error, not undefined behaviour:
    /// let err = b.with_driverless(|bound| bound.remove_group(group))?;
    /// assert!(matches!(err, Err(drmm::Error::ForeignHandle { .. })));
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn list_id(&self) -> u64 {
        self.key.list
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("list", &self.key.list)
            .field("seq", &self.key.seq)
            .finish()
    }
}

/// What [`ResourceList::release_group`] did.
pub(crate) struct GroupRelease {
    /// Non-marker entries released (the kernel's return value).
    pub(crate) released: usize,
    /// The first panic of a release action, to be resumed by the caller.
    pub(crate) panic: Option<PanicPayload>,
}

impl<C> ResourceList<C> {
    /// Opens a group: pushes its open marker (`devres_open_group`).
    pub(crate) fn open_group(&self, site: Site) -> Result<Group> {
        let marker = Marker {
            group: 0, // its own seq, filled in below under the lock
            closed_at: None,
            open: true,
        };
        let entry = Entry {
            site,
            payload: Payload::Marker(marker),
        };
        // The open marker's group is its own sequence number, known once it is on the list.
        // The guard (a temporary) is dropped at the end of this statement, before the event.
        let inserted = self.insert(&mut self.state.lock(), entry);
        let key = inserted.map_err(|(e, _)| e)?;
        self.note_added(&key, &site, EntryKind::GroupOpen);
        Ok(Group { key })
    }

    /// Closes `group`: pushes its close marker (`devres_close_group`). Entries added later
    /// are outside the group.
    ///
    /// # Errors
    ///
    /// [`Error::ForeignHandle`]; [`Error::NotOnList`] if the group's markers are gone (released
    /// with an enclosing group, or by the list's release); [`Error::GroupClosed`] if it is
    /// already closed; [`Error::OutOfMemory`] if the list could not grow.
    pub(crate) fn close_group(&self, group: &Group, site: Site) -> Result<()> {
        self.check_list(&group.key)?;
        let key = {
            let mut st = self.state.lock();
            match open_marker(&st, &group.key) {
                Some(m) if m.closed_at.is_some() => return Err(Error::GroupClosed),
                Some(_) => {}
                None => return Err(Error::NotOnList),
            }
            let entry = Entry {
                site,
                payload: Payload::Marker(Marker {
                    group: group.key.seq,
                    closed_at: None,
                    open: false,
                }),
            };
            let key = self.insert(&mut st, entry).map_err(|(e, _)| e)?;
            if open_marker(&st, &group.key).is_some() {
                st.set_closed_at(group.key.index as usize, key.seq);
            }
            key
        };
        self.note_added(&key, &site, EntryKind::GroupClose);
        Ok(())
    }

    /// Takes the group's markers off the list; its entries stay, as part of whatever encloses
    /// the group (`devres_remove_group`).
    ///
    /// # Errors
    ///
    /// [`Error::ForeignHandle`]; [`Error::NotOnList`] if the group's markers are gone.
    pub(crate) fn remove_group(&self, group: Group) -> Result<()> {
        self.check_list(&group.key)?;
        let taken = {
            let mut st = self.state.lock();
            let Some(m) = open_marker(&st, &group.key) else {
                return Err(Error::NotOnList);
            };
            let open = st.take(group.key.index as usize, Some(group.key.seq));
            let close = m.closed_at.and_then(|close| {
                let i = find_seq(&st, close)?;
                st.take(i, Some(close))
            });
            // A fixed array: removing a group allocates nothing.
            [open, close]
        };
        for (seq, e) in taken.into_iter().flatten() {
            trace::entry(Op::Rem, self, seq, &e.site, e.kind(), 0);
        }
        Ok(())
    }

    /// Releases, newest first, every entry of the group's range, with the markers of the groups
    /// wholly inside it; groups that partially overlap keep their markers
    /// (`devres_release_group`). Entries added while this runs are not part of it.
    ///
    /// Panics of release actions are caught; the first is returned, the others logged.
    ///
    /// Allocation failure does not stop it: the range is then released one entry at a time
    /// (see [`release_range_one_by_one`](Self::release_range_one_by_one)), in the same order.
    ///
    /// # Errors
    ///
    /// [`Error::ForeignHandle`]; [`Error::NotOnList`] if the group's markers are gone. Nothing
    /// is released then.
    ///
    /// # Safety
    ///
    /// As for [`release_all`](Self::release_all): managed allocations of the range are freed,
    /// so no reference obtained from a handle of this list through
    /// [`check_live`](Self::check_live) may be alive, or be created on another thread, while
    /// this runs.
    pub(crate) unsafe fn release_group(&self, group: Group, ctx: &C) -> Result<GroupRelease> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.release_group_with(group, ctx, Plan::Fast) }
    }

    /// [`release_group`](Self::release_group), forced onto one of its two ways by tests.
    ///
    /// # Safety
    ///
    /// As for [`release_group`](Self::release_group).
    unsafe fn release_group_with(&self, group: Group, ctx: &C, plan: Plan) -> Result<GroupRelease> {
        self.check_list(&group.key)?;
        let (range, taken) = 'locked: {
            let mut st = self.state.lock();
            let Some(m) = open_marker(&st, &group.key) else {
                return Err(Error::NotOnList);
            };
            // Entries taken off from now on may still be referenced through stale handles:
            // from here on, handle reads check their slot.
            self.bulk.store(true, Ordering::Release);
            let range = Range {
                first: group.key.seq,
                last: m.closed_at.unwrap_or(u64::MAX),
                newest: u64::MAX,
            };
            let newest = match plan {
                Plan::Fast => match take_range(&mut st, &range) {
                    Ok(todo) => break 'locked (range, Some(todo)),
                    Err(newest) => newest,
                },
                Plan::OneByOne => newest_seq(&st),
            };
            (range.capped(newest), None)
        };
        let mut sink = PanicSink::default();
        let released = match taken {
            Some(mut todo) => {
                todo.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
                todo.into_iter()
                    .map(|(seq, entry)| self.release_taken(seq, entry, ctx, &mut sink))
                    .sum()
            }
            None => self.release_range_one_by_one(&range, ctx, &mut sink),
        };
        Ok(GroupRelease {
            released,
            panic: sink.into_first(),
        })
    }

    /// The way of [`release_group`](Self::release_group) that needs no memory, taken when
    /// the buffer of the entries to release cannot be allocated: finds and takes off the
    /// newest entry of `range` not yet released, under the lock, releases it without the
    /// lock, and again, until none is left. Returns the number of non-marker entries released.
    ///
    /// Observable difference with the usual way, which takes the whole range off at once
    /// before releasing anything: the range's entries stay on the list until their turn. So
    /// while an older one waits, a release action (or another thread) can still reach it: an
    /// explicit release or removal of it succeeds (and it is not released again here), a nested
    /// group whose markers wait can still be closed (its close marker, newer than the range,
    /// then stays on the list), removed or released, and the list's length and snapshot
    /// still show it. Which entries and markers are released, and their order, are the same.
    fn release_range_one_by_one(&self, range: &Range, ctx: &C, sink: &mut PanicSink) -> usize {
        let mut below = range.last.saturating_add(1);
        let mut released = 0;
        loop {
            let next = {
                let mut st = self.state.lock();
                let newest = st
                    .slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, slot)| {
                        let seq = range.releases(&st, i, slot)?;
                        (seq < below).then_some((seq, i))
                    })
                    .max();
                newest.and_then(|(seq, i)| st.take(i, Some(seq)))
            };
            let Some((seq, entry)) = next else {
                return released;
            };
            below = seq;
            released += self.release_taken(seq, entry, ctx, sink);
        }
    }

    /// Releases one entry a group release took off, catching its panic, and gives its arena
    /// block back. Returns 1 if it is not a marker (the count the kernel returns), 0 otherwise.
    fn release_taken(&self, seq: u64, entry: Entry<C>, ctx: &C, sink: &mut PanicSink) -> usize {
        let counted = usize::from(!matches!(entry.payload, Payload::Marker(_)));
        let site = entry.site;
        // The subscriber is user code: inside the panic net, and the entry is released anyway.
        if let Some(p) = trace::entry_caught(Op::Rel, self, seq, &site, entry.kind(), entry.size())
        {
            sink.record(p, self, &site);
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| entry.release(ctx))) {
            Ok(freed) => self.recycle(freed),
            Err(p) => sink.record(p, self, &site),
        }
        counted
    }
}

/// Which way [`ResourceList::release_group`] goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Take the whole range off at once when a buffer for it can be allocated, else
    /// [`OneByOne`](Plan::OneByOne).
    Fast,
    /// One entry at a time, allocating nothing (what allocation failure falls back to).
    #[cfg_attr(not(test), allow(dead_code))] // Chosen directly only by the tests.
    OneByOne,
}

/// The entries a group release covers, fixed when it begins.
#[derive(Debug)]
struct Range {
    /// The released group's open marker.
    first: u64,
    /// The newest sequence number in range: the group's close marker, or, for a group still
    /// open, the newest entry on the list when the release began (entries added during the
    /// release are not part of it).
    last: u64,
    /// The newest sequence number on the list when the release began.
    newest: u64,
}

impl Range {
    /// The range with its end fixed where the list's newest entry is now, `newest`: what a
    /// release that leaves the range's entries on the list must use, so that entries added
    /// meanwhile are not part of it. (A range whose entries are all taken off at once needs
    /// no cap: nothing newer exists while they are chosen.)
    fn capped(self, newest: u64) -> Self {
        Range {
            first: self.first,
            last: self.last.min(newest),
            newest,
        }
    }

    /// The sequence number of the entry in slot `i` (`slot`) if the release takes it: it is
    /// in range, and it is not a marker, or the marker of a group wholly inside the range.
    ///
    /// This is the kernel's colour rule (a group is wholly inside when its markers in range,
    /// plus one if it is still open, count two) decided from one marker, without a table:
    /// markers leave the list in pairs, so an open marker in range is wholly inside when its
    /// group was still open when the release began (not closed, or closed by a marker newer
    /// than `newest`) or when its close marker is in range too; a close marker in range is
    /// wholly inside when its open marker, which is older, is in range too.
    #[inline]
    fn releases<C>(&self, st: &State<C>, i: usize, slot: &Slot) -> Option<u64> {
        let seq = slot.occupied()?;
        if seq < self.first || seq > self.last {
            return None;
        }
        let kind = st.sites().get(slot.site()).vtable.kind;
        if !matches!(kind, EntryKind::GroupOpen | EntryKind::GroupClose) {
            return Some(seq);
        }
        let (_, mk) = st.marker_at(i)?;
        let wholly = if mk.open {
            mk.closed_at
                .is_none_or(|close| close <= self.last || close > self.newest)
        } else {
            mk.group >= self.first
        };
        wholly.then_some(seq)
    }
}

/// Takes every entry `range` releases off the list, into a buffer allocated fallibly. If the
/// buffer cannot be allocated, nothing is taken and the newest sequence number on the list is
/// returned as the error.
fn take_range<C>(
    st: &mut State<C>,
    range: &Range,
) -> std::result::Result<Vec<(u64, Entry<C>)>, u64> {
    let (count, newest) = st
        .slots
        .iter()
        .enumerate()
        .fold((0, 0), |(count, newest), (i, slot)| {
            (
                count + usize::from(range.releases(st, i, slot).is_some()),
                newest.max(slot.occupied().unwrap_or(0)),
            )
        });
    let mut todo = Vec::new();
    if todo.try_reserve_exact(count).is_err() {
        return Err(newest);
    }
    // From the top down: emptying the list (which resets the slot table) can only happen at
    // the last take.
    for i in (0..st.slots.len()).rev() {
        let Some(seq) = st.slots.get(i).and_then(|slot| range.releases(st, i, slot)) else {
            continue;
        };
        if let Some(taken) = st.take(i, Some(seq)) {
            debug_assert!(todo.len() < todo.capacity());
            todo.push(taken);
        }
    }
    Ok(todo)
}

/// The open marker of the group `key`, if it is still on the list.
fn open_marker<C>(st: &State<C>, key: &Key) -> Option<Marker> {
    match st.marker_at(key.index as usize) {
        Some((seq, m)) if seq == key.seq && m.open => Some(m),
        _ => None,
    }
}

/// The newest sequence number on the list (0 if it is empty).
fn newest_seq<C>(st: &State<C>) -> u64 {
    st.slots
        .iter()
        .filter_map(Slot::occupied)
        .max()
        .unwrap_or(0)
}

/// The slot holding the entry `seq`, by a scan.
fn find_seq<C>(st: &State<C>, want: u64) -> Option<usize> {
    st.slots.iter().position(|s| s.occupied() == Some(want))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::res::action::Action;
    use std::sync::{Arc, Mutex};

    type Log = Arc<Mutex<Vec<&'static str>>>;

    fn list() -> ResourceList<()> {
        ResourceList::new(Some("t".into()), "t")
    }

    fn act(l: &ResourceList<()>, log: &Log, name: &'static str) -> Key {
        let log = log.clone();
        let a = Action::new(move |_: &()| log.lock().unwrap().push(name))
            .ok()
            .unwrap();
        l.push(Entry {
            site: Site::caller(name),
            payload: Payload::Action(a),
        })
        .ok()
        .unwrap()
    }

    fn rel(l: &ResourceList<()>, g: Group) -> usize {
        // SAFETY: no handle of these lists is read in these tests.
        let r = unsafe { l.release_group(g, &()) }.unwrap();
        assert!(r.panic.is_none());
        r.released
    }

    fn kinds(l: &ResourceList<()>) -> Vec<&'static str> {
        l.snapshot().iter().map(|e| e.name()).collect()
    }

    #[test]
    fn release_closed_group_newest_first_and_leaves_outside() {
        let (l, log) = (list(), Log::default());
        act(&l, &log, "before");
        let g = l.open_group(Site::caller("grp<")).unwrap();
        act(&l, &log, "a");
        act(&l, &log, "b");
        l.close_group(&g, Site::caller("grp>")).unwrap();
        act(&l, &log, "after");
        assert_eq!(rel(&l, g), 2);
        assert_eq!(*log.lock().unwrap(), ["b", "a"]);
        assert_eq!(kinds(&l), ["after", "before"]);
    }

    #[test]
    fn open_group_extends_to_the_end() {
        let (l, log) = (list(), Log::default());
        act(&l, &log, "before");
        let g = l.open_group(Site::caller("grp<")).unwrap();
        act(&l, &log, "a");
        act(&l, &log, "b");
        assert_eq!(rel(&l, g), 2);
        assert_eq!(kinds(&l), ["before"]);
    }

    #[test]
    fn nested_groups_go_with_the_parent() {
        let (l, log) = (list(), Log::default());
        let outer = l.open_group(Site::caller("grp<")).unwrap();
        act(&l, &log, "a");
        let inner = l.open_group(Site::caller("grp<")).unwrap();
        act(&l, &log, "b");
        l.close_group(&inner, Site::caller("grp>")).unwrap();
        let unclosed = l.open_group(Site::caller("grp<")).unwrap();
        act(&l, &log, "c");
        l.close_group(&outer, Site::caller("grp>")).unwrap();
        assert_eq!(rel(&l, outer), 3);
        assert_eq!(l.len(), 0, "nested markers are gone too");
        assert!(matches!(rel_err(&l, inner), Error::NotOnList));
        assert!(matches!(rel_err(&l, unclosed), Error::NotOnList));
        assert_eq!(*log.lock().unwrap(), ["c", "b", "a"]);
    }

    fn rel_err(l: &ResourceList<()>, g: Group) -> Error {
        // SAFETY: no handle read.
        match unsafe { l.release_group(g, &()) } {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn partial_overlap_keeps_the_other_groups_markers() {
        let (l, log) = (list(), Log::default());
        let a = l.open_group(Site::caller("grp<")).unwrap();
        act(&l, &log, "a1");
        let b = l.open_group(Site::caller("grp<")).unwrap();
        act(&l, &log, "ab");
        l.close_group(&a, Site::caller("grp>")).unwrap();
        act(&l, &log, "b1");
        l.close_group(&b, Site::caller("grp>")).unwrap();
        assert_eq!(rel(&l, a), 2);
        assert_eq!(*log.lock().unwrap(), ["ab", "a1"]);
        assert_eq!(kinds(&l), ["grp>", "b1", "grp<"]);
        assert_eq!(rel(&l, b), 1);
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn remove_group_keeps_entries_and_close_errors() {
        let (l, log) = (list(), Log::default());
        let g = l.open_group(Site::caller("grp<")).unwrap();
        act(&l, &log, "a");
        l.close_group(&g, Site::caller("grp>")).unwrap();
        assert!(matches!(
            l.close_group(&g, Site::caller("grp>")),
            Err(Error::GroupClosed)
        ));
        l.remove_group(g).unwrap();
        assert_eq!(kinds(&l), ["a"]);
        let other = list();
        let g2 = other.open_group(Site::caller("grp<")).unwrap();
        assert!(matches!(
            l.close_group(&g2, Site::caller("grp>")),
            Err(Error::ForeignHandle { .. })
        ));
    }
    /// Releases `g` the way `plan` says; the released count and the first panic's message.
    fn rel_with(l: &ResourceList<()>, g: Group, plan: Plan) -> (usize, Option<String>) {
        // SAFETY: no handle of these lists is read in these tests.
        let r = unsafe { l.release_group_with(g, &(), plan) }.unwrap();
        let panic = r
            .panic
            .map(|p| crate::res::list::panic_message(&*p).to_owned());
        (r.released, panic)
    }

    /// Adds an action that runs `f` with the list (which it keeps alive until it runs).
    fn act_with(
        l: &Arc<ResourceList<()>>,
        log: &Log,
        name: &'static str,
        f: impl FnOnce(&ResourceList<()>) + Send + 'static,
    ) {
        let (list, log) = (l.clone(), log.clone());
        let a = Action::new(move |_: &()| {
            log.lock().unwrap().push(name);
            f(&list);
        })
        .ok()
        .unwrap();
        l.push(Entry {
            site: Site::caller(name),
            payload: Payload::Action(a),
        })
        .ok()
        .unwrap();
    }

    /// What a release did: the released count, the first panic, the release order and what
    /// is left on the list, newest first.
    type Outcome = (usize, Option<String>, Vec<&'static str>, Vec<&'static str>);

    /// Builds a list with `build`, releases the group it returns with `plan`.
    fn outcome(plan: Plan, build: impl Fn(&Arc<ResourceList<()>>, &Log) -> Group) -> Outcome {
        let (l, log) = (Arc::new(list()), Log::default());
        let g = build(&l, &log);
        let (released, panic) = rel_with(&l, g, plan);
        let order = log.lock().unwrap().clone();
        (released, panic, order, kinds(&l))
    }

    /// Both ways give the same outcome; returns it.
    fn same_both_ways(build: impl Fn(&Arc<ResourceList<()>>, &Log) -> Group) -> Outcome {
        let fast = outcome(Plan::Fast, &build);
        let one_by_one = outcome(Plan::OneByOne, &build);
        assert_eq!(
            fast, one_by_one,
            "fast (left) and one by one (right) differ"
        );
        fast
    }

    #[test]
    fn both_ways_agree_on_nested_overlapping_open_and_closed_groups() {
        let (released, panic, order, left) = same_both_ways(|l, log| {
            act(l, log, "before");
            let straddle_in = l.open_group(Site::caller("in<")).unwrap();
            act(l, log, "s1");
            let g = l.open_group(Site::caller("grp<")).unwrap();
            act(l, log, "a");
            l.close_group(&straddle_in, Site::caller("in>")).unwrap();
            let inner = l.open_group(Site::caller("inner<")).unwrap();
            act(l, log, "b");
            l.close_group(&inner, Site::caller("inner>")).unwrap();
            let straddle_out = l.open_group(Site::caller("out<")).unwrap();
            let unclosed = l.open_group(Site::caller("open<")).unwrap();
            act(l, log, "c");
            l.close_group(&g, Site::caller("grp>")).unwrap();
            act(l, log, "s2");
            l.close_group(&straddle_out, Site::caller("out>")).unwrap();
            act(l, log, "after");
            drop(unclosed);
            g
        });
        assert_eq!((released, panic), (3, None));
        assert_eq!(order, ["c", "b", "a"]);
        // The groups straddling either end keep their markers; nested ones go.
        assert_eq!(
            left,
            ["after", "out>", "s2", "out<", "in>", "s1", "in<", "before"]
        );
    }

    #[test]
    fn both_ways_agree_on_an_open_group_and_on_panics() {
        let (released, panic, order, left) = same_both_ways(|l, log| {
            act(l, log, "before");
            let g = l.open_group(Site::caller("grp<")).unwrap();
            act(l, log, "a");
            act_with(l, log, "p1", |_| panic!("first"));
            let nested = l.open_group(Site::caller("nested<")).unwrap();
            act(l, log, "b");
            act_with(l, log, "p2", |_| panic!("second"));
            act(l, log, "c");
            drop(nested);
            g
        });
        assert_eq!((released, panic.as_deref()), (5, Some("second")));
        assert_eq!(order, ["c", "p2", "b", "p1", "a"]);
        assert_eq!(left, ["before"]);
    }

    #[test]
    fn entries_added_during_the_release_are_not_part_of_it() {
        // The group is open: its range would reach whatever is added, were it not fixed when
        // the release begins.
        let (released, _, order, left) = same_both_ways(|l, log| {
            let g = l.open_group(Site::caller("grp<")).unwrap();
            act(l, log, "a");
            act_with(l, log, "adds", |l| {
                let log = Log::default();
                act(l, &log, "added");
                let _ = l.open_group(Site::caller("added<")).unwrap();
            });
            act(l, log, "b");
            g
        });
        assert_eq!(released, 3);
        assert_eq!(order, ["b", "adds", "a"]);
        assert_eq!(left, ["added<", "added"]);
    }

    #[test]
    fn one_by_one_leaves_waiting_entries_reachable() {
        // The documented difference: while an older entry of the range waits for its turn, an
        // action can still release it explicitly (then it is not released again) and close a
        // nested group that was open when the release began (which still goes with it; the
        // new close marker stays).
        let build = |l: &Arc<ResourceList<()>>, log: &Log| {
            let g = l.open_group(Site::caller("grp<")).unwrap();
            let early = act(l, log, "early");
            let nested = l.open_group(Site::caller("nested<")).unwrap();
            act(l, log, "n");
            act_with(l, log, "reaches", move |l| {
                let r = l.release(&early, &());
                let c = l.close_group(&nested, Site::caller("nested>"));
                match (r, c) {
                    (Ok(()), Ok(())) => {}
                    (Err(Error::NotOnList), Err(Error::NotOnList)) => panic!("taken already"),
                    other => panic!("unexpected {other:?}"),
                }
            });
            g
        };
        let fast = outcome(Plan::Fast, build);
        assert_eq!(fast.1.as_deref(), Some("taken already"));
        assert_eq!(fast.2, ["reaches", "n", "early"]);
        assert!(fast.3.is_empty());
        let one_by_one = outcome(Plan::OneByOne, build);
        assert_eq!(one_by_one.1, None);
        assert_eq!(
            one_by_one.0, 2,
            "`early` was released by the action, not by the group"
        );
        assert_eq!(one_by_one.2, ["reaches", "early", "n"]);
        assert_eq!(one_by_one.3, ["nested>"]);
    }

    #[test]
    fn remove_group_of_an_open_group_takes_its_one_marker() {
        let (l, log) = (list(), Log::default());
        let g = l.open_group(Site::caller("grp<")).unwrap();
        act(&l, &log, "a");
        l.remove_group(g).unwrap();
        assert_eq!(kinds(&l), ["a"]);
    }
    #[test]
    fn a_group_release_gives_arena_blocks_back() {
        for plan in [Plan::Fast, Plan::OneByOne] {
            let l = list();
            let mut reserved = None;
            // Without reuse, each round would need 3 KiB more of the arena.
            for round in 0..4 {
                let g = l.open_group(Site::caller("grp<")).unwrap();
                for _ in 0..64 {
                    let _ = l.alloc_bytes(Site::caller("b"), 48, 16, true).unwrap();
                }
                let now = l.state.lock().arena.reserved();
                assert!(now > 0, "small blocks come from the arena");
                assert_eq!(*reserved.get_or_insert(now), now, "{plan:?}, round {round}");
                assert_eq!(rel_with(&l, g, plan), (64, None));
            }
        }
    }
}
