//! Fault injection over a full scenario (drmm, bus binding with probe, devres, groups,
//! `Devres<T>`, files, unbind): every allocation made inside a fallible API call (one returning
//! `Result`) is failed in turn, N = 0, 1, 2, … until the scenario completes without reaching
//! N. Each N runs in a child process, so an allocation failure that aborts (an infallible
//! allocation inside a fallible API) is reported instead of killing the test. For every N:
//! the failing call returns `Error::OutOfMemory` (or runs its `_or_reset` action), nothing
//! leaks (live heap bytes back to where they were), every value is dropped exactly once and
//! every device still releases cleanly.
//!
//! Panic injection: an action that panics at every position of a devres list whose unbind also
//! releases a logical device with its own panicking action at every position.
//!
//! Both run in the subscriber variants of `tests/common/subscribers.rs` (`DRMM_TEST_SUBSCRIBER`
//! selects): the allocation failures without a subscriber, recorded and re-entered (not with
//! the panicking one: two injected faults at once would make the scenario's answers
//! ambiguous), the panic injection in all four (a subscriber panic may surface as the
//! unbind's panic; order and exactly-once are unchanged).

#[path = "ops/alloc.rs"]
#[allow(dead_code, unreachable_pub)]
mod alloc;
#[path = "common/subscribers.rs"]
mod subscribers;

use subscribers::Variant;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use drmm::bus::{Bound, Bus, Devres, Driver};
use drmm::{Device, Error};

/// Counts creations and drops of the scenario's values.
#[derive(Clone, Default)]
struct Counts {
    created: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
    or_reset_runs: Arc<AtomicUsize>,
    /// Calls whose allocation was failed, by name.
    failed_in: Arc<Mutex<Vec<&'static str>>>,
}

