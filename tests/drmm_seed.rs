//! The seed's scenario and the ordering promises (1, 2, 3, 4) through the public API.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Log, Tracked};
use drmm::{Device, Error};

/// Driver data that logs when it is dropped.
struct Driver {
    log: Log,
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.log.push("drop driver data");
    }
}

#[test]
fn seed_scenario_release_at_last_put_in_reverse_order() {
    let log = Log::new();
    let drops = Arc::new(AtomicUsize::new(0));
    let dev = Device::with_name("card0", Driver { log: log.clone() });

    // Actions and allocations interleaved, as a driver's probe would register them.
    let l = log.clone();
    let _ = dev
        .add_action_named("mode_config_cleanup", move |_| l.push("action 1"))
        .unwrap();
    let a = dev.alloc(Tracked::new("alloc 2", &log, &drops)).unwrap();
    let l = log.clone();
    let _ = drmm::add_action!(dev, move |_| l.push("action 3")).unwrap();
    let b = dev.alloc(Tracked::new("alloc 4", &log, &drops)).unwrap();
    let bytes = dev.kzalloc(128).unwrap();
    assert_eq!(dev.resource_count(), 5);

    // Several owners hold references: an open file, a mapped buffer, the binding.
    let file = dev.clone();
    let mapping = dev.clone();
    assert_eq!(Device::ref_count(&dev), 3);
    assert_eq!(a.get(&dev).unwrap().name, "alloc 2");
    assert_eq!(b.get(&file).unwrap().name, "alloc 4");
    assert_eq!(bytes.get(&mapping).unwrap().len(), 128);

    drop(dev); // unbind: the binding's reference
    drop(file); // close
    assert!(
        log.snapshot().is_empty(),
        "nothing released before the last put"
    );
    drop(mapping); // munmap: last reference

    assert_eq!(
        log.take(),
        [
            "drop alloc 4",
            "action 3",
            "drop alloc 2",
            "action 1",
            "drop driver data"
        ]
    );
    assert_eq!(drops.load(Ordering::SeqCst), 2);
}

#[test]
fn driver_data_is_readable_by_actions_and_dropped_after_them() {
    let log = Log::new();
    let dev = Device::new(Driver { log: log.clone() });
    for i in 0..3 {
        let _ = dev
            .add_action_named("reads data", move |d| {
                d.data().log.push(format!("action {i} sees data"))
            })
            .unwrap();
    }
    drop(dev);
    assert_eq!(
        log.take(),
        [
            "action 2 sees data",
            "action 1 sees data",
            "action 0 sees data",
            "drop driver data"
        ]
    );
}

#[test]
fn early_release_and_free_in_the_middle() {
    let log = Log::new();
    let drops = Arc::new(AtomicUsize::new(0));
    let dev = Device::new(());
    let l = log.clone();
    let _ = dev.add_action_named("a", move |_| l.push("a")).unwrap();
    let l = log.clone();
    let b = dev.add_action_named("b", move |_| l.push("b")).unwrap();
    let c = dev.alloc(Tracked::new("c", &log, &drops)).unwrap();
    let l = log.clone();
    let _ = dev.add_action_named("d", move |_| l.push("d")).unwrap();

    dev.release_action(b).unwrap();
    assert_eq!(log.take(), ["b"], "released now");
    dev.kfree(c).unwrap();
    assert_eq!(log.take(), ["drop c"], "freed now");
    assert_eq!(dev.resource_count(), 2);

    // New entries reuse freed slots but are still newest.
    let l = log.clone();
    let _ = dev.add_action_named("e", move |_| l.push("e")).unwrap();
    let l = log.clone();
    let _ = dev.add_action_named("f", move |_| l.push("f")).unwrap();
    drop(dev);
    assert_eq!(log.take(), ["f", "e", "d", "a"]);
    assert_eq!(drops.load(Ordering::SeqCst), 1, "c dropped exactly once");
}

#[test]
fn removed_action_never_runs_but_its_captures_are_dropped() {
    let log = Log::new();
    let drops = Arc::new(AtomicUsize::new(0));
    let dev = Device::new(());
    let t = Tracked::new("capture", &log, &drops);
    let h = dev
        .add_action_named("never", move |_| t.log.push("ran"))
        .unwrap();
    dev.remove_action(h).unwrap();
    assert_eq!(log.take(), ["drop capture"]);
    drop(dev);
    assert!(log.take().is_empty());
}

