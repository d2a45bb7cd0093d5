//! Driver registration, bus matching and deferred probe: the driver core's own scenarios.

mod trace_support;

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use drmm::bus::{Bound, Bus, BusDevice, Driver, DriverRegistration};
use drmm::{Devres, Error};

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, s: impl Into<String>) {
    log.lock().unwrap().push(s.into());
}

fn taken(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

type ProbeFn = dyn Fn(&mut Bound<'_>) -> drmm::Result<()> + Send + Sync;
type MatchFn = dyn Fn(&BusDevice) -> bool + Send + Sync;

/// A driver named `name` matching `name` and `name.<n>`, whose probe logs and runs `on_probe`,
/// whose remove logs; the match can be replaced.
struct Drv {
    name: &'static str,
    log: Log,
    on_probe: Box<ProbeFn>,
    on_match: Option<Box<MatchFn>>,
}

impl Drv {
    fn new(name: &'static str, log: &Log) -> Self {
        Drv {
            name,
            log: log.clone(),
            on_probe: Box::new(|_| Ok(())),
            on_match: None,
        }
    }
    fn probe(
        mut self,
        f: impl Fn(&mut Bound<'_>) -> drmm::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.on_probe = Box::new(f);
        self
    }
    fn matching(mut self, f: impl Fn(&BusDevice) -> bool + Send + Sync + 'static) -> Self {
        self.on_match = Some(Box::new(f));
        self
    }
}

impl Driver for Drv {
    type Data = ();
    fn name(&self) -> &str {
        self.name
    }
    fn matches(&self, dev: &BusDevice) -> bool {
        match &self.on_match {
            Some(f) => f(dev),
            None => drmm::bus::BusDevice::name(dev)
                .strip_prefix(self.name)
                .is_some_and(|r| r.is_empty() || r.starts_with('.')),
        }
    }
    fn probe(&self, dev: &mut Bound<'_>) -> drmm::Result<()> {
        let name = dev.device().name().to_string();
        let r = (self.on_probe)(dev);
        let word = match &r {
            Ok(()) => "ok".to_string(),
            Err(Error::ProbeDefer { reason }) => format!("defer({reason})"),
            Err(e) => format!("err({e})"),
        };
        push(&self.log, format!("{}: probe {name} {word}", self.name));
        r
    }
    fn remove(&self, dev: &mut Bound<'_>, _: &()) {
        push(
            &self.log,
            format!("{}: remove {}", self.name, dev.device().name()),
        );
    }
}

fn register(bus: &Bus, d: Drv) -> DriverRegistration {
    bus.register_driver(Arc::new(d))
}

fn deferred(bus: &Bus) -> Vec<(String, String)> {
    bus.deferred()
        .into_iter()
        .map(|(d, r)| (d.name().to_string(), r.to_string()))
        .collect()
}

#[test]
fn device_added_before_and_after_its_driver_registers_is_probed() {
    let log = Log::default();
    let bus = Bus::new("platform");
    let before = bus.add_device("uart.0");
    let other = bus.add_device("spi.0");
    assert!(taken(&log).is_empty());
    let _reg = register(&bus, Drv::new("uart", &log));
    assert_eq!(taken(&log), ["uart: probe uart.0 ok"]);
    let after = bus.add_device("uart.1");
    assert_eq!(taken(&log), ["uart: probe uart.1 ok"]);
    assert!(before.is_bound() && after.is_bound() && !other.is_bound());
    // Manual bind still works next to registered drivers.
    other.bind(Arc::new(Drv::new("spi", &log))).unwrap();
    assert!(other.is_bound());
}

#[test]
fn default_match_uses_the_id_table_then_the_driver_name() {
    struct Table;
    impl Driver for Table {
        type Data = ();
        fn id_table(&self) -> &[&str] {
            &["a", "b"]
        }
        fn probe(&self, _: &mut Bound<'_>) -> drmm::Result<()> {
            Ok(())
        }
    }
    struct Named;
    impl Driver for Named {
        type Data = ();
        fn name(&self) -> &str {
            "c"
        }
        fn probe(&self, _: &mut Bound<'_>) -> drmm::Result<()> {
            Ok(())
        }
    }
    let bus = Bus::new("platform");
    let _t = bus.register_driver(Arc::new(Table));
    let _n = bus.register_driver(Arc::new(Named));
    let bound = |n: &'static str| bus.add_device(n).is_bound();
    assert!(bound("a") && bound("a.0") && bound("b.12") && bound("c") && bound("c.1"));
    assert!(!bound("ab") && !bound("a0") && !bound("d.0") && !bound("x.a"));
}

#[test]
fn unregistering_unbinds_its_devices_newest_first_and_leaves_them_unbound() {
    let log = Log::default();
    let bus = Bus::new("platform");
    let released = Arc::new(AtomicUsize::new(0));
    let r = released.clone();
    let reg = register(
        &bus,
        Drv::new("gpu", &log).probe(move |b| {
            let r = r.clone();
            let _ = b.kzalloc(32)?;
            let _ = b.add_action(move || {
                r.fetch_add(1, Ordering::SeqCst);
            })?;
            Ok(())
        }),
    );
    let devs: Vec<BusDevice> = (0..3).map(|i| bus.add_device(format!("gpu.{i}"))).collect();
    // Another driver that would match too: not probed after the unregister.
    let second = register(&bus, Drv::new("gpu", &log).matching(|_| true));
    taken(&log);
    assert!(devs.iter().all(|d| d.is_bound() && d.resource_count() == 2));
    reg.unregister();
    assert_eq!(
        taken(&log),
        [
            "gpu: remove gpu.2",
            "gpu: remove gpu.1",
            "gpu: remove gpu.0"
        ]
    );
    assert_eq!(released.load(Ordering::SeqCst), 3);
    assert!(
        devs.iter()
            .all(|d| !d.is_bound() && d.resource_count() == 0)
    );
    // Devices bound by another driver are not touched by this unregister.
    let keep = bus.add_device("other");
    assert!(keep.is_bound(), "the catch-all driver binds it");
    drop(second);
    assert!(!keep.is_bound());
    assert!(
        !bus.add_device("gpu.9").is_bound(),
        "no driver registered any more"
    );
}

#[test]
fn first_registered_matching_driver_wins_and_a_failure_falls_to_the_next() {
    let log = Log::default();
    let bus = Bus::new("platform");
    let _a = register(&bus, Drv::new("a", &log).matching(|d| d.name() != "x"));
    let _b = register(&bus, Drv::new("b", &log).matching(|_| true));
    bus.add_device("dev");
    assert_eq!(taken(&log), ["a: probe dev ok"]);
    bus.add_device("x");
    assert_eq!(taken(&log), ["b: probe x ok"]);
    let _c = register(
        &bus,
        Drv::new("c", &log)
            .matching(|d| d.name() == "y")
            .probe(|_| Err(Error::probe_failed("wrong revision"))),
    );
    // b is older than c, so b is asked first; a failing a is passed over.
    let bus2 = Bus::new("platform");
    let _f = register(
        &bus2,
        Drv::new("f", &log)
            .probe(|_| Err(Error::probe_failed("no")))
            .matching(|_| true),
    );
    let _g = register(&bus2, Drv::new("g", &log).matching(|_| true));
    taken(&log);
    let d = bus2.add_device("z");
    assert_eq!(
        taken(&log),
        ["f: probe z err(probe failed: no)", "g: probe z ok"]
    );
    assert!(d.is_bound());
}

/// A probe that defers until `ready` is set.
fn waits_for(
    ready: &Arc<AtomicBool>,
    what: &'static str,
) -> impl Fn(&mut Bound<'_>) -> drmm::Result<()> + Send + Sync + 'static {
    let ready = ready.clone();
    move |_| {
        if ready.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(Error::probe_defer(what))
        }
    }
}

#[test]
fn deferred_probe_is_resolved_by_a_later_successful_probe() {
    let log = Log::default();
    let bus = Bus::new("platform");
    let clock = Arc::new(AtomicBool::new(false));
    let _panel = register(
        &bus,
        Drv::new("panel", &log).probe(waits_for(&clock, "clock")),
    );
    let c = clock.clone();
    let _clk = register(
        &bus,
        Drv::new("clk", &log).probe(move |_| {
            c.store(true, Ordering::SeqCst);
            Ok(())
        }),
    );
    let panel = bus.add_device("panel.0");
    assert!(!panel.is_bound());
    assert_eq!(
        deferred(&bus),
        [("panel.0".to_string(), "clock".to_string())]
    );
    // An unrelated successful probe retries it (still deferring: the clock is not there).
    let _misc = register(&bus, Drv::new("misc", &log));
    bus.add_device("misc.0");
    assert_eq!(deferred(&bus).len(), 1);
    bus.add_device("clk.0");
    assert!(panel.is_bound());
    assert!(bus.deferred().is_empty());
    assert_eq!(
        taken(&log),
        [
            "panel: probe panel.0 defer(clock)",
            "misc: probe misc.0 ok",
            "panel: probe panel.0 defer(clock)",
            "clk: probe clk.0 ok",
            "panel: probe panel.0 ok",
        ]
    );
}

#[test]
fn deferred_device_left_waiting_is_reported_with_its_latest_reason() {
    let log = Log::default();
    let bus = Bus::new("platform");
    let n = Arc::new(AtomicUsize::new(0));
    let k = n.clone();
    let _d = register(
        &bus,
        Drv::new("dsi", &log).probe(move |_| {
            let i = k.fetch_add(1, Ordering::SeqCst);
            Err(Error::probe_defer(format!("regulator (try {i})")))
        }),
    );
    let dsi = bus.add_device("dsi.0");
    let _ok = register(&bus, Drv::new("ok", &log));
    bus.add_device("ok.0");
    assert!(!dsi.is_bound());
    assert_eq!(
        deferred(&bus),
        [("dsi.0".into(), "regulator (try 1)".into())]
    );
    // A device that leaves its bus waits no more.
    dsi.remove().unwrap();
    assert!(bus.deferred().is_empty());
}

#[test]
fn deferred_probe_leaves_nothing_on_the_binding() {
    let log = Log::default();
    let bus = Bus::new("platform");
    let released = Arc::new(AtomicBool::new(false));
    let r = released.clone();
    let revocable = Arc::new(Mutex::new(None));
    let v = revocable.clone();
    let _reg = register(
        &bus,
        Drv::new("gpu", &log).probe(move |b| {
            let _ = b.kzalloc(64)?;
            let r = r.clone();
            let _ = b.add_action(move || r.store(true, Ordering::SeqCst))?;
            *v.lock().unwrap() = Some(Devres::new(b, 5u32)?);
            Err(Error::probe_defer("firmware"))
        }),
    );
    let gpu = bus.add_device("gpu.0");
    assert!(!gpu.is_bound());
    assert!(released.load(Ordering::SeqCst), "devm action ran");
    assert_eq!(gpu.resource_count(), 0);
    let regs: Devres<u32> = revocable.lock().unwrap().take().unwrap();
    assert_eq!(regs.try_access().map(|g| *g), None, "revoked");
    assert_eq!(deferred(&bus).len(), 1);
}

#[test]
fn manual_bind_that_defers_is_retried_with_the_same_driver() {
    let log = Log::default();
    let bus = Bus::new("platform");
    let ready = Arc::new(AtomicBool::new(false));
    let dev = bus.add_device("wlan0");
    let err = dev
        .bind(Arc::new(
            Drv::new("wifi", &log).probe(waits_for(&ready, "fw")),
        ))
        .unwrap_err();
    assert_eq!(err, Error::probe_defer("fw"));
    assert_eq!(deferred(&bus).len(), 1);
    bus.probe_deferred();
    assert!(!dev.is_bound());
    ready.store(true, Ordering::SeqCst);
    // Any successful probe on the bus retries it.
    bus.add_device("eth0")
        .bind(Arc::new(Drv::new("eth", &log)))
        .unwrap();
    assert!(dev.is_bound());
    assert!(bus.deferred().is_empty());
}

#[test]
fn a_probe_that_succeeds_while_another_defers_retries_it() {
    // The clock's probe succeeds while the panel's probe is running and about to defer: the
    // panel must not wait for a trigger that already went by.
    let log = Log::default();
    let bus = Arc::new(Bus::new("platform"));
    let clock = Arc::new(AtomicBool::new(false));
    let started = Arc::new(Barrier::new(2));
    let clock_done = Arc::new(Barrier::new(2));
    let (s, c, ready) = (started.clone(), clock_done.clone(), clock.clone());
    let first = Arc::new(AtomicBool::new(true));
    let _panel = register(
        &bus,
        Drv::new("panel", &log).probe(move |_| {
            let ready_now = ready.load(Ordering::SeqCst);
            if first.swap(false, Ordering::SeqCst) {
                s.wait();
                c.wait();
            }
            if ready_now {
                Ok(())
            } else {
                Err(Error::probe_defer("clock"))
            }
        }),
    );
    let b = bus.clone();
    let panel = std::thread::spawn(move || b.add_device("panel.0"));
    started.wait();
    let ck = clock.clone();
    bus.add_device("clk.0")
        .bind(Arc::new(Drv::new("clk", &log).probe(move |_| {
            ck.store(true, Ordering::SeqCst);
            Ok(())
        })))
        .unwrap();
    clock_done.wait();
    let panel = panel.join().unwrap();
    assert!(panel.is_bound(), "{:?}", taken(&log));
    assert!(bus.deferred().is_empty());
}

#[test]
fn devices_added_while_a_driver_registers_are_each_probed_once() {
    for _ in 0..20 {
        let bus = Arc::new(Bus::new("platform"));
        let probes = Arc::new(AtomicUsize::new(0));
        let go = Arc::new(Barrier::new(3));
        let adders: Vec<_> = (0..2)
            .map(|t| {
                let (bus, go) = (bus.clone(), go.clone());
                std::thread::spawn(move || {
                    go.wait();
                    for i in 0..25 {
                        bus.add_device(format!("dev.{t}{i}"));
                    }
                })
            })
            .collect();
        let log = Log::default();
        let p = probes.clone();
        go.wait();
        let reg = register(
            &bus,
            Drv::new("dev", &log).probe(move |_| {
                p.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }),
        );
        adders.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(probes.load(Ordering::SeqCst), 50);
        assert!(bus.devices().iter().all(BusDevice::is_bound));
        drop(reg);
        assert!(bus.devices().iter().all(|d| !d.is_bound()));
    }
}

#[test]
fn a_probe_that_adds_a_device_has_it_probed_after_it_returns() {
    let log = Log::default();
    let bus = Arc::new(Bus::new("platform"));
    let weak = Arc::downgrade(&bus);
    let l = log.clone();
    let _child = register(&bus, Drv::new("child", &log));
    let _parent = register(
        &bus,
        Drv::new("parent", &log).probe(move |_| {
            let bus = weak.upgrade().unwrap();
            let child = bus.add_device("child.0");
            push(
                &l,
                format!("child bound inside parent probe: {}", child.is_bound()),
            );
            // Registering a driver from inside a probe is queued the same way.
            let reg = bus.register_driver(Arc::new(Drv::new("late", &l)));
            std::mem::forget(reg);
            bus.add_device("late.0");
            Ok(())
        }),
    );
    bus.add_device("parent.0");
    assert_eq!(
        taken(&log),
        [
            "child bound inside parent probe: false",
            "parent: probe parent.0 ok",
            "child: probe child.0 ok",
            "late: probe late.0 ok",
        ]
    );
    assert!(bus.find("child.0").unwrap().is_bound());
}

#[test]
fn a_match_function_that_reenters_the_bus_does_not_deadlock() {
    let log = Log::default();
    let bus = Arc::new(Bus::new("platform"));
    let weak = Arc::downgrade(&bus);
    let once = AtomicBool::new(true);
    let _m = register(
        &bus,
        Drv::new("m", &log).matching(move |d| {
            let bus = weak.upgrade().unwrap();
            if once.swap(false, Ordering::SeqCst) {
                bus.add_device("m.extra");
            }
            // The bus's lists are free: no lock of the library is held here.
            let _ = (bus.devices(), bus.deferred());
            d.name().starts_with("m.")
        }),
    );
    bus.add_device("m.0");
    assert!(bus.find("m.0").unwrap().is_bound());
    assert!(bus.find("m.extra").unwrap().is_bound());
}

#[test]
fn a_panicking_match_function_is_resumed_after_the_other_drivers_were_asked() {
    let log = Log::default();
    let bus = Bus::new("platform");
    let _p = register(&bus, Drv::new("p", &log).matching(|_| panic!("match boom")));
    let _q = register(&bus, Drv::new("q", &log).matching(|_| true));
    let caught = panic::catch_unwind(AssertUnwindSafe(|| bus.add_device("d")));
    let msg = caught.unwrap_err();
    assert_eq!(msg.downcast_ref::<&str>(), Some(&"match boom"));
    assert!(bus.find("d").unwrap().is_bound(), "q still asked and bound");
}

#[test]
fn a_panicking_probe_in_register_driver_unregisters_it() {
    let log = Log::default();
    let bus = Bus::new("platform");
    let a = bus.add_device("x.0");
    let b = bus.add_device("x.1");
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        register(
            &bus,
            Drv::new("x", &log).probe(|b| {
                if b.device().name() == "x.1" {
                    panic!("probe boom");
                }
                Ok(())
            }),
        )
    }));
    assert!(caught.is_err());
    assert!(
        !a.is_bound() && !b.is_bound(),
        "the registration was dropped by the unwinding"
    );
    assert!(!bus.add_device("x.2").is_bound());
}

