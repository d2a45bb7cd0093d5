//! Managed memory: one block per managed allocation, owned by its list entry.
//!
//! The kernel puts a 40-byte header in front of every `drmm_kmalloc` block. Here the block is
//! exactly the user's data (what `Box` would allocate) and the bookkeeping lives in the list's
//! slot. Small blocks come from the list's arena (no allocator call at all, see `arena.rs`);
//! larger or more aligned ones cost one allocator call, like `Box`.

use std::alloc::{self, Layout};
use std::mem;
use std::ptr::{self, NonNull};

use crate::error::{Error, Result};
use crate::res::arena::{Arena, is_pooled, is_pooled_size};
use crate::res::erased::{
    BIG, BigHeader, EntryVTable, Word, no_call, no_drop_action, no_drop_elems,
};
use crate::res::info::EntryKind;

/// The smallest alignment of a raw byte allocation (`drmm_kmalloc`), like the kernel's
/// `ARCH_KMALLOC_MINALIGN`/`ARCH_DMA_MINALIGN` on the architectures that need it.
///
/// # Examples
///
/// ```
/// let dev = drmm::Device::new(());
/// let buf = dev.kmalloc(3)?;
/// assert_eq!(buf.get(&dev)?.as_ptr() as usize % drmm::res::MIN_BYTE_ALIGN, 0);
/// # Ok::<(), drmm::Error>(())
/// ```
pub const MIN_BYTE_ALIGN: usize = 16;
/// The largest alignment a raw byte allocation may ask for (one 4 KiB page). Larger requests
/// are [`Error::InvalidAlignment`].
///
/// # Examples
///
/// ```
/// use drmm::res::MAX_BYTE_ALIGN;
///
/// let dev = drmm::Device::new(());
/// assert!(dev.kzalloc_aligned(64, MAX_BYTE_ALIGN).is_ok());
/// assert!(matches!(
///     dev.kzalloc_aligned(64, MAX_BYTE_ALIGN * 2),
///     Err(drmm::Error::InvalidAlignment { .. })
/// ));
/// ```
pub const MAX_BYTE_ALIGN: usize = 4096;

struct TypedVTable<U>(std::marker::PhantomData<U>);

impl<U> TypedVTable<U> {
    const VTABLE: EntryVTable = EntryVTable {
        kind: EntryKind::Alloc,
        size: mem::size_of::<U>(),
        align: mem::align_of::<U>(),
        type_name: std::any::type_name::<U>,
        needs_drop: mem::needs_drop::<U>(),
        call: no_call,
        drop_action: no_drop_action,
        drop_elems: drop_elems::<U>,
    };
}

/// # Safety
///
/// `p` must point to `len` initialised, properly aligned `U`s that are not used afterwards.
unsafe fn drop_elems<U>(p: *mut u8, len: usize) {
    // SAFETY: guaranteed by the caller.
    unsafe { ptr::drop_in_place(ptr::slice_from_raw_parts_mut(p.cast::<U>(), len)) }
}

fn byte_type_name() -> &'static str {
    "u8"
}

const fn byte_vtable(align: usize) -> EntryVTable {
    EntryVTable {
        kind: EntryKind::Alloc,
        size: 1,
        align,
        type_name: byte_type_name,
        needs_drop: false,
        call: no_call,
        drop_action: no_drop_action,
        drop_elems: no_drop_elems,
    }
}

/// One vtable per supported byte alignment, `MIN_BYTE_ALIGN ..= MAX_BYTE_ALIGN`.
static BYTE_VTABLES: [EntryVTable; 9] = [
    byte_vtable(16),
    byte_vtable(32),
    byte_vtable(64),
    byte_vtable(128),
    byte_vtable(256),
    byte_vtable(512),
    byte_vtable(1024),
    byte_vtable(2048),
    byte_vtable(4096),
];

