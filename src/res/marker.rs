//! Group markers: the entries that delimit a group on a list (see `group.rs` for what a group
//! is). A marker is an entry payload like an action or a block, so the list knows it without
//! knowing groups.

use crate::res::erased::{CLOSE_VTABLE, EntryVTable, OPEN_VTABLE};
use crate::res::info::EntryKind;

/// The payload of a group marker entry.
///
/// In a slot, an open marker stores its `closed_at` (0: still open) and a close marker its
/// `group`; an open marker's `group` is its own sequence number.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Marker {
    /// The sequence number of the group's open marker: the group's identity on its list.
    pub(in crate::res) group: u64,
    /// For the open marker: the close marker's sequence number once the group is closed.
    /// For the close marker: `None`.
    pub(in crate::res) closed_at: Option<u64>,
    pub(in crate::res) open: bool,
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
