//! `drmm trace timeline`: the SVG is parsed (rows, bars, markers) and rendered to pixels to
//! prove that it draws, for a hand-made trace and for a generated one of 10,000 entries.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use resvg::tiny_skia::{Pixmap, Transform};
use resvg::usvg;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn tmp(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn drmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drmm"))
        .args(args)
        .output()
        .expect("the drmm binary runs")
}

/// Runs `drmm trace timeline` and returns the SVG text.
fn timeline(trace: &Path, svg: &Path) -> String {
    let out = drmm(&[
        "trace",
        "timeline",
        trace.to_str().unwrap(),
        "-o",
        svg.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.starts_with("drmm: wrote "), "{err}");
    std::fs::read_to_string(svg).unwrap()
}

fn has_class(node: &roxmltree::Node<'_, '_>, class: &str) -> bool {
    node.attribute("class")
        .is_some_and(|c| c.split(' ').any(|c| c == class))
}

fn count(doc: &roxmltree::Document<'_>, tag: &str, class: &str) -> usize {
    doc.descendants()
        .filter(|n| n.has_tag_name(tag) && has_class(n, class))
        .count()
}

fn num(node: &roxmltree::Node<'_, '_>, attr: &str) -> f32 {
    node.attribute(attr).unwrap().parse().unwrap()
}

fn render(svg: &str) -> Pixmap {
    let tree = usvg::Tree::from_str(svg, &usvg::Options::default()).expect("usvg parses it");
    let size = tree.size().to_int_size();
    let mut pixmap = Pixmap::new(size.width(), size.height()).unwrap();
    resvg::render(&tree, Transform::default(), &mut pixmap.as_mut());
    pixmap
}

/// The pixel at (x, y), as RGB.
fn pixel(pixmap: &Pixmap, x: f32, y: f32) -> (u8, u8, u8) {
    let p = pixmap
        .pixel(x.round() as u32, y.round() as u32)
        .expect("inside the image");
    (p.red(), p.green(), p.blue())
}

fn hex(colour: &str) -> (u8, u8, u8) {
    let v = u32::from_str_radix(colour.trim_start_matches('#'), 16).unwrap();
    ((v >> 16) as u8, (v >> 8) as u8, v as u8)
}

fn near(a: (u8, u8, u8), b: (u8, u8, u8)) -> bool {
    a.0.abs_diff(b.0) <= 24 && a.1.abs_diff(b.1) <= 24 && a.2.abs_diff(b.2) <= 24
}

#[test]
fn a_small_trace_has_one_row_per_entry_markers_and_a_legend() {
    let svg = timeline(&fixture("reference-held.jsonl"), &tmp("reference-held.svg"));
    let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
    assert_eq!(count(&doc, "g", "row"), 5);
    assert_eq!(count(&doc, "rect", "bar"), 5);
    // vram and mode_config are never released: they run to the end, with a red cap.
    assert_eq!(count(&doc, "rect", "never-released"), 2);
    assert_eq!(count(&doc, "rect", "leak-cap"), 2);
    assert_eq!(count(&doc, "g", "device"), 2);
    assert_eq!(count(&doc, "text", "list-label"), 2);
    assert_eq!(count(&doc, "line", "unplug"), 1);
    assert_eq!(count(&doc, "line", "unbind"), 1);
    assert_eq!(count(&doc, "line", "last-close"), 1);
    // card0 never lost its last reference in this trace.
    assert_eq!(count(&doc, "line", "last-ref"), 0);
    assert_eq!(count(&doc, "g", "legend"), 1);
    assert!(count(&doc, "text", "tick") >= 4);
    assert_eq!(
        count(&doc, "text", "note"),
        0,
        "10 entries are not aggregated"
    );
    let labels: Vec<&str> = doc
        .descendants()
        .filter(|n| has_class(n, "row-label"))
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    assert_eq!(labels[0], "#1 map_regs examples/vgpu.rs:52");
    assert_eq!(labels[4], "#3 fb examples/vgpu.rs:85");

    let clean = timeline(&fixture("clean.jsonl"), &tmp("clean.svg"));
    let clean = roxmltree::Document::parse(&clean).unwrap();
    assert_eq!(count(&clean, "line", "last-ref"), 1);
    assert_eq!(count(&clean, "rect", "never-released"), 0);
}

#[test]
fn the_bars_draw_in_their_colours() {
    let svg = timeline(&fixture("reference-held.jsonl"), &tmp("pixels.svg"));
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let pixmap = render(&svg);
    let white = (255, 255, 255);
    let bars: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect") && has_class(n, "bar"))
        .collect();
    assert_eq!(bars.len(), 5);
    for bar in &bars {
        let (x, y, w, h) = (
            num(bar, "x"),
            num(bar, "y"),
            num(bar, "width"),
            num(bar, "height"),
        );
        assert!(w >= 2.0 && h > 0.0);
        let fill = hex(bar.attribute("fill").unwrap());
        // The middle of the bar, away from the marker lines.
        let mut hits = 0;
        for i in 1..8 {
            let px = pixel(&pixmap, x + w * i as f32 / 8.0, y + h / 2.0);
            assert_ne!(px, white, "blank pixel in a bar at x {x} y {y}");
            hits += usize::from(near(px, fill));
        }
        assert!(hits >= 5, "bar at {x},{y} is not drawn in {fill:?}");
    }
    // Left of the earliest bar, in the plot, the row is background (not bar colour).
    let first = &bars[0];
    let px = pixel(&pixmap, 362.0, num(first, "y") + 4.0);
    assert!(px.0 > 200 && px.1 > 200 && px.2 > 200, "{px:?}");
    // Drawn pixels overall: the picture is not blank.
    let inked = pixmap
        .pixels()
        .iter()
        .filter(|p| p.red() < 200 || p.green() < 200 || p.blue() < 200)
        .count();
    assert!(inked > 5_000, "{inked} inked pixels");
}

/// A trace of `n` drmm entries from 5 call sites on card0, most deleted early, the rest
/// released by the device's release after unplug; every 97th is never released.
fn generated(n: u64, path: &Path) {
    let sites = [
        ("vram_chunk", "alloc", "src/gem.rs", 100),
        ("bo", "alloc", "src/gem.rs", 140),
        ("fence", "action", "src/fence.rs", 30),
        ("crtc", "action", "src/kms.rs", 200),
        ("cursor", "alloc", "src/kms.rs", 220),
    ];
    let mut s = String::from(
        "{\"schema\":\"drmm-trace\",\"version\":1,\"pid\":1,\"clock\":\"monotonic-ns\"}\n",
    );
    let mut t = 0u64;
    let mut ev = |s: &mut String, body: String| {
        t += 100;
        let _ = writeln!(s, "{{\"t\":{t},\"thread\":\"main\",{body}}}");
    };
    ev(
        &mut s,
        "\"op\":\"CREATE\",\"dev\":2,\"dev_name\":\"card0\",\"dev_kind\":\"logical\"".into(),
    );
    let entry = |op: &str, i: u64| {
        let (name, kind, file, line) = sites[(i % 5) as usize];
        format!(
            "\"op\":\"{op}\",\"dev\":2,\"list\":\"drmm\",\"entry\":{i},\"name\":\"{name}\",\"kind\":\"{kind}\",\"file\":\"{file}\",\"line\":{line}"
        )
    };
    let mut live = Vec::new();
    for i in 1..=n {
        ev(&mut s, entry("ADD", i));
        if i % 2 == 0 && i % 97 != 0 {
            ev(&mut s, entry("DEL", i));
        } else {
            live.push(i);
        }
    }
    ev(&mut s, "\"op\":\"UNPLUG\",\"dev\":2".into());
    ev(&mut s, "\"op\":\"LAST_REF\",\"dev\":2".into());
    ev(
        &mut s,
        "\"op\":\"RELEASE_BEGIN\",\"dev\":2,\"list\":\"drmm\"".into(),
    );
    for &i in live.iter().rev().filter(|&&i| i % 97 != 0) {
        ev(&mut s, entry("REL", i));
    }
    ev(
        &mut s,
        "\"op\":\"RELEASE_END\",\"dev\":2,\"list\":\"drmm\"".into(),
    );
    std::fs::write(path, s).unwrap();
}

#[test]
fn ten_thousand_entries_aggregate_by_call_site_and_still_draw() {
    let trace = tmp("ten-thousand.jsonl");
    generated(10_000, &trace);
    let svg = timeline(&trace, &tmp("ten-thousand.svg"));
    let doc = roxmltree::Document::parse(&svg).unwrap();
    // One row per call site, with its count, and a note that says so.
    assert_eq!(count(&doc, "g", "row"), 5);
    assert_eq!(count(&doc, "polygon", "profile"), 5);
    let notes: String = doc
        .descendants()
        .filter(|n| has_class(n, "note"))
        .filter_map(|n| n.text())
        .collect();
    assert!(notes.contains("10000 entries"), "{notes}");
    let labels: Vec<&str> = doc
        .descendants()
        .filter(|n| has_class(n, "row-label"))
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    assert!(
        labels.contains(&"2000x vram_chunk src/gem.rs:100 (20 unreleased)"),
        "{labels:?}"
    );
    // Every site has entries never released (every 97th): all five bars end in a red cap.
    assert_eq!(count(&doc, "rect", "never-released"), 5);
    assert_eq!(count(&doc, "line", "unplug"), 1);
    assert_eq!(count(&doc, "line", "last-ref"), 1);
    let root = doc.root_element();
    let height = num(&root, "height");
    assert!(height < 1_000.0, "{height} px for 5 rows");

    // The profiles draw: in each row, the bar area has pixels of the row's colour.
    let pixmap = render(&svg);
    for bar in doc
        .descendants()
        .filter(|n| n.has_tag_name("rect") && has_class(n, "bar"))
    {
        let (y, h) = (num(&bar, "y"), num(&bar, "height"));
        let fill = hex(bar.attribute("fill").unwrap());
        let row_bottom = (y + h - 1.0).round() as u32;
        let filled = (360..1160)
            .filter(|&x| near(pixel(&pixmap, x as f32, row_bottom as f32), fill))
            .count();
        assert!(
            filled > 400,
            "only {filled} px of the profile drawn at y {y}"
        );
    }

    // The report summarises the 10,000 entries by call site; check lists every leak.
    let report = drmm(&["trace", "report", trace.to_str().unwrap()]);
    let text = String::from_utf8(report.stdout).unwrap();
    assert!(text.contains("10000 entries from 5 call site(s)"), "{text}");
    assert!(
        text.contains("103 entries never released, by call site")
            && text.contains(
                "src/gem.rs:100: entry never released: 20x \"vram_chunk\" (alloc) on card0 drmm"
            ),
        "{text}"
    );
    let check = drmm(&["trace", "check", trace.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(1));
    let lines = String::from_utf8(check.stdout).unwrap();
    assert_eq!(lines.lines().count(), 10_000 / 97);
    assert!(
        lines
            .lines()
            .all(|l| l.contains(": entry never released: card0 drmm #"))
    );
}

#[test]
fn entries_released_out_of_order_or_after_their_device_are_outlined() {
    for name in ["release-out-of-order.jsonl", "released-after-device.jsonl"] {
        let svg = timeline(&fixture(name), &tmp(&name.replace("jsonl", "svg")));
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let flagged: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect") && has_class(n, "problem"))
            .collect();
        assert_eq!(flagged.len(), 1, "{name}");
        assert_eq!(flagged[0].attribute("stroke"), Some("#d62728"));
    }
}

#[test]
fn too_many_distinct_call_sites_are_cut_with_a_note_and_the_canvas_stays_drawable() {
    // 3,000 entries, each from its own call site: aggregation saves nothing.
    let mut s = String::from("{\"schema\":\"drmm-trace\",\"version\":1}\n");
    s.push_str("{\"t\":1,\"op\":\"CREATE\",\"dev\":1,\"dev_name\":\"card0\"}\n");
    for i in 1..=3000 {
        let _ = writeln!(
            s,
            "{{\"t\":{},\"op\":\"ADD\",\"dev\":1,\"list\":\"drmm\",\"entry\":{i},\"name\":\"n{i}\",\"kind\":\"alloc\",\"file\":\"src/a.rs\",\"line\":{i}}}",
            i + 1
        );
    }
    let trace = tmp("distinct.jsonl");
    std::fs::write(&trace, s).unwrap();
    let svg = timeline(&trace, &tmp("distinct.svg"));
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let rows = count(&doc, "g", "row");
    assert!(rows < 1500, "{rows}");
    let notes: String = doc
        .descendants()
        .filter(|n| has_class(n, "note"))
        .filter_map(|n| n.text())
        .collect();
    assert!(notes.contains("not drawn"), "{notes}");
    // Browsers do not draw canvases past 32,767 px.
    assert!(num(&doc.root_element(), "height") < 32_767.0);
}

#[test]
fn the_axis_shows_event_order_when_asked_or_when_every_timestamp_is_equal() {
    let ticks = |svg: &str| -> Vec<String> {
        let doc = roxmltree::Document::parse(svg).unwrap();
        doc.descendants()
            .filter(|n| has_class(n, "tick"))
            .filter_map(|n| n.text())
            .map(|t| t.trim().to_owned())
            .collect()
    };
    // The recorder's golden scenario has every timestamp zeroed.
    let svg = timeline(&fixture("recorded.jsonl"), &tmp("recorded.svg"));
    assert!(svg.contains("every event has the same timestamp"));
    let labels = ticks(&svg);
    assert!(labels.iter().all(|t| t.starts_with("line ")), "{labels:?}");
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert_eq!(count(&doc, "g", "row"), 7);
    // Bars spread over the width instead of piling up at one x.
    let xs: std::collections::BTreeSet<i64> = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect") && has_class(n, "bar"))
        .map(|n| num(&n, "x") as i64)
        .collect();
    assert_eq!(xs.len(), 7, "{xs:?}");

    let out = tmp("clean-order.svg");
    let status = drmm(&[
        "trace",
        "timeline",
        fixture("clean.jsonl").to_str().unwrap(),
        "--axis",
        "order",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(status.status.code(), Some(0));
    let svg = std::fs::read_to_string(out).unwrap();
    assert!(!svg.contains("every event has the same timestamp"));
    assert!(ticks(&svg).iter().all(|t| t.starts_with("line ")));
    let time = timeline(&fixture("clean.jsonl"), &tmp("clean-time.svg"));
    assert!(
        ticks(&time).iter().all(|t| t.ends_with(" µs")),
        "{:?}",
        ticks(&time)
    );
}

#[test]
fn an_access_after_revocation_is_marked_on_its_device() {
    let svg = timeline(
        &fixture("access-after-revocation.jsonl"),
        &tmp("access-after-revocation.svg"),
    );
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert_eq!(count(&doc, "polygon", "refused-devres"), 1);
    // Refused gate calls are the normal path: not marked.
    let clean = timeline(&fixture("clean.jsonl"), &tmp("clean-refused.svg"));
    let clean = roxmltree::Document::parse(&clean).unwrap();
    assert_eq!(count(&clean, "polygon", "refused-devres"), 0);
}
