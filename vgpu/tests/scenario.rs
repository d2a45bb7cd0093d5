//! The demo's story as tests: release order, leaks, the errors clients see after the unplug,
//! mappings after the unplug, and every access the devm-everywhere driver makes after the
//! unbind.

use std::sync::Arc;

use vgpu::scenario::{self, Collected, Options, Outcome, Silent};
use vgpu::{Binding, Client, Error, Journal, Lifetime, Owner, Stall, VgpuDriver};

fn run(lifetime: Lifetime, seed: u64) -> Outcome {
    let opts = Options {
        seed,
        lifetime,
        ..Options::default()
    };
    scenario::run(&opts, &mut Silent).expect("the story runs")
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_last_close_releases_every_drmm_entry_newest_first_and_the_driver_data_last() {
    let o = run(Lifetime::Drmm, 1);
    let names: Vec<&str> = o.drmm.entries.iter().map(|e| e.name()).collect();
    assert_eq!(names.len(), 7);
    assert_eq!(names[0], "drm_mode_config_cleanup");
    assert!(
        names[1..5].iter().all(|n| n.ends_with("ModeObject")),
        "{names:?}"
    );
    assert_eq!(names[5], "destroy_workqueue");
    assert!(names[6].ends_with("WorkQueue"), "{names:?}");
    let drmm_and_device: Vec<String> = o
        .last_close_releases
        .iter()
        .filter(|(owner, _)| matches!(owner, Owner::Drmm | Owner::Device))
        .map(|(_, what)| what.clone())
        .collect();
    assert_eq!(
        drmm_and_device,
        strings(&[
            "mode config cleaned up (4 of 4 objects reachable)",
            "connector-0 freed",
            "crtc-0 freed",
            "plane-1 freed",
            "plane-0 freed",
            "work queue vgpu-wq destroyed (worker drained and stopped)",
            "work queue vgpu-wq freed",
            "driver data (Gpu) dropped, last",
        ])
    );
    // The last closer's own buffers went first (its file's data), the card after.
    let first = &o.last_close_releases[0];
    assert_eq!(first.0, Owner::Refcount);
    assert!(first.1.starts_with(&format!("client-{} bo", o.last_close)));
}

#[test]
fn the_unbind_revokes_the_hardware_newest_first_and_nothing_else_under_drmm() {
    let o = run(Lifetime::Drmm, 1);
    assert_eq!(
        o.journal.released_by(Owner::Devres),
        strings(&[
            "DMA pool (4 x 64 KiB memfd mapping) freed",
            "register window (4 KiB memfd mapping) unmapped",
            "binding data dropped (its card0 reference)",
            "interrupt thread vgpu-irq stopped (free_irq)",
        ])
    );
    let names: Vec<&str> = o.devres.entries.iter().map(|e| e.name()).collect();
    assert_eq!(names[0], "free_irq");
    assert_eq!(names[1], "devm_drm_dev_init_release");
    assert!(names[2].ends_with("Devres<vgpu::hw::DmaPool>"), "{names:?}");
    assert!(
        names[3].ends_with("Devres<vgpu::hw::Registers>"),
        "{names:?}"
    );
    assert_eq!(names.len(), 4);
}

#[test]
fn nothing_leaks_in_either_lifetime() {
    for lifetime in [Lifetime::Drmm, Lifetime::DevmEverywhere] {
        let o = run(lifetime, 3);
        assert!(o.leaks.is_empty(), "{lifetime:?}: {:?}", o.leaks);
        let counts = o.journal.counts();
        let kinds: Vec<&str> = counts.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [
                "binding data",
                "buffer object",
                "buffer pages",
                "driver data",
                "hardware",
                "mapping",
                "mode object",
                "thread",
                "work queue"
            ]
        );
        for (kind, c) in counts {
            assert!(c.created > 0 && c.created == c.released, "{kind}: {c:?}");
        }
    }
}

#[test]
fn after_the_unplug_clients_see_exactly_enodev_and_in_flight_work_finishes() {
    let o = run(Lifetime::Drmm, 1);
    assert_eq!(o.work.in_flight_at_unplug, 1);
    assert_eq!(
        o.work.canceled, 1,
        "seed 1 queues one item behind the stalled one"
    );
    assert!(o.work.refused > 0);
    let (client, item) = o.unplug_during;
    assert!(client > 0 && item > 0);
    let waited = o
        .after_unplug
        .iter()
        .find(|s| s.client == client && s.call == format!("wait work {item}"))
        .expect("the stalled item is waited for after the unplug");
    assert!(waited.result.is_ok(), "in-flight work finished: {waited:?}");
    for s in &o.after_unplug {
        if s.call.starts_with("submit") {
            assert_eq!(s.result, Err(Error::Unplugged));
        }
        if s.call.starts_with("wait") {
            assert!(matches!(s.result, Ok(_) | Err(Error::Canceled)), "{s:?}");
        }
    }
    assert_eq!(Error::Unplugged.to_string(), "device unplugged (ENODEV)");
    assert_eq!(
        Error::Canceled.to_string(),
        "device unplugged (ENODEV): queued work canceled before it ran"
    );
}

#[test]
fn mappings_stay_readable_after_the_unplug_and_hold_what_was_written() {
    let o = run(Lifetime::Drmm, 1);
    let reads: Vec<_> = o
        .after_unplug
        .iter()
        .filter(|s| s.call.starts_with("read"))
        .collect();
    assert!(reads.len() >= 6, "every client reads every buffer at close");
    assert!(reads.iter().all(|s| s.result.is_ok()), "{reads:?}");
    assert_eq!(o.work.wrong_reads, 0);
    assert!(o.incidents().is_empty());
}