/// Checks a requested byte alignment and raises it to [`MIN_BYTE_ALIGN`].
#[inline]
pub(crate) fn byte_align(align: usize) -> Result<usize> {
    if !align.is_power_of_two() || align > MAX_BYTE_ALIGN {
        return Err(Error::InvalidAlignment { align });
    }
    Ok(align.max(MIN_BYTE_ALIGN))
}

/// A block of memory owned by a list entry, in the packed form a list slot stores.
///
/// # Invariants
///
/// `vtable` is the [`EntryVTable`] of a block (`kind` is [`EntryKind::Alloc`]). If
/// `aux != BIG`, `word` holds the data pointer `ptr` and `len = aux`; otherwise `word` holds a
/// pointer to a [`BigHeader`] `{ ptr, len }` allocated with the global allocator and
/// `Layout::new::<BigHeader>()`, owned by the block (lengths of `u32::MAX` elements or more).
/// `ptr` points to `len` initialised elements described by `vtable` (for byte blocks made by
/// [`Block::bytes`] the elements may be uninitialised bytes, which need no initialisation to be
/// dropped). With `layout = vtable.elem_size * len / vtable.align`: if
/// [`is_pooled(layout)`](is_pooled) the memory is a block of the arena of the list that owns the
/// entry (the arena outlives the block); otherwise it was allocated with the global allocator
/// and `layout`, or is dangling and well aligned when the size is zero. The block owns the
/// elements: nothing else drops them.
pub(crate) struct Block {
    vtable: &'static EntryVTable,
    aux: u32,
    word: Word,
}

// SAFETY: typed blocks are only made for `U: Send + Sync` (see `Block::value` and
// `Block::copied`); byte blocks hold plain bytes.
unsafe impl Send for Block {}
// SAFETY: as above; a `Block` gives no access to its elements through `&self`.
unsafe impl Sync for Block {}

#[inline]
fn allocate(arena: &mut Arena, layout: Layout, zeroed: bool) -> Result<NonNull<u8>> {
    if is_pooled(layout) {
        let p = arena.alloc(layout)?;
        if zeroed {
            // SAFETY: a fresh arena block: its size class's bytes, aligned to 16.
            unsafe { zero_pooled(p, layout.size()) };
        }
        return Ok(p);
    }
    if layout.size() == 0 {
        // A dangling pointer with the requested alignment: unique enough for a zero-size
        // block, never dereferenced for more than zero bytes, never freed.
        return Ok(NonNull::<u8>::dangling().with_addr(
            std::num::NonZeroUsize::new(layout.align()).expect("alignment is non-zero"),
        ));
    }
    let p = if zeroed {
        // SAFETY: `layout` has a non-zero size.
        unsafe { alloc::alloc_zeroed(layout) }
    } else {
        // SAFETY: `layout` has a non-zero size.
        unsafe { alloc::alloc(layout) }
    };
    NonNull::new(p).ok_or(Error::oom(layout))
}

/// Zeroes an arena block for `size` bytes, rounded up to its 16-byte size class: blocks of up
/// to 64 bytes (the common `kzalloc` sizes) with a few inline stores instead of a call to
/// `memset` (whose call and size dispatch cost as much as the rest of a small add's
/// bookkeeping).
///
/// # Safety
///
/// `p` must be an arena block of at least `size` bytes (`0 < size <= MAX_POOLED`), which the
/// arena sizes to a multiple of 16 bytes, aligned to 16, owned by the caller.
#[inline(always)]
unsafe fn zero_pooled(p: NonNull<u8>, size: usize) {
    let p = p.as_ptr();
    // The block holds `size.div_ceil(16) * 16` bytes (its size class) and is aligned to 16,
    // more than the 8 that `[u64; N]` needs.
    match size.div_ceil(16) {
        // SAFETY: 16 bytes, as above.
        1 => unsafe { p.cast::<[u64; 2]>().write([0; 2]) },
        // SAFETY: as above.
        2 => unsafe { p.cast::<[u64; 4]>().write([0; 4]) },
        // SAFETY: as above.
        3 => unsafe { p.cast::<[u64; 6]>().write([0; 6]) },
        // SAFETY: as above.
        4 => unsafe { p.cast::<[u64; 8]>().write([0; 8]) },
        // SAFETY: the block holds at least `size` bytes.
        _ => unsafe { p.write_bytes(0, size) },
    }
}

