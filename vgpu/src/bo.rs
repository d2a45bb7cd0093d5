//! Buffer objects (GEM objects): memfd-backed pages whose lifetime follows the files and
//! mappings holding them.

use std::sync::{Arc, PoisonError, RwLock};

use drmm::Devres;

use crate::error::Error;
use crate::gpu::Gpu;
use crate::journal::{Journal, Owner, Tracked};
use crate::memfd::Mapping;
use crate::tied::Lifetime;

/// A buffer's pages.
#[derive(Debug)]
pub(crate) struct Pages {
    map: RwLock<Mapping>,
    _tracked: Tracked,
}

/// Who owns the pages: the buffer object (correct), or the binding (the devm bug).
#[derive(Debug)]
enum Backing {
    Refcount(Pages),
    Devm(Devres<Pages>),
}

/// A buffer object of one client.
#[derive(Debug)]
pub(crate) struct Bo {
    client: usize,
    handle: u32,
    backing: Backing,
    journal: Arc<Journal>,
    _tracked: Tracked,
}

impl Bo {
    /// A new buffer of the card's buffer size for `client`, named `handle` in its file.
    pub(crate) fn new(gpu: &Gpu, client: usize, handle: u32) -> Result<Bo, Error> {
        let journal = gpu.journal();
        let lifetime = gpu.config().lifetime;
        let owner = match lifetime {
            Lifetime::Drmm => Owner::Refcount,
            Lifetime::DevmEverywhere => Owner::Devres,
        };
        let pages = Pages {
            map: RwLock::new(Mapping::new("vgpu-bo", gpu.config().bo_size)?),
            _tracked: journal.track(
                "buffer pages",
                Some((
                    owner,
                    format!("client-{client} bo {handle}: pages unmapped"),
                )),
            ),
        };
        let backing = match lifetime {
            Lifetime::Drmm => Backing::Refcount(pages),
            // `devm_kzalloc(dev->dev, ...)` in an ioctl: the pages go with the binding.
            Lifetime::DevmEverywhere => Backing::Devm(
                gpu.parent()
                    .with_bound(|b| Devres::new(b, pages))
                    .map_err(|_| Error::Unplugged)??,
            ),
        };
        Ok(Bo {
            client,
            handle,
            backing,
            journal: journal.clone(),
            _tracked: journal.track("buffer object", None),
        })
    }

    /// Runs `f` on the pages, or journals a caught use-after-free (placed at the caller's line
    /// in the trace).
    #[track_caller]
    pub(crate) fn with_pages<R>(&self, f: impl FnOnce(&RwLock<Mapping>) -> R) -> Result<R, Error> {
        match &self.backing {
            Backing::Refcount(p) => Ok(f(&p.map)),
            Backing::Devm(d) => d.try_access_with(|p| f(&p.map)).ok_or_else(|| {
                let what = format!("client-{}'s bo {} pages", self.client, self.handle);
                self.journal.caught(what.clone());
                Error::UseAfterFree { what }
            }),
        }
    }

    /// Reads the first word and checks that the buffer holds one value throughout (what a
    /// work item writes).
    pub(crate) fn read(&self) -> Result<u32, Error> {
        self.with_pages(|m| {
            let m = m.read().unwrap_or_else(PoisonError::into_inner);
            let first = m.read_u32(0);
            let last = m.read_u32(m.len() - 4);
            debug_assert_eq!(first, last, "a buffer holds one value");
            first
        })
    }

    /// Copies the pages from `offset` into `buf`; returns how many bytes were copied.
    pub(crate) fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<usize, Error> {
        self.with_pages(|m| {
            let m = m.read().unwrap_or_else(PoisonError::into_inner);
            let bytes = m.bytes();
            let start = offset.min(bytes.len());
            let n = buf.len().min(bytes.len() - start);
            buf[..n].copy_from_slice(&bytes[start..start + n]);
            n
        })
    }

    /// Copies `src` to the start of the pages.
    pub(crate) fn write(&self, src: &[u8]) -> Result<(), Error> {
        self.with_pages(|m| {
            let mut m = m.write().unwrap_or_else(PoisonError::into_inner);
            let n = src.len().min(m.len());
            m.bytes_mut()[..n].copy_from_slice(&src[..n]);
        })
    }
}

/// A client's CPU mapping of a buffer object (`mmap` of the GEM object): holds the buffer.
#[derive(Debug)]
pub(crate) struct BoMap {
    pub(crate) bo: Arc<Bo>,
    _tracked: Tracked,
}

impl BoMap {
    pub(crate) fn new(bo: Arc<Bo>) -> BoMap {
        let tracked = bo.journal.track("mapping", None);
        BoMap {
            bo,
            _tracked: tracked,
        }
    }
}