struct Val(Counts);
impl Val {
    fn new(c: &Counts) -> Self {
        c.created.fetch_add(1, Ordering::SeqCst);
        Val(c.clone())
    }
}
impl Drop for Val {
    fn drop(&mut self) {
        self.0.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// Tells the parent which call runs (the last one named before an abort is the culprit).
fn note(name: &str) {
    alloc::disarmed(|| eprintln!("FI-CALL {name}"));
}

/// Runs a fallible call with allocations armed; checks that an injected failure surfaces as
/// `OutOfMemory` and that a call that saw none succeeds.
fn call<R>(c: &Counts, name: &'static str, f: impl FnOnce() -> drmm::Result<R>) -> Option<R> {
    note(name);
    let r = alloc::armed(f);
    let fired = alloc::take_fired();
    match r {
        Ok(v) => {
            assert!(
                !fired,
                "{name}: an allocation failed but the call succeeded"
            );
            Some(v)
        }
        Err(e) => {
            assert!(fired, "{name}: failed without an injected failure: {e:?}");
            assert!(
                matches!(e, Error::OutOfMemory { .. }),
                "{name}: allocation failure reported as {e:?}"
            );
            alloc::disarmed(|| c.failed_in.lock().unwrap().push(name));
            None
        }
    }
}

struct FiDriver(Counts);

struct DrvData {
    _drm: Device<Val>,
    _res: Option<Devres<Val>>,
}

impl Driver for FiDriver {
    type Data = DrvData;
    fn probe(&self, b: &mut Bound<'_>) -> drmm::Result<DrvData> {
        let c = &self.0;
        // Each call armed on its own: bind's own bookkeeping is not a fallible API.
        let v = Val::new(c);
        let _ = call(c, "devm_add_action", || {
            b.add_action_named("probe action", move || drop(v))
        })
        .ok_or(Error::OutOfMemory { size: 0, align: 0 })?;
        let data = Val::new(c);
        let drm = call(c, "Device::new_on", || Device::new_on(b, "fi-drm", data))
            .ok_or(Error::OutOfMemory { size: 0, align: 0 })?;
        let v = Val::new(c);
        let _ = call(c, "drmm_add_action (probe)", || {
            drm.add_action_named("drm action", move |_| drop(v))
        });
        let res = call(c, "Devres::new", || Devres::new(b, Val::new(c)));
        let _ = call(c, "devm alloc", || b.alloc(Val::new(c)));
        let group = call(c, "devres_open_group", || b.open_group());
        let _ = call(c, "devm_kzalloc", || b.kzalloc(64));
        if let Some(g) = &group {
            let _ = call(c, "devres_close_group", || b.close_group(g));
        }
        let _ = call(c, "devm_kasprintf", || {
            b.kasprintf(format_args!("{}-{}", b.name(), 7))
        });
        if let Some(mut bytes) = call(c, "devm_kmalloc", || b.kmalloc(24)) {
            let _ = call(c, "devm_krealloc", || b.krealloc(&mut bytes, 4000));
        }
        let _ = call(c, "drm_dev_register", || drm.register());
        Ok(DrvData {
            _drm: drm,
            _res: res,
        })
    }
}

/// The full scenario; `armed` calls may fail.
fn scenario(c: &Counts) {
    // drmm on a stand-alone device.
    let dev = Device::new(Val::new(c));
    let v = Val::new(c);
    let _ = call(c, "drmm_add_action", || {
        dev.add_action_named("a", move |_| drop(v))
    });
    let runs = c.or_reset_runs.clone();
    // Captures enough to need a box of its own, so its registration can fail too.
    let big = [7u8; 256];
    note("drmm_add_action_or_reset");
    let or_reset = alloc::armed(|| {
        dev.add_action_or_reset_named("or_reset", move |_| {
            assert_eq!(big[255], 7);
            runs.fetch_add(1, Ordering::SeqCst);
        })
    });
    if alloc::take_fired() {
        assert!(matches!(or_reset, Err(Error::OutOfMemory { .. })));
        assert_eq!(
            c.or_reset_runs.load(Ordering::SeqCst),
            1,
            "or_reset ran at once"
        );
        alloc::disarmed(|| c.failed_in.lock().unwrap().push("drmm_add_action_or_reset"));
    } else {
        assert!(or_reset.is_ok());
    }
    let a = call(c, "drmm alloc", || dev.alloc(Val::new(c)));
    let _ = call(c, "drmm_kzalloc small", || dev.kzalloc(100));
    let big = call(c, "drmm_kzalloc large", || dev.kzalloc(5000));
    let _ = call(c, "drmm_kmalloc_array", || dev.kmalloc_array(10, 8));
    let _ = call(c, "drmm_kstrdup", || dev.kstrdup("fault"));
    let _ = call(c, "drmm_kmemdup", || dev.kmemdup(&[1u32, 2, 3]));
    if let Some(a) = a {
        let _ = call(c, "drmm_kfree", || dev.kfree(a));
    }
    if let Some(b) = big {
        let _ = call(c, "drmm_kfree large", || dev.kfree(b));
    }
    let registered = call(c, "drm_dev_register", || dev.register()).is_some();
    let file = registered
        .then(|| call(c, "drm_open", || dev.open(Val::new(c))))
        .flatten();

    // The bus side.
    let bus = Bus::new("fi");
    let pdev = bus.add_device("p");
    note("bind");
    let driver = Arc::new(FiDriver(c.clone()));
    let bound = alloc::armed(|| pdev.bind(driver));
    alloc::take_fired();
    match bound {
        Ok(()) => {
            let _ = pdev.with_bound(|b| {
                let runs = c.or_reset_runs.clone();
                let before = c.or_reset_runs.load(Ordering::SeqCst);
                let big = [7u8; 256];
                note("devm_add_action_or_reset");
                let r = alloc::armed(|| {
                    b.add_action_or_reset_named("devm or_reset", move || {
                        assert_eq!(big[255], 7);
                        runs.fetch_add(1, Ordering::SeqCst);
                    })
                });
                if alloc::take_fired() {
                    assert!(r.is_err());
                    let after = c.or_reset_runs.load(Ordering::SeqCst);
                    assert_eq!(after, before + 1, "devm or_reset ran at once");
                    alloc::disarmed(|| {
                        c.failed_in.lock().unwrap().push("devm_add_action_or_reset")
                    });
                }
                if let Some(g) = call(c, "devres_open_group (bound)", || b.open_group()) {
                    let inside = call(c, "devm alloc in group", || b.alloc(Val::new(c)));
                    // A release path: it must finish even when its allocations fail (it falls
                    // back to releasing one entry at a time).
                    note("devres_release_group");
                    let r = alloc::armed(|| b.release_group(g));
                    assert_eq!(r, Ok(usize::from(inside.is_some())), "release_group");
                    if alloc::take_fired() {
                        alloc::disarmed(|| {
                            c.failed_in.lock().unwrap().push("devres_release_group")
                        });
                    }
                }
            });
            note("unbind");
            let r = alloc::armed(|| pdev.unbind());
            assert!(!alloc::take_fired(), "unbind allocates in an armed zone");
            assert_eq!(r, Ok(()));
        }
        Err(e) => {
            assert!(matches!(e, Error::OutOfMemory { .. }), "bind: {e:?}");
            // A failure inside probe was recorded by its call; else it was bind's own.
            alloc::disarmed(|| {
                let mut failed = c.failed_in.lock().unwrap();
                if failed.is_empty() {
                    failed.push("bind");
                }
            });
        }
    }
    drop(file);
    drop(dev);
    drop(bus);
}

const CHILD: &str = "DRMM_FI_CHILD";

fn child(n: Option<usize>) {
    let v = std::env::var("DRMM_FI_VARIANT")
        .ok()
        .and_then(|s| Variant::ALL.into_iter().find(|v| v.name() == s))
        .unwrap_or(Variant::None);
    v.run(|| child_in(n));
}

fn child_in(n: Option<usize>) {
    let c = Counts::default();
    // Warm-up, unarmed: lazy statics and thread-locals of the library.
    scenario(&c);
    let c = Counts::default();
    // The test's own record of failures must not look like a leak.
    c.failed_in.lock().unwrap().reserve(8);
    let before = alloc::live_bytes();
    alloc::reset_faults(n);
    scenario(&c);
    let seen = alloc::armed_seen();
    alloc::reset_faults(None);
    assert_eq!(alloc::live_bytes(), before, "leak with failure at {n:?}");
    assert_eq!(
        c.created.load(Ordering::SeqCst),
        c.dropped.load(Ordering::SeqCst),
        "every value dropped exactly once"
    );
    let failed = c.failed_in.lock().unwrap().clone();
    match n {
        Some(n) if n < seen => {
            assert_eq!(failed.len(), 1, "one failure injected: {failed:?}");
            println!("FI-RESULT injected {}", failed[0]);
        }
        _ => {
            assert!(failed.is_empty());
            println!("FI-RESULT none {seen}");
        }
    }
}

struct Outcome {
    /// Failures injected: (N, call that reported it).
    injected: Vec<String>,
    /// Failures that aborted the child: (N, call, message).
    aborted: Vec<(usize, String, String)>,
}

fn inject_every_failure(variant: Variant) -> Outcome {
    let exe = std::env::current_exe().unwrap();
    let run = |n: usize| {
        Command::new(&exe)
            .args([
                "--exact",
                "every_allocation_of_a_full_scenario_fails_once",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, n.to_string())
            .env("DRMM_FI_VARIANT", variant.name())
            .output()
            .unwrap()
    };
    let mut out = Outcome {
        injected: Vec::new(),
        aborted: Vec::new(),
    };
    for n in 0.. {
        assert!(n < 10_000, "the scenario never completes");
        let o = run(n);
        let stdout = String::from_utf8_lossy(&o.stdout);
        let stderr = String::from_utf8_lossy(&o.stderr);
        if !o.status.success() {
            let why = stderr
                .lines()
                .rev()
                .find(|l| l.contains("memory allocation") || l.contains("panicked"))
                .unwrap_or("?");
            assert!(
                why.contains("memory allocation"),
                "N={n}: the child failed a check: {stderr}"
            );
            let during = stderr
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("FI-CALL "))
                .unwrap_or("?");
            out.aborted.push((n, during.to_string(), why.to_string()));
        } else if let Some(l) = stdout.split("FI-RESULT ").nth(1) {
            let l = l.lines().next().unwrap_or("");
            if l.starts_with("none") {
                break;
            }
            out.injected
                .push(format!("N={n}: {}", l.trim_start_matches("injected ")));
        } else {
            panic!("N={n}: the child gave no result: {stdout}\n{stderr}");
        }
    }
    eprintln!(
        "fault injection ({variant} subscriber): {} allocations failed in turn: {} surfaced as errors (or ran the \
         _or_reset action) with no leak, {} aborted",
        out.injected.len() + out.aborted.len(),
        out.injected.len(),
        out.aborted.len()
    );
    for (n, call, why) in &out.aborted {
        eprintln!("  aborted: N={n} in {call}: {why}");
    }
    out
}

#[test]
#[cfg_attr(miri, ignore = "spawns processes")]
fn every_allocation_of_a_full_scenario_fails_once() {
    if let Ok(n) = std::env::var(CHILD) {
        child(n.parse().ok());
        return;
    }
    for v in Variant::selected() {
        if v == Variant::Panic {
            continue;
        }
        let out = inject_every_failure(v);
        assert!(out.injected.len() >= 10, "{v}: too few failures surfaced");
        assert!(
            out.aborted.is_empty(),
            "{v}: allocation failures that aborted instead of surfacing as errors: {:?}",
            out.aborted
        );
    }
}

/// Fails each allocation of `f` in turn (in this process: none may abort) until `f` succeeds
/// with no failure injected; every failure must be `OutOfMemory`. Returns how many allocations
/// `f` makes.
fn fail_each_allocation<R>(name: &str, mut f: impl FnMut() -> drmm::Result<R>) -> usize {
    for n in 0.. {
        assert!(n < 1_000, "{name}: never succeeds");
        alloc::reset_faults(Some(n));
        let r = alloc::armed(&mut f);
        let fired = alloc::take_fired();
        alloc::reset_faults(None);
        match r {
            Ok(v) if !fired => {
                drop(v);
                return n;
            }
            Ok(_) => panic!("{name}: allocation {n} failed but the call succeeded"),
            Err(e) => assert!(
                matches!(e, Error::OutOfMemory { .. }),
                "{name}: allocation {n} failed as {e:?}"
            ),
        }
    }
    unreachable!()
}

struct Nop;
impl Driver for Nop {
    type Data = [u64; 4];
    fn probe(&self, _: &mut Bound<'_>) -> drmm::Result<[u64; 4]> {
        Ok([1, 2, 3, 4])
    }
}

/// Regression test for the bug the full scenario above found: these fallible APIs made
/// infallible allocations (a `String` for an unnamed device's trace name in `register`, the
/// binding's boxes after probe in `bind`, the device box, its name and the gate's counters in
/// `Device::new_on`, an `Arc`, a `Box` and a `Vec` slot in `Devres::new`, a `String` in
/// `kasprintf`), so allocation failure aborted the process instead of returning
/// `Error::OutOfMemory` (promise 6). Here each allocation of each call fails in turn, in this
/// process.
#[test]
fn bug_fallible_apis_abort_on_allocation_failure() {
    let c = Counts::default();
    // Warm-up: lazy statics of the library and of the test.
    {
        let dev = Device::new(());
        dev.register().unwrap();
        let bus = Bus::new("warm");
        let d = bus.add_device("d");
        d.bind(Arc::new(Nop)).unwrap();
        d.unbind().unwrap();
    }
    let mut made: Vec<(&str, usize)> = Vec::with_capacity(16);
    let before = alloc::live_bytes();
    made.push((
        "Device::try_new",
        fail_each_allocation("Device::try_new", || Device::try_new(Val::new(&c))),
    ));
    made.push((
        "Device::try_new_with",
        fail_each_allocation("Device::try_new_with", || {
            Device::try_new_with("fi", |_| Ok::<_, Error>(Val::new(&c)))
        }),
    ));
    made.push((
        "drm_dev_register (unnamed)",
        fail_each_allocation("drm_dev_register (unnamed)", || {
            let dev = alloc::disarmed(|| Device::new(()));
            dev.register()
        }),
    ));
    let bus = Bus::new("fi");
    let pdev = bus.add_device("p");
    made.push((
        "bind",
        fail_each_allocation("bind", || {
            let driver = alloc::disarmed(|| Arc::new(Nop));
            let r = pdev.bind(driver);
            alloc::disarmed(|| {
                if r.is_ok() {
                    pdev.unbind().unwrap();
                }
            });
            r
        }),
    ));
    pdev.with_driverless(|b| {
        made.push((
            "Device::new_on",
            fail_each_allocation("Device::new_on", || {
                Device::new_on(b, "fi-drm", Val::new(&c))
            }),
        ));
        made.push((
            "Devres::new",
            fail_each_allocation("Devres::new", || Devres::new(b, Val::new(&c))),
        ));
        made.push((
            "devm_kasprintf",
            fail_each_allocation("devm_kasprintf", || {
                b.kasprintf(format_args!("{}-{}", b.name(), 7))
            }),
        ));
    })
    .unwrap();
    drop(pdev);
    drop(bus);
    assert_eq!(alloc::live_bytes(), before, "leak");
    eprintln!("allocations per call: {made:?}");
    // Registering allocates the gate's per-thread counters (reported) and nothing else:
    // naming an unnamed device in a trace allocates nothing.
    assert!(
        made.contains(&("drm_dev_register (unnamed)", 1)),
        "{made:?}"
    );
    assert!(made.iter().all(|m| m.1 > 0), "{made:?}");
    assert_eq!(
        c.created.load(Ordering::SeqCst),
        c.dropped.load(Ordering::SeqCst),
        "every value dropped exactly once"
    );
}

// ----- panic injection ---------------------------------------------------------------------

struct PanicDriver {
    n: usize,
    panic_at: usize,
    drm_panic_at: usize,
    c: Counts,
    order: Arc<Mutex<Vec<usize>>>,
}

impl Driver for PanicDriver {
    type Data = Device<Val>;
    fn probe(&self, b: &mut Bound<'_>) -> drmm::Result<Device<Val>> {
        let drm = Device::new_on(b, "panic-drm", Val::new(&self.c))?;
        for i in 0..self.n {
            let (o, v, p) = (
                self.order.clone(),
                Val::new(&self.c),
                i == self.drm_panic_at,
            );
            let _ = drm.add_action_named("drm", move |_| {
                o.lock().unwrap().push(100 + i);
                drop(v);
                assert!(!p, "injected panic in drm action {i}");
            })?;
            let (o, v, p) = (self.order.clone(), Val::new(&self.c), i == self.panic_at);
            let _ = b.add_action_named("devm", move || {
                o.lock().unwrap().push(i);
                drop(v);
                assert!(!p, "injected panic in devm action {i}");
            })?;
        }
        Ok(drm)
    }
}

#[test]
fn panic_at_every_position_of_an_unbind() {
    let n = if cfg!(miri) { 2 } else { 6 };
    subscribers::quiet_subscriber_panics();
    // Silence the injected panics only: a failed check must still be reported.
    let prev = Arc::new(std::panic::take_hook());
    let hook = prev.clone();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let msg = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if !msg.contains("injected panic") {
            hook(info);
        }
    }));
    let mut cases = 0;
    for v in Variant::selected() {
        let first = cases;
        v.run(|| panic_positions(n, v, first, &mut cases));
    }
    subscribers::watchdog(None);
    drop(std::panic::take_hook());
    drop(prev);
    eprintln!(
        "panic injection: {cases} unbinds with panics at every position, every selected subscriber variant"
    );
}