/// Frees `ptr`, allocated by [`allocate`] with `layout`, if it came from the global allocator
/// (arena memory stays with the arena).
///
/// # Safety
///
/// `ptr` must have been returned by [`allocate`] for `layout`, hold nothing that needs
/// dropping, and not be used afterwards.
unsafe fn free_heap(ptr: NonNull<u8>, layout: Layout) {
    if layout.size() != 0 && !is_pooled(layout) {
        // SAFETY: allocated with the global allocator and exactly this layout (the caller).
        unsafe { alloc::dealloc(ptr.as_ptr(), layout) }
    }
}

impl Block {
    /// The packed block of `len` elements at `ptr`, of memory allocated by [`allocate`] with
    /// `layout`. A length of [`BIG`] or more needs a [`BigHeader`]; if that cannot be
    /// allocated the memory is freed and the error returned.
    ///
    /// # Safety
    ///
    /// `ptr` must hold `len` initialised elements described by `vtable` (for bytes: `len`
    /// bytes), allocated by [`allocate`] with `layout`; if the header cannot be allocated,
    /// those elements must need no dropping.
    #[inline(always)]
    unsafe fn pack(
        ptr: NonNull<u8>,
        len: usize,
        vtable: &'static EntryVTable,
        layout: Layout,
    ) -> Result<Self> {
        if len < BIG as usize {
            // INVARIANT: `len` fits `aux`; `word` holds the data pointer.
            return Ok(Block {
                vtable,
                aux: len as u32,
                word: Word::from_ptr(ptr.as_ptr()),
            });
        }
        // Built from scalars on both paths (the cold one returns one pointer), so that the
        // caller keeps the block in registers.
        match Self::big_header(ptr, len) {
            // INVARIANT: `aux` is BIG and `word` points to the block's own header.
            Some(h) => Ok(Block {
                vtable,
                aux: BIG,
                word: Word::from_ptr(h.as_ptr()),
            }),
            None => {
                // SAFETY: the caller's promise: our memory, holding nothing to drop.
                unsafe { free_heap(ptr, layout) };
                Err(Error::oom(Layout::new::<BigHeader>()))
            }
        }
    }

    /// The out-of-line header of a block of [`BIG`] or more elements, or `None` if it could not
    /// be allocated.
    #[cold]
    #[inline(never)]
    fn big_header(ptr: NonNull<u8>, len: usize) -> Option<NonNull<BigHeader>> {
        let hl = Layout::new::<BigHeader>();
        // SAFETY: `BigHeader` is not zero-sized.
        let h = NonNull::new(unsafe { alloc::alloc(hl) }.cast::<BigHeader>())?;
        // SAFETY: `h` is a fresh allocation for one `BigHeader`.
        unsafe { h.write(BigHeader { ptr, len }) };
        Some(h)
    }

    /// The data pointer and the number of elements.
    #[inline(always)]
    fn parts(&self) -> (NonNull<u8>, usize) {
        if self.aux != BIG {
            // SAFETY: by the invariant the word holds the (non-null) data pointer.
            let p = unsafe { self.word.ptr::<u8>() };
            // SAFETY: as above: non-null.
            let p = unsafe { NonNull::new_unchecked(p) };
            (p, self.aux as usize)
        } else {
            // SAFETY: by the invariant the word points to the block's live header.
            let h = unsafe { self.word.ptr::<BigHeader>() };
            // SAFETY: as above: live and initialised.
            let h = unsafe { *h };
            (h.ptr, h.len)
        }
    }

