//! The summary at the end of the story, and the report of caught accesses.

use vgpu::Lifetime;
use vgpu::scenario::{Options, Outcome};

/// Prints the summary; returns whether the run was clean (nothing leaked, nothing caught, no
/// wrong value read back).
pub(super) fn print(opts: &Options, o: &Outcome) -> bool {
    let incidents = o.incidents();
    let w = o.work;
    let refused = o
        .after_unplug
        .iter()
        .filter(|s| s.result == Err(vgpu::Error::Unplugged))
        .count();
    let reads_ok = o
        .after_unplug
        .iter()
        .filter(|s| s.call.starts_with("read") && s.result.is_ok())
        .count();
    let reads = o
        .after_unplug
        .iter()
        .filter(|s| s.call.starts_with("read"))
        .count();
    let objects: Vec<String> = o
        .journal
        .counts()
        .iter()
        .map(|(kind, c)| format!("{kind} {}/{}", c.released, c.created))
        .collect();
    let leaked: u64 = o.leaks.iter().map(|(_, n)| n).sum();

    let mode = match opts.lifetime {
        Lifetime::Drmm => "drmm",
        Lifetime::DevmEverywhere => "devm everywhere",
    };
    println!("\nsummary ({mode})");
    for list in [&o.devres, &o.drmm] {
        println!(
            "   {:<26} {} entries, released {}",
            list.name,
            list.entries.len(),
            list.released
        );
    }
    println!(
        "   {:<26} {} submitted: {} done ({} in flight at the unplug), {} canceled, {} refused",
        "work items", w.submitted, w.done, w.in_flight_at_unplug, w.canceled, w.refused
    );
    println!(
        "   {:<26} {refused} calls refused with \"{}\", {reads_ok} of {reads} mapping reads fine",
        "after the unplug",
        vgpu::Error::Unplugged
    );
    println!("   {:<26} {}", "vblank interrupts", o.vblanks);
    println!("   {:<26} {}", "released/created", objects.join(", "));
    if leaked == 0 {
        println!("   {:<26} 0", "leaks");
    } else {
        let what: Vec<String> = o.leaks.iter().map(|(k, n)| format!("{n} {k}")).collect();
        println!("   {:<26} {leaked}: {}", "leaks", what.join(", "));
    }
    println!("   {:<26} {}", "use-after-free caught", incidents.len());
    if !incidents.is_empty() {
        println!(
            "\ncaught accesses: each one read memory freed at unbind in C; drmm refused it (the value was revoked)"
        );
        for (i, incident) in incidents.iter().enumerate() {
            println!("   {:>3}. {incident}", i + 1);
        }
        println!(
            "\nfix: tie userspace-visible state to the logical device (drmm), not to the binding (devm); run without --devm-everywhere"
        );
    }
    if w.wrong_reads > 0 {
        println!("   {:<26} {}", "WRONG values read back", w.wrong_reads);
    }
    incidents.is_empty() && leaked == 0 && w.wrong_reads == 0
}
