//! The driver: probe and remove, the logical device's data and its mode objects, the vblank
//! interrupt.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use drmm::{Bound, BusDevice, Device, Devres, Driver, LogicalDevice};

use crate::error::Error;
use crate::hw::{DmaPool, Registers, reg};
use crate::journal::{Journal, Owner, Tracked};
use crate::tied::{Journaled, Lifetime, Tied};
use crate::wq::WorkQueue;

/// The driver's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Who owns the userspace-visible state.
    pub lifetime: Lifetime,
    /// Size of each buffer object in bytes.
    pub bo_size: usize,
    /// Chunks in the DMA pool (each `bo_size` bytes).
    pub dma_chunks: usize,
    /// Time between two vblank interrupts.
    pub vblank_period: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lifetime: Lifetime::Drmm,
            bo_size: 64 * 1024,
            dma_chunks: 4,
            vblank_period: Duration::from_millis(1),
        }
    }
}

/// The kind of a mode object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeKind {
    /// A plane (a scanout source).
    Plane,
    /// A CRTC (a scanout engine).
    Crtc,
    /// A connector (a display output).
    Connector,
}

/// A mode object (`drm_plane`, `drm_crtc`, `drm_connector`): userspace-visible state that
/// clients query through their files.
#[derive(Debug)]
pub struct ModeObject {
    name: &'static str,
    kind: ModeKind,
    tracked: Tracked,
}

impl ModeObject {
    /// The object's name (`plane-0`, `crtc-0`, ...).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The object's kind.
    pub fn kind(&self) -> ModeKind {
        self.kind
    }
}

impl Journaled for ModeObject {
    fn tracked_mut(&mut self) -> &mut Tracked {
        &mut self.tracked
    }
}

impl Journaled for WorkQueue {
    fn tracked_mut(&mut self) -> &mut Tracked {
        WorkQueue::tracked_mut(self)
    }
}

/// The mode objects every card has.
pub const MODE_OBJECTS: [(&str, ModeKind); 4] = [
    ("plane-0", ModeKind::Plane),
    ("plane-1", ModeKind::Plane),
    ("crtc-0", ModeKind::Crtc),
    ("connector-0", ModeKind::Connector),
];

/// The name of the work queue's thread.
pub const WORKER: &str = "vgpu-wq";
/// The name of the interrupt thread.
pub const IRQ: &str = "vgpu-irq";

/// The logical device's data (the C driver's container of `struct drm_device`).
#[derive(Debug)]
pub struct Gpu {
    journal: Arc<Journal>,
    config: Config,
    parent: BusDevice,
    /// Hardware: revoked at unbind in every lifetime.
    pub(crate) regs: Devres<Registers>,
    pub(crate) dma: Devres<DmaPool>,
    /// Userspace-visible state: tied to the device (drmm) or, wrongly, to the binding.
    pub(crate) queue: Tied<WorkQueue>,
    objects: Vec<Tied<ModeObject>>,
    pub(crate) next_seq: AtomicU32,
    vblanks: AtomicU64,
    _tracked: Tracked,
}

impl Gpu {
    /// The journal the driver writes to.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// The driver's settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The bus device this card was probed on.
    pub fn parent(&self) -> &BusDevice {
        &self.parent
    }

    /// Vblank interrupts delivered so far.
    pub fn vblanks(&self) -> u64 {
        self.vblanks.load(Ordering::Relaxed)
    }

    /// Runs `f` on tied state, or journals a caught use-after-free of `what()` and returns
    /// [`Error::UseAfterFree`].
    pub(crate) fn access<T: Send + Sync, R>(
        &self,
        dev: &LogicalDevice<Gpu>,
        tied: &Tied<T>,
        what: impl FnOnce() -> String,
        f: impl FnOnce(&T) -> R,
    ) -> Result<R, Error> {
        tied.with(dev, f).ok_or_else(|| {
            let what = what();
            self.journal.caught(what.clone());
            Error::UseAfterFree { what }
        })
    }

