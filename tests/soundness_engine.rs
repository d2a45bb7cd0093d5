//! User code running inside the resource-list engine, the logical device and the bus: release
//! actions, `Drop` of managed values and of driver data, `Display` in `kasprintf`, tracing
//! subscribers, `Driver::probe`/`remove`. Each call site re-enters the library, panics, and
//! does both while the thread unwinds; none of it may deadlock, abort, leak, or change an
//! exactly-once answer.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::hook::{in_child, message, quiet, while_unwinding, with_hook, within};
use common::{Log, Tracked};
use drmm::bus::{Bound, Bus, BusDevice, Driver};
use drmm::{Device, Error, Managed};

/// A subscriber that panics on every event whose op is in `ops` (all of them if empty).
fn panicking(ops: &'static [&'static str]) -> impl Fn(&str) + Send + Sync + 'static {
    move |op| {
        if ops.is_empty() || ops.contains(&op) {
            panic!("subscriber {op}");
        }
    }
}

// ----- defect regressions ------------------------------------------------------------------

/// An `ADD` event used to be emitted while the list's lock was still held (the guard lived on
/// as a temporary of a `match` scrutinee): a subscriber reading the device deadlocked.
#[test]
fn subscriber_reading_the_device_during_add_does_not_deadlock() {
    let reads = within(30, || {
        let reads = Arc::new(AtomicUsize::new(0));
        let dev = Device::new(());
        let (d, r) = (dev.clone(), reads.clone());
        let on_event = move |op: &str| {
            if op == "ADD" {
                let _ = (d.resource_count(), d.snapshot());
                r.fetch_add(1, Ordering::SeqCst);
            }
        };
        with_hook(on_event, || {
            let _ = dev.add_action_named("a", |_| ()).unwrap();
            let _ = dev.alloc(5u32).unwrap();
            let _ = dev.kzalloc(8).unwrap();
            let _ = dev.kstrdup("s").unwrap();
        });
        let bus = Bus::new("b");
        let bd = bus.add_device("d");
        let (d, r) = (bd.clone(), reads.clone());
        let on_event = move |op: &str| {
            if op == "ADD" {
                let _ = (d.resource_count(), d.snapshot());
                r.fetch_add(1, Ordering::SeqCst);
            }
        };
        with_hook(on_event, || {
            bd.with_driverless(|b| {
                let _ = b.add_action(|| ()).unwrap();
                let _ = b.kzalloc(8).unwrap();
                let g = b.open_group().unwrap();
                b.close_group(&g).unwrap();
            })
            .unwrap();
        });
        reads.load(Ordering::SeqCst)
    });
    assert_eq!(reads, 8, "every ADD event reached the subscriber");
}

/// A driver that logs its steps; `remove` panics if `panics`.
struct Noisy {
    log: Log,
    name: &'static str,
    panics: bool,
}