#[test]
fn entries_added_during_release_are_released_too() {
    // The kernel's drm_managed_release skips them (a known pitfall); promise 1 fixes it.
    let log = Log::new();
    let dev = Device::new(());
    let l = log.clone();
    let _ = dev
        .add_action_named("oldest", move |_| l.push("oldest"))
        .unwrap();
    let l = log.clone();
    let _ = dev
        .add_action_named("adds more", move |d| {
            l.push("adds more");
            let l2 = l.clone();
            let _ = d
                .add_action_named("added during release", move |d| {
                    l2.push("added during release");
                    let l3 = l2.clone();
                    let _ = d
                        .add_action_named("nested", move |_| l3.push("nested"))
                        .unwrap();
                })
                .unwrap();
            let _ = d.kzalloc(16).unwrap();
        })
        .unwrap();
    let l = log.clone();
    let _ = dev
        .add_action_named("newest", move |_| l.push("newest"))
        .unwrap();
    drop(dev);
    assert_eq!(
        log.take(),
        [
            "newest",
            "adds more",
            "added during release",
            "nested",
            "oldest"
        ]
    );
}

#[test]
fn release_order_survives_slot_reuse() {
    // Free many in the middle, add new ones into the reused slots, check global LIFO.
    let log = Log::new();
    let dev = Device::new(());
    let mut handles = Vec::new();
    for i in 0..20 {
        let l = log.clone();
        handles.push(Some(
            dev.add_action_named("n", move |_| l.push(format!("{i}")))
                .unwrap(),
        ));
    }
    for i in (0..20).filter(|i| i % 3 == 0) {
        dev.remove_action(handles[i].take().unwrap()).unwrap();
    }
    for i in 20..27 {
        let l = log.clone();
        let _ = dev
            .add_action_named("n", move |_| l.push(format!("{i}")))
            .unwrap();
    }
    drop(dev);
    let expected: Vec<String> = (0..27)
        .rev()
        .filter(|i| *i >= 20 || i % 3 != 0)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(log.take(), expected);
}

#[test]
fn action_can_release_an_older_entry_early_during_release() {
    // Promise 7's "final release racing with an explicit release", on one thread: an action
    // releases an older entry; it runs once, from the explicit call, and the list skips it.
    let log = Log::new();
    let dev = Device::new(std::sync::Mutex::new(None::<drmm::ActionHandle>));
    let l = log.clone();
    let old = dev.add_action_named("old", move |_| l.push("old")).unwrap();
    *dev.data().lock().unwrap() = Some(old);
    let l = log.clone();
    let _ = dev
        .add_action_named("releaser", move |d| {
            let h = d.data().lock().unwrap().take().unwrap();
            d.release_action(h).unwrap();
            l.push("releaser done");
        })
        .unwrap();
    drop(dev);
    assert_eq!(log.take(), ["old", "releaser done"]);
}

#[test]
fn handle_of_an_already_released_entry_is_detected_during_release() {
    // A newer entry's handle, kept in driver data, is read from an older action after the
    // list has released it: an error, not a use-after-free.
    let dev = Device::new(std::sync::Mutex::new(None::<drmm::Managed<u64>>));
    let seen = Arc::new(std::sync::Mutex::new(None));
    let s = seen.clone();
    let _ = dev
        .add_action_named("older reads newer", move |d| {
            let guard = d.data().lock().unwrap();
            let m = guard.as_ref().unwrap();
            *s.lock().unwrap() = Some(m.get(d).copied());
        })
        .unwrap();
    let newer = dev.alloc(7u64).unwrap();
    *dev.data().lock().unwrap() = Some(newer);
    drop(dev);
    assert_eq!(*seen.lock().unwrap(), Some(Err(Error::NotOnList)));
}

