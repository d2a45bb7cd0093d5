//! A virtual GPU driver built only on drmm's public API, on real operating-system resources.
//!
//! * The "hardware" is a register window in a memfd, mapped with `mmap`, reached through a
//!   [`Devres`] (revoked at unbind).
//! * An interrupt source is a thread raising vblank interrupts; a devm action stops it at
//!   unbind (`free_irq`).
//! * The logical device `card0` is created on the binding (`devm_drm_dev_alloc`); its
//!   framebuffers are memfd mappings allocated as drmm resources: userspace-visible state that
//!   must outlive the hardware.
//! * Two clients (threads) open the card, map a framebuffer each, and render and flip frames.
//!   Halfway through, the device is hot-unplugged: the clients keep rendering into their live
//!   mappings (that memory is theirs until the last close), and their flips, which touch the
//!   hardware, see the unplug gate closed.
//!
//! Run with `cargo run --example vgpu` (`RUST_LOG=drmm=debug` shows every list operation).

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("this example uses Linux memfds");
}

#[cfg(target_os = "linux")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    vgpu::run()
}

#[cfg(target_os = "linux")]
mod vgpu {
    use std::ffi::c_void;
    use std::os::fd::OwnedFd;
    use std::ptr::NonNull;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Barrier, Mutex};
    use std::thread;
    use std::time::Duration;

    use drmm::{Bound, Bus, Device, Devres, Driver, LogicalDevice, Managed};
    use rustix::fs::{MemfdFlags, ftruncate, memfd_create};
    use rustix::mm::{MapFlags, ProtFlags, mmap, munmap};

    /// Shared memory backed by a memfd and mapped into this process.
    ///
    /// # Invariants
    ///
    /// `ptr` is the start of a live, readable and writable `MAP_SHARED` mapping of `len` bytes
    /// of `_fd`, unmapped only by `Drop`.
    struct Mapping {
        ptr: NonNull<u8>,
        len: usize,
        _fd: OwnedFd,
    }

    // SAFETY: the mapping is plain memory owned by this value; reads need `&self`, writes
    // `&mut self`, so the usual borrow rules serialise access like for a `Box<[u8]>`.
    unsafe impl Send for Mapping {}
    // SAFETY: as above: `&Mapping` only reads.
    unsafe impl Sync for Mapping {}

    impl Mapping {
        fn new(name: &str, len: usize) -> std::io::Result<Self> {
            let fd = memfd_create(name, MemfdFlags::CLOEXEC)?;
            ftruncate(&fd, len as u64)?;
            // SAFETY: a fresh shared mapping of a file we own and sized above; no other Rust
            // object aliases the returned memory.
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
            // INVARIANT: mapped just above, `len` bytes, read/write.
            Ok(Mapping { ptr, len, _fd: fd })
        }

        fn bytes(&self) -> &[u8] {
            // SAFETY: by the invariant the mapping is live and `len` bytes long; `&self`
            // excludes writers.
            unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
        }

        fn bytes_mut(&mut self) -> &mut [u8] {
            // SAFETY: as for `bytes`; `&mut self` makes this the only access.
            unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `new`, unmapped once; nothing borrows it any more.
            let _ = unsafe { munmap(self.ptr.as_ptr().cast::<c_void>(), self.len) };
        }
    }

    /// The register window: the hardware.
    struct Registers(Mutex<Mapping>);

    const REG_SCANOUT: usize = 0;
    const REG_STATUS: usize = 4;

    impl Registers {
        fn write(&self, reg: usize, value: u32) {
            let mut m = self.0.lock().unwrap();
            m.bytes_mut()[reg..reg + 4].copy_from_slice(&value.to_le_bytes());
        }
        fn read(&self, reg: usize) -> u32 {
            let m = self.0.lock().unwrap();
            u32::from_le_bytes(m.bytes()[reg..reg + 4].try_into().unwrap())
        }
    }

    /// The logical device's data: userspace-visible, lives until the last reference.
    struct Gpu {
        regs: Arc<Devres<Registers>>,
        vblanks: AtomicU64,
        flips: AtomicU64,
    }

    impl Drop for Gpu {
        fn drop(&mut self) {
            println!(
                "  card0 data dropped last: {} vblanks, {} flips",
                self.vblanks.load(Ordering::Relaxed),
                self.flips.load(Ordering::Relaxed)
            );
        }
    }

    /// The binding's data.
    struct Binding {
        card: Device<Gpu>,
    }

    struct VgpuDriver;

    impl Driver for VgpuDriver {
        type Data = Binding;

        fn name(&self) -> &str {
            "vgpu"
        }

        fn probe(&self, dev: &mut Bound<'_>) -> drmm::Result<Binding> {
            let window = Mapping::new("vgpu-regs", 4096)
                .map_err(|e| drmm::Error::probe_failed(format!("mapping registers: {e}")))?;
            let regs = Arc::new(Devres::new(dev, Registers(Mutex::new(window)))?);
            let gpu = Gpu {
                regs: regs.clone(),
                vblanks: AtomicU64::new(0),
                flips: AtomicU64::new(0),
            };
            let card = Device::new_on(dev, "card0", gpu)?;
            // The interrupt source: a thread raising vblanks until the binding goes.
            let stop = Arc::new(AtomicBool::new(false));
            let (s, c) = (stop.clone(), card.clone());
            let irq = thread::spawn(move || {
                while !s.load(Ordering::Acquire) {
                    // The handler touches the hardware: inside the gate, through the revocable.
                    if let Some(_inside) = c.enter()
                        && let Some(r) = c.data().regs.try_access()
                    {
                        r.write(REG_STATUS, r.read(REG_STATUS).wrapping_add(1));
                        c.data().vblanks.fetch_add(1, Ordering::Relaxed);
                    }
                    thread::sleep(Duration::from_micros(500));
                }
            });
            let _ = drmm::add_action_or_reset!(dev, move || {
                stop.store(true, Ordering::Release);
                let _ = irq.join();
                println!("  devm: interrupt thread stopped (free_irq)");
            })?;
            let _ = drmm::add_action!(card, |_: &LogicalDevice<Gpu>| {
                println!("  drmm: mode config cleaned up (at the last reference)")
            })?;
            card.register()?;
            println!("  probe: card0 registered, interrupts on");
            Ok(Binding { card })
        }

        fn remove(&self, _dev: &mut Bound<'_>, data: &Binding) {
            println!("  remove: unplugging card0 (waits for everyone inside the gate)");
            data.card.unplug();
        }
    }

    /// A client's per-file state: its framebuffer, a drmm allocation of the card.
    struct Client {
        id: usize,
        fb: Managed<Mutex<Mapping>>,
        rendered: u64,
        flipped: u64,
        refused: u64,
    }

    pub(super) fn run() -> Result<(), Box<dyn std::error::Error>> {
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "drmm=warn".into());
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .without_time()
            .init();

        println!("bind the driver to platform device gpu.0");
        let bus = Bus::new("platform");
        let pdev = bus.add_device("gpu.0");
        pdev.bind(Arc::new(VgpuDriver))?;
        let card = pdev.with_bound(|b| b.driver_data::<Binding>().map(|d| d.card.clone()))?;
        let card = card.ok_or("no driver data")?;

        println!("two clients open card0 and map a framebuffer each");
        let mut files = Vec::new();
        for id in 0..2 {
            let fb = Mapping::new("vgpu-fb", 64 * 1024)?;
            let fb = card.alloc(Mutex::new(fb))?;
            files.push(card.open(Client {
                id,
                fb,
                rendered: 0,
                flipped: 0,
                refused: 0,
            })?);
        }
        drop(card);

        let halfway = Arc::new(Barrier::new(3));
        let clients: Vec<_> = files
            .into_iter()
            .map(|mut file| {
                let halfway = halfway.clone();
                thread::spawn(move || {
                    for frame in 0..40u32 {
                        if frame == 20 {
                            halfway.wait(); // the unplug happens here
                            halfway.wait();
                        }
                        // Render: CPU writes into the client's own mapping. Always allowed.
                        let device = file.device().clone();
                        let client = file.data_mut();
                        let fb = client.fb.get(&device).expect("the card is alive");
                        fb.lock().unwrap().bytes_mut().fill(frame as u8);
                        client.rendered += 1;
                        // Flip: touches the hardware, so only inside the gate.
                        match device.enter() {
                            Some(_inside) => match device.data().regs.try_access() {
                                Some(regs) => {
                                    regs.write(REG_SCANOUT, frame);
                                    device.data().flips.fetch_add(1, Ordering::Relaxed);
                                    client.flipped += 1;
                                }
                                None => client.refused += 1,
                            },
                            None => client.refused += 1,
                        }
                        thread::sleep(Duration::from_micros(300));
                    }
                    file
                })
            })
            .collect();

        halfway.wait();
        println!("hot-unplug gpu.0 while the clients hold files and mappings");
        pdev.remove()?;
        println!("  gpu.0 gone; card0 still alive for its clients");
        halfway.wait();

        for c in clients {
            let file = c.join().expect("client thread");
            let device = file.device().clone();
            let client = file.data();
            let last = client.fb.get(&device)?.lock().unwrap().bytes()[0];
            println!(
                "client {}: rendered {} frames (last pixel {}), flipped {}, refused after unplug {}",
                client.id, client.rendered, last, client.flipped, client.refused
            );
            drop(device);
            println!("client {} closes its file", client.id);
            file.close();
        }
        println!("done: the last close released card0");
        Ok(())
    }
}
