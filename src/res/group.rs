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
use crate::res::erased::{CLOSE_VTABLE, EntryVTable, OPEN_VTABLE};
use crate::res::info::EntryKind;
use crate::res::list::{Entry, Key, PanicPayload, PanicSink, Payload, ResourceList, State};
use crate::res::site::Site;
use crate::sync::Ordering;
use crate::trace::{self, Op};

/// The payload of a group marker entry.
///
/// In a slot, an open marker stores its `closed_at` (0: still open) and a close marker its
/// `group`; an open marker's `group` is its own sequence number.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Marker {
    /// The sequence number of the group's open marker: the group's identity on its list.
    group: u64,
    /// For the open marker: the close marker's sequence number once the group is closed.
    /// For the close marker: `None`.
    closed_at: Option<u64>,
    open: bool,
}

impl Marker {
    pub(crate) fn kind(&self) -> EntryKind {
        if self.open {
            EntryKind::GroupOpen
        } else {
            EntryKind::GroupClose
        }
    }

    /// The vtable and the value a slot stores for this marker.
    #[inline]
    pub(crate) fn into_raw(self) -> (&'static EntryVTable, u64) {
        if self.open {
            (&OPEN_VTABLE, self.closed_at.unwrap_or(0))
        } else {
            (&CLOSE_VTABLE, self.group)
        }
    }

    /// The marker `seq` whose parts [`into_raw`](Self::into_raw) returned.
    #[inline]
    pub(crate) fn from_raw(seq: u64, vt: &'static EntryVTable, v: u64) -> Self {
        if vt.kind == EntryKind::GroupOpen {
            Marker {
                group: seq,
                closed_at: (v != 0).then_some(v),
                open: true,
            }
        } else {
            Marker {
                group: v,
                closed_at: None,
                open: false,
            }
        }
    }
}

/// A group of entries on one resource list (`devres_open_group`'s returned id).
///
/// Not `Clone`: releasing or removing the group consumes it. Dropping it leaves the group's
/// markers on the list; they are released with the list like any other entry.
#[must_use = "dropping the group handle leaves it open; close, release or remove it"]
pub struct Group {
    pub(crate) key: Key,
}

impl Group {
    /// The identity of the list the group is on.
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
        let key = self
            .insert(&mut self.state.lock(), entry)
            .map_err(|(e, _)| e)?;
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
            let closed_at = m.closed_at;
            let mut taken = Vec::with_capacity(2);
            taken.extend(st.take(group.key.index as usize, Some(group.key.seq)));
            if let Some(close) = closed_at
                && let Some(i) = find_seq(&st, close)
            {
                taken.extend(st.take(i, Some(close)));
            }
            taken
        };
        for (seq, e) in taken {
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
        self.check_list(&group.key)?;
        let mut todo = {
            let mut st = self.state.lock();
            let Some(m) = open_marker(&st, &group.key) else {
                return Err(Error::NotOnList);
            };
            let (first, last) = (group.key.seq, m.closed_at.unwrap_or(u64::MAX));
            // Entries taken off from now on may still be referenced through stale handles:
            // from here on, handle reads check their slot.
            self.bulk.store(true, Ordering::Release);
            // Colour pass: for each group with a marker in range, count its markers in range,
            // plus one if the group is still open. Two means wholly inside.
            let mut colours: Vec<(u64, u8)> = Vec::new();
            let mut plain: Vec<usize> = Vec::new();
            for (i, slot) in st.slots.iter().enumerate() {
                let Some(seq) = slot.occupied() else {
                    continue;
                };
                if seq < first || seq > last {
                    continue;
                }
                match st.marker_at(i) {
                    Some((_, mk)) => {
                        let extra = u8::from(mk.open && mk.closed_at.is_none());
                        match colours.iter_mut().find(|(g, _)| *g == mk.group) {
                            Some((_, c)) => *c += 1 + extra,
                            None => colours.push((mk.group, 1 + extra)),
                        }
                    }
                    None => plain.push(i),
                }
            }
            // Markers of the groups wholly inside the range go too.
            let wholly: Vec<u64> = colours
                .into_iter()
                .filter(|&(_, c)| c >= 2)
                .map(|(g, _)| g)
                .collect();
            if !wholly.is_empty() {
                plain.extend((0..st.slots.len()).filter(|&i| {
                    st.marker_at(i)
                        .is_some_and(|(_, mk)| wholly.contains(&mk.group))
                }));
            }
            // Take from the top down: emptying the list (which resets the slot table) can only
            // happen at the last take.
            plain.sort_unstable_by(|a, b| b.cmp(a));
            let mut todo: Vec<(u64, Entry<C>)> = Vec::with_capacity(plain.len());
            for i in plain {
                todo.extend(st.take(i, None));
            }
            todo
        };
        todo.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
        let mut sink = PanicSink::default();
        let mut released = 0;
        for (seq, entry) in todo {
            if !matches!(entry.payload, Payload::Marker(_)) {
                released += 1;
            }
            trace::entry(Op::Rel, self, seq, &entry.site, entry.kind(), entry.size());
            let site = entry.site;
            if let Err(p) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| entry.release(ctx)))
            {
                sink.record(p, self.owner(), &site);
            }
        }
        Ok(GroupRelease {
            released,
            panic: sink.into_first(),
        })
    }
}

/// The open marker of the group `key`, if it is still on the list.
fn open_marker<C>(st: &State<C>, key: &Key) -> Option<Marker> {
    match st.marker_at(key.index as usize) {
        Some((seq, m)) if seq == key.seq && m.open => Some(m),
        _ => None,
    }
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
}