    /// Reads every mode object (a `GETRESOURCES`-like query: no hardware, no gate). Each
    /// object that cannot be reached is journaled; the first one is the error.
    pub(crate) fn display(&self, dev: &LogicalDevice<Gpu>) -> Result<Vec<String>, Error> {
        let connected = !dev.is_unplugged();
        let mut seen = Vec::new();
        let mut first_error = None;
        for (tied, (name, _)) in self.objects.iter().zip(MODE_OBJECTS) {
            let r = self.access(
                dev,
                tied,
                || format!("mode object {name}"),
                |o| match o.kind {
                    ModeKind::Connector if connected => format!("{} connected", o.name),
                    ModeKind::Connector => format!("{} disconnected", o.name),
                    _ => o.name.to_owned(),
                },
            );
            match r {
                Ok(s) => seen.push(s),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(seen),
        }
    }

    /// The drmm action `drm_mode_config_cleanup`: walks every mode object at the last
    /// reference, before they are freed.
    fn mode_config_cleanup(&self, dev: &LogicalDevice<Gpu>) {
        let reached = self
            .objects
            .iter()
            .zip(MODE_OBJECTS)
            .filter(|(tied, (name, _))| {
                self.access(dev, tied, || format!("mode object {name}"), |_| ())
                    .is_ok()
            })
            .count();
        self.journal.released(
            Owner::Drmm,
            format!(
                "mode config cleaned up ({reached} of {} objects reachable)",
                self.objects.len()
            ),
        );
    }

    /// The drmm action `destroy_workqueue`: drains and stops the worker at the last reference.
    fn destroy_queue(&self, dev: &LogicalDevice<Gpu>) {
        let stopped = self.access(
            dev,
            &self.queue,
            || format!("work queue {WORKER}"),
            |q| q.shutdown(),
        );
        if stopped.is_ok() {
            self.journal.released(
                Owner::Drmm,
                format!("work queue {WORKER} destroyed (worker drained and stopped)"),
            );
        }
    }
}

/// The binding's data: the card (the driver's reference to it).
#[derive(Debug)]
pub struct Binding {
    card: Device<Gpu>,
    _tracked: Tracked,
}

impl Binding {
    /// The card probed on this binding.
    pub fn card(&self) -> &Device<Gpu> {
        &self.card
    }
}

/// The vblank interrupt: a thread raising one interrupt per period, stopped at unbind
/// (`free_irq`).
struct Irq {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Irq {
    fn start(card: Device<Gpu>) -> std::io::Result<Irq> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let alive = card.data().journal.track("thread", None);
        let period = card.data().config.vblank_period;
        let thread = thread::Builder::new().name(IRQ.into()).spawn(move || {
            let _alive = alive;
            while !s.load(Ordering::Acquire) {
                // The handler touches the hardware: inside the gate, through the revocable.
                if let Some(_inside) = card.enter()
                    && let Some(regs) = card.data().regs.try_access()
                {
                    regs.write(reg::VBLANK, regs.read(reg::VBLANK).wrapping_add(1));
                    card.data().vblanks.fetch_add(1, Ordering::Relaxed);
                }
                thread::sleep(period);
            }
        })?;
        Ok(Irq { stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.thread.join();
    }
}

/// The virtual GPU driver.
///
/// Probe registers, in this order: the register window and the DMA pool (`Devres`), the
/// logical device `card0` (tied to the binding, `devm_drm_dev_alloc`) with its work queue and
/// mode objects (on its drmm list, or under [`Lifetime::DevmEverywhere`] on the binding), the
/// drmm actions that tear them down, the vblank interrupt (a devres action), and registers the
/// card. Remove unplugs the card.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use vgpu::{Binding, Client, Journal, VgpuDriver};
///
/// let journal = Journal::new();
/// let bus = drmm::Bus::new("platform");
/// let pdev = bus.add_device("vgpu.0");
/// pdev.bind(Arc::new(VgpuDriver::new(Default::default(), journal.clone())))?;
/// let card = pdev.with_bound(|b| b.driver_data::<Binding>().map(|d| d.card().clone()))?.unwrap();
/// let mut client = Client::open(&card, 1)?;
/// let bo = client.create_bo()?;
/// client.map(bo)?;
/// assert_eq!(client.submit(bo, 7, None)?.wait(), Ok(1));
/// assert_eq!(client.read(bo)?, 7);
/// pdev.remove()?; // hot-unplug
/// assert_eq!(client.submit(bo, 8, None).unwrap_err(), vgpu::Error::Unplugged);
/// assert_eq!(client.read(bo)?, 7, "the mapping is still readable");
/// drop(card);
/// assert!(client.close().last, "the last close releases card0");
/// assert!(journal.leaks().is_empty());
/// # Ok::<(), vgpu::Error>(())
/// ```
#[derive(Debug)]
pub struct VgpuDriver {
    config: Config,
    journal: Arc<Journal>,
}

impl VgpuDriver {
    /// A driver with `config`, writing to `journal`.
    pub fn new(config: Config, journal: Arc<Journal>) -> Self {
        VgpuDriver { config, journal }
    }
}

fn os(what: &str) -> impl FnOnce(std::io::Error) -> drmm::Error + '_ {
    move |e| drmm::Error::probe_failed(format!("{what}: {e}"))
}

impl Driver for VgpuDriver {
    type Data = Binding;

