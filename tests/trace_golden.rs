//! The recorded trace of a fixed scenario, compared with `tests/golden/scenario.jsonl`, and
//! which scenario emits each operation of the schema.
//!
//! Regenerate the golden file after an intended change with
//! `DRMM_BLESS=1 cargo test --test trace_golden`, and review its diff.
#![cfg(feature = "record")]

mod trace_support;

use std::sync::Arc;

use drmm::trace::Op;
use drmm::{Bound, Bus, Device, Devres, Driver, LogicalDevice};
use trace_support::{normalize, ops, record};

/// The hardware registers of the scenario's GPU.
struct Regs(#[allow(dead_code)] [u32; 4]);

/// The driver data: the registers (revoked at unbind) and the logical device.
struct Binding {
    regs: Arc<Devres<Regs>>,
    card: Device<u32>,
}

struct Gpu;

impl Driver for Gpu {
    type Data = Binding;
    fn name(&self) -> &str {
        "gpu"
    }
    fn probe(&self, dev: &mut Bound<'_>) -> drmm::Result<Binding> {
        let regs = Arc::new(Devres::new(dev, Regs([0; 4]))?);
        let irq = drmm::add_action!(dev, || ())?;
        let mut fifo = dev.kmalloc(64)?;
        dev.krealloc(&mut fifo, 128)?;
        dev.remove_action(irq)?;
        let card = Device::new_on(dev, "card0", 7)?;
        // A body on several lines: the name keeps the first.
        let _ = drmm::add_action!(card, |d: &LogicalDevice<u32>| {
            let regs = *d.data();
            assert_eq!(regs, 7);
        })?;
        let _vram = card.kzalloc(4096)?;
        let scratch = card.kzalloc(8)?;
        card.kfree(scratch)?;
        card.register()?;
        Ok(Binding { regs, card })
    }
    fn remove(&self, _dev: &mut Bound<'_>, data: &Binding) {
        data.card.unplug();
    }
}

/// A driver whose probe fails after registering an entry.
struct Broken;

impl Driver for Broken {
    type Data = ();
    fn probe(&self, dev: &mut Bound<'_>) -> drmm::Result<()> {
        let _ = dev.kzalloc(16)?;
        Err(drmm::Error::probe_failed("no firmware"))
    }
}

/// The scenario of the golden file: a bus device bound to a driver that makes a logical
/// device; a client opens it; the device is unbound (hot-unplug) while the file is open; the
/// client's accesses are refused; the last close releases the logical device; the bus device
/// is removed.
fn scenario() {
    let bus = Bus::new("platform");
    let pdev = bus.add_device("vgpu.0");
    pdev.bind(Arc::new(Gpu)).unwrap();
    let (card, regs) = pdev
        .with_bound(|b| {
            let d = b.driver_data::<Binding>().unwrap();
            (d.card.clone(), d.regs.clone())
        })
        .unwrap();
    let file = card.open(()).unwrap();
    drop(card);
    assert!(file.enter().is_some());
    pdev.unbind().unwrap();
    assert!(file.enter().is_none());
    assert!(file.device().open(()).is_err());
    assert!(regs.try_access().is_none());
    drop(regs);
    drop(file);
    pdev.remove().unwrap();
}

/// What goes wrong: a failed registration, a failed probe, a panicking release action.
fn failures() {
    let bus = Bus::new("platform");
    let pdev = bus.add_device("broken.0");
    assert!(pdev.bind(Arc::new(Broken)).is_err());
    let dev = Device::with_name("card1", ());
    assert!(dev.kmalloc_aligned(8, 3).is_err());
    let _ = dev
        .add_action_named("explodes", |_| panic!("boom"))
        .unwrap();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(dev)));
    std::panic::set_hook(prev);
    assert!(r.is_err());
}

