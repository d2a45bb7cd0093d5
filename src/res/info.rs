//! Read-only descriptions of live entries, for debugging and leak reports.

use std::panic::Location;

use crate::res::site::Site;

/// What kind of entry a list holds.
///
/// # Examples
///
/// ```
/// use drmm::EntryKind;
///
/// let dev = drmm::Device::new(());
/// let _ = dev.add_action(|_| {})?;
/// let _buf = dev.kzalloc(8)?;
/// let kinds: Vec<EntryKind> = dev.snapshot().iter().map(|e| e.kind()).collect();
/// assert_eq!(kinds, [EntryKind::Alloc, EntryKind::Action]); // newest first
/// # Ok::<(), drmm::Error>(())
/// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(drmm::EntryKind::GroupOpen.as_str(), "group_open");
    /// ```
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
///
/// # Examples
///
/// ```
/// let dev = drmm::Device::with_name("card0", ());
/// let _fw = dev.kstrdup("firmware")?;
/// let entry = &dev.snapshot()[0];
/// // Display: sequence number, kind, name, size, and where the entry was registered.
/// let expected = format!("#{} alloc kstrdup (8 bytes) at {}", entry.seq(), entry.location());
/// assert_eq!(entry.to_string(), expected);
/// # Ok::<(), drmm::Error>(())
/// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let _a = dev.kzalloc(8)?;
    /// let _b = dev.kzalloc(8)?;
    /// let snap = dev.snapshot();
    /// assert!(snap[0].seq() > snap[1].seq()); // newest first
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The entry's name (the action's expression, the kernel name of the allocation function, or
    /// the type).
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let _ = dev.add_action_named("disable vblank", |_| {})?;
    /// let _ = drmm::add_action!(dev, |_| println!("bye"))?;
    /// let names: Vec<&str> = dev.snapshot().iter().map(|e| e.name()).collect();
    /// assert_eq!(names, ["|_| println!(\"bye\")", "disable vblank"]);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn name(&self) -> &'static str {
        self.site.name()
    }

    /// Where the entry was registered.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let _buf = dev.kzalloc(8)?; // this line is recorded
    /// let here = line!() - 1;
    /// assert_eq!(dev.snapshot()[0].location().line(), here);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn location(&self) -> &'static Location<'static> {
        self.site.location()
    }

    /// Action, allocation or group marker.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let _buf = dev.kzalloc(8)?;
    /// assert_eq!(dev.snapshot()[0].kind(), drmm::EntryKind::Alloc);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn kind(&self) -> EntryKind {
        self.kind
    }

    /// Bytes of user data: the allocation's size, or the size of an action's captured state.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let _table = dev.kcalloc(16, 4)?;
    /// assert_eq!(dev.snapshot()[0].size(), 64);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn size(&self) -> usize {
        self.size
    }

    /// For allocations, the element type (`"u8"` for raw bytes).
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let _bytes = dev.kzalloc(8)?;
    /// let _value = dev.alloc(3u64)?;
    /// let snap = dev.snapshot();
    /// assert_eq!(snap[0].type_name(), Some("u64"));
    /// assert_eq!(snap[1].type_name(), Some("u8"));
    /// # Ok::<(), drmm::Error>(())
    /// ```
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