fn panic_positions(n: usize, v: Variant, first: usize, cases: &mut usize) {
    for panic_at in 0..=n {
        for drm_panic_at in 0..=n {
            let c = Counts::default();
            let order = Arc::new(Mutex::new(Vec::new()));
            let before = alloc::live_bytes();
            {
                subscribers::watchdog(Some(format!(
                    "panic injection ({v}): panic_at {panic_at}, drm_panic_at {drm_panic_at}"
                )));
                let bus = Bus::new("panics");
                let pdev = bus.add_device("p");
                // The re-entering variant reads the device from its callback.
                let probe = pdev.clone();
                let _reentry = subscribers::reenter_with(move || {
                    let _ = (probe.resource_count(), probe.snapshot(), probe.is_bound());
                });
                pdev.bind(Arc::new(PanicDriver {
                    n,
                    panic_at,
                    drm_panic_at,
                    c: c.clone(),
                    order: order.clone(),
                }))
                .unwrap();
                let r = catch_unwind(AssertUnwindSafe(|| pdev.unbind()));
                let panicked = panic_at < n || drm_panic_at < n;
                // The panicking subscriber's panic may be the one resumed.
                if v != Variant::Panic {
                    assert_eq!(
                        r.is_err(),
                        panicked,
                        "{v}: panic resumed iff one was injected"
                    );
                } else if panicked {
                    assert!(r.is_err(), "{v}: an injected panic was not resumed");
                }
                assert!(!pdev.is_bound());
                assert_eq!(pdev.resource_count(), 0);
                // The bus device is still usable.
                pdev.with_driverless(|b| b.kzalloc(8).map(drop))
                    .unwrap()
                    .unwrap();
                // Removing the device emits release events too: the panicking subscriber may
                // panic on one (resumed once the removal is complete). The re-entry probe
                // holds the last reference of the bus device.
                let end = catch_unwind(AssertUnwindSafe(move || {
                    drop(pdev);
                    drop(bus);
                    drop(_reentry);
                }));
                if let Err(p) = end {
                    assert!(
                        v == Variant::Panic && subscribers::is_subscriber_panic(&*p),
                        "{v}: a panic removing the device"
                    );
                }
            }
            // Newest first: devm actions n-1..0 run; the logical device (registered first on
            // the devres list) is released last, its actions newest first.
            let mut want: Vec<usize> = (0..n).rev().collect();
            want.extend((0..n).rev().map(|i| 100 + i));
            assert_eq!(
                *order.lock().unwrap(),
                want,
                "{v}: {panic_at} {drm_panic_at}"
            );
            assert_eq!(
                c.created.load(Ordering::SeqCst),
                c.dropped.load(Ordering::SeqCst)
            );
            drop(order);
            drop(c);
            // Panic payloads and the hook's bookkeeping are freed by now.
            let leaked = alloc::live_bytes() - before;
            // The first case of a variant may initialise lazy state (the re-entering
            // subscriber's own device).
            assert!(
                leaked <= 0 || *cases == first,
                "{v}: leak of {leaked} bytes"
            );
            *cases += 1;
        }
    }
}
