//! Open files and the unplug gate.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use drmm::{Device, Error};

#[test]
fn open_needs_a_registered_device_and_holds_a_reference() {
    let dev = Device::new(1u8);
    assert_eq!(dev.open(()).unwrap_err(), Error::NotRegistered);
    dev.register().unwrap();
    let f = dev.open(String::from("client")).unwrap();
    assert_eq!(Device::ref_count(&dev), 2);
    assert_eq!(dev.open_files(), 1);
    assert_eq!(f.data(), "client");
    assert_eq!(f.len(), 6, "derefs to the per-file data");
    f.close();
    assert_eq!(Device::ref_count(&dev), 1);
    assert_eq!(dev.open_files(), 0);
    let e = dev.open_with::<()>(|_| Err(Error::probe_failed("no")));
    assert!(e.is_err());
    assert_eq!(dev.open_files(), 0);
}

#[test]
fn the_last_close_releases_the_device_after_the_file_data() {
    let log = Arc::new(Mutex::new(Vec::new()));
    struct N(Arc<Mutex<Vec<&'static str>>>, &'static str);
    impl Drop for N {
        fn drop(&mut self) {
            self.0.lock().unwrap().push(self.1);
        }
    }
    let dev = Device::new(N(log.clone(), "device data"));
    dev.register().unwrap();
    let l = log.clone();
    let _ = dev
        .add_action_named("drmm", move |_| l.lock().unwrap().push("drmm"))
        .unwrap();
    let mut f = dev.open(N(log.clone(), "file data")).unwrap();
    f.data_mut().1 = "file data (mutated)";
    drop(dev);
    assert!(log.lock().unwrap().is_empty());
    drop(f);
    assert_eq!(
        *log.lock().unwrap(),
        ["file data (mutated)", "drmm", "device data"]
    );
}

#[test]
fn nested_enter_works_and_inner_enter_fails_after_unplug_began() {
    let dev = Device::new(());
    let outer = dev.enter().unwrap();
    let inner = dev.enter().unwrap();
    drop(outer);
    drop(inner);
    dev.unplug();
    assert!(dev.enter().is_none());
    assert!(dev.is_unplugged());
}

#[test]
fn no_thread_is_inside_the_gate_after_unplug_returns() {
    for _ in 0..20 {
        let dev = Device::new(());
        dev.register().unwrap();
        let inside = AtomicUsize::new(0);
        let entered = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let start = Barrier::new(5);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    start.wait();
                    while !stop.load(Ordering::Relaxed) {
                        match dev.enter() {
                            Some(_g) => {
                                inside.fetch_add(1, Ordering::SeqCst);
                                entered.fetch_add(1, Ordering::Relaxed);
                                std::hint::spin_loop();
                                inside.fetch_sub(1, Ordering::SeqCst);
                            }
                            None => break,
                        }
                    }
                });
            }
            start.wait();
            std::thread::sleep(Duration::from_millis(2));
            assert!(dev.unplug());
            assert_eq!(inside.load(Ordering::SeqCst), 0, "a thread is still inside");
            assert!(dev.enter().is_none());
            assert_eq!(dev.open(()).unwrap_err(), Error::Unplugged);
            stop.store(true, Ordering::Relaxed);
        });
        assert!(entered.load(Ordering::Relaxed) > 0);
    }
}

#[test]
fn unplug_waits_for_a_section_that_is_inside() {
    let dev = Device::new(());
    let done = AtomicBool::new(false);
    let inside = Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            let _g = dev.enter().unwrap();
            inside.wait();
            std::thread::sleep(Duration::from_millis(50));
            done.store(true, Ordering::SeqCst);
        });
        inside.wait();
        dev.unplug();
        assert!(
            done.load(Ordering::SeqCst),
            "unplug returned before the section left"
        );
    });
}

#[test]
fn one_devices_unplug_does_not_wait_for_another_devices_readers() {
    let (a, b) = (Device::new(()), Device::new(()));
    let inside = Barrier::new(2);
    let release = Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            let _g = b.enter().unwrap();
            inside.wait();
            release.wait();
        });
        inside.wait();
        // A reader holds b's gate for as long as we like: a's unplug must still return.
        a.unplug();
        assert!(a.is_unplugged() && !b.is_unplugged());
        release.wait();
    });
}

#[test]
fn files_opened_before_unplug_keep_software_state() {
    let dev = Device::new(vec![1u32, 2, 3]);
    dev.register().unwrap();
    let table = dev.kmemdup(&[9u8; 4]).unwrap();
    let f = dev.open(()).unwrap();
    drop(dev.clone());
    f.device().unplug();
    assert!(f.enter().is_none());
    assert_eq!(f.device().data(), &[1, 2, 3]);
    assert_eq!(table.get(&**f.device()).unwrap(), &[9; 4]);
    assert!(!f.device().is_registered());
}

#[test]
fn open_racing_unplug_never_succeeds_after_unplug_returned() {
    for _ in 0..50 {
        let dev = Device::new(());
        dev.register().unwrap();
        let unplugged = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                loop {
                    let was = unplugged.load(Ordering::SeqCst);
                    match dev.open(()) {
                        Ok(f) => {
                            assert!(!was, "opened after unplug returned");
                            drop(f);
                        }
                        Err(e) => {
                            assert_eq!(e, Error::Unplugged);
                            break;
                        }
                    }
                }
            });
            dev.unplug();
            unplugged.store(true, Ordering::SeqCst);
        });
    }
}

#[test]
fn forgetting_a_file_only_leaks_the_reference() {
    let dev = Device::new(());
    dev.register().unwrap();
    std::mem::forget(dev.open(()).unwrap());
    assert_eq!(Device::ref_count(&dev), 2);
    assert!(dev.unplug(), "a forgotten file does not hold the gate");
}
