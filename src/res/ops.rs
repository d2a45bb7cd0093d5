//! The operations shared by every owner's API (drmm on logical devices, devres on bus
//! bindings): registering actions and making managed allocations on a list, with the failure
//! traces. Owners wrap these in methods that carry their kernel names and documentation.

use std::fmt;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::res::action::Action;
use crate::res::alloc::byte_align;
use crate::res::handle::{ActionHandle, Managed};
use crate::res::list::{Entry, Payload, ResourceList};
use crate::res::site::Site;
use crate::trace;

/// Default alignment of raw byte allocations: [`MIN_BYTE_ALIGN`](crate::res::MIN_BYTE_ALIGN).
pub(crate) const DEFAULT_ALIGN: usize = crate::res::MIN_BYTE_ALIGN;

/// An action whose registration failed, still to be run or dropped by the caller.
pub(crate) enum Unregistered<C, F> {
    /// Boxing the closure failed: the closure itself.
    Closure(F),
    /// The list could not grow: the closure, already erased.
    Erased(Action<C>),
}

impl<C, F: FnOnce(&C)> Unregistered<C, F> {
    /// Runs the action that could not be registered (`_or_reset`).
    pub(crate) fn run(self, ctx: &C) {
        match self {
            Unregistered::Closure(f) => f(ctx),
            Unregistered::Erased(a) => a.call(ctx),
        }
    }
}

/// Registers an action on `list`; on failure the action comes back unrun with the error.
#[inline]
pub(crate) fn add_action<C, F>(
    list: &ResourceList<C>,
    site: Site,
    action: F,
) -> std::result::Result<ActionHandle, (Error, Unregistered<C, F>)>
where
    F: FnOnce(&C) + Send + 'static,
{
    let erased = Action::new(action).map_err(|(e, f)| {
        trace::add_failed(list, &site, &e);
        (e, Unregistered::Closure(f))
    })?;
    let entry = Entry {
        site,
        payload: Payload::Action(erased),
    };
    match list.push(entry) {
        Ok(key) => Ok(ActionHandle { key }),
        Err((e, entry)) => {
            trace::add_failed(list, &site, &e);
            match entry.payload {
                Payload::Action(a) => Err((e, Unregistered::Erased(a))),
                Payload::Block(_) | Payload::Marker(_) => {
                    unreachable!("an action entry was pushed")
                }
            }
        }
    }
}

/// Registers an action; if that fails, runs it with `ctx` and returns the error.
pub(crate) fn add_action_or_reset<C, F>(
    list: &ResourceList<C>,
    site: Site,
    action: F,
    ctx: &C,
) -> Result<ActionHandle>
where
    F: FnOnce(&C) + Send + 'static,
{
    add_action(list, site, action).map_err(|(e, action)| {
        action.run(ctx);
        e
    })
}

/// A managed copy of the string `s` (no NUL: Rust strings carry their length).
pub(crate) fn alloc_str<C>(list: &ResourceList<C>, site: Site, s: &str) -> Result<Managed<str>> {
    let bytes = list.alloc_copy(site, s.as_bytes())?;
    // The bytes were copied from a `str`, so they are valid UTF-8; `[u8]` and `str` have the
    // same metadata (the length), so the pointer cast keeps it.
    let ptr = NonNull::new(bytes.ptr.as_ptr() as *mut str).expect("non-null");
    Ok(Managed::new(bytes.key, ptr))
}