struct NoisyData(Log, &'static str);
impl Drop for NoisyData {
    fn drop(&mut self) {
        self.0.push(format!("drop data {}", self.1));
    }
}

impl Driver for Noisy {
    type Data = NoisyData;
    fn probe(&self, dev: &mut Bound<'_>) -> drmm::Result<NoisyData> {
        let (l, n) = (self.log.clone(), self.name);
        let _ = dev.add_action(move || l.push(format!("devres {n}")))?;
        Ok(NoisyData(self.log.clone(), self.name))
    }
    fn remove(&self, _: &mut Bound<'_>, _: &NoisyData) {
        self.log.push(format!("remove {}", self.name));
        if self.panics {
            panic!("remove {}", self.name);
        }
    }
}

fn noisy_bus(log: &Log, panicking: &[&'static str]) -> (Bus, Vec<BusDevice>) {
    let bus = Bus::new("b");
    let devs = ["d0", "d1", "d2"]
        .into_iter()
        .map(|name| {
            let d = bus.add_device(name);
            d.bind(Arc::new(Noisy {
                log: log.clone(),
                name,
                panics: panicking.contains(&name),
            }))
            .unwrap();
            d
        })
        .collect();
    (bus, devs)
}

fn unbound_newest_first(names: &[&str]) -> Vec<String> {
    names
        .iter()
        .flat_map(|n| {
            [
                format!("remove {n}"),
                format!("drop data {n}"),
                format!("devres {n}"),
            ]
        })
        .collect()
}

/// Dropping a bus used to stop at the first panicking removal: older devices were never
/// unbound (their devres released at their last reference, their driver data dropped after
/// it, their `remove` never run).
#[test]
fn bus_dropped_with_a_panicking_removal_still_unbinds_every_device() {
    let log = Log::new();
    let (bus, devs) = noisy_bus(&log, &["d2", "d1"]);
    drop(devs);
    let r = quiet(|| catch_unwind(AssertUnwindSafe(move || drop(bus))));
    assert_eq!(message(&*r.unwrap_err()), "remove d2", "the first panic");
    assert_eq!(log.take(), unbound_newest_first(&["d2", "d1", "d0"]));
}

/// The same while the thread already unwinds: every device unbound, nothing resumed (the
/// original panic survives), no abort.
#[test]
fn bus_dropped_while_unwinding_with_a_panicking_removal_unbinds_every_device() {
    if !in_child("bus_dropped_while_unwinding_with_a_panicking_removal_unbinds_every_device") {
        return;
    }
    let log = Log::new();
    let (bus, devs) = noisy_bus(&log, &["d1"]);
    drop(devs);
    assert_eq!(while_unwinding(move || drop(bus)), "outer");
    assert_eq!(log.take(), unbound_newest_first(&["d2", "d1", "d0"]));
}

/// Dropping a bus inside `with_bound` of one of its devices: that removal answers
/// `Reentrant`; the device used to be taken off the bus and never unbound. It is now removed
/// as soon as the scope is left.
#[test]
fn bus_dropped_inside_with_bound_unbinds_the_device_when_the_scope_is_left() {
    let log = Log::new();
    let (bus, devs) = noisy_bus(&log, &[]);
    let d1 = devs[1].clone();
    drop(devs);
    d1.with_bound(move |_| drop(bus)).unwrap();
    assert!(!d1.is_present() && !d1.is_bound());
    let mut got = log.take();
    // d2 and d0 were removed by the drop; d1 once its scope was left.
    let d1_steps = got.split_off(6);
    assert_eq!(got, unbound_newest_first(&["d2", "d0"]));
    assert_eq!(d1_steps, unbound_newest_first(&["d1"]));
    assert_eq!(d1.remove(), Err(Error::Removed));
}

/// What a release action gets when it frees a newer block that the same release already
/// freed, and what reading it says: traced (a subscriber recording everything) or not.
fn free_of_a_released_block(traced: bool) -> Vec<drmm::Result<()>> {
    let dev = Device::new(());
    let newer: Arc<Mutex<Option<Managed<[u8]>>>> = Arc::default();
    let answers: Arc<Mutex<Vec<drmm::Result<()>>>> = Arc::default();
    let (n, a) = (newer.clone(), answers.clone());
    let _ = dev
        .add_action_named("frees a newer block", move |d| {
            let h = n.lock().unwrap().take().unwrap();
            let read = h.get(d).map(|_| ());
            let freed = d.kfree(h);
            a.lock().unwrap().extend([read, freed]);
        })
        .unwrap();
    *newer.lock().unwrap() = Some(dev.kzalloc(16).unwrap());
    let _ = dev.kzalloc(32).unwrap(); // a second inert block in the same batch
    if traced {
        with_hook(|_| {}, move || drop(dev));
    } else {
        drop(dev);
    }
    std::mem::take(&mut *answers.lock().unwrap())
}

/// The traced release used to claim inert slots in batches and leave them claimed while the
/// next action ran: freeing one of them again answered `Ok(())` (while reading it said
/// `NotOnList`); without a subscriber the answer is `NotOnList`.
#[test]
fn traced_release_gives_the_same_exactly_once_answer_as_untraced() {
    let untraced = free_of_a_released_block(false);
    assert_eq!(untraced, [Err(Error::NotOnList), Err(Error::NotOnList)]);
    assert_eq!(free_of_a_released_block(true), untraced);
}

/// A device with `n` actions and `n` values, all counted.
fn counted_device(n: usize, ran: &Arc<AtomicUsize>, drops: &Arc<AtomicUsize>) -> Device<Tracked> {
    let log = Log::new();
    let dev = Device::new(Tracked::new("data", &log, drops));
    for i in 0..n {
        let r = ran.clone();
        let _ = dev
            .add_action_named("count", move |_| {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        let _ = dev
            .alloc(Tracked::new(&format!("v{i}"), &log, drops))
            .unwrap();
        let _ = dev.kzalloc(24).unwrap();
    }
    dev
}

/// A subscriber panicking on `REL` used to stop the release at the first entry (the event was
/// emitted outside the panic net): the rest of the entries and the device leaked.
#[test]
fn panicking_subscriber_does_not_stop_a_release() {
    for ops in [&["REL"][..], &[]] {
        let (ran, drops) = (Arc::default(), Arc::default());
        let dev = counted_device(5, &ran, &drops);
        let r = quiet(|| {
            with_hook(panicking(ops), || {
                catch_unwind(AssertUnwindSafe(move || drop(dev)))
            })
        });
        assert!(message(&*r.unwrap_err()).starts_with("subscriber "));
        assert_eq!(ran.load(Ordering::SeqCst), 5, "{ops:?}: every action ran");
        assert_eq!(
            drops.load(Ordering::SeqCst),
            6,
            "{ops:?}: every value and the data"
        );
    }
}

/// The same while the thread unwinds: it used to abort the process.
#[test]
fn panicking_subscriber_during_a_release_while_unwinding_does_not_abort() {
    if !in_child("panicking_subscriber_during_a_release_while_unwinding_does_not_abort") {
        return;
    }
    let (ran, drops) = (Arc::default(), Arc::default());
    let dev = counted_device(5, &ran, &drops);
    let outer = with_hook(panicking(&[]), || while_unwinding(move || drop(dev)));
    assert_eq!(outer, "outer");
    assert_eq!(ran.load(Ordering::SeqCst), 5);
    assert_eq!(drops.load(Ordering::SeqCst), 6);
}
