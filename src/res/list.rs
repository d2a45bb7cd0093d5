//! The resource list: entries in slots, released newest first, exactly once.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};

use crate::error::{Error, Result};
use crate::res::action::Action;
use crate::res::alloc::Block;
use crate::res::info::{EntryInfo, EntryKind};
use crate::res::site::Site;
use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering, lock};
use crate::trace::{self, Op};

/// A panic payload caught while releasing an entry.
pub(crate) type PanicPayload = Box<dyn Any + Send + 'static>;

/// What an entry owns.
pub(crate) enum Payload<C> {
    /// A release action, run at release.
    Action(Action<C>),
    /// A managed allocation, dropped and freed at release.
    Block(Block),
    /// A group marker (see `group.rs`); releasing it does nothing.
    Marker(crate::res::group::Marker),
}

/// One entry of a list.
pub(crate) struct Entry<C> {
    pub(crate) site: Site,
    pub(crate) payload: Payload<C>,
}

impl<C> Entry<C> {
    pub(super) fn kind(&self) -> EntryKind {
        match &self.payload {
            Payload::Action(_) => EntryKind::Action,
            Payload::Block(_) => EntryKind::Alloc,
            Payload::Marker(m) => m.kind(),
        }
    }

    pub(super) fn size(&self) -> usize {
        match &self.payload {
            Payload::Action(a) => a.size(),
            Payload::Block(b) => b.size(),
            Payload::Marker(_) => 0,
        }
    }

    /// Releases the entry: runs the action or drops and frees the allocation.
    pub(super) fn release(self, ctx: &C) {
        match self.payload {
            Payload::Action(a) => a.call(ctx),
            Payload::Block(b) => drop(b),
            Payload::Marker(_) => {}
        }
    }
}

/// Where an entry is: which list, which slot, which incarnation of the slot.
///
/// `seq` is unique within the list and never reused, so it is both the entry's age (release
/// order) and its generation (a key whose slot now holds another entry no longer matches).
// `pub` (though unreachable) because the sealed `ResourceOwner` check names it.
#[allow(unreachable_pub)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub(crate) list: u64,
    pub(crate) index: u32,
    pub(crate) seq: u64,
}

const NO_SLOT: u32 = u32::MAX;

pub(super) enum Slot<C> {
    Vacant { next_free: u32 },
    Occupied { seq: u64, entry: Entry<C> },
}

pub(super) struct State<C> {
    pub(super) slots: Vec<Slot<C>>,
    free_head: u32,
    next_seq: u64,
    live: usize,
    /// A vacant slot below an occupied one was reused, so slot order is no longer age order.
    reordered: bool,
    /// Bulk releases in progress. While one runs, slots are not reused, so entries added during
    /// the release are appended above everything that existed when it began.
    releasing: usize,
}

impl<C> State<C> {
    /// Empties the slot at `index` if it holds the entry `seq`.
    pub(super) fn take(&mut self, index: usize, seq: Option<u64>) -> Option<(u64, Entry<C>)> {
        match self.slots.get(index) {
            Some(Slot::Occupied { seq: s, .. }) if seq.is_none_or(|want| *s == want) => {}
            _ => return None,
        }
        let next_free = if self.releasing == 0 {
            self.free_head
        } else {
            NO_SLOT
        };
        let old = std::mem::replace(&mut self.slots[index], Slot::Vacant { next_free });
        let Slot::Occupied { seq, entry } = old else {
            unreachable!("checked above")
        };
        if self.releasing == 0 {
            self.free_head = index as u32;
        }
        self.live -= 1;
        if self.live == 0 && self.releasing == 0 {
            self.reset();
        }
        Some((seq, entry))
    }

    /// Forgets every vacant slot: the list is empty, so slot order is age order again.
    fn reset(&mut self) {
        debug_assert_eq!(self.live, 0);
        self.slots.clear();
        self.free_head = NO_SLOT;
        self.reordered = false;
    }

    /// Rebuilds the free list after a bulk release that left entries behind (added
    /// concurrently after it finished scanning).
    fn rebuild_free_list(&mut self) {
        self.free_head = NO_SLOT;
        for (i, slot) in self.slots.iter_mut().enumerate().rev() {
            if let Slot::Vacant { next_free } = slot {
                *next_free = self.free_head;
                self.free_head = i as u32;
            }
        }
    }

