//! Many free-running clients, a hot-unplug at a random moment, several seeds, both lifetimes:
//! no deadlock, only the expected errors, what was written is read back, nothing leaks, and
//! the card is released in order at the last close.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use vgpu::rng::Rng;
use vgpu::{Binding, Client, Error, Journal, Lifetime, Owner, VgpuDriver};

struct Tally {
    done: usize,
    refused: usize,
    canceled: usize,
    caught: usize,
}

fn client(
    card: drmm::Device<vgpu::Gpu>,
    id: usize,
    seed: u64,
    ops: usize,
    progress: Arc<AtomicUsize>,
) -> (Tally, bool) {
    let mut rng = Rng::new(seed ^ (id as u64) << 32);
    let mut tally = Tally {
        done: 0,
        refused: 0,
        canceled: 0,
        caught: 0,
    };
    let mut c = match Client::open(&card, id) {
        Ok(c) => c,
        // Opened after the unplug: refused, nothing else to do.
        Err(e) => {
            assert_eq!(e, Error::Unplugged);
            tally.refused += 1;
            return (tally, false);
        }
    };
    drop(card);
    let mut handles = Vec::new();
    for _ in 0..1 + rng.below(3) {
        match c.create_bo() {
            Ok(h) => {
                c.map(h).unwrap();
                handles.push(h);
            }
            // Devm pages need the binding: gone after the unbind.
            Err(e) => assert_eq!(e, Error::Unplugged),
        }
    }
    let mut written = vec![0u32; handles.len() + 1];
    let mut poisoned = vec![false; handles.len() + 1];
    for _ in 0..ops {
        progress.fetch_add(1, Ordering::Relaxed);
        if handles.is_empty() {
            break;
        }
        let h = handles[rng.below(handles.len())];
        match rng.below(4) {
            0 | 1 => {
                let value = rng.next_u64() as u32 | 1;
                match c.submit(h, value, None).map(|f| f.wait()) {
                    Ok(Ok(_)) => {
                        tally.done += 1;
                        written[h as usize] = value;
                    }
                    Ok(Err(e)) => {
                        assert_eq!(e, Error::Canceled);
                        tally.canceled += 1;
                        poisoned[h as usize] = true;
                    }
                    Err(Error::Unplugged) => tally.refused += 1,
                    Err(e) => panic!("client-{id}: submit: {e}"),
                }
            }
            2 => match c.read(h) {
                Ok(v) => assert!(
                    poisoned[h as usize] || v == written[h as usize],
                    "client-{id}: bo {h} reads {v:#x}, wrote {:#x}",
                    written[h as usize]
                ),
                Err(Error::UseAfterFree { .. }) => tally.caught += 1,
                Err(e) => panic!("client-{id}: read: {e}"),
            },
            _ => match c.query_display() {
                Ok(objects) => assert_eq!(objects.len(), 4),
                Err(Error::UseAfterFree { .. }) => tally.caught += 1,
                Err(e) => panic!("client-{id}: query: {e}"),
            },
        }
    }
    let closed = c.close();
    (tally, closed.last)
}

fn round(seed: u64, lifetime: Lifetime, clients: usize, ops: usize) {
    let mut rng = Rng::new(seed);
    let journal = Journal::new();
    let bus = drmm::Bus::new("platform");
    let pdev = bus.add_device("vgpu.0");
    let config = vgpu::Config {
        lifetime,
        ..Default::default()
    };
    pdev.bind(Arc::new(VgpuDriver::new(config, journal.clone())))
        .unwrap();
    let card = pdev
        .with_bound(|b| b.driver_data::<Binding>().map(|d| d.card().clone()))
        .unwrap()
        .unwrap();
    let progress = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (1..=clients)
        .map(|id| {
            let (card, progress) = (card.clone(), progress.clone());
            thread::Builder::new()
                .name(format!("client-{id}"))
                .spawn(move || client(card, id, seed, ops, progress))
                .unwrap()
        })
        .collect();
    drop(card);
    // The unplug comes once a random share of all operations has started.
    let at = rng.below(clients * ops + 1);
    let start = Instant::now();
    while progress.load(Ordering::Relaxed) < at && start.elapsed() < Duration::from_secs(10) {
        thread::yield_now();
    }
    pdev.remove().unwrap();
    let mut lasts = 0;
    let mut caught = 0;
    for t in threads {
        let (tally, last) = t.join().expect("no client panicked");
        lasts += last as usize;
        caught += tally.caught;
        let _ = (tally.done, tally.refused, tally.canceled);
    }
    // `Closed::last` is a snapshot: two closes at once may both see another reference, and a
    // round whose clients all closed before the unplug ends with the binding's reference.
    assert!(lasts <= 1, "seed {seed}: at most one close is the last");
    assert!(
        journal.leaks().is_empty(),
        "seed {seed}: {:?}",
        journal.leaks()
    );
    assert_eq!(pdev.resource_count(), 0);
    let device = journal.released_by(Owner::Device);
    assert_eq!(device, ["driver data (Gpu) dropped, last"]);
    let incidents = journal.incidents();
    match lifetime {
        Lifetime::Drmm => {
            assert!(incidents.is_empty(), "seed {seed}: {incidents:?}");
            assert_eq!(
                journal.released_by(Owner::Drmm),
                [
                    "mode config cleaned up (4 of 4 objects reachable)",
                    "connector-0 freed",
                    "crtc-0 freed",
                    "plane-1 freed",
                    "plane-0 freed",
                    "work queue vgpu-wq destroyed (worker drained and stopped)",
                    "work queue vgpu-wq freed",
                ]
            );
        }
        Lifetime::DevmEverywhere => {
            // The clients' own refused reads, plus the driver's flushes and last release.
            assert!(incidents.len() >= caught, "seed {seed}");
            assert!(
                incidents
                    .iter()
                    .all(|i| i.after.starts_with("unbind of vgpu.0")
                        || i.after.starts_with("unplug of card0")),
                "seed {seed}: {incidents:?}"
            );
        }
    }
}

#[test]
fn many_clients_unplugged_at_a_random_moment() {
    // Release: a few seconds; debug: fewer rounds.
    let (seeds, clients, ops) = if cfg!(debug_assertions) {
        (4, 8, 50)
    } else {
        (40, 64, 400)
    };
    let start = Instant::now();
    for seed in 0..seeds {
        for lifetime in [Lifetime::Drmm, Lifetime::DevmEverywhere] {
            round(seed, lifetime, clients, ops);
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
}
