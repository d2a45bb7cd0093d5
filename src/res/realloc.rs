//! Resizing a managed byte allocation in place in the release order (`devm_krealloc`).

use std::mem::MaybeUninit;
use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::res::handle::Managed;
use crate::res::list::{Payload, ResourceList, Slot, State};
use crate::trace::{self, Op};

/// Element types of byte handles: `u8` and `MaybeUninit<u8>` (same layout).
pub(crate) trait ByteLike: Sized {}
impl ByteLike for u8 {}
impl ByteLike for MaybeUninit<u8> {}

impl<C> ResourceList<C> {
    /// Replaces the byte allocation of `handle` by one of `new_len` bytes holding its first
    /// bytes, in the same slot with the same sequence number, so its place in the release
    /// order is kept (the kernel's `devm_krealloc` swaps the new node into the old one's
    /// place). The tail is zeroed if `zero_tail`. On error nothing changes.
    ///
    /// Borrowing the handle mutably proves that no reference read through it is alive, so the
    /// old block can be freed.
    ///
    /// # Errors
    ///
    /// [`Error::ForeignHandle`]; [`Error::NotOnList`] if the allocation was released (by a
    /// group release or the list's release); [`Error::OutOfMemory`] or
    /// [`Error::SizeOverflow`] if the new block cannot be allocated.
    pub(crate) fn realloc_bytes<E: ByteLike>(
        &self,
        handle: &mut Managed<[E]>,
        new_len: usize,
        zero_tail: bool,
    ) -> Result<()> {
        self.check_list(&handle.key)?;
        let key = handle.key;
        let (site, old_size, old) = {
            let mut st = self.state.lock();
            let State { slots, arena, .. } = &mut *st;
            let Some(Slot::Occupied { seq, entry }) = slots.get_mut(key.index as usize) else {
                return Err(Error::NotOnList);
            };
            if *seq != key.seq {
                return Err(Error::NotOnList);
            }
            let Payload::Block(block) = &entry.payload else {
                return Err(Error::NotOnList);
            };
            let (new, ptr) = block.resized_bytes(arena, new_len, zero_tail)?;
            let old_size = block.size();
            let old = std::mem::replace(&mut entry.payload, Payload::Block(new));
            // `E` has the layout of `u8`; the slice metadata (the length) is kept by the cast.
            handle.ptr = NonNull::new(ptr.as_ptr() as *mut [E]).expect("non-null");
            (entry.site, old_size, old)
        };
        trace::entry(
            Op::Replace,
            self,
            key.seq,
            &site,
            crate::EntryKind::Alloc,
            old_size,
        );
        if let Payload::Block(old) = old {
            // The old value is dropped outside the lock; its arena block, if any, is reused.
            self.recycle(old.dispose());
        }
        Ok(())
    }
}
