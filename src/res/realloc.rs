//! Resizing a managed byte allocation in place in the release order (`devm_krealloc`).

use std::mem::{ManuallyDrop, MaybeUninit};
use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::res::alloc::Block;
use crate::res::handle::Managed;
use crate::res::info::EntryKind;
use crate::res::list::{ResourceList, releases_with_arena};
use crate::res::site::Site;
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
        let (site, old) = {
            let mut st = self.state.lock();
            let st = &mut *st;
            let Some(slot) = st.slots.get(key.index as usize) else {
                return Err(Error::NotOnList);
            };
            if slot.occupied() != Some(key.seq) {
                return Err(Error::NotOnList);
            }
            let meta = *st.sites().get(slot.site());
            if meta.vtable.kind != EntryKind::Alloc {
                return Err(Error::NotOnList);
            }
            // SAFETY: the parts of the occupied slot's block, viewed without taking them: the
            // view is never dropped (`ManuallyDrop`) unless it replaces them below.
            let block =
                ManuallyDrop::new(unsafe { Block::from_raw(meta.vtable, slot.aux(), slot.word()) });
            let (new, ptr) = block.resized_bytes(&mut st.arena, new_len, zero_tail)?;
            let (vt, aux, word) = new.into_raw();
            let site_index = match st.intern(meta.name, meta.location, vt) {
                Ok(i) => i,
                Err(e) => {
                    // SAFETY: the parts just taken from `new`, not used again.
                    drop(unsafe { Block::from_raw(vt, aux, word) });
                    return Err(e);
                }
            };
            let slot = st
                .slots
                .get_mut(key.index as usize)
                .expect("the slot checked above, under the same lock");
            // INVARIANT: the slot now owns the new block (same seq, same place); the old block's
            // parts are owned by `block`, taken out of the `ManuallyDrop` below.
            slot.replace_payload(site_index, aux, word);
            st.all_inert &= releases_with_arena(vt, aux);
            // `E` has the layout of `u8`; the slice metadata (the length) is kept by the cast.
            handle.ptr = NonNull::new(ptr.as_ptr() as *mut [E]).expect("non-null");
            (
                Site::new(meta.name, meta.location),
                ManuallyDrop::into_inner(block),
            )
        };
        // The old value is dropped outside the lock; its arena block, if any, is reused. Then
        // the event: the resize is complete whatever its subscriber does.
        self.recycle(old.dispose());
        trace::entry(Op::Replace, self, key.seq, &site, EntryKind::Alloc, new_len);
        Ok(())
    }
}