    /// Removes and returns the newest entry appended at or above `floor`, trimming vacant
    /// slots off the top on the way.
    fn pop_above(&mut self, floor: usize) -> Option<(u64, Entry<C>)> {
        while self.slots.len() > floor {
            let top = self.slots.len() - 1;
            if matches!(self.slots[top], Slot::Occupied { .. }) {
                let taken = self.take(top, None);
                self.slots.truncate(top);
                return taken;
            }
            self.slots.truncate(top);
        }
        None
    }

    /// Index of the newest entry below `floor`, by a full scan (the fallback order when slot
    /// order is not age order and no sort buffer could be allocated).
    fn newest_below(&self, floor: usize) -> Option<usize> {
        self.slots
            .iter()
            .take(floor)
            .enumerate()
            .filter_map(|(i, s)| match s {
                Slot::Occupied { seq, .. } => Some((*seq, i)),
                Slot::Vacant { .. } => None,
            })
            .max()
            .map(|(_, i)| i)
    }
}

/// How a bulk release walks the entries that existed when it began.
enum Walk {
    /// Slot order is age order: walk down from the cursor.
    Down { cursor: usize },
    /// Slots were reused: (seq, index) sorted newest first.
    Sorted { order: Vec<(u64, u32)>, next: usize },
    /// Slots were reused and no sort buffer could be allocated: scan for the newest each time.
    Scan,
}

/// Collects the panics of a bulk release: the first is kept to be resumed, later ones are
/// logged and dropped, none is lost silently (promise 5).
#[derive(Default)]
pub(crate) struct PanicSink {
    first: Option<PanicPayload>,
    count: usize,
}

impl PanicSink {
    pub(crate) fn record(&mut self, payload: PanicPayload, owner: &str, site: &Site) {
        self.count += 1;
        trace::release_panicked(owner, site, panic_message(&*payload), self.first.is_none());
        if self.first.is_none() {
            self.first = Some(payload);
        } else {
            drop_payload(payload);
        }
    }

    /// The first panic, if any.
    pub(crate) fn into_first(self) -> Option<PanicPayload> {
        self.first
    }

    /// Resumes the first panic, or logs it if this thread is already unwinding (a second panic
    /// escaping a destructor during unwinding would abort the process).
    pub(crate) fn resume(payload: Option<PanicPayload>, owner: &str) {
        if let Some(p) = payload {
            if std::thread::panicking() {
                trace::panic_not_resumed(owner, panic_message(&*p));
                drop_payload(p);
            } else {
                panic::resume_unwind(p);
            }
        }
    }
}

/// Drops a panic payload whose own destructor might panic, without letting that escape.
fn drop_payload(p: PanicPayload) {
    if let Err(inner) = panic::catch_unwind(AssertUnwindSafe(move || drop(p))) {
        std::mem::forget(inner);
    }
}

/// The message of a panic payload, when it is a string.
pub(crate) fn panic_message(p: &(dyn Any + Send)) -> &str {
    if let Some(s) = p.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = p.downcast_ref::<String>() {
        s
    } else {
        "<non-string panic payload>"
    }
}

/// Unique identities for lists, so that a handle of one list is recognised on another.
static NEXT_LIST_ID: AtomicU64Static = AtomicU64Static::new(1);

// The list id counter is a process-wide static; loom cannot model statics, and the id is only
// an identity, not a synchronisation point, so it uses std's atomic even under loom.
type AtomicU64Static = std::sync::atomic::AtomicU64;

/// A list of managed resources, released newest first, each exactly once.
///
/// `C` is what release actions receive: the list's owner (a logical device, a bus device).
///
/// # Invariants
///
/// Every occupied slot's `seq` is unique and smaller than `next_seq`; `live` counts the
/// occupied slots; the free list links exactly the vacant slots when no bulk release is running.
pub(crate) struct ResourceList<C> {
    id: u64,
    owner: Box<str>,
    /// Set once a bulk (or group) release has begun; from then on a handle read checks its slot.
    pub(super) bulk: AtomicBool,
    /// Entries ever added (for diagnostics; never decreases).
    added: AtomicU64,
    pub(super) state: Mutex<State<C>>,
}

