//! The error type shared by every part of the library.
//!
//! The kernel answers bad input with `NULL`, `-ENOMEM`, `-ENOENT` or a `WARN` splat; here every
//! one of those cases is a variant of [`Error`], and the list it concerns is left exactly as it
//! was (promise 6 of the design).

use std::alloc::Layout;

/// Everything that can go wrong in a managed-resource operation.
///
/// Each variant names the kernel behaviour it replaces. The enum is `#[non_exhaustive]`: later
/// layers (bus binding, revocation, the unplug gate) add their own cases.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The allocator refused a request (`-ENOMEM`). The list is unchanged.
    #[error("out of memory allocating {size} bytes (align {align})")]
    OutOfMemory {
        /// Bytes requested.
        size: usize,
        /// Alignment requested.
        align: usize,
    },
    /// A size computation (`n * size`, `len + header`, rounding up to the alignment) overflowed
    /// (`check_mul_overflow` / `check_add_overflow` in the kernel).
    #[error("size overflow: {what}")]
    SizeOverflow {
        /// Which computation overflowed.
        what: &'static str,
    },
    /// An alignment that is not a power of two, or too large to satisfy.
    #[error("invalid alignment {align}")]
    InvalidAlignment {
        /// The alignment asked for.
        align: usize,
    },
    /// The handle belongs to another resource list (another device or binding). The kernel
    /// would scan its list, find nothing and `WARN`; we say which lists were involved.
    #[error("handle of list #{handle_list} used on list #{list}")]
    ForeignHandle {
        /// Identity of the list the handle was created on.
        handle_list: u64,
        /// Identity of the list it was used with.
        list: u64,
    },
    /// The entry is no longer on its list: it was released by a group release or by the list's
    /// own release, or removed (the kernel's "not found" `WARN`).
    #[error("entry is no longer on its list (already released or removed)")]
    NotOnList,
    /// The entry is being released by its list right now, on another thread or further up this
    /// thread's stack; it will have run exactly once when that release completes.
    #[error("entry is being released by its list")]
    Releasing,
}

impl Error {
    /// The error for a failed allocation of `layout`.
    pub(crate) fn oom(layout: Layout) -> Self {
        Error::OutOfMemory {
            size: layout.size(),
            align: layout.align(),
        }
    }
}

/// `Result` with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
