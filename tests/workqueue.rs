//! The managed ordered work queue: order, drain at the last reference and at unbind, early
//! destroy without a double destroy, panicking work items, and work items that re-enter the
//! queue or release its owner from the worker thread.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use common::hook::{Hook, in_child, message, quiet, while_unwinding, within};
use drmm::workqueue::WorkQueue;
use drmm::{Bound, Device, Driver, Error};

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, s: impl Into<String>) {
    log.lock().unwrap().push(s.into());
}

#[test]
fn work_runs_in_order_on_the_named_thread() {
    within(20, || {
        let card = Device::new(());
        let wq = card.alloc_ordered_workqueue("card0-wq").unwrap();
        let log: Log = Default::default();
        for i in 0..50 {
            let l = log.clone();
            wq.queue_work(move || {
                assert_eq!(thread::current().name(), Some("card0-wq"));
                push(&l, i.to_string());
            })
            .unwrap();
        }
        assert_eq!(wq.flush_workqueue(), 0);
        let want: Vec<String> = (0..50).map(|i| i.to_string()).collect();
        assert_eq!(*log.lock().unwrap(), want);
    });
}

#[test]
fn the_last_reference_drains_queued_work_then_joins() {
    within(20, || {
        let card = Device::new(());
        let wq = card.alloc_ordered_workqueue("drain").unwrap();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let ran = Arc::new(AtomicUsize::new(0));
        // The first item blocks until the release has begun, so the rest is still queued.
        wq.queue_work(move || go_rx.recv().unwrap()).unwrap();
        for _ in 0..10 {
            let r = ran.clone();
            wq.queue_work(move || {
                thread::sleep(Duration::from_millis(1));
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        }
        let releaser = thread::spawn(move || drop(card));
        // The destroy has begun once the queue says so; the first item still blocks it.
        while !wq.is_destroyed() {
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(ran.load(Ordering::SeqCst), 0, "still queued");
        // Other threads may not queue while the queue drains.
        assert_eq!(wq.queue_work(|| ()), Err(Error::QueueClosed));
        go_tx.send(()).unwrap();
        releaser.join().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 10, "drained before the join");
        assert!(wq.is_destroyed());
        assert!(!wq.destroy_workqueue(), "already destroyed");
    });
}

#[test]
fn chained_work_queued_while_draining_runs_before_the_join() {
    within(20, || {
        let card = Device::new(());
        let wq = card.alloc_ordered_workqueue("chain").unwrap();
        let log: Log = Default::default();
        let (again, l) = (wq.clone(), log.clone());
        wq.queue_work(move || {
            thread::sleep(Duration::from_millis(10));
            let l2 = l.clone();
            again.queue_work(move || push(&l2, "chained")).unwrap();
            push(&l, "first");
        })
        .unwrap();
        drop(card);
        assert_eq!(*log.lock().unwrap(), ["first", "chained"]);
    });
}

#[test]
fn early_destroy_then_managed_release_destroys_once() {
    within(20, || {
        let card = Device::new(());
        let wq = card.alloc_ordered_workqueue("early").unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        wq.queue_work(move || {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        assert_eq!(card.resource_count(), 1, "the destroy_workqueue action");
        assert!(wq.destroy_workqueue(), "the driver destroys it early");
        assert_eq!(ran.load(Ordering::SeqCst), 1, "drained");
        assert!(!wq.destroy_workqueue());
        assert_eq!(wq.queue_work(|| ()), Err(Error::QueueClosed));
        drop(card); // the drmm action finds it destroyed: a no-op
        assert!(!wq.destroy_workqueue());
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn concurrent_destroys_destroy_once_and_all_wait_for_the_worker() {
    within(20, || {
        let wq = WorkQueue::new("race").unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..20 {
            let r = ran.clone();
            wq.queue_work(move || {
                thread::sleep(Duration::from_millis(1));
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        }
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (q, r) = (wq.clone(), ran.clone());
                thread::spawn(move || {
                    let me = q.destroy_workqueue();
                    assert_eq!(r.load(Ordering::SeqCst), 20, "every item ran");
                    me
                })
            })
            .collect();
        let firsts = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&b| b)
            .count();
        assert_eq!(firsts, 1);
    });
}

#[test]
fn a_panicking_item_is_reported_and_later_items_run() {
    within(20, || {
        let card = Device::new(());
        let wq = card.alloc_ordered_workqueue("panics").unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        quiet(|| {
            wq.queue_work(|| panic!("first bad item")).unwrap();
            wq.queue_work(|| panic!("second bad item")).unwrap();
            let r = ran.clone();
            wq.queue_work(move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
            assert_eq!(wq.flush_workqueue(), 2, "both counted");
        });
        assert_eq!(ran.load(Ordering::SeqCst), 1, "later items still ran");
        assert_eq!(wq.panicked(), 2);
        // The release resumes the first panic once the device is released.
        let r = quiet(|| catch_unwind(AssertUnwindSafe(|| drop(card))));
        assert_eq!(message(&*r.expect_err("resumed")), "first bad item");
        assert!(wq.is_destroyed());
    });
}

#[test]
fn a_panic_reports_an_error_event_on_the_worker() {
    // Alone in a child process: `tracing`'s cached interest is process-wide, and the parallel
    // tests without a subscriber race with this one's.
    if !in_child("a_panic_reports_an_error_event_on_the_worker") {
        return;
    }
    within(20, || {
        let events: Log = Default::default();
        let wq = WorkQueue::new("report").unwrap();
        let e = events.clone();
        // A subscriber on the worker thread: set by a first item for the next one.
        let (tx, rx) = mpsc::channel::<()>();
        wq.queue_work(move || {
            common::interest::pin();
            let g = tracing::subscriber::set_default(Hook(move |ev: &str| push(&e, ev)));
            // The worker keeps this subscriber for the items that follow.
            std::mem::forget(g);
            // Registers the hook's interest in error events on this thread.
            tracing::error!(target: "drmm", "subscriber ready");
            tx.send(()).unwrap();
        })
        .unwrap();
        rx.recv().unwrap();
        let before = events.lock().unwrap().len();
        quiet(|| {
            wq.queue_work(|| panic!("boom")).unwrap();
            wq.flush_workqueue();
        });
        let log = events.lock().unwrap().clone();
        assert!(log[before..].iter().any(|e| e == "ERROR"), "{log:?}");
        let r = quiet(|| catch_unwind(AssertUnwindSafe(|| wq.destroy_workqueue())));
        assert_eq!(message(&*r.expect_err("resumed by destroy")), "boom");
    });
}

#[test]
fn release_while_unwinding_logs_the_panic_instead_of_resuming() {
    within(20, || {
        let card = Device::new(());
        let wq = card.alloc_ordered_workqueue("unwind").unwrap();
        quiet(|| {
            wq.queue_work(|| panic!("item")).unwrap();
            wq.flush_workqueue();
        });
        let caught = while_unwinding(move || drop(card));
        assert_eq!(caught, "outer", "no second panic during unwinding");
        assert!(wq.is_destroyed());
    });
}

#[test]
fn the_last_reference_dropped_by_a_work_item_does_not_join_itself() {
    within(20, || {
        let card = Device::new(());
        let wq = card.alloc_ordered_workqueue("self").unwrap();
        let log: Log = Default::default();
        let (l1, l2) = (log.clone(), log.clone());
        let (done_tx, done_rx) = mpsc::channel::<()>();
        // The first item waits until the second is queued: otherwise it could destroy the
        // queue before the second `queue_work`, which would then (rightly) be refused.
        let (go_tx, go_rx) = mpsc::channel::<()>();
        wq.queue_work(move || {
            go_rx.recv().unwrap();
            drop(card); // the last reference: the release destroys this very queue
            push(&l1, "released on the worker");
        })
        .unwrap();
        wq.queue_work(move || {
            push(&l2, "queued before, still ran");
            done_tx.send(()).unwrap();
        })
        .unwrap();
        go_tx.send(()).unwrap();
        done_rx.recv().unwrap();
        // The worker ends on its own; a destroy from here waits for that.
        assert!(!wq.destroy_workqueue());
        assert_eq!(
            *log.lock().unwrap(),
            ["released on the worker", "queued before, still ran"]
        );
    });
}

#[test]
fn a_work_item_may_destroy_flush_drain_and_requeue_its_own_queue() {
    within(20, || {
        let wq = WorkQueue::new("reenter").unwrap();
        let q = wq.clone();
        let log: Log = Default::default();
        let l = log.clone();
        let (tx, rx) = mpsc::channel::<()>();
        wq.queue_work(move || {
            assert_eq!(q.flush_workqueue(), 0, "no wait on the worker");
            q.drain_workqueue();
            let l2 = l.clone();
            q.queue_work(move || {
                push(&l2, "chained after destroy");
                tx.send(()).unwrap();
            })
            .unwrap();
            assert!(q.destroy_workqueue(), "destroyed from its own worker");
            assert!(!q.destroy_workqueue());
            push(&l, "item done");
        })
        .unwrap();
        rx.recv().unwrap();
        assert!(!wq.destroy_workqueue());
        assert_eq!(*log.lock().unwrap(), ["item done", "chained after destroy"]);
        assert_eq!(wq.queue_work(|| ()), Err(Error::QueueClosed));
    });
}

#[test]
fn the_last_handle_dropped_by_a_work_item_detaches_the_worker() {
    within(20, || {
        let wq = WorkQueue::new("last-handle").unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        let q = wq.clone();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        wq.queue_work(move || {
            go_rx.recv().unwrap();
            drop(q); // the last handle, on the worker
            tx.send(()).unwrap();
        })
        .unwrap();
        drop(wq);
        go_tx.send(()).unwrap();
        rx.recv().unwrap();
    });
}

#[test]
fn a_panicking_item_that_drops_the_last_reference_while_unwinding() {
    within(20, || {
        let card = Device::new(());
        let wq = card.alloc_ordered_workqueue("unwind-self").unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        struct DropOnUnwind(Option<Device<()>>);
        impl Drop for DropOnUnwind {
            fn drop(&mut self) {
                assert!(thread::panicking());
                drop(self.0.take()); // the release runs on the worker, during unwinding
            }
        }
        quiet(|| {
            let held = DropOnUnwind(Some(card));
            // As above: the first item must not destroy the queue before the second is queued.
            let (go_tx, go_rx) = mpsc::channel::<()>();
            wq.queue_work(move || {
                let _held = held;
                go_rx.recv().unwrap();
                panic!("item panics while holding the last reference");
            })
            .unwrap();
            wq.queue_work(move || tx.send(()).unwrap()).unwrap();
            go_tx.send(()).unwrap();
            rx.recv().unwrap();
        });
        assert!(wq.is_destroyed());
        assert_eq!(wq.panicked(), 1);
        assert!(!wq.destroy_workqueue());
    });
}

#[test]
fn a_work_item_touches_hardware_inside_the_gate() {
    within(20, || {
        let card = Device::new(AtomicUsize::new(0));
        let wq = card.alloc_ordered_workqueue("gate").unwrap();
        for _ in 0..3 {
            let dev = card.clone();
            wq.queue_work(move || {
                if let Ok(_inside) = dev.enter_or_unplugged() {
                    dev.data().fetch_add(1, Ordering::SeqCst);
                }
            })
            .unwrap();
        }
        wq.flush_workqueue();
        card.unplug();
        let dev = card.clone();
        wq.queue_work(move || {
            assert!(dev.enter().is_none(), "refused after unplug");
        })
        .unwrap();
        assert_eq!(wq.flush_workqueue(), 0);
        assert_eq!(card.data().load(Ordering::SeqCst), 3);
    });
}

struct WqDriver(Log);
impl Driver for WqDriver {
    type Data = WorkQueue;
    fn probe(&self, b: &mut Bound<'_>) -> drmm::Result<WorkQueue> {
        let log = self.0.clone();
        let _ = b.add_action_named("log", move || push(&log, "older devm action"))?;
        b.alloc_ordered_workqueue("devm-wq")
    }
    fn remove(&self, _: &mut Bound<'_>, wq: &WorkQueue) {
        let log = self.0.clone();
        wq.queue_work(move || {
            thread::sleep(Duration::from_millis(10));
            push(&log, "work queued by remove");
        })
        .unwrap();
    }
}

#[test]
fn devm_queue_is_drained_at_unbind_in_list_order() {
    within(20, || {
        let log: Log = Default::default();
        let bus = drmm::Bus::new("platform");
        let dev = bus.add_device("gpu.0");
        dev.bind(Arc::new(WqDriver(log.clone()))).unwrap();
        let wq = dev
            .try_with_bound(|b| Ok(b.driver_data_checked::<WorkQueue>()?.clone()))
            .unwrap();
        dev.unbind().unwrap();
        assert!(wq.is_destroyed());
        assert_eq!(
            *log.lock().unwrap(),
            ["work queued by remove", "older devm action"],
            "drained by its newer devres entry, before the older one"
        );
    });
}

#[test]
fn a_refused_items_captures_are_dropped_outside_the_lock() {
    within(20, || {
        struct Reenter(WorkQueue, Arc<AtomicUsize>);
        impl Drop for Reenter {
            fn drop(&mut self) {
                // Under the queue's lock this would deadlock.
                assert_eq!(self.0.queue_work(|| ()), Err(Error::QueueClosed));
                assert_eq!(self.0.flush_workqueue(), 0);
                self.1.fetch_add(1, Ordering::SeqCst);
            }
        }
        let wq = WorkQueue::new("refused").unwrap();
        assert!(wq.destroy_workqueue());
        let dropped = Arc::new(AtomicUsize::new(0));
        let held = Reenter(wq.clone(), dropped.clone());
        assert_eq!(wq.queue_work(move || drop(held)), Err(Error::QueueClosed));
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "dropped unrun, once");
    });
}

#[test]
fn the_last_handle_dropped_while_unwinding_logs_the_items_panic() {
    within(20, || {
        let wq = WorkQueue::new("unwind-handle").unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        quiet(|| {
            wq.queue_work(|| panic!("item")).unwrap();
            wq.queue_work(move || {
                thread::sleep(Duration::from_millis(5));
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        });
        let caught = while_unwinding(move || drop(wq));
        assert_eq!(caught, "outer", "the item's panic is logged, not resumed");
        assert_eq!(ran.load(Ordering::SeqCst), 1, "drained before the join");
    });
}