    /// The vtable, `aux` and word, which now own the block.
    #[inline(always)]
    pub(crate) fn into_raw(self) -> (&'static EntryVTable, u32, Word) {
        let this = mem::ManuallyDrop::new(self);
        (this.vtable, this.aux, this.word)
    }

    /// The block whose parts [`into_raw`](Self::into_raw) returned.
    ///
    /// # Safety
    ///
    /// The parts must come from [`into_raw`](Self::into_raw) and not be used again.
    #[inline(always)]
    pub(crate) unsafe fn from_raw(vtable: &'static EntryVTable, aux: u32, word: Word) -> Self {
        debug_assert_eq!(vtable.kind, EntryKind::Alloc);
        // INVARIANT: the parts of a block, handed over by the caller.
        Block { vtable, aux, word }
    }

    /// Moves `value` into a new block. On failure `value` is handed back with the error.
    #[inline]
    pub(crate) fn value<U: Send + Sync + 'static>(
        arena: &mut Arena,
        value: U,
    ) -> Result<(Self, NonNull<U>), (Error, U)> {
        let layout = Layout::new::<U>();
        let ptr = match allocate(arena, layout, false) {
            Ok(p) => p,
            Err(e) => return Err((e, value)),
        };
        // SAFETY: `ptr` is valid for writes of one `U` and suitably aligned (fresh allocation
        // of `Layout::new::<U>()`, or dangling-but-aligned for a zero-sized `U`).
        unsafe { ptr::write(ptr.as_ptr().cast::<U>(), value) };
        // INVARIANT: one initialised `U` at `ptr`, allocated with `Layout::new::<U>()`; a
        // length of 1 needs no header.
        let block = Block {
            vtable: &TypedVTable::<U>::VTABLE,
            aux: 1,
            word: Word::from_ptr(ptr.as_ptr()),
        };
        Ok((block, ptr.cast()))
    }

    /// A block of `len` bytes aligned to `align` (already checked by [`byte_align`]),
    /// zeroed if asked.
    #[inline]
    pub(crate) fn bytes(
        arena: &mut Arena,
        len: usize,
        align: usize,
        zeroed: bool,
    ) -> Result<(Self, NonNull<[u8]>)> {
        let index = align.trailing_zeros() as usize - MIN_BYTE_ALIGN.trailing_zeros() as usize;
        let vtable = &BYTE_VTABLES[index];
        debug_assert_eq!(vtable.align, align);
        if is_pooled_size(len, align) {
            // The common case, without building and checking a `Layout` (a pooled size and
            // alignment are valid by construction): about a tenth of a small add.
            let ptr = arena.alloc_size(len)?;
            if zeroed {
                // SAFETY: a fresh arena block of `len` bytes' size class, aligned to 16.
                unsafe { zero_pooled(ptr, len) };
            }
            // INVARIANT: `len <= MAX_POOLED` fits `aux` (below `BIG`); `word` holds the data
            // pointer of `len` bytes in the arena, which need no dropping.
            let block = Block {
                vtable,
                aux: len as u32,
                word: Word::from_ptr(ptr.as_ptr()),
            };
            return Ok((block, NonNull::slice_from_raw_parts(ptr, len)));
        }
        let layout = Layout::from_size_align(len, align).map_err(|_| Error::SizeOverflow {
            what: "allocation size rounded up to its alignment exceeds isize::MAX",
        })?;
        let ptr = allocate(arena, layout, zeroed)?;
        // SAFETY: `len` bytes at `ptr` with `layout`; bytes need no initialisation and no
        // dropping (the handle type says whether they may be read).
        let block = unsafe { Block::pack(ptr, len, vtable, layout) }?;
        Ok((block, NonNull::slice_from_raw_parts(ptr, len)))
    }

    /// A block holding a copy of `src`.
    #[inline]
    pub(crate) fn copied<U: Copy + Send + Sync + 'static>(
        arena: &mut Arena,
        src: &[U],
    ) -> Result<(Self, NonNull<[U]>)> {
        let layout = Layout::array::<U>(src.len()).map_err(|_| Error::SizeOverflow {
            what: "array size exceeds isize::MAX",
        })?;
        let ptr = allocate(arena, layout, false)?;
        // SAFETY: `ptr` is valid for `src.len()` writes of `U` (fresh allocation of exactly
        // that array layout, or dangling for zero bytes) and cannot overlap `src`.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), ptr.as_ptr().cast::<U>(), src.len()) };
        // SAFETY: `src.len()` initialised `U`s at `ptr` allocated with `Layout::array`; `U` is
        // `Copy`, so nothing needs dropping.
        let block = unsafe { Block::pack(ptr, src.len(), &TypedVTable::<U>::VTABLE, layout) }?;
        Ok((block, NonNull::slice_from_raw_parts(ptr.cast(), src.len())))
    }

    /// A new block of `len` bytes, aligned like this one (at least to [`MIN_BYTE_ALIGN`]),
    /// starting with this block's first `min(len, old len)` bytes; the rest is zeroed if
    /// `zero_tail`, uninitialised otherwise. Only for blocks of one-byte elements (checked:
    /// anything else is an error).
    pub(crate) fn resized_bytes(
        &self,
        arena: &mut Arena,
        len: usize,
        zero_tail: bool,
    ) -> Result<(Self, NonNull<[u8]>)> {
        if self.vtable.size != 1 {
            return Err(Error::SizeOverflow {
                what: "only byte allocations can be resized",
            });
        }
        let align = self.vtable.align.max(MIN_BYTE_ALIGN);
        let (block, ptr) = Block::bytes(arena, len, align, zero_tail)?;
        let ((from, old_len), (to, _)) = (self.parts(), block.parts());
        let keep = len.min(old_len);
        // SAFETY: both blocks are valid for at least `keep` bytes (their lengths bound it; a
        // zero-size block's pointer is aligned and non-null, valid for a zero-byte copy), and
        // they are distinct allocations. Bytes that were never initialised stay so: the copy
        // is untyped.
        unsafe { ptr::copy_nonoverlapping(from.as_ptr(), to.as_ptr(), keep) };
        Ok((block, ptr))
    }

    /// Size of the user data in bytes.
    #[inline]
    pub(crate) fn size(&self) -> usize {
        self.vtable.size * self.parts().1
    }

    /// The element type's name (`"u8"` for byte blocks).
    pub(crate) fn type_name(&self) -> &'static str {
        (self.vtable.type_name)()
    }
}

