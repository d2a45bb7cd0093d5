//! The "hardware": a register window and a DMA-like buffer pool, both memfd mappings. The
//! driver registers them as `Devres` values, so they are revoked (and unmapped) at unbind.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::journal::{Journal, Owner, Tracked};
use crate::memfd::Mapping;

/// Register offsets of the window.
pub mod reg {
    /// The sequence number of the last completed work item (the fence register).
    pub const FENCE: usize = 0;
    /// Vblank interrupts raised so far.
    pub const VBLANK: usize = 4;
    /// The value of the last work item (what the engine wrote into the buffer).
    pub const LAST_VALUE: usize = 8;
}

/// Size of the register window.
pub const WINDOW_SIZE: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain memory: a panic while it was held leaves nothing half-updated that matters here.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The register window (`devm_ioremap`): a memfd mapping read and written word by word.
#[derive(Debug)]
pub struct Registers {
    window: Mutex<Mapping>,
    _tracked: Tracked,
}

impl Registers {
    pub(crate) fn new(journal: &Arc<Journal>) -> std::io::Result<Self> {
        Ok(Registers {
            window: Mutex::new(Mapping::new("vgpu-regs", WINDOW_SIZE)?),
            _tracked: journal.track(
                "hardware",
                Some((
                    Owner::Devres,
                    "register window (4 KiB memfd mapping) unmapped".into(),
                )),
            ),
        })
    }

    /// Reads register `reg` (a byte offset, see [`reg`]).
    pub fn read(&self, reg: usize) -> u32 {
        lock(&self.window).read_u32(reg)
    }

    /// Writes register `reg`.
    pub fn write(&self, reg: usize, value: u32) {
        lock(&self.window).write_u32(reg, value);
    }
}

/// A DMA-like buffer pool (`dmam_alloc_coherent`): one memfd mapping cut into chunks that the
/// engine borrows for the time of a work item.
#[derive(Debug)]
pub struct DmaPool {
    pool: Mutex<Pool>,
    chunk: usize,
    _tracked: Tracked,
}

#[derive(Debug)]
struct Pool {
    map: Mapping,
    free: Vec<usize>,
}

impl DmaPool {
    pub(crate) fn new(
        journal: &Arc<Journal>,
        chunks: usize,
        chunk: usize,
    ) -> std::io::Result<Self> {
        let map = Mapping::new("vgpu-dma", chunks * chunk)?;
        let what = format!(
            "DMA pool ({chunks} x {} KiB memfd mapping) freed",
            chunk / 1024
        );
        Ok(DmaPool {
            pool: Mutex::new(Pool {
                map,
                free: (0..chunks).rev().collect(),
            }),
            chunk,
            _tracked: journal.track("hardware", Some((Owner::Devres, what))),
        })
    }

    /// Size of one chunk in bytes.
    pub fn chunk_size(&self) -> usize {
        self.chunk
    }

    /// Runs `f` on a free chunk, or returns `None` if every chunk is in use.
    pub fn with_chunk<R>(&self, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        let mut pool = lock(&self.pool);
        let i = pool.free.pop()?;
        let at = i * self.chunk;
        let r = f(&mut pool.map.bytes_mut()[at..at + self.chunk]);
        pool.free.push(i);
        Some(r)
    }
}
