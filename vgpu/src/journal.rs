//! What happened, in order: releases, notes and caught use-after-free accesses, plus live
//! counts of every object the driver makes (the leak check).
//!
//! The driver writes here from whichever thread does the work (a client closing its file, the
//! work queue, the thread unbinding the device); the demo prints it and the tests read it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Which owner released something: the answer to "who freed it, and when".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// The logical device's drmm list: released at the last reference.
    Drmm,
    /// The bus device's devres list (or a `Devres` revoked at unbind): released at unbind.
    Devres,
    /// A reference count (buffer objects follow the files and mappings holding them).
    Refcount,
    /// The logical device itself: its driver data, dropped after every drmm entry.
    Device,
}

impl Owner {
    /// A short name: `drmm`, `devres`, `refcount`, `device`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Owner::Drmm => "drmm",
            Owner::Devres => "devres",
            Owner::Refcount => "refcount",
            Owner::Device => "device",
        }
    }
}

/// An access the library refused because the value had been revoked: in C, where the value
/// would simply have been freed at unbind, a use-after-free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    /// What was accessed (e.g. `connector-0 (mode object)`).
    pub what: String,
    /// Which thread tried: a client (`client-2`), the work queue, ...
    pub by: String,
    /// The last lifecycle event before the access (e.g. `unbind of vgpu.0`).
    pub after: String,
}

impl fmt::Display for Incident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} read by {} after the {}",
            self.what, self.by, self.after
        )
    }
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Something the driver owned was released by `owner`.
    Released {
        /// Who released it.
        owner: Owner,
        /// What it was.
        what: String,
    },
    /// A lifecycle moment or a fact worth telling.
    Note(String),
    /// A use-after-free the library caught.
    Caught(Incident),
}

/// Created and released counts of one kind of object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// How many were made.
    pub created: u64,
    /// How many are gone.
    pub released: u64,
}

impl Count {
    /// How many are still alive.
    pub fn live(&self) -> u64 {
        self.created - self.released
    }
}

#[derive(Debug, Default)]
struct Inner {
    events: Vec<Event>,
    milestone: String,
    counts: BTreeMap<&'static str, Count>,
}

/// The driver's journal (see the module docs). Shared as `Arc<Journal>`.
#[derive(Debug, Default)]
pub struct Journal {
    inner: Mutex<Inner>,
}

impl Journal {
    /// An empty journal.
    pub fn new() -> Arc<Self> {
        Arc::new(Journal::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The journal is plain data: a panic elsewhere does not make it inconsistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a lifecycle moment: later caught accesses say they came after it.
    pub fn milestone(&self, what: impl Into<String>) {
        let what = what.into();
        let mut inner = self.lock();
        inner.milestone.clone_from(&what);
        inner.events.push(Event::Note(what));
    }

    /// The last milestone.
    pub fn last_milestone(&self) -> String {
        self.lock().milestone.clone()
    }

    /// Records a fact.
    pub fn note(&self, what: impl Into<String>) {
        self.lock().events.push(Event::Note(what.into()));
    }

    /// Records that `owner` released `what`.
    pub fn released(&self, owner: Owner, what: impl Into<String>) {
        self.lock().events.push(Event::Released {
            owner,
            what: what.into(),
        });
    }

    /// Records a caught use-after-free of `what` by the current thread, and returns it.
    pub fn caught(&self, what: impl Into<String>) -> Incident {
        let by = std::thread::current()
            .name()
            .unwrap_or("an unnamed thread")
            .to_owned();
        let mut inner = self.lock();
        let incident = Incident {
            what: what.into(),
            by,
            after: inner.milestone.clone(),
        };
        inner.events.push(Event::Caught(incident.clone()));
        incident
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// The events from index `from` on, and the index to continue from.
    pub fn events_since(&self, from: usize) -> (Vec<Event>, usize) {
        let inner = self.lock();
        let from = from.min(inner.events.len());
        (inner.events[from..].to_vec(), inner.events.len())
    }

    /// Every caught use-after-free so far.
    pub fn incidents(&self) -> Vec<Incident> {
        self.lock()
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Caught(i) => Some(i.clone()),
                _ => None,
            })
            .collect()
    }

    /// What `owner` released, in order.
    pub fn released_by(&self, owner: Owner) -> Vec<String> {
        self.lock()
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Released { owner: o, what } if *o == owner => Some(what.clone()),
                _ => None,
            })
            .collect()
    }

    /// Created/released counts per kind of object (`buffer object`, `thread`, ...).
    pub fn counts(&self) -> Vec<(&'static str, Count)> {
        self.lock().counts.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// The kinds of object with live instances, and how many: empty when nothing leaked.
    pub fn leaks(&self) -> Vec<(&'static str, u64)> {
        self.counts()
            .into_iter()
            .filter(|(_, c)| c.live() > 0)
            .map(|(k, c)| (k, c.live()))
            .collect()
    }

    /// Counts one more `kind`; the returned guard counts it released when dropped and, if
    /// `release` says who releases it, journals that.
    pub(crate) fn track(
        self: &Arc<Self>,
        kind: &'static str,
        release: Option<(Owner, String)>,
    ) -> Tracked {
        self.lock().counts.entry(kind).or_default().created += 1;
        Tracked {
            journal: self.clone(),
            kind,
            release,
        }
    }
}

/// A live object counted by the journal (see [`Journal::counts`]).
#[derive(Debug)]
pub(crate) struct Tracked {
    journal: Arc<Journal>,
    kind: &'static str,
    release: Option<(Owner, String)>,
}

impl Tracked {
    /// Who will release the object, if it changed since it was made (a `Devres` value is
    /// released by the devres side, whatever its kind).
    pub(crate) fn set_owner(&mut self, owner: Owner) {
        if let Some((o, _)) = &mut self.release {
            *o = owner;
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut inner = self.journal.lock();
        inner.counts.entry(self.kind).or_default().released += 1;
        if let Some((owner, what)) = self.release.take() {
            inner.events.push(Event::Released { owner, what });
        }
    }
}
