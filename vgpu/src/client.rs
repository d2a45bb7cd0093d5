//! Clients: open files of the card, with their buffer objects, mappings and work.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use drmm::device::File;
use drmm::{Device, LogicalDevice};

use crate::bo::{Bo, BoMap};
use crate::error::Error;
use crate::gpu::{Gpu, WORKER};
use crate::hw::reg;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The completion of one work item (`dma_fence`): its sequence number, or why it did not run.
#[derive(Debug, Clone)]
pub struct Fence {
    inner: Arc<FenceInner>,
}

#[derive(Debug, Default)]
struct FenceInner {
    result: Mutex<Option<Result<u32, Error>>>,
    signaled: Condvar,
}

/// The producer side of a fence: signals [`Error::Canceled`] if dropped unsignaled (work
/// dropped without running).
struct Signal(Arc<FenceInner>);

impl Signal {
    fn signal(self, r: Result<u32, Error>) {
        *lock(&self.0.result) = Some(r);
        self.0.signaled.notify_all();
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        let mut result = lock(&self.0.result);
        if result.is_none() {
            *result = Some(Err(Error::Canceled));
            self.0.signaled.notify_all();
        }
    }
}

impl Fence {
    fn new() -> (Fence, Signal) {
        let inner = Arc::new(FenceInner::default());
        (
            Fence {
                inner: inner.clone(),
            },
            Signal(inner),
        )
    }

