//! Read-only descriptions of live entries, for debugging and leak reports.

use std::panic::Location;

use crate::res::site::Site;

/// What kind of entry a list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryKind {
    /// A release action (`drmm_add_action`, `devm_add_action`).
    Action,
    /// A managed allocation (`drmm_kmalloc`, a typed value, ...).
    Alloc,
    /// The opening marker of a group (`devres_open_group`; the kernel logs it as `grp<`).
    GroupOpen,
    /// The closing marker of a group (`devres_close_group`; the kernel logs it as `grp>`).
    GroupClose,
}

impl EntryKind {
    /// A short lowercase name: `"action"`, `"alloc"`, `"group_open"`, `"group_close"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EntryKind::Action => "action",
            EntryKind::Alloc => "alloc",
            EntryKind::GroupOpen => "group_open",
            EntryKind::GroupClose => "group_close",
        }
    }
}

/// One live entry, as seen by [`snapshot`](crate::device::LogicalDevice::snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    seq: u64,
    site: Site,
    kind: EntryKind,
    size: usize,
    type_name: Option<&'static str>,
}

impl EntryInfo {
    pub(crate) fn new(
        seq: u64,
        site: Site,
        kind: EntryKind,
        size: usize,
        type_name: Option<&'static str>,
    ) -> Self {
        EntryInfo {
            seq,
            site,
            kind,
            size,
            type_name,
        }
    }

    /// The entry's age on its list: larger is newer; never reused within a list.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The entry's name (the action's expression, the helper's kernel name, or the type).
    pub fn name(&self) -> &'static str {
        self.site.name()
    }

    /// Where the entry was registered.
    pub fn location(&self) -> &'static Location<'static> {
        self.site.location()
    }

    /// Action, allocation or group marker.
    pub fn kind(&self) -> EntryKind {
        self.kind
    }

    /// Bytes of user data: the allocation's size, or the size of an action's captured state.
    pub fn size(&self) -> usize {
        self.size
    }

    /// For allocations, the element type (`"u8"` for raw bytes).
    pub fn type_name(&self) -> Option<&'static str> {
        self.type_name
    }
}

impl std::fmt::Display for EntryInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "#{} {} {} ({} bytes) at {}",
            self.seq,
            self.kind.as_str(),
            self.name(),
            self.size,
            self.location()
        )
    }
}