#[test]
fn automatic_probes_while_unwinding_only_log_panics() {
    let log = Log::default();
    let bus = Arc::new(Bus::new("platform"));
    let _p = register(
        &bus,
        Drv::new("bad", &log)
            .matching(|d| d.name() == "bad.0" || panic!("match boom while unwinding"))
            .probe(|_| panic!("probe boom while unwinding")),
    );
    let _ok = register(&bus, Drv::new("ok", &log).matching(|_| true));
    struct AddOnDrop(Arc<Bus>);
    impl Drop for AddOnDrop {
        fn drop(&mut self) {
            assert!(std::thread::panicking());
            // Its match panics for "good.0": logged; "ok" binds it.
            assert!(self.0.add_device("good.0").is_bound());
            // Its probe panics: logged; the device goes to the next match, "ok".
            assert!(self.0.add_device("bad.0").is_bound());
        }
    }
    let guard = AddOnDrop(bus.clone());
    let r = panic::catch_unwind(AssertUnwindSafe(move || {
        let _g = guard;
        panic!("outer");
    }));
    assert_eq!(r.unwrap_err().downcast_ref::<&str>(), Some(&"outer"));
    assert!(bus.find("good.0").unwrap().is_bound());
}

#[test]
fn probe_event_says_deferred_with_the_reason() {
    let lines = trace_support::record(|| {
        let bus = Bus::new("platform");
        let dev = bus.add_device("panel.0");
        let _ = dev.bind(Arc::new(
            Drv::new("panel", &Log::default()).probe(|_| Err(Error::probe_defer("no clock"))),
        ));
    });
    let probes: Vec<&str> = trace_support::events(&lines)
        .iter()
        .filter(|e| e["op"] == "PROBE")
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(probes, ["deferred: no clock"]);
}