    /// Waits for the work item: its sequence number, or the reason it did not run.
    ///
    /// # Errors
    ///
    /// [`Error::Canceled`] for work queued before the unplug that had not started.
    pub fn wait(&self) -> Result<u32, Error> {
        let mut result = lock(&self.inner.result);
        loop {
            if let Some(r) = &*result {
                return r.clone();
            }
            result = self
                .inner
                .signaled
                .wait(result)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The result if the work item is done.
    pub fn poll(&self) -> Option<Result<u32, Error>> {
        lock(&self.inner.result).clone()
    }
}

/// A scheduling point for reproducible interleavings: the work item that carries it, once
/// inside the gate, says so and stays there until the device's unplug has begun (at most 10
/// seconds), like a long job the hardware is still running when the device goes away.
#[derive(Debug, Default)]
pub struct Stall {
    entered: Mutex<bool>,
    cv: Condvar,
}

impl Stall {
    /// A new stall point.
    pub fn new() -> Arc<Stall> {
        Arc::new(Stall::default())
    }

    /// Waits until the work item is inside the gate; `false` after `timeout`.
    pub fn wait_entered(&self, timeout: Duration) -> bool {
        let (entered, _) = self
            .cv
            .wait_timeout_while(lock(&self.entered), timeout, |e| !*e)
            .unwrap_or_else(PoisonError::into_inner);
        *entered
    }

    fn hold(&self, dev: &LogicalDevice<Gpu>) {
        *lock(&self.entered) = true;
        self.cv.notify_all();
        let start = Instant::now();
        while !dev.is_unplugged() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

/// A client's per-file state.
#[derive(Debug)]
struct ClientState {
    // Mappings first: dropped before the buffers, as `munmap` comes before the last close.
    maps: Vec<Option<BoMap>>,
    bos: Vec<Arc<Bo>>,
    pending: Vec<Fence>,
}

/// What [`Client::close`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    /// Buffer objects the file held.
    pub buffers: usize,
    /// Whether the file held the card's last reference when it closed (so the close released
    /// the card). A snapshot taken just before: when other references go at the same moment,
    /// every close may see another one and report `false`.
    pub last: bool,
}

/// An open file of the card, used by one client thread.
#[derive(Debug)]
pub struct Client {
    id: usize,
    file: File<Gpu, ClientState>,
}

impl Client {
    /// Opens the card (`open("/dev/dri/card0")`).
    ///
    /// # Errors
    ///
    /// [`Error::Unplugged`] once the card is unplugged.
    pub fn open(card: &Device<Gpu>, id: usize) -> Result<Client, Error> {
        let file = card.open(ClientState {
            maps: Vec::new(),
            bos: Vec::new(),
            pending: Vec::new(),
        })?;
        Ok(Client { id, file })
    }

    /// The client's number.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The card.
    pub fn card(&self) -> &Device<Gpu> {
        self.file.device()
    }

    /// Creates a buffer object (`DRM_IOCTL_MODE_CREATE_DUMB`) and returns its handle. Pure
    /// software: no gate.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if the memfd cannot be made; under `DevmEverywhere`,
    /// [`Error::Unplugged`] once the binding is gone.
    pub fn create_bo(&mut self) -> Result<u32, Error> {
        let handle = u32::try_from(self.file.data().bos.len() + 1).map_err(|_| Error::Busy)?;
        let bo = Bo::new(self.file.device().data(), self.id, handle)?;
        let state = self.file.data_mut();
        state.bos.push(Arc::new(bo));
        state.maps.push(None);
        Ok(handle)
    }

    fn index(&self, handle: u32) -> Result<usize, Error> {
        let i = (handle as usize).wrapping_sub(1);
        if i < self.file.data().bos.len() {
            Ok(i)
        } else {
            Err(Error::NoBuffer(handle))
        }
    }

    /// Maps a buffer object into the client (`mmap`).
    ///
    /// # Errors
    ///
    /// [`Error::NoBuffer`] for an unknown handle.
    pub fn map(&mut self, handle: u32) -> Result<(), Error> {
        let i = self.index(handle)?;
        let state = self.file.data_mut();
        let bo = state.bos[i].clone();
        state.maps[i] = Some(BoMap::new(bo));
        Ok(())
    }

    /// Submits a work item (an `EXECBUFFER`-like ioctl, inside the gate): the engine fills
    /// buffer `handle` with `value` through a DMA chunk and writes the fence register. With
    /// `stall`, the item waits inside the gate for the unplug (see [`Stall`]).
    ///
    /// # Errors
    ///
    /// [`Error::Unplugged`] once the card is unplugged; [`Error::NoBuffer`].
    pub fn submit(
        &mut self,
        handle: u32,
        value: u32,
        stall: Option<Arc<Stall>>,
    ) -> Result<Fence, Error> {
        let dev = self.file.device().clone();
        let _inside = dev.enter().ok_or(Error::Unplugged)?;
        let bo = self.file.data().bos[self.index(handle)?].clone();
        let (fence, signal) = Fence::new();
        let job_dev = dev.clone();
        let work: crate::wq::Work = Box::new(move || run(job_dev, bo, value, stall, signal));
        let gpu = dev.data();
        gpu.access(
            &dev,
            &gpu.queue,
            || format!("work queue {WORKER}"),
            |q| q.queue(work),
        )?
        .map_err(|_| Error::Unplugged)?;
        let pending = &mut self.file.data_mut().pending;
        pending.retain(|f| f.poll().is_none());
        pending.push(fence.clone());
        Ok(fence)
    }

    /// Reads buffer `handle` through the client's mapping: the value the last work item wrote.
    /// No gate: the pages belong to the buffer, not to the hardware.
    ///
    /// # Errors
    ///
    /// [`Error::NoBuffer`], [`Error::NotMapped`]; [`Error::UseAfterFree`] under
    /// `DevmEverywhere` after the unbind.
    pub fn read(&self, handle: u32) -> Result<u32, Error> {
        let i = self.index(handle)?;
        let map = self.file.data().maps[i]
            .as_ref()
            .ok_or(Error::NotMapped(handle))?;
        map.bo.read()
    }

    /// Copies bytes of buffer `handle` from `offset` into `buf` through the client's mapping
    /// (a `read(2)` of the buffer's pages), returning how many were copied: fewer at the end
    /// of the buffer, 0 past it. No gate, like [`Client::read`]: callers that stand for the
    /// hardware enter it themselves.
    ///
    /// # Errors
    ///
    /// [`Error::NoBuffer`], [`Error::NotMapped`]; [`Error::UseAfterFree`] under
    /// `DevmEverywhere` after the unbind.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use vgpu::{Binding, Client, Journal, VgpuDriver};
    ///
    /// let bus = drmm::Bus::new("platform");
    /// let pdev = bus.add_device("vgpu.0");
    /// pdev.bind(Arc::new(VgpuDriver::new(Default::default(), Journal::new())))?;
    /// let card = pdev.with_bound(|b| b.driver_data::<Binding>().map(|d| d.card().clone()))?.unwrap();
    /// let mut client = Client::open(&card, 1)?;
    /// let bo = client.create_bo()?;
    /// let mut word = [0u8; 4];
    /// assert_eq!(client.read_at(bo, 0, &mut word), Err(vgpu::Error::NotMapped(bo)));
    /// client.map(bo)?;
    /// client.submit(bo, 7, None)?.wait()?;
    /// assert_eq!(client.read_at(bo, 8, &mut word)?, 4);
    /// assert_eq!(u32::from_le_bytes(word), 7);
    /// let size = card.data().config().bo_size;
    /// assert_eq!(client.read_at(bo, size - 2, &mut word)?, 2, "short at the end");
    /// assert_eq!(client.read_at(bo, size + 1, &mut word)?, 0, "nothing past it");
    /// assert_eq!(client.read_at(2, 0, &mut word), Err(vgpu::Error::NoBuffer(2)));
    /// pdev.remove()?;
    /// # Ok::<(), vgpu::Error>(())
    /// ```
    pub fn read_at(&self, handle: u32, offset: usize, buf: &mut [u8]) -> Result<usize, Error> {
        let i = self.index(handle)?;
        let map = self.file.data().maps[i]
            .as_ref()
            .ok_or(Error::NotMapped(handle))?;
        map.bo.read_at(offset, buf)
    }

    /// Reads the mode objects (a `GETRESOURCES`-like ioctl: no hardware, no gate).
    ///
    /// # Errors
    ///
    /// [`Error::UseAfterFree`] under `DevmEverywhere` after the unbind (every unreachable
    /// object is journaled).
    pub fn query_display(&self) -> Result<Vec<String>, Error> {
        let dev = self.file.device();
        dev.data().display(dev)
    }

    /// Closes the file (`drm_release`): the driver's `postclose` flushes the client's work
    /// from the work queue, then the file's buffers and mappings go, then its reference to
    /// the card. Returns whether that was the card's last reference.
    pub fn close(self) -> Closed {
        let dev = self.file.device();
        let gpu = dev.data();
        let flushed = gpu.access(
            dev,
            &gpu.queue,
            || format!("work queue {WORKER}"),
            |q| q.flush(),
        );
        if flushed.is_err() {
            // The queue is gone (the devm bug): wait for this file's work directly.
            for f in &self.file.data().pending {
                let _ = f.wait();
            }
        }
        let buffers = self.file.data().bos.len();
        let last = Device::ref_count(dev) == 1;
        self.file.close();
        Closed { buffers, last }
    }
}

/// A work item on the engine.
fn run(dev: Device<Gpu>, bo: Arc<Bo>, value: u32, stall: Option<Arc<Stall>>, signal: Signal) {
    let result = execute(&dev, &bo, value, stall.as_deref());
    // Drop the references first: the client may close as soon as the fence is signaled, and
    // the last reference to the card must not be left to the worker.
    drop(bo);
    drop(dev);
    signal.signal(result);
}

fn execute(dev: &Device<Gpu>, bo: &Bo, value: u32, stall: Option<&Stall>) -> Result<u32, Error> {
    let _inside = dev.enter().ok_or(Error::Canceled)?;
    if let Some(stall) = stall {
        stall.hold(dev);
    }
    let gpu = dev.data();
    // Inside the gate the hardware cannot be revoked: the unbind revokes after the unplug,
    // which waits for this section.
    let regs = gpu.regs.try_access().ok_or(Error::Canceled)?;
    let dma = gpu.dma.try_access().ok_or(Error::Canceled)?;
    dma.with_chunk(|chunk| {
        for w in chunk.chunks_exact_mut(4) {
            w.copy_from_slice(&value.to_le_bytes());
        }
        bo.write(chunk)
    })
    .ok_or(Error::Busy)??;
    let seq = gpu
        .next_seq
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    regs.write(reg::LAST_VALUE, value);
    regs.write(reg::FENCE, seq);
    Ok(seq)
}