    fn name(&self) -> &str {
        "vgpu"
    }

    fn probe(&self, bound: &mut Bound<'_>) -> drmm::Result<Binding> {
        let j = &self.journal;
        let config = self.config.clone();
        let lifetime = config.lifetime;
        let bound = &*bound;
        // Hardware first: released last at unbind.
        let regs = Devres::new(bound, Registers::new(j).map_err(os("register window"))?)?;
        let dma = Devres::new(
            bound,
            DmaPool::new(j, config.dma_chunks, config.bo_size).map_err(os("DMA pool"))?,
        )?;
        let card = Device::try_new_on(bound, "card0", |dev| {
            let queue = WorkQueue::new(j, WORKER)?;
            let queue = Tied::new(lifetime, dev, bound, queue)?;
            let _ = dev.add_action_named("destroy_workqueue", |d: &LogicalDevice<Gpu>| {
                if let Some(gpu) = d.try_data() {
                    gpu.destroy_queue(d);
                }
            })?;
            let mut objects = Vec::with_capacity(MODE_OBJECTS.len());
            for (name, kind) in MODE_OBJECTS {
                let object = ModeObject {
                    name,
                    kind,
                    tracked: j.track("mode object", Some((Owner::Drmm, format!("{name} freed")))),
                };
                objects.push(Tied::new(lifetime, dev, bound, object)?);
            }
            let _ = dev.add_action_named("drm_mode_config_cleanup", |d: &LogicalDevice<Gpu>| {
                if let Some(gpu) = d.try_data() {
                    gpu.mode_config_cleanup(d);
                }
            })?;
            Ok(Gpu {
                journal: j.clone(),
                config: config.clone(),
                parent: bound.device().clone(),
                regs,
                dma,
                queue,
                objects,
                next_seq: AtomicU32::new(0),
                vblanks: AtomicU64::new(0),
                _tracked: j.track(
                    "driver data",
                    Some((Owner::Device, "driver data (Gpu) dropped, last".into())),
                ),
            })
        })?;
        let irq = Irq::start(card.clone()).map_err(os("interrupt"))?;
        let journal = j.clone();
        let _ = bound.add_action_or_reset_named("free_irq", move || {
            irq.stop();
            journal.released(
                Owner::Devres,
                format!("interrupt thread {IRQ} stopped (free_irq)"),
            );
        })?;
        card.register()?;
        Ok(Binding {
            card,
            _tracked: j.track(
                "binding data",
                Some((
                    Owner::Devres,
                    "binding data dropped (its card0 reference)".into(),
                )),
            ),
        })
    }

    fn remove(&self, bound: &mut Bound<'_>, data: &Binding) {
        self.journal
            .milestone(format!("unplug of card0 ({} unbinding)", bound.name()));
        // Waits for everyone inside the gate: in-flight work finishes first.
        data.card.unplug();
    }
}