#[test]
fn devm_everywhere_catches_every_access_after_the_unbind() {
    let o = run(Lifetime::DevmEverywhere, 1);
    let incidents = o.incidents();
    // Every read of a mapping and every display query after the unbind was refused.
    for s in &o.after_unplug {
        if s.call.starts_with("read") || s.call == "query display" {
            assert!(matches!(s.result, Err(Error::UseAfterFree { .. })), "{s:?}");
        }
    }
    let reads = o
        .after_unplug
        .iter()
        .filter(|s| s.call.starts_with("read"))
        .count();
    let queries = o
        .after_unplug
        .iter()
        .filter(|s| s.call == "query display")
        .count();
    let clients = Options::default().clients;
    // Reads, 4 mode objects per query, one flush per close, and the last close's drmm
    // actions: 4 mode objects and the work queue.
    assert_eq!(incidents.len(), reads + 4 * queries + clients + 5);
    for i in &incidents {
        assert!(i.by.starts_with("client-"), "{i:?}");
        assert!(i.after.starts_with("unbind of vgpu.0"), "{i:?}");
    }
    let last: Vec<String> = incidents
        .iter()
        .filter(|i| i.after == "unbind of vgpu.0, in the last close")
        .map(|i| i.what.clone())
        .collect();
    assert_eq!(
        last,
        strings(&[
            "work queue vgpu-wq",
            "mode object plane-0",
            "mode object plane-1",
            "mode object crtc-0",
            "mode object connector-0",
            "work queue vgpu-wq",
        ])
    );
    assert!(
        incidents
            .iter()
            .any(|i| i.what == format!("{}'s bo 1 pages", i.by)),
        "buffer pages are named with their client and handle"
    );
    assert_eq!(
        incidents[0].to_string(),
        format!(
            "{} read by {} after the unbind of vgpu.0",
            incidents[0].what, incidents[0].by
        )
    );
    // The state went with the binding: on the devres list, revoked at the unbind.
    assert_eq!(o.devres.entries.len(), 9);
    assert_eq!(o.drmm.entries.len(), 2);
    assert!(o.leaks.is_empty(), "{:?}", o.leaks);
}

#[test]
fn the_same_seed_tells_the_same_story() {
    let story = |seed| {
        let mut c = Collected::default();
        let opts = Options {
            seed,
            ..Options::default()
        };
        scenario::run(&opts, &mut c).unwrap();
        c.0
    };
    let a = story(5);
    assert_eq!(a, story(5));
    assert_ne!(a, story(6));
    assert!(
        a.iter()
            .any(|l| l.starts_with("5. hot-unplug vgpu.0 while client-"))
    );
}

#[test]
fn the_story_holds_for_many_seeds_and_sizes() {
    let seeds = if cfg!(debug_assertions) { 8 } else { 40 };
    for seed in 0..seeds {
        for lifetime in [Lifetime::Drmm, Lifetime::DevmEverywhere] {
            let opts = Options {
                clients: 1 + (seed as usize % 5),
                buffers: 1 + (seed as usize % 3),
                work: 1 + (seed as usize % 4),
                seed,
                lifetime,
            };
            let o = scenario::run(&opts, &mut Silent).unwrap();
            assert!(o.leaks.is_empty(), "seed {seed}: {:?}", o.leaks);
            assert_eq!(o.work.in_flight_at_unplug, 1);
            assert_eq!(o.work.wrong_reads, 0);
            assert_eq!(
                o.last_close_releases.last().map(|(_, w)| w.as_str()),
                Some("driver data (Gpu) dropped, last"),
                "seed {seed}"
            );
            assert_eq!(
                o.incidents().is_empty(),
                lifetime == Lifetime::Drmm,
                "seed {seed}"
            );
        }
    }
}

/// The driver on its own, without the scenario: a stalled item finishes during the unplug, the
/// one queued behind it is canceled, the next submission and a new open are refused.
#[test]
fn driver_alone_in_flight_finishes_queued_is_canceled_new_is_refused() {
    let journal = Journal::new();
    let bus = drmm::Bus::new("platform");
    let pdev = bus.add_device("vgpu.0");
    pdev.bind(Arc::new(VgpuDriver::new(
        Default::default(),
        journal.clone(),
    )))
    .unwrap();
    let card = pdev
        .with_bound(|b| b.driver_data::<Binding>().map(|d| d.card().clone()))
        .unwrap()
        .unwrap();
    let mut a = Client::open(&card, 1).unwrap();
    let mut b = Client::open(&card, 2).unwrap();
    let (ha, hb) = (a.create_bo().unwrap(), b.create_bo().unwrap());
    a.map(ha).unwrap();
    b.map(hb).unwrap();
    let stall = Stall::new();
    let in_flight = a.submit(ha, 0xaaaa, Some(stall.clone())).unwrap();
    assert!(stall.wait_entered(std::time::Duration::from_secs(10)));
    let queued = b.submit(hb, 0xbbbb, None).unwrap();
    pdev.remove().unwrap();
    assert_eq!(in_flight.wait(), Ok(1));
    assert_eq!(queued.wait(), Err(Error::Canceled));
    assert_eq!(b.submit(hb, 1, None).unwrap_err(), Error::Unplugged);
    assert_eq!(Client::open(&card, 3).unwrap_err(), Error::Unplugged);
    assert_eq!(a.read(ha), Ok(0xaaaa));
    assert_eq!(b.read(hb), Ok(0), "never written, still mapped");
    assert_eq!(a.read(7), Err(Error::NoBuffer(7)));
    assert_eq!(
        a.query_display().unwrap().last().map(String::as_str),
        Some("connector-0 disconnected")
    );
    drop(card);
    assert!(!a.close().last);
    assert!(b.close().last);
    assert!(journal.leaks().is_empty(), "{:?}", journal.leaks());
    assert!(journal.incidents().is_empty());
}