impl Block {
    #[inline]
    fn layout_of(&self, len: usize) -> Layout {
        // SAFETY: the same size and alignment were checked by `Layout` when the block of `len`
        // elements was made.
        unsafe { Layout::from_size_align_unchecked(self.vtable.size * len, self.vtable.align) }
    }

    /// Whether the block with these parts ([`into_raw`](Self::into_raw)) lives in its list's
    /// arena (the arena then owns the memory; nothing else needs freeing when the elements
    /// need no dropping).
    #[inline(always)]
    pub(crate) fn in_arena(vtable: &EntryVTable, aux: u32) -> bool {
        // A length that fits `aux` times the element size: the size of a layout that was
        // checked when the block was made, so no overflow, and no need to check the layout
        // again (building a `Layout` validates it: a third of the cost of releasing a block
        // in a device's final release).
        aux != BIG && is_pooled_size(vtable.size * aux as usize, vtable.align)
    }

    /// Whether dropping the elements runs code (then it must happen outside the list's lock).
    #[inline]
    pub(crate) fn needs_drop(&self) -> bool {
        self.vtable.needs_drop
    }

    /// Drops the elements and frees global-allocator memory; for arena memory, returns the
    /// block and its size so that the caller can [`Arena::recycle`] it.
    #[inline]
    pub(crate) fn dispose(self) -> Option<(NonNull<u8>, usize)> {
        let this = mem::ManuallyDrop::new(self);
        let (ptr, len) = this.parts();
        let layout = this.layout_of(len);
        // SAFETY: consumed here; `ManuallyDrop` keeps `Drop` from doing it again.
        unsafe { this.drop_elements_and_heap_memory() };
        is_pooled(layout).then_some((ptr, layout.size()))
    }