#[test]
fn a_driver_unregistered_during_its_own_probe_leaves_the_device_unbound() {
    let log = Log::default();
    let bus = Bus::new("platform");
    let slot: Arc<Mutex<Option<DriverRegistration>>> = Arc::default();
    let s = slot.clone();
    let reg = register(
        &bus,
        Drv::new("gpu", &log).probe(move |_| {
            // The unbind of the unregister cannot reach this device yet (its probe runs).
            if let Some(reg) = s.lock().unwrap().take() {
                reg.unregister();
            }
            Ok(())
        }),
    );
    *slot.lock().unwrap() = Some(reg);
    let dev = bus.add_device("gpu.0");
    assert!(!dev.is_bound());
    assert_eq!(taken(&log), ["gpu: probe gpu.0 ok", "gpu: remove gpu.0"]);
    assert_eq!(dev.resource_count(), 0);
    assert!(!bus.add_device("gpu.1").is_bound());
}

#[test]
fn reentering_and_panicking_match_and_probe_while_unwinding_do_not_abort() {
    let log = Log::default();
    let bus = Arc::new(Bus::new("platform"));
    let (w1, w2) = (Arc::downgrade(&bus), Arc::downgrade(&bus));
    let _m = register(
        &bus,
        Drv::new("m", &log)
            .matching(move |d| {
                if d.name() == "m.0" {
                    w1.upgrade().unwrap().add_device("leaf.from-match");
                    panic!("match re-entered then panicked");
                }
                false
            })
            .probe(|_| Ok(())),
    );
    let _p = register(
        &bus,
        Drv::new("p", &log).probe(move |_| {
            w2.upgrade().unwrap().add_device("leaf.from-probe");
            panic!("probe re-entered then panicked");
        }),
    );
    let _leaf = register(&bus, Drv::new("leaf", &log));
    struct OnDrop(Arc<Bus>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            assert!(std::thread::panicking());
            assert!(!self.0.add_device("m.0").is_bound());
            assert!(!self.0.add_device("p.0").is_bound());
        }
    }
    let guard = OnDrop(bus.clone());
    let r = panic::catch_unwind(AssertUnwindSafe(move || {
        let _g = guard;
        panic!("outer");
    }));
    assert_eq!(r.unwrap_err().downcast_ref::<&str>(), Some(&"outer"));
    // What the panicking callbacks added was still probed, after they returned.
    assert!(bus.find("leaf.from-match").unwrap().is_bound());
    assert!(bus.find("leaf.from-probe").unwrap().is_bound());
    assert_eq!(bus.find("p.0").unwrap().resource_count(), 0);
}

