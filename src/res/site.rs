//! Where an entry comes from: its name and the caller's source location.

use std::fmt;
use std::panic::Location;

/// The name of an entry and the source location that registered it.
///
/// The kernel records the stringified action (`#action`) or a fixed name such as `"kmalloc"`,
/// and uses `kmalloc_track_caller` so that slab debugging blames the driver, not the allocation
/// function. The Rust form of both is a `&'static str` plus a [`Location`] captured with
/// `#[track_caller]`.
///
/// # Examples
///
/// ```
/// use drmm::Site;
///
/// let site = Site::caller("my_helper");
/// assert_eq!(site.name(), "my_helper");
/// assert_eq!(site.location().file(), file!());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Site {
    name: &'static str,
    location: &'static Location<'static>,
}

impl Site {
    /// A site with an explicit `name` at an explicit `location`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::panic::Location;
    ///
    /// static SITE: drmm::Site = drmm::Site::new("firmware", Location::caller());
    /// assert_eq!(SITE.name(), "firmware");
    /// ```
    pub const fn new(name: &'static str, location: &'static Location<'static>) -> Self {
        Site { name, location }
    }

    /// A site named `name` at the location of the caller (through every `#[track_caller]`
    /// frame above it).
    ///
    /// # Examples
    ///
    /// ```
    /// #[track_caller]
    /// fn my_kmalloc() -> drmm::Site {
    ///     drmm::Site::caller("my_kmalloc") // blames my_kmalloc's caller, like kmalloc_track_caller
    /// }
    /// let site = my_kmalloc();
    /// assert_eq!(site.location().line(), line!() - 1);
    /// ```
    #[doc(alias = "kmalloc_track_caller")]
    #[track_caller]
    pub fn caller(name: &'static str) -> Self {
        Site {
            name,
            location: Location::caller(),
        }
    }

    /// The entry's name: the action's expression, the type of a typed allocation, or the
    /// kernel's name for the allocation function (`"kmalloc"`, `"kstrdup"`, ...).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(drmm::Site::caller("kstrdup").name(), "kstrdup");
    /// ```
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The source location that registered the entry.
    ///
    /// # Examples
    ///
    /// ```
    /// let site = drmm::Site::caller("kstrdup");
    /// assert_eq!(site.location().line(), line!() - 1);
    /// ```
    pub const fn location(&self) -> &'static Location<'static> {
        self.location
    }
}

impl fmt::Debug for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} @ {}", self.name, self.location)
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