#[test]
fn no_resurrection_actions_only_see_the_logical_device() {
    // An action receives `&LogicalDevice<T>`, which has no way to make a `Device<T>`: the
    // following would not compile, which is the promise (checked by the doc test on
    // `LogicalDevice`). Here: the reference count is observable only on `Device`.
    let dev = Device::new(());
    let counted = Arc::new(AtomicUsize::new(0));
    let c = counted.clone();
    let _ = dev
        .add_action_named("reads", move |d| {
            c.store(d.resource_count() + 1, Ordering::SeqCst);
        })
        .unwrap();
    drop(dev);
    assert_eq!(counted.load(Ordering::SeqCst), 1);
}

#[test]
fn try_new_with_failure_releases_what_init_registered() {
    let log = Log::new();
    let l = log.clone();
    let r = Device::<u32>::try_new_with("card1", |dev| {
        let l2 = l.clone();
        let _ = dev.add_action_named("first", move |d| {
            assert!(d.try_data().is_none(), "no data on the failure path");
            l2.push("first");
        })?;
        let _ = dev.kzalloc(64)?;
        let l3 = l.clone();
        let _ = dev.add_action_named("second", move |_| l3.push("second"))?;
        Err(Error::NotOnList)
    });
    assert!(r.is_err());
    assert_eq!(log.take(), ["second", "first"]);
}

#[test]
fn kernel_named_helpers_have_the_documented_shapes() {
    let dev = Device::new(());
    let s = dev.kstrdup("vgpu").unwrap();
    assert_eq!(s.get(&dev).unwrap(), "vgpu");
    let m = dev.kmemdup(&[1u32, 2, 3]).unwrap();
    assert_eq!(m.get(&dev).unwrap(), &[1, 2, 3]);
    let z = dev.kcalloc(4, 8).unwrap();
    assert_eq!(z.get(&dev).unwrap(), &[0u8; 32]);
    let mut k = dev.kmalloc_array(3, 5).unwrap();
    assert_eq!(k.get_mut(&dev).unwrap().len(), 15);
    let a = dev.kzalloc_aligned(10, 256).unwrap();
    assert_eq!(a.get(&dev).unwrap().as_ptr() as usize % 256, 0);
    let d = dev.kmalloc(3).unwrap();
    assert_eq!(
        d.get(&dev).unwrap().as_ptr() as usize % 16,
        0,
        "default alignment 16"
    );
    assert_eq!(dev.resource_count(), 6);
    let names: Vec<_> = dev.snapshot().iter().map(|e| e.name()).collect();
    assert_eq!(
        names,
        [
            "kmalloc",
            "kzalloc",
            "kmalloc_array",
            "kcalloc",
            "kmemdup",
            "kstrdup"
        ]
    );
}

#[test]
fn zero_size_allocations_are_real_entries() {
    let dev = Device::new(());
    let z = dev.kzalloc(0).unwrap();
    assert_eq!(z.get(&dev).unwrap().len(), 0);
    let z2 = dev.kmalloc_aligned(0, 64).unwrap();
    assert_eq!(z2.get(&dev).unwrap().as_ptr() as usize % 64, 0);
    let unit = dev.alloc(()).unwrap();
    assert_eq!(dev.resource_count(), 3);
    assert!(dev.snapshot().iter().all(|e| e.size() == 0));
    dev.kfree(z).unwrap();
    dev.kfree(unit).unwrap();
    assert_eq!(dev.resource_count(), 1);
}

#[test]
fn snapshot_lists_live_entries_newest_first_with_locations() {
    let dev = Device::new(());
    let line = line!() + 1;
    let _ = drmm::add_action!(dev, |_| ()).unwrap();
    let _v = dev.alloc([0u8; 64]).unwrap();
    let snap = dev.snapshot();
    assert_eq!(snap.len(), 2);
    assert_eq!(snap[0].kind(), drmm::EntryKind::Alloc);
    assert_eq!(snap[0].size(), 64);
    assert_eq!(snap[0].name(), "[u8; 64]");
    assert_eq!(snap[1].kind(), drmm::EntryKind::Action);
    assert_eq!(snap[1].name(), "|_| ()");
    assert_eq!(snap[1].location().line(), line);
    assert!(snap[1].location().file().ends_with("drmm_seed.rs"));
    assert!(snap[0].seq() > snap[1].seq());
    assert!(format!("{}", snap[0]).contains("[u8; 64] (64 bytes)"));
}