#[test]
fn a_registration_can_be_dropped_on_another_thread_and_outlive_its_bus() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    let log = Log::default();
    let bus = Bus::new("platform");
    let reg = register(&bus, Drv::new("x", &log));
    let dev = bus.add_device("x.0");
    send_sync(&reg);
    std::thread::spawn(move || drop(reg)).join().unwrap();
    assert!(!dev.is_bound());
    let reg = register(&bus, Drv::new("x", &log));
    assert!(dev.is_bound());
    drop(bus); // removes the device (unbinding it)
    assert!(!dev.is_bound() && !dev.is_present());
    assert!(format!("{reg:?}").contains("\"x\""));
    drop(reg); // nothing left to do
}

#[test]
fn unregistering_a_driver_ends_the_wait_of_the_devices_it_deferred() {
    let log = Log::default();
    let bus = Bus::new("platform");
    let reg = register(
        &bus,
        Drv::new("cam", &log).probe(|_| Err(Error::probe_defer("i2c"))),
    );
    let cam = bus.add_device("cam.0");
    assert_eq!(deferred(&bus), [("cam.0".into(), "i2c".into())]);
    drop(reg);
    assert!(bus.deferred().is_empty());
    bus.probe_deferred();
    assert_eq!(
        taken(&log),
        ["cam: probe cam.0 defer(i2c)"],
        "not probed again"
    );
    assert!(!cam.is_bound());
}