/// A managed string formatted from `args` (`kasprintf`).
///
/// Formats twice, as the kernel's `kvasprintf`: once to measure, once into the managed block,
/// so that the only allocation is the block itself and its failure is an error (a `String`
/// would abort). If the second pass comes out longer than the first (a `Display` that is not
/// deterministic), the string is cut at the last character that fits and a warning is logged;
/// if shorter, the string is what was written.
///
/// # Panics
///
/// If a formatting trait implementation returns an error, as `format!` does; the block is
/// freed first.
pub(crate) fn alloc_fmt<C>(
    list: &ResourceList<C>,
    site: Site,
    args: fmt::Arguments<'_>,
) -> Result<Managed<str>> {
    if let Some(s) = args.as_str() {
        return alloc_str(list, site, s);
    }
    let mut measure = Measure(0);
    if fmt::write(&mut measure, args).is_err() {
        panic!("a formatting trait implementation returned an error");
    }
    let bytes = list.alloc_bytes(site, measure.0, DEFAULT_ALIGN, false)?;
    // INVARIANT: a block just made for us, not yet reachable by anyone else; nothing written.
    let mut fill = Fill {
        dst: bytes.ptr,
        len: 0,
        cut: false,
    };
    // `Display` is user code: if it panics, the half-written block is taken off before the
    // panic goes on (the handle, dropped by the unwinding, would leave it on the list).
    let written =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fmt::write(&mut fill, args)));
    match written {
        Ok(Ok(())) => {}
        Ok(Err(_)) => {
            let _ = list.remove(&bytes.key);
            panic!("a formatting trait implementation returned an error");
        }
        Err(p) => {
            let _ = list.remove(&bytes.key);
            std::panic::resume_unwind(p);
        }
    }
    if fill.cut || fill.len != measure.0 {
        tracing::warn!(
            target: "drmm",
            dev_name = list.owner(),
            measured = measure.0,
            written = fill.len,
            "kasprintf: the arguments formatted to a different length the second time",
        );
    }
    // `fill.len` bytes were written as whole UTF-8 characters (`Fill`'s invariant); `[u8]` and
    // `str` have the same metadata (the length), so the pointer cast keeps it.
    let written = NonNull::slice_from_raw_parts(bytes.ptr.cast::<u8>(), fill.len);
    let ptr = NonNull::new(written.as_ptr() as *mut str).expect("non-null");
    Ok(Managed::new(bytes.key, ptr))
}

/// Counts the bytes a formatting produces.
struct Measure(usize);

impl fmt::Write for Measure {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 = self.0.checked_add(s.len()).ok_or(fmt::Error)?;
        Ok(())
    }
}

/// Writes a formatting into a fresh managed block.
///
/// # Invariants
///
/// `dst` is valid for writes of its length in bytes and owned by the writer's caller;
/// `dst[..len]` holds whole UTF-8 characters; `len <= dst.len()`.
struct Fill {
    dst: NonNull<[u8]>,
    len: usize,
    /// Set when a piece did not fit: the rest is dropped.
    cut: bool,
}

impl fmt::Write for Fill {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut {
            return Ok(());
        }
        let room = self.dst.len() - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.cut = n < s.len();
        // SAFETY: `len <= dst.len()` (type invariant), so the offset stays inside the block.
        let at = unsafe { self.dst.cast::<u8>().as_ptr().add(self.len) };
        // SAFETY: `len + n <= dst.len()` (n <= room), so the destination range lies inside the
        // block, which the type invariant makes writable by us alone; `s` cannot overlap a
        // block nobody else has seen yet.
        unsafe { std::ptr::copy_nonoverlapping(s.as_ptr(), at, n) };
        // INVARIANT: `n` stops at a character boundary of `s`, so whole characters were added.
        self.len += n;
        Ok(())
    }
}

/// `size` bytes aligned to `align` (`None`: the default), zeroed if asked.
// Inline: so is `ResourceList::alloc_bytes`, which builds the handle in the caller's registers.
#[inline]
pub(crate) fn alloc_bytes<C>(
    list: &ResourceList<C>,
    site: Site,
    size: usize,
    align: Option<usize>,
    zeroed: bool,
) -> Result<Managed<[u8]>> {
    let align = match align {
        None => DEFAULT_ALIGN,
        Some(a) => byte_align(a).inspect_err(|e| trace::add_failed(list, &site, e))?,
    };
    list.alloc_bytes(site, size, align, zeroed)
}

/// `n * size` bytes, the product checked (`kmalloc_array`, `kcalloc`).
#[inline]
pub(crate) fn alloc_array<C>(
    list: &ResourceList<C>,
    site: Site,
    n: usize,
    size: usize,
    zeroed: bool,
) -> Result<Managed<[u8]>> {
    let total = n
        .checked_mul(size)
        .ok_or(Error::SizeOverflow { what: "n * size" })
        .inspect_err(|e| trace::add_failed(list, &site, e))?;
    alloc_bytes(list, site, total, None, zeroed)
}

/// Retypes a byte handle as possibly-uninitialised bytes.
#[inline]
pub(crate) fn cast_uninit(m: Managed<[u8]>) -> Managed<[MaybeUninit<u8>]> {
    // `MaybeUninit<u8>` has the layout of `u8`; the slice metadata is kept by the cast.
    let ptr = NonNull::new(m.ptr.as_ptr() as *mut [MaybeUninit<u8>]).expect("non-null");
    Managed::new(m.key, ptr)
}
