//! Devres groups through the public API: release, remove, nesting, partial overlap, and
//! handles of released group members.

use std::sync::{Arc, Mutex};

use drmm::Error;
use drmm::bus::{Bound, Bus};

type Log = Arc<Mutex<Vec<&'static str>>>;

fn act(b: &Bound<'_>, log: &Log, name: &'static str) {
    let l = log.clone();
    let _ = b
        .add_action_named(name, move || l.lock().unwrap().push(name))
        .unwrap();
}

fn names(b: &Bound<'_>) -> Vec<&'static str> {
    b.snapshot().iter().map(|e| e.name()).collect()
}

fn with<R>(f: impl FnOnce(&mut Bound<'_>, &Log) -> R) -> (R, Vec<&'static str>) {
    let bus = Bus::new("g");
    let dev = bus.add_device("d");
    let log = Log::default();
    let r = dev.with_driverless(|b| f(b, &log)).unwrap();
    let l = log.lock().unwrap().clone();
    (r, l)
}

#[test]
fn release_group_releases_only_its_range_newest_first() {
    let (_, log) = with(|b, log| {
        act(b, log, "before");
        let g = b.open_group().unwrap();
        act(b, log, "a");
        act(b, log, "b");
        b.close_group(&g).unwrap();
        act(b, log, "after");
        assert_eq!(b.release_group(g).unwrap(), 2);
        assert_eq!(names(b), ["after", "before"]);
    });
    assert_eq!(log, ["b", "a"]);
}

#[test]
fn an_open_group_extends_to_the_newest_entry() {
    let (_, log) = with(|b, log| {
        act(b, log, "before");
        let g = b.open_group().unwrap();
        act(b, log, "a");
        act(b, log, "b");
        assert_eq!(b.release_group(g).unwrap(), 2);
        assert_eq!(names(b), ["before"]);
    });
    assert_eq!(log, ["b", "a"]);
}

#[test]
fn nested_groups_are_released_with_their_parent() {
    let (_, log) = with(|b, log| {
        let outer = b.open_group().unwrap();
        act(b, log, "o1");
        let inner = b.open_group().unwrap();
        act(b, log, "i1");
        b.close_group(&inner).unwrap();
        act(b, log, "o2");
        b.close_group(&outer).unwrap();
        assert_eq!(b.release_group(outer).unwrap(), 3);
        assert_eq!(b.resource_count(), 0, "inner markers went too");
        assert_eq!(b.release_group(inner), Err(Error::NotOnList));
    });
    assert_eq!(log, ["o2", "i1", "o1"]);
}

#[test]
fn releasing_an_inner_group_leaves_the_outer_intact() {
    let (_, log) = with(|b, log| {
        let outer = b.open_group().unwrap();
        act(b, log, "o1");
        let inner = b.open_group().unwrap();
        act(b, log, "i1");
        b.close_group(&inner).unwrap();
        act(b, log, "o2");
        b.close_group(&outer).unwrap();
        assert_eq!(b.release_group(inner).unwrap(), 1);
        assert_eq!(names(b), ["grp>", "o2", "o1", "grp<"]);
        assert_eq!(b.release_group(outer).unwrap(), 2);
    });
    assert_eq!(log, ["i1", "o2", "o1"]);
}

#[test]
fn partially_overlapping_groups_keep_their_markers() {
    // A opens, B opens, A closes, B closes: releasing A releases what A and B share, and B's
    // markers stay with the rest of B.
    let (_, log) = with(|b, log| {
        let a = b.open_group().unwrap();
        act(b, log, "a only");
        let g = b.open_group().unwrap();
        act(b, log, "a and b");
        b.close_group(&a).unwrap();
        act(b, log, "b only");
        b.close_group(&g).unwrap();
        assert_eq!(b.release_group(a).unwrap(), 2);
        assert_eq!(names(b), ["grp>", "b only", "grp<"]);
        assert_eq!(b.release_group(g).unwrap(), 1);
    });
    assert_eq!(log, ["a and b", "a only", "b only"]);
}

#[test]
fn remove_group_keeps_the_entries_for_the_binding() {
    let bus = Bus::new("g");
    let dev = bus.add_device("d");
    let log = Log::default();
    dev.with_driverless(|b| {
        let g = b.open_group().unwrap();
        act(b, &log, "kept");
        b.close_group(&g).unwrap();
        assert_eq!(b.close_group(&g), Err(Error::GroupClosed));
        b.remove_group(g).unwrap();
        assert_eq!(names(b), ["kept"]);
    })
    .unwrap();
    assert!(log.lock().unwrap().is_empty());
    dev.remove().unwrap();
    assert_eq!(*log.lock().unwrap(), ["kept"]);
}

#[test]
fn handles_of_a_released_group_read_as_gone() {
    with(|b, _| {
        let g = b.open_group().unwrap();
        let buf = b.kzalloc(32).unwrap();
        let mut bytes = b.kmalloc(8).unwrap();
        let h = b.add_action(|| {}).unwrap();
        assert!(b.is_action_added(&h));
        assert_eq!(b.release_group(g).unwrap(), 3);
        assert_eq!(buf.get(b).err(), Some(Error::NotOnList));
        assert_eq!(b.krealloc(&mut bytes, 16), Err(Error::NotOnList));
        assert!(!b.is_action_added(&h));
        assert_eq!(b.release_action(h), Err(Error::NotOnList));
        assert_eq!(b.kfree(buf), Err(Error::NotOnList));
    });
}

#[test]
fn groups_of_another_device_are_refused() {
    let bus = Bus::new("g");
    let (d1, d2) = (bus.add_device("d1"), bus.add_device("d2"));
    let g = d1.with_driverless(|b| b.open_group().unwrap()).unwrap();
    d2.with_driverless(|b| {
        assert!(matches!(
            b.close_group(&g),
            Err(Error::ForeignHandle { .. })
        ));
        assert!(matches!(
            b.release_group(g),
            Err(Error::ForeignHandle { .. })
        ));
    })
    .unwrap();
}

#[test]
fn a_panicking_member_does_not_stop_the_group_release() {
    let log = Log::default();
    let bus = Bus::new("g");
    let dev = bus.add_device("d");
    let r = dev.with_driverless(|b| {
        let g = b.open_group().unwrap();
        act(b, &log, "older");
        let _ = b.add_action(|| panic!("member panics")).unwrap();
        act(b, &log, "newer");
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.release_group(g)))
    });
    assert!(r.unwrap().is_err());
    assert_eq!(*log.lock().unwrap(), ["newer", "older"]);
    assert_eq!(dev.resource_count(), 0);
}
