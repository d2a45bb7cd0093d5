//! The lifecycle of a `devm_drm_dev_alloc` driver (docs/architecture.md, "The model"), step by
//! step, through the public API only.

use std::sync::{Arc, Mutex};

use drmm::bus::{Bound, Bus, Devres, Driver};
use drmm::{Device, Error};

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, s: impl Into<String>) {
    log.lock().unwrap().push(s.into());
}

fn take(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

/// Logs its drop.
struct Noisy(Log, &'static str);
impl Drop for Noisy {
    fn drop(&mut self) {
        push(&self.0, self.1);
    }
}

/// The driver data of the virtual GPU: the logical device plus something that logs its drop.
struct GpuData {
    drm: Device<Noisy>,
    _noisy: Noisy,
}

/// A driver shaped like a real DRM driver: devm resources before and after
/// `devm_drm_dev_alloc`, drmm resources on the logical device, optional failure.
struct Vgpu {
    log: Log,
    fail_probe: bool,
}

impl Driver for Vgpu {
    type Data = GpuData;

    fn probe(&self, dev: &mut Bound<'_>) -> drmm::Result<GpuData> {
        let log = self.log.clone();
        let l = log.clone();
        let _ = drmm::add_action!(dev, move || push(&l, "devm: clock off (early)"))?;
        let drm = Device::new_on(dev, "card0", Noisy(log.clone(), "drm driver data"))?;
        let l = log.clone();
        let _ =
            drm.add_action_named("drmm: mode config", move |_| push(&l, "drmm: mode config"))?;
        let l = log.clone();
        let _ = drm.add_action_named("drmm: crtc", move |_| push(&l, "drmm: crtc"))?;
        let l = log.clone();
        let _ = drmm::add_action!(dev, move || push(&l, "devm: irq free (late)"))?;
        if self.fail_probe {
            return Err(Error::probe_failed("no display connected"));
        }
        drm.register()?;
        Ok(GpuData {
            drm,
            _noisy: Noisy(log, "binding driver data"),
        })
    }

    fn remove(&self, _dev: &mut Bound<'_>, data: &GpuData) {
        push(&self.log, "remove");
        data.drm.unplug();
    }
}

fn drm_of(dev: &drmm::BusDevice) -> Device<Noisy> {
    dev.with_bound(|b| b.driver_data::<GpuData>().map(|d| d.drm.clone()))
        .unwrap()
        .unwrap()
}

#[test]
fn probe_failure_releases_everything_probe_registered_newest_first() {
    let log = Log::default();
    let bus = Bus::new("platform");
    let pdev = bus.add_device("vgpu.0");
    let r = pdev.bind(Arc::new(Vgpu {
        log: log.clone(),
        fail_probe: true,
    }));
    assert_eq!(r, Err(Error::probe_failed("no display connected")));
    assert!(!pdev.is_bound());
    assert_eq!(pdev.resource_count(), 0);
    // Later devm first, then the devres action that drops the last drm reference: the drmm
    // entries run newest first and the drm driver data last; then the earlier devm entry.
    assert_eq!(
        take(&log),
        [
            "devm: irq free (late)",
            "drmm: crtc",
            "drmm: mode config",
            "drm driver data",
            "devm: clock off (early)",
        ]
    );
    // The device can be probed again.
    pdev.bind(Arc::new(Vgpu {
        log: log.clone(),
        fail_probe: false,
    }))
    .unwrap();
    assert!(pdev.is_bound());
}

#[test]
fn unbind_without_open_files_releases_drmm_during_unbind_after_later_devm() {
    let log = Log::default();
    let bus = Bus::new("platform");
    let pdev = bus.add_device("vgpu.0");
    pdev.bind(Arc::new(Vgpu {
        log: log.clone(),
        fail_probe: false,
    }))
    .unwrap();
    assert!(take(&log).is_empty());
    pdev.unbind().unwrap();
    assert_eq!(
        take(&log),
        [
            "remove",
            "binding driver data",
            "devm: irq free (late)",
            "drmm: crtc",
            "drmm: mode config",
            "drm driver data",
            "devm: clock off (early)",
        ]
    );
    assert_eq!(pdev.resource_count(), 0);
    assert_eq!(pdev.unbind(), Err(Error::NotBound));
}

#[test]
fn unbind_with_open_files_keeps_drmm_until_the_last_close() {
    let log = Log::default();
    let bus = Bus::new("platform");
    let pdev = bus.add_device("vgpu.0");
    pdev.bind(Arc::new(Vgpu {
        log: log.clone(),
        fail_probe: false,
    }))
    .unwrap();
    let drm = drm_of(&pdev);
    let buf = drm.kzalloc(4096).unwrap(); // live drmm data ("a mapped buffer")
    let file = drm.open(Noisy(log.clone(), "file data")).unwrap();
    let file2 = drm.open(Noisy(log.clone(), "file2 data")).unwrap();
    drop(drm);

    pdev.unbind().unwrap();
    assert_eq!(
        take(&log),
        [
            "remove",
            "binding driver data",
            "devm: irq free (late)",
            "devm: clock off (early)",
        ],
        "no drmm entry ran at unbind: files hold the device"
    );
    // Files opened before the unplug still work for software state, not for hardware.
    assert!(file.device().is_unplugged());
    assert!(file.enter().is_none());
    assert_eq!(buf.get(&**file.device()).unwrap().len(), 4096);
    assert_eq!(file.device().data().1, "drm driver data");
    assert_eq!(file.device().open(()).unwrap_err(), Error::Unplugged);

    drop(file2);
    assert_eq!(take(&log), ["file2 data"]);
    drop(file); // the last close
    assert_eq!(
        take(&log),
        [
            "file data",
            "drmm: crtc",
            "drmm: mode config",
            "drm driver data"
        ]
    );
}

#[test]
fn unregister_lets_open_files_in_unplug_does_not() {
    let dev = Device::new(());
    assert_eq!(dev.open(()).unwrap_err(), Error::NotRegistered);
    dev.register().unwrap();
    let file = dev.open(()).unwrap();
    assert!(dev.unregister());
    assert!(!dev.unregister());
    assert_eq!(dev.open(()).unwrap_err(), Error::NotRegistered);
    // The kernel's pitfall, kept: plain unregister leaves existing files able to enter.
    assert!(file.enter().is_some());
    assert!(!dev.is_unplugged());
    // Registering again is allowed after an unregister (not after an unplug).
    dev.register().unwrap();
    assert!(dev.unplug());
    assert!(!dev.unplug());
    assert!(file.enter().is_none());
    assert_eq!(dev.open(()).unwrap_err(), Error::Unplugged);
    assert_eq!(dev.register(), Err(Error::Unplugged));
    assert!(!dev.is_registered());
}

#[test]
fn rebind_after_unbind_gets_a_fresh_binding() {
    let log = Log::default();
    let bus = Bus::new("platform");
    let pdev = bus.add_device("vgpu.0");
    let driver = Arc::new(Vgpu {
        log: log.clone(),
        fail_probe: false,
    });
    pdev.bind(driver.clone()).unwrap();
    assert_eq!(pdev.bind(driver.clone()), Err(Error::AlreadyBound));
    let first = drm_of(&pdev);
    let stale = pdev.with_bound(|b| b.kzalloc(8)).unwrap().unwrap();
    pdev.unbind().unwrap();
    take(&log);
    pdev.bind(driver).unwrap();
    let second = drm_of(&pdev);
    assert!(!Device::ptr_eq(&first, &second));
    assert!(first.is_unplugged() && !second.is_unplugged());
    // A handle of the previous binding reads as gone, not as the new binding's memory.
    let r = pdev.with_bound(|b| stale.get(b).map(|s| s.len())).unwrap();
    assert_eq!(r, Err(Error::NotOnList));
    drop((first, second));
    pdev.unbind().unwrap();
}

#[test]
fn removing_a_bound_device_unbinds_it_in_order() {
    let log = Log::default();
    let bus = Bus::new("pci");
    let pdev = bus.add_device("0000:01:00.0");
    pdev.bind(Arc::new(Vgpu {
        log: log.clone(),
        fail_probe: false,
    }))
    .unwrap();
    pdev.remove().unwrap(); // hot-unplug from the bus
    assert_eq!(take(&log)[0], "remove");
    assert!(!pdev.is_present() && !pdev.is_bound());
    assert!(bus.devices().is_empty());
    assert_eq!(pdev.remove(), Err(Error::Removed));
    assert_eq!(
        pdev.bind(Arc::new(Vgpu {
            log,
            fail_probe: false
        })),
        Err(Error::Removed)
    );
}

#[test]
fn removing_a_device_with_no_driver_releases_its_devres() {
    // The 2022 leak: a drm device allocated with devres on a driver-less parent, whose
    // devres only ran at the parent's final put, which the drm device's reference prevented.
    let log = Log::default();
    let bus = Bus::new("kunit");
    let root = bus.add_device("root");
    let drm = root
        .with_driverless(|b| Device::new_on(b, "card0", Noisy(log.clone(), "drm data")))
        .unwrap()
        .unwrap();
    let l = log.clone();
    let _ = drm
        .add_action_named("drmm", move |_| push(&l, "drmm"))
        .unwrap();
    drop(drm);
    assert!(take(&log).is_empty());
    assert_eq!(root.with_bound(|_| ()), Err(Error::NotBound));
    root.remove().unwrap();
    assert_eq!(take(&log), ["drmm", "drm data"]);
    assert_eq!(root.resource_count(), 0);
    assert_eq!(root.with_driverless(|_| ()), Err(Error::Removed));
}

#[test]
fn dropping_the_bus_removes_its_devices() {
    let log = Log::default();
    let bus = Bus::new("usb");
    let a = bus.add_device("1-1");
    a.bind(Arc::new(Vgpu {
        log: log.clone(),
        fail_probe: false,
    }))
    .unwrap();
    drop(bus);
    assert!(!a.is_present());
    assert!(take(&log).contains(&"drm driver data".to_string()));
}

/// A driver whose remove and release actions panic: the unbind still completes.
struct Panicky(Log);
impl Driver for Panicky {
    type Data = Noisy;
    fn probe(&self, dev: &mut Bound<'_>) -> drmm::Result<Noisy> {
        let l = self.0.clone();
        let _ = dev.add_action(move || push(&l, "first action"))?;
        let _ = dev.add_action(|| panic!("action panics"))?;
        Ok(Noisy(self.0.clone(), "data"))
    }
    fn remove(&self, _: &mut Bound<'_>, _: &Noisy) {
        panic!("remove panics");
    }
}

#[test]
fn panics_during_unbind_do_not_stop_it_and_the_first_is_resumed() {
    let log = Log::default();
    let bus = Bus::new("platform");
    let pdev = bus.add_device("p");
    pdev.bind(Arc::new(Panicky(log.clone()))).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pdev.unbind()));
    let msg = r.unwrap_err();
    assert_eq!(msg.downcast_ref::<&str>(), Some(&"remove panics"));
    assert_eq!(take(&log), ["data", "first action"]);
    assert!(!pdev.is_bound());
    assert_eq!(pdev.resource_count(), 0);
}