    /// # Safety
    ///
    /// Once only: afterwards the block's elements are dropped and its heap memory freed.
    #[inline]
    unsafe fn drop_elements_and_heap_memory(&self) {
        // Free the memory even if an element's destructor panics.
        struct Free(NonNull<u8>, Layout);
        impl Drop for Free {
            fn drop(&mut self) {
                if self.1.size() != 0 && !is_pooled(self.1) {
                    // SAFETY: the block was allocated with the global allocator and exactly this
                    // layout (the invariant) and its elements are dropped.
                    unsafe { alloc::dealloc(self.0.as_ptr(), self.1) }
                }
            }
        }
        let (ptr, len) = self.parts();
        if self.aux == BIG {
            // SAFETY: by the invariant the word points to the block's header.
            let header = unsafe { self.word.ptr::<u8>() };
            // SAFETY: by the invariant the header was allocated with this layout and is owned
            // by the block; its contents were read above and it is not read again.
            unsafe { alloc::dealloc(header, Layout::new::<BigHeader>()) };
        }
        let _free = Free(ptr, self.layout_of(len));
        if self.vtable.needs_drop {
            // SAFETY: by the invariant `ptr` holds `len` live elements of the vtable's type;
            // the caller makes this the last use of them.
            unsafe { (self.vtable.drop_elems)(ptr.as_ptr(), len) }
        }
    }
}

impl Drop for Block {
    /// Drops the elements; arena memory stays with the arena (reused when the list recycles
    /// it, returned to the system when the list is dropped).
    fn drop(&mut self) {
        // SAFETY: `drop` runs once.
        unsafe { self.drop_elements_and_heap_memory() }
    }
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("type", &self.type_name())
            .field("len", &self.parts().1)
            .field("size", &self.size())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::res::arena::Arena;
    use std::sync::Arc;

    #[test]
    fn typed_block_drops_value_once() {
        let mut arena = Arena::new();
        let v = Arc::new(());
        let (b, p) = Block::value(&mut arena, v.clone()).unwrap();
        assert_eq!(Arc::strong_count(&v), 2);
        // SAFETY: the block is alive and nothing mutates the value.
        assert!(Arc::ptr_eq(unsafe { p.as_ref() }, &v));
        assert_eq!(b.size(), mem::size_of::<Arc<()>>());
        drop(b);
        assert_eq!(Arc::strong_count(&v), 1);
    }

    #[test]
    fn in_arena_agrees_with_where_the_block_was_allocated() {
        let mut arena = Arena::new();
        for (len, align) in [(1, 16), (64, 16), (256, 16), (257, 16), (0, 16), (64, 32)] {
            let (b, _) = Block::bytes(&mut arena, len, align, false).unwrap();
            let (vt, aux, word) = b.into_raw();
            let pooled = is_pooled(Layout::from_size_align(len, align).unwrap());
            assert_eq!(
                Block::in_arena(vt, aux),
                pooled,
                "{len} bytes, align {align}"
            );
            assert_eq!(pooled, len != 0 && len <= 256 && align == 16);
            // SAFETY: the parts just taken from `b`, used once.
            drop(unsafe { Block::from_raw(vt, aux, word) });
        }
        let (b, _) = Block::value(&mut arena, [7u64; 4]).unwrap();
        let (vt, aux, word) = b.into_raw();
        assert!(Block::in_arena(vt, aux));
        // SAFETY: as above.
        drop(unsafe { Block::from_raw(vt, aux, word) });
        let (b, _) = Block::value(&mut arena, [7u64; 40]).unwrap();
        let (vt, aux, word) = b.into_raw();
        assert!(
            !Block::in_arena(vt, aux),
            "320 bytes: from the global allocator"
        );
        // SAFETY: as above.
        drop(unsafe { Block::from_raw(vt, aux, word) });
    }

