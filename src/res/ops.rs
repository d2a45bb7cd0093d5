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
        trace::add_failed(list.owner(), &site, &e);
        (e, Unregistered::Closure(f))
    })?;
    let entry = Entry {
        site,
        payload: Payload::Action(erased),
    };
    match list.push(entry) {
        Ok(key) => Ok(ActionHandle { key }),
        Err((e, entry)) => {
            trace::add_failed(list.owner(), &site, &e);
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
pub(crate) fn alloc_fmt<C>(
    list: &ResourceList<C>,
    site: Site,
    args: fmt::Arguments<'_>,
) -> Result<Managed<str>> {
    match args.as_str() {
        Some(s) => alloc_str(list, site, s),
        None => alloc_str(list, site, &fmt::format(args)),
    }
}

/// `size` bytes aligned to `align` (`None`: the default), zeroed if asked.
pub(crate) fn alloc_bytes<C>(
    list: &ResourceList<C>,
    site: Site,
    size: usize,
    align: Option<usize>,
    zeroed: bool,
) -> Result<Managed<[u8]>> {
    let align = match align {
        None => DEFAULT_ALIGN,
        Some(a) => byte_align(a).inspect_err(|e| trace::add_failed(list.owner(), &site, e))?,
    };
    list.alloc_bytes(site, size, align, zeroed)
}

/// `n * size` bytes, the product checked (`kmalloc_array`, `kcalloc`).
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
        .inspect_err(|e| trace::add_failed(list.owner(), &site, e))?;
    alloc_bytes(list, site, total, None, zeroed)
}

/// Retypes a byte handle as possibly-uninitialised bytes.
pub(crate) fn cast_uninit(m: Managed<[u8]>) -> Managed<[MaybeUninit<u8>]> {
    // `MaybeUninit<u8>` has the layout of `u8`; the slice metadata is kept by the cast.
    let ptr = NonNull::new(m.ptr.as_ptr() as *mut [MaybeUninit<u8>]).expect("non-null");
    Managed::new(m.key, ptr)
}