/// A driver whose probe panics after registering something.
struct ProbePanics(Log);
impl Driver for ProbePanics {
    type Data = ();
    fn probe(&self, dev: &mut Bound<'_>) -> drmm::Result<()> {
        let l = self.0.clone();
        let _ = dev.add_action(move || push(&l, "released"))?;
        panic!("probe panics");
    }
}

#[test]
fn a_panicking_probe_still_releases_its_devres() {
    let log = Log::default();
    let bus = Bus::new("platform");
    let pdev = bus.add_device("p");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pdev.bind(Arc::new(ProbePanics(log.clone())))
    }));
    assert!(r.is_err());
    assert_eq!(take(&log), ["released"]);
    assert!(!pdev.is_bound());
}

/// Order of revocation at unbind: after remove, before the driver data is dropped.
struct WithDevres(Log);
struct Regs(Log, &'static str);
impl Drop for Regs {
    fn drop(&mut self) {
        push(&self.0, self.1);
    }
}
impl Driver for WithDevres {
    type Data = (Devres<Regs>, Noisy);
    fn probe(&self, dev: &mut Bound<'_>) -> drmm::Result<Self::Data> {
        let l = self.0.clone();
        let _ = dev.add_action(move || push(&l, "devm action"))?;
        let regs = Devres::new(dev, Regs(self.0.clone(), "regs revoked"))?;
        Ok((regs, Noisy(self.0.clone(), "driver data")))
    }
    fn remove(&self, _: &mut Bound<'_>, data: &Self::Data) {
        assert!(
            data.0.try_access().is_some(),
            "remove still reaches hardware"
        );
        push(&self.0, "remove");
    }
}

#[test]
fn unbind_order_is_remove_revoke_data_devres() {
    let log = Log::default();
    let bus = Bus::new("platform");
    let pdev = bus.add_device("p");
    pdev.bind(Arc::new(WithDevres(log.clone()))).unwrap();
    pdev.unbind().unwrap();
    assert_eq!(
        take(&log),
        ["remove", "regs revoked", "driver data", "devm action"]
    );
}