    #[test]
    fn byte_blocks_are_aligned_and_zeroed() {
        let mut arena = Arena::new();
        for align in [16, 32, 64, 4096] {
            let (b, p) = Block::bytes(&mut arena, 100, align, true).unwrap();
            assert_eq!(p.as_ptr().cast::<u8>() as usize % align, 0);
            // SAFETY: zeroed block of 100 bytes, alive.
            assert!(unsafe { p.as_ref() }.iter().all(|&x| x == 0));
            assert_eq!(b.size(), 100);
        }
    }

    #[test]
    fn small_zeroed_blocks_are_zeroed_when_recycled_dirty() {
        let mut lists = crate::res::arena::FreeLists::new();
        let mut arena = Arena::new();
        // SAFETY: empty lists, outliving the arena (declared before it), used by it alone.
        unsafe { arena.attach(NonNull::from(&mut lists)) };
        for size in [1, 15, 16, 17, 32, 33, 48, 49, 63, 64, 65, 200] {
            let (b, p) = Block::bytes(&mut arena, size, 16, false).unwrap();
            let class = size.div_ceil(16) * 16;
            // SAFETY: an arena block holds its whole size class; not used after recycling.
            unsafe { p.as_ptr().cast::<u8>().write_bytes(0xff, class) };
            let (ptr, freed) = b.dispose().expect("an arena block");
            // SAFETY: from this arena with this size, not used again.
            unsafe { arena.recycle(ptr, freed) };
            let (_b, q) = Block::bytes(&mut arena, size, 16, true).unwrap();
            assert_eq!(
                q.as_ptr().cast::<u8>(),
                ptr.as_ptr(),
                "recycled block reused"
            );
            // SAFETY: a live zeroed block of `size` bytes.
            assert!(unsafe { q.as_ref() }.iter().all(|&x| x == 0), "size {size}");
        }
    }

    #[test]
    fn zero_size_blocks_do_not_allocate() {
        let mut arena = Arena::new();
        let (b, p) = Block::bytes(&mut arena, 0, 64, false).unwrap();
        assert_eq!(p.len(), 0);
        assert_eq!(p.as_ptr().cast::<u8>() as usize % 64, 0);
        assert_eq!(b.size(), 0);
        let (b2, _) = Block::value(&mut arena, ()).unwrap();
        drop((b, b2));
    }

    #[test]
    fn alignment_checks() {
        assert_eq!(byte_align(1).unwrap(), 16);
        assert_eq!(byte_align(256).unwrap(), 256);
        assert!(matches!(
            byte_align(3),
            Err(Error::InvalidAlignment { align: 3 })
        ));
        assert!(byte_align(8192).is_err());
        assert!(byte_align(0).is_err());
    }

    #[test]
    fn huge_byte_block_is_an_error() {
        let mut arena = Arena::new();
        assert!(matches!(
            Block::bytes(&mut arena, isize::MAX as usize, 16, false),
            Err(Error::SizeOverflow { .. })
        ));
    }

    #[test]
    fn copied_block() {
        let mut arena = Arena::new();
        let (b, p) = Block::copied(&mut arena, b"hello").unwrap();
        // SAFETY: alive, initialised copy.
        assert_eq!(unsafe { p.as_ref() }, b"hello");
        assert_eq!(b.type_name(), "u8");
        drop(b);
    }

    #[test]
    fn panicking_element_drop_still_frees() {
        let mut arena = Arena::new();
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("bomb");
            }
        }
        let (b, _) = Block::value(&mut arena, Bomb).map_err(|(e, _)| e).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(b)));
        assert!(r.is_err());
    }
}
