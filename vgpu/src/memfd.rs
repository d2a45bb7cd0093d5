//! Shared memory backed by a memfd and mapped into this process: the "hardware" windows and
//! the buffer objects' pages are real operating-system mappings, not vectors.
//!
//! On systems without memfds the same type is heap memory, so that the crate still builds.

/// A read/write mapping of `len` bytes, unmapped when dropped.
#[derive(Debug)]
pub struct Mapping {
    inner: imp::Inner,
}

impl Mapping {
    /// Creates a memfd named `name` of `len` bytes (zeroed) and maps it shared.
    ///
    /// # Errors
    ///
    /// The operating system's error from `memfd_create`, `ftruncate` or `mmap`.
    pub fn new(name: &str, len: usize) -> std::io::Result<Self> {
        Ok(Mapping {
            inner: imp::Inner::new(name, len)?,
        })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        self.inner.bytes()
    }

    /// The mapped bytes, mutably.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.inner.bytes_mut()
    }

    /// The mapping's length in bytes.
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// Whether the mapping is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the little-endian 32-bit word at byte offset `at`.
    ///
    /// # Panics
    ///
    /// If `at + 4` is past the end.
    pub fn read_u32(&self, at: usize) -> u32 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&self.bytes()[at..at + 4]);
        u32::from_le_bytes(w)
    }

    /// Writes the little-endian 32-bit word at byte offset `at`.
    ///
    /// # Panics
    ///
    /// If `at + 4` is past the end.
    pub fn write_u32(&mut self, at: usize, value: u32) {
        self.bytes_mut()[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::ffi::c_void;
    use std::os::fd::OwnedFd;
    use std::ptr::NonNull;

    use rustix::fs::{MemfdFlags, ftruncate, memfd_create};
    use rustix::mm::{MapFlags, ProtFlags, mmap, munmap};

    /// # Invariants
    ///
    /// `ptr` is the start of a live, readable and writable `MAP_SHARED` mapping of `len` bytes
    /// of a memfd, unmapped only by `Drop`. The descriptor itself is closed once mapped (the
    /// mapping keeps the file), so thousands of buffers do not run into the open-file limit.
    #[derive(Debug)]
    pub(super) struct Inner {
        ptr: NonNull<u8>,
        len: usize,
    }

    // SAFETY: the mapping is plain memory owned by this value; reads need `&self`, writes
    // `&mut self`, so the borrow rules serialise access as for a `Box<[u8]>`.
    unsafe impl Send for Inner {}
    // SAFETY: as above: `&Inner` only reads.
    unsafe impl Sync for Inner {}

    impl Inner {
        pub(super) fn new(name: &str, len: usize) -> std::io::Result<Self> {
            let fd = memfd_create(name, MemfdFlags::CLOEXEC)?;
            ftruncate(&fd, len as u64)?;
            if len == 0 {
                // `mmap` refuses empty mappings: an empty slice needs none.
                return Ok(Inner {
                    ptr: NonNull::dangling(),
                    len,
                });
            }
            // SAFETY: a fresh shared mapping of a file we own and sized above; no Rust object
            // aliases the memory it returns.
            let p = unsafe {
                mmap(
                    std::ptr::null_mut(),
                    len,
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::SHARED,
                    &fd,
                    0,
                )?
            };
            let ptr = NonNull::new(p.cast::<u8>()).ok_or(std::io::ErrorKind::Other)?;
            drop::<OwnedFd>(fd);
            // INVARIANT: mapped just above, `len` bytes, read/write.
            Ok(Inner { ptr, len })
        }

        pub(super) fn bytes(&self) -> &[u8] {
            // SAFETY: by the invariant the mapping is live and `len` bytes long (or `len` is 0
            // and the pointer dangling but aligned); `&self` excludes writers.
            unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
        }

        pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
            // SAFETY: as for `bytes`; `&mut self` makes this the only access.
            unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
        }
    }

    impl Drop for Inner {
        fn drop(&mut self) {
            if self.len == 0 {
                return;
            }
            // SAFETY: the mapping made in `new`, unmapped once; nothing borrows it any more.
            let _ = unsafe { munmap(self.ptr.as_ptr().cast::<c_void>(), self.len) };
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    #[derive(Debug)]
    pub(super) struct Inner(Box<[u8]>);

    impl Inner {
        pub(super) fn new(_name: &str, len: usize) -> std::io::Result<Self> {
            Ok(Inner(vec![0; len].into_boxed_slice()))
        }
        pub(super) fn bytes(&self) -> &[u8] {
            &self.0
        }
        pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
            &mut self.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Mapping;

    #[test]
    fn a_mapping_is_zeroed_readable_and_writable() {
        let mut m = Mapping::new("t", 4096).unwrap();
        assert_eq!(m.len(), 4096);
        assert!(m.bytes().iter().all(|&b| b == 0));
        m.write_u32(8, 0xdead_beef);
        assert_eq!(m.read_u32(8), 0xdead_beef);
        assert!(Mapping::new("empty", 0).unwrap().is_empty());
    }
}