#[test]
fn scenario_matches_the_golden_file() {
    let lines = record(scenario);
    let got = normalize(&lines);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/scenario.jsonl");
    if std::env::var_os("DRMM_BLESS").is_some() {
        std::fs::write(path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(path)
        .expect("golden file missing: run with DRMM_BLESS=1 to create it");
    if got != want {
        let diff: Vec<String> = got
            .lines()
            .zip(want.lines())
            .enumerate()
            .filter(|(_, (g, w))| g != w)
            .take(5)
            .map(|(i, (g, w))| format!("line {}:\n  got  {g}\n  want {w}", i + 1))
            .collect();
        panic!(
            "trace differs from {path} ({} lines vs {}); DRMM_BLESS=1 regenerates it\n{}",
            got.lines().count(),
            want.lines().count(),
            diff.join("\n")
        );
    }
}

#[test]
fn header_first_then_events_with_the_schema_keys() {
    let lines = record(scenario);
    let h = &lines[0];
    assert_eq!(h["schema"], "drmm-trace");
    assert_eq!(h["version"], 1);
    assert_eq!(h["pid"], std::process::id());
    assert_eq!(h["clock"], "monotonic-ns");
    let mut last = 0;
    for e in &lines[1..] {
        let t = e["t"].as_u64().unwrap();
        assert!(t >= last, "t never decreases: {e}");
        last = t;
        assert!(e["thread"].is_string(), "{e}");
        assert!(e.get("message").is_none(), "{e}");
        let op = Op::from_name(e["op"].as_str().unwrap()).expect("a known op");
        assert!(e["dev"].is_u64(), "{e}");
        assert!(e["dev_name"].is_string(), "{e}");
        let kind = e["dev_kind"].as_str().unwrap();
        assert!(kind == "logical" || kind == "bus", "{e}");
        if let Some(d) = e.get("detail") {
            assert!(d.is_string(), "detail is text: {e}");
        }
        if matches!(op, Op::Add | Op::Del | Op::Rel | Op::Rem | Op::Replace) {
            for k in ["list", "name", "kind", "file"] {
                assert!(e[k].is_string(), "{k}: {e}");
            }
            for k in ["entry", "size", "line"] {
                assert!(e[k].is_u64(), "{k}: {e}");
            }
            let list = if kind == "bus" { "devres" } else { "drmm" };
            assert_eq!(e["list"], list, "{e}");
        }
    }
}

/// Every operation of the schema is emitted by the scenario that should emit it (reference
/// events are another feature's).
#[test]
fn every_op_is_emitted() {
    let normal = record(scenario);
    let bad = record(failures);
    let (normal, bad) = (ops(&normal), ops(&bad));
    let expect_in = |op: Op| -> &Vec<&str> {
        match op {
            Op::AddFailed | Op::Panic => &bad,
            _ => &normal,
        }
    };
    for op in Op::ALL {
        if matches!(op, Op::Get | Op::Put) {
            continue;
        }
        assert!(
            expect_in(op).contains(&op.as_str()),
            "{op} not emitted: {:?}",
            expect_in(op)
        );
    }
    let probes: Vec<_> = record(failures)
        .into_iter()
        .filter(|e| e["op"] == "PROBE")
        .collect();
    assert_eq!(probes.len(), 1);
    assert_eq!(probes[0]["detail"], "failed: probe failed: no firmware");
}

#[test]
fn refusals_name_the_caller_and_what_was_refused() {
    let lines = record(scenario);
    let refused: Vec<_> = lines.iter().filter(|e| e["op"] == "REFUSED").collect();
    let details: Vec<_> = refused
        .iter()
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(details, ["gate", "open", "devres"]);
    for e in &refused {
        assert_eq!(e["file"], "tests/trace_golden.rs", "{e}");
    }
    assert!(
        refused[2]["name"].as_str().unwrap().ends_with("Regs"),
        "{}",
        refused[2]
    );
    // Only on refusal: the accesses that succeeded emitted nothing.
    assert_eq!(refused.len(), 3);
}

#[test]
fn action_names_are_short() {
    let lines = record(scenario);
    let names: Vec<_> = lines
        .iter()
        .filter(|e| e["op"] == "ADD" && e["kind"] == "action")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"|| ()"), "{names:?}");
    assert!(
        names.contains(&"|d: &LogicalDevice<u32>| { let regs = *d…"),
        "{names:?}"
    );
    assert!(
        names.iter().all(|n| !n.contains('\n') && n.len() <= 80),
        "{names:?}"
    );
}