impl<C> ResourceList<C> {
    /// An empty list whose traces name `owner`, or `"{prefix}{id}"` when no name is given.
    pub(crate) fn new(owner: Option<Box<str>>, prefix: &str) -> Self {
        let id = NEXT_LIST_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ResourceList {
            id,
            owner: owner.unwrap_or_else(|| format!("{prefix}{id}").into()),
            bulk: AtomicBool::new(false),
            added: AtomicU64::new(0),
            state: Mutex::new(State {
                slots: Vec::new(),
                free_head: NO_SLOT,
                next_seq: 1,
                live: 0,
                reordered: false,
                releasing: 0,
            }),
        }
    }

    /// The list's identity.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The owner's name, as used in traces.
    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }

    /// Number of entries on the list.
    pub(crate) fn len(&self) -> usize {
        lock(&self.state).live
    }

    /// Adds `entry` as the newest entry. On failure (the slot table could not grow) the entry
    /// is handed back untouched.
    pub(crate) fn push(&self, entry: Entry<C>) -> Result<Key, (Error, Entry<C>)> {
        let (size, kind, site) = (entry.size(), entry.kind(), entry.site);
        let key = self.insert(&mut lock(&self.state), entry)?;
        self.added.fetch_add(1, Ordering::Relaxed);
        trace::entry(Op::Add, self, key.seq, &site, kind, size);
        Ok(key)
    }

    /// Puts `entry` in a slot as the newest entry, under the caller's lock (no trace).
    pub(super) fn insert(
        &self,
        st: &mut State<C>,
        entry: Entry<C>,
    ) -> Result<Key, (Error, Entry<C>)> {
        let seq = st.next_seq;
        let index = if st.free_head != NO_SLOT && st.releasing == 0 {
            let index = st.free_head as usize;
            let Slot::Vacant { next_free } = st.slots[index] else {
                unreachable!("free list links vacant slots only")
            };
            st.free_head = next_free;
            if index + 1 != st.slots.len() {
                st.reordered = true;
            }
            st.slots[index] = Slot::Occupied { seq, entry };
            index
        } else {
            if st.slots.len() >= NO_SLOT as usize {
                return Err((
                    Error::SizeOverflow {
                        what: "more than u32::MAX - 1 entries on one list",
                    },
                    entry,
                ));
            }
            if st.slots.try_reserve(1).is_err() {
                let layout = std::alloc::Layout::new::<Slot<C>>();
                return Err((Error::oom(layout), entry));
            }
            st.slots.push(Slot::Occupied { seq, entry });
            st.slots.len() - 1
        };
        st.next_seq += 1;
        st.live += 1;
        Ok(Key {
            list: self.id,
            index: index as u32,
            seq,
        })
    }

    /// Counts an entry added with [`insert`](Self::insert) and traces it.
    pub(super) fn note_added(&self, key: &Key, site: &Site, kind: EntryKind) {
        self.added.fetch_add(1, Ordering::Relaxed);
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
        let st = lock(&self.state);
        match st.slots.get(key.index as usize) {
            Some(Slot::Occupied { seq, .. }) if *seq == key.seq => Ok(()),
            _ => Err(Error::NotOnList),
        }
    }

    /// Takes the entry `key` off the list without releasing it.
    fn take(&self, key: &Key) -> Result<Entry<C>> {
        self.check_list(key)?;
        let taken = lock(&self.state).take(key.index as usize, Some(key.seq));
        taken.map(|(_, e)| e).ok_or(Error::NotOnList)
    }

    /// Takes the entry `key` off and releases it now (`drmm_release_action`, `drmm_kfree`).
    /// A panic of the action propagates to the caller; the entry is gone either way.
    pub(crate) fn release(&self, key: &Key, ctx: &C) -> Result<()> {
        let entry = self.take(key)?;
        trace::entry(
            Op::Del,
            self,
            key.seq,
            &entry.site,
            entry.kind(),
            entry.size(),
        );
        entry.release(ctx);
        Ok(())
    }

    /// Takes the entry `key` off without running it (`devm_remove_action`). The action's
    /// captured state (or the allocation) is dropped.
    pub(crate) fn remove(&self, key: &Key) -> Result<()> {
        let entry = self.take(key)?;
        trace::entry(
            Op::Rem,
            self,
            key.seq,
            &entry.site,
            entry.kind(),
            entry.size(),
        );
        drop(entry.payload);
        Ok(())
    }

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
        self.bulk.store(true, Ordering::Release);
        trace::release_begin(self);
        let (floor, mut walk) = {
            let mut st = lock(&self.state);
            st.releasing += 1;
            let floor = st.slots.len();
            let walk = if !st.reordered {
                Walk::Down { cursor: floor }
            } else {
                let mut order = Vec::new();
                if order.try_reserve_exact(st.live).is_ok() {
                    order.extend(st.slots.iter().enumerate().filter_map(|(i, s)| match s {
                        Slot::Occupied { seq, .. } => Some((*seq, i as u32)),
                        Slot::Vacant { .. } => None,
                    }));
                    order.sort_unstable_by(|a, b| b.cmp(a));
                    Walk::Sorted { order, next: 0 }
                } else {
                    Walk::Scan
                }
            };
            (floor, walk)
        };
        let mut sink = PanicSink::default();
        let mut released = 0usize;
        loop {
            let next = {
                let mut st = lock(&self.state);
                // Entries added during this release are newer than everything below `floor`.
                match st.pop_above(floor) {
                    Some(e) => Some(e),
                    None => match &mut walk {
                        Walk::Down { cursor } => {
                            let mut found = None;
                            while *cursor > 0 && found.is_none() {
                                *cursor -= 1;
                                found = st.take(*cursor, None);
                            }
                            found
                        }
                        Walk::Sorted { order, next } => {
                            let mut found = None;
                            while *next < order.len() && found.is_none() {
                                let (seq, index) = order[*next];
                                *next += 1;
                                found = st.take(index as usize, Some(seq));
                            }
                            found
                        }
                        Walk::Scan => st.newest_below(floor).and_then(|i| st.take(i, None)),
                    },
                }
            };
            let Some((seq, entry)) = next else { break };
            released += 1;
            trace::entry(Op::Rel, self, seq, &entry.site, entry.kind(), entry.size());
            let site = entry.site;
            if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| entry.release(ctx))) {
                sink.record(p, &self.owner, &site);
            }
        }
        {
            let mut st = lock(&self.state);
            st.releasing -= 1;
            if st.releasing == 0 {
                if st.live == 0 {
                    st.reset();
                } else {
                    st.rebuild_free_list();
                }
            }
        }
        trace::release_end(self, released);
        sink.into_first()
    }

    /// The live entries, newest first.
    pub(crate) fn snapshot(&self) -> Vec<EntryInfo> {
        let st = lock(&self.state);
        let mut v: Vec<EntryInfo> = st
            .slots
            .iter()
            .filter_map(|s| match s {
                Slot::Occupied { seq, entry } => Some(EntryInfo::new(
                    *seq,
                    entry.site,
                    entry.kind(),
                    entry.size(),
                    match &entry.payload {
                        Payload::Block(b) => Some(b.type_name()),
                        Payload::Action(_) | Payload::Marker(_) => None,
                    },
                )),
                Slot::Vacant { .. } => None,
            })
            .collect();
        v.sort_unstable_by(|a, b| b.seq().cmp(&a.seq()));
        v
    }
}

impl<C> Drop for ResourceList<C> {
    /// A list dropped with entries left (its owner never released it) drops them newest
    /// first without running actions: there is no owner left to pass them. Owners in this
    /// crate always release first.
    fn drop(&mut self) {
        let st = self.state.get_mut();
        #[cfg(not(loom))]
        let st = st.unwrap_or_else(std::sync::PoisonError::into_inner);
        #[cfg(loom)]
        let st = st.unwrap_or_else(|e| e.into_inner());
        let slots = std::mem::take(&mut st.slots);
        let mut entries: Vec<(u64, Entry<C>)> = slots
            .into_iter()
            .filter_map(|s| match s {
                Slot::Occupied { seq, entry } => Some((seq, entry)),
                Slot::Vacant { .. } => None,
            })
            .collect();
        entries.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        for (seq, e) in entries {
            trace::entry(Op::Rem, self, seq, &e.site, e.kind(), e.size());
            drop(e);
        }
    }
}

impl<C> std::fmt::Debug for ResourceList<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceList")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("len", &self.len())
            .finish()
    }
}
