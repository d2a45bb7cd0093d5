//! Promise 7: every list operation is safe from any thread, concurrently with any other.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use drmm::Device;

const THREADS: usize = 4;
const PER_THREAD: usize = if cfg!(miri) { 20 } else { 2_000 };

#[test]
fn concurrent_add_free_release_from_several_threads() {
    let ran = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let dev = Device::new(());
    let barrier = Arc::new(Barrier::new(THREADS));
    let kept: Vec<_> = (0..THREADS)
        .map(|t| {
            let (dev, ran, dropped, barrier) =
                (dev.clone(), ran.clone(), dropped.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                let mut keep = Vec::new();
                for i in 0..PER_THREAD {
                    let r = ran.clone();
                    let h = dev
                        .add_action_named("count", move |_| {
                            r.fetch_add(1, Ordering::SeqCst);
                        })
                        .unwrap();
                    struct D(Arc<AtomicUsize>);
                    impl Drop for D {
                        fn drop(&mut self) {
                            self.0.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    let m = dev.alloc(D(dropped.clone())).unwrap();
                    match (i + t) % 4 {
                        0 => dev.release_action(h).unwrap(),
                        1 => dev.kfree(m).unwrap(),
                        2 => {
                            dev.remove_action(h).unwrap();
                            keep.push(m);
                        }
                        _ => keep.push(m),
                    }
                }
                keep
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    drop(kept);
    let total = THREADS * PER_THREAD;
    // Removed actions (case 2) never run; everything else runs exactly once.
    let removed = (0..THREADS)
        .map(|t| (0..PER_THREAD).filter(|i| (i + t) % 4 == 2).count())
        .sum::<usize>();
    drop(dev);
    assert_eq!(ran.load(Ordering::SeqCst), total - removed);
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        total,
        "every value dropped exactly once"
    );
}

#[test]
fn last_reference_dropped_on_another_thread_releases_there() {
    let dev = Device::new(());
    let on = Arc::new(Mutex::new(None));
    let o = on.clone();
    let _ = dev
        .add_action_named("where", move |_| {
            *o.lock().unwrap() = Some(thread::current().id());
        })
        .unwrap();
    let other = thread::spawn(move || {
        drop(dev);
        thread::current().id()
    })
    .join()
    .unwrap();
    assert_eq!(*on.lock().unwrap(), Some(other));
}

#[test]
fn many_threads_hold_and_drop_references() {
    let ran = Arc::new(AtomicUsize::new(0));
    let dev = Device::new(());
    let r = ran.clone();
    let _ = dev
        .add_action_named("once", move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let d = dev.clone();
            thread::spawn(move || {
                for _ in 0..PER_THREAD / 10 {
                    let c = d.clone();
                    let _ = c.kzalloc(8).unwrap();
                    drop(c);
                }
            })
        })
        .collect();
    drop(dev);
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "released exactly once, by the last holder"
    );
}

#[test]
fn explicit_release_racing_with_final_release_runs_once() {
    // One thread releases an entry explicitly from inside an action while the final release
    // runs on another: the entry runs exactly once whichever wins.
    for _ in 0..if cfg!(miri) { 3 } else { 200 } {
        let ran = Arc::new(AtomicUsize::new(0));
        let dev = Device::new(Mutex::new(None::<drmm::ActionHandle>));
        let r = ran.clone();
        let h = dev
            .add_action_named("target", move |_| {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        *dev.data().lock().unwrap() = Some(h);
        let d2 = dev.clone();
        let t = thread::spawn(move || {
            let h = d2.data().lock().unwrap().take();
            if let Some(h) = h {
                let _ = d2.release_action(h);
            }
        });
        drop(dev);
        t.join().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }
}
