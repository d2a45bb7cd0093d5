//! Promise 5: a panicking action does not stop the others; the first panic is resumed after the
//! release completes; releasing while already unwinding does not abort.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Log, Tracked};
use drmm::Device;

fn message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

fn quiet<R>(f: impl FnOnce() -> R) -> R {
    // Keep expected panics out of the test output.
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = f();
    std::panic::set_hook(prev);
    r
}

#[test]
fn panic_in_the_middle_does_not_stop_the_release() {
    let log = Log::new();
    let drops = Arc::new(AtomicUsize::new(0));
    let dev = Device::new(Tracked::new("data", &log, &drops));
    for i in 0..5 {
        let l = log.clone();
        let _ = dev
            .add_action_named("step", move |_| {
                l.push(format!("action {i}"));
                if i == 2 {
                    panic!("action 2 failed");
                }
            })
            .unwrap();
        let _ = dev
            .alloc(Tracked::new(&format!("alloc {i}"), &log, &drops))
            .unwrap();
    }
    let r = quiet(|| catch_unwind(AssertUnwindSafe(move || drop(dev))));
    let payload = r.expect_err("the panic is resumed after the release");
    assert_eq!(message(&*payload), "action 2 failed");
    let got = log.take();
    let expected: Vec<String> = (0..5)
        .rev()
        .flat_map(|i| [format!("drop alloc {i}"), format!("action {i}")])
        .chain(["drop data".to_string()])
        .collect();
    assert_eq!(got, expected, "every entry released, data dropped last");
    assert_eq!(drops.load(Ordering::SeqCst), 6);
}

#[test]
fn first_of_several_panics_is_resumed_others_are_logged() {
    let ran = Arc::new(AtomicUsize::new(0));
    let dev = Device::new(());
    for i in 0..4 {
        let r = ran.clone();
        let _ = dev
            .add_action_named("p", move |_| {
                r.fetch_add(1, Ordering::SeqCst);
                if i % 2 == 1 {
                    panic!("panic {i}");
                }
            })
            .unwrap();
    }
    let r = quiet(|| catch_unwind(AssertUnwindSafe(move || drop(dev))));
    // Release order is newest first: action 3 panics first.
    assert_eq!(message(&*r.unwrap_err()), "panic 3");
    assert_eq!(ran.load(Ordering::SeqCst), 4);
}

#[test]
fn release_while_unwinding_does_not_abort() {
    let log = Log::new();
    let drops = Arc::new(AtomicUsize::new(0));
    let dev = Device::new(Tracked::new("data", &log, &drops));
    let l = log.clone();
    let _ = dev
        .add_action_named("older", move |_| l.push("older ran"))
        .unwrap();
    let _ = dev
        .add_action_named("panics during unwinding", |_| panic!("second panic"))
        .unwrap();
    let r = quiet(|| {
        catch_unwind(AssertUnwindSafe(move || {
            let _dev = dev; // dropped while the thread unwinds from the panic below
            panic!("original panic");
        }))
    });
    assert_eq!(
        message(&*r.unwrap_err()),
        "original panic",
        "the original panic survives"
    );
    assert_eq!(log.take(), ["older ran", "drop data"]);
}

#[test]
fn panicking_driver_data_drop_is_resumed_after_the_memory_is_freed() {
    struct Bomb(Log);
    impl Drop for Bomb {
        fn drop(&mut self) {
            self.0.push("bomb");
            panic!("driver data drop");
        }
    }
    let log = Log::new();
    let dev = Device::new(Bomb(log.clone()));
    let l = log.clone();
    let _ = dev.add_action_named("a", move |_| l.push("a")).unwrap();
    let r = quiet(|| catch_unwind(AssertUnwindSafe(move || drop(dev))));
    assert_eq!(message(&*r.unwrap_err()), "driver data drop");
    assert_eq!(log.take(), ["a", "bomb"]);
}

#[test]
fn explicit_release_propagates_the_panic_and_the_entry_is_gone() {
    let ran = Arc::new(AtomicUsize::new(0));
    let dev = Device::new(());
    let r = ran.clone();
    let h = dev
        .add_action_named("p", move |_| {
            r.fetch_add(1, Ordering::SeqCst);
            panic!("explicit");
        })
        .unwrap();
    let res = quiet(|| catch_unwind(AssertUnwindSafe(|| dev.release_action(h))));
    assert_eq!(message(&*res.unwrap_err()), "explicit");
    assert_eq!(dev.resource_count(), 0);
    drop(dev);
    assert_eq!(ran.load(Ordering::SeqCst), 1, "ran exactly once");
}

#[test]
fn panic_at_every_position_of_a_list() {
    // Panic injection: for each position, a list of N actions where that one panics; every
    // other action still runs exactly once, in order, and the panic is the one resumed.
    const N: usize = 12;
    for bad in 0..N {
        let log = Log::new();
        let dev = Device::new(());
        for i in 0..N {
            let l = log.clone();
            let _ = dev
                .add_action_named("a", move |_| {
                    l.push(i.to_string());
                    if i == bad {
                        panic!("bad {i}");
                    }
                })
                .unwrap();
        }
        let r = quiet(|| catch_unwind(AssertUnwindSafe(move || drop(dev))));
        assert_eq!(message(&*r.unwrap_err()), format!("bad {bad}"));
        let expected: Vec<String> = (0..N).rev().map(|i| i.to_string()).collect();
        assert_eq!(log.take(), expected, "panic at position {bad}");
    }
}
