//! `drmm trace report`: the analysis as text for a person.

use std::collections::BTreeMap;
use std::io::{self, Write};

use super::analysis::{Analysis, DevKind, Device, Entry, Moment, Problem, ProblemKind};
use super::human_time;
use super::parse::{List, Trace};

/// A list with more entries than this is summarised by call site.
pub(crate) const ENTRY_LIST_MAX: usize = 30;

/// Writes the report.
///
/// # Errors
///
/// Those of `out`.
pub(crate) fn write(out: &mut dyn Write, trace: &Trace, a: &Analysis) -> io::Result<()> {
    let pid = trace
        .header
        .pid
        .map(|p| format!(", pid {p}"))
        .unwrap_or_default();
    writeln!(out, "drmm trace report: {}", trace.path)?;
    writeln!(
        out,
        "schema v1{pid}, {} events over {}, {} devices, {} entries",
        a.events,
        human_time(a.end_t),
        a.devices.len(),
        a.entries.len()
    )?;
    for d in &a.devices {
        writeln!(out)?;
        device(out, a, d)?;
    }
    writeln!(out)?;
    if a.problems.is_empty() {
        writeln!(out, "No problems found.")?;
    } else {
        writeln!(out, "Problems ({}):", a.problems.len())?;
        let never: Vec<_> = a
            .problems
            .iter()
            .filter(|p| p.kind == ProblemKind::EntryNeverReleased)
            .collect();
        // Thousands of leaked entries read better by call site; `check` lists each one.
        let summarise = never.len() > ENTRY_LIST_MAX;
        for p in &a.problems {
            if !(summarise && p.kind == ProblemKind::EntryNeverReleased) {
                writeln!(out, "  {}", p.render(&trace.path))?;
            }
        }
        if summarise {
            never_by_site(out, trace, a, &never)?;
        }
    }
    refusals(out, a)?;
    if !a.notes.is_empty() {
        writeln!(out)?;
        writeln!(out, "Notes:")?;
        for note in &a.notes {
            writeln!(out, "  {note}")?;
        }
    }
    Ok(())
}

/// The moments of a device's life, in time order: (when, what, extra text).
fn moments(d: &Device) -> Vec<(Moment, &'static str, String)> {
    let mut all: Vec<(Moment, &'static str, String)> = Vec::new();
    let mut push = |at: Option<Moment>, what: &'static str, extra: String| {
        if let Some(at) = at {
            all.push((at, what, extra));
        }
    };
    let origin = d
        .origin
        .as_ref()
        .map(|o| format!(" at {o}"))
        .unwrap_or_default();
    push(d.created, "created", origin.clone());
    push(d.added, "added", origin);
    for (at, detail) in &d.probes {
        push(Some(*at), "probe", format!(": {detail}"));
    }
    push(d.bound, "bound", String::new());
    push(d.registered, "registered", String::new());
    push(d.unbound, "unbound", String::new());
    push(d.unplugged, "unplugged", String::new());
    push(d.unregistered, "unregistered", String::new());
    for (at, detail) in &d.revokes {
        push(Some(*at), "revoked", format!(": {detail} value(s)"));
    }
    if d.opens > 0 || d.closes > 0 {
        let counts = format!(": {} open(s), {} close(s)", d.opens, d.closes);
        push(d.last_close, "last close", counts);
    }
    push(d.last_ref, "last ref", String::new());
    let released = if d.kind == DevKind::Logical {
        "released"
    } else {
        "removed"
    };
    push(d.released, released, String::new());
    all.sort_by_key(|(at, _, _)| (at.t, at.line));
    all
}

fn device(out: &mut dyn Write, a: &Analysis, d: &Device) -> io::Result<()> {
    writeln!(out, "== {}", d.describe())?;
    for (at, what, extra) in moments(d) {
        writeln!(
            out,
            "  {what:<13}{:>11}  (line {}){extra}",
            human_time(at.t),
            at.line
        )?;
    }
    if d.kind == DevKind::Logical && d.released.is_none() {
        writeln!(out, "  {:<13}{:>11}", "released", "NEVER")?;
    }
    for list in [List::Devres, List::Drmm] {
        let entries: Vec<&Entry> = d
            .entries
            .iter()
            .map(|&i| &a.entries[i])
            .filter(|e| e.list == list)
            .collect();
        let releases: Vec<_> = d.releases.iter().filter(|r| r.list == list).collect();
        if entries.is_empty() && releases.is_empty() {
            continue;
        }
        let live = entries.iter().filter(|e| e.end.is_none()).count();
        writeln!(
            out,
            "  {} list: {} entries, {live} never released",
            list.as_str(),
            entries.len()
        )?;
        for r in releases {
            let end = match r.end {
                Some(end) => format!(
                    "{} (line {}), {} released",
                    human_time(end.t),
                    end.line,
                    r.detail.as_deref().unwrap_or("?")
                ),
                None => "never ends".to_owned(),
            };
            writeln!(
                out,
                "    release {} (line {}) .. {end}",
                human_time(r.begin.t),
                r.begin.line
            )?;
        }
        if entries.len() > ENTRY_LIST_MAX {
            by_site(out, &entries)?;
        } else {
            each(out, &entries)?;
        }
    }
    Ok(())
}

fn end_text(e: &Entry) -> String {
    match e.end {
        Some((op, at)) => format!("{} {}", op.as_str(), human_time(at.t)),
        None => "NEVER RELEASED".to_owned(),
    }
}

/// One line per entry: the columns first, the name (of any length) last.
fn each(out: &mut dyn Write, entries: &[&Entry]) -> io::Result<()> {
    let width = |texts: &mut dyn Iterator<Item = usize>| texts.max().unwrap_or(0);
    let loc_w = width(
        &mut entries
            .iter()
            .map(|e| e.location().map_or(0, |l| l.chars().count())),
    )
    .min(48);
    let end_w = width(&mut entries.iter().map(|e| end_text(e).chars().count()));
    for e in entries {
        let size = match e.size {
            Some(0) | None => String::new(),
            Some(s) => format!("{s} B"),
        };
        let resized = if e.replaced > 0 {
            format!(" (resized {}x)", e.replaced)
        } else {
            String::new()
        };
        writeln!(
            out,
            "    #{:<5} {:<11} {size:>9}  {:>11} -> {:<end_w$}  {:<loc_w$}  \"{}\"{resized}",
            e.id,
            e.kind,
            human_time(e.added.t),
            end_text(e),
            e.location().unwrap_or_default(),
            e.name,
        )?;
    }
    Ok(())
}

/// One line per call site (name, kind, file:line), largest first.
fn by_site(out: &mut dyn Write, entries: &[&Entry]) -> io::Result<()> {
    #[derive(Default)]
    struct Site {
        count: usize,
        bytes: u64,
        first: u64,
        last_end: u64,
        ends: BTreeMap<&'static str, usize>,
    }
    let mut sites: BTreeMap<(String, String, String), Site> = BTreeMap::new();
    for e in entries {
        let key = (
            e.name.clone(),
            e.kind.clone(),
            e.location().unwrap_or_default(),
        );
        let site = sites.entry(key).or_insert_with(|| Site {
            first: u64::MAX,
            ..Site::default()
        });
        site.count += 1;
        site.bytes = site.bytes.saturating_add(e.size.unwrap_or(0));
        site.first = site.first.min(e.added.t);
        let end = match e.end {
            Some((op, at)) => {
                site.last_end = site.last_end.max(at.t);
                op.as_str()
            }
            None => "never released",
        };
        *site.ends.entry(end).or_default() += 1;
    }
    let mut sites: Vec<_> = sites.into_iter().collect();
    sites.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
    writeln!(
        out,
        "    {} entries from {} call site(s) (more than {ENTRY_LIST_MAX}: one line per site):",
        entries.len(),
        sites.len()
    )?;
    for ((name, kind, loc), s) in sites {
        let ends: Vec<String> = s.ends.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let bytes = if s.bytes > 0 {
            format!(", {} B", s.bytes)
        } else {
            String::new()
        };
        writeln!(
            out,
            "    {:>6}x {kind:<11} \"{name}\" {loc}{bytes}: first {}, last end {}; {}",
            s.count,
            human_time(s.first),
            human_time(s.last_end),
            ends.join(", ")
        )?;
    }
    Ok(())
}

/// Entries never released, one line per call site with a count.
fn never_by_site(
    out: &mut dyn Write,
    trace: &Trace,
    a: &Analysis,
    never: &[&Problem],
) -> io::Result<()> {
    let mut sites: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for p in never {
        let Some(e) = p.entry.map(|i| &a.entries[i]) else {
            continue;
        };
        let dev = a
            .device(e.dev)
            .map_or_else(|| "?".to_owned(), Device::label);
        let at = p
            .location
            .clone()
            .unwrap_or_else(|| format!("{}:{}", trace.path, p.trace_line));
        let what = format!("\"{}\" ({}) on {dev} {}", e.name, e.kind, e.list.as_str());
        *sites.entry((at, what, e.kind.clone())).or_default() += 1;
    }
    writeln!(
        out,
        "  {} entries never released, by call site (`drmm trace check` lists each):",
        never.len()
    )?;
    let mut sites: Vec<_> = sites.into_iter().collect();
    sites.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    for ((at, what, _), count) in sites {
        writeln!(out, "  {at}: entry never released: {count}x {what}")?;
    }
    Ok(())
}

fn refusals(out: &mut dyn Write, a: &Analysis) -> io::Result<()> {
    let normal: Vec<_> = a.refusals.iter().filter(|r| r.detail != "devres").collect();
    if normal.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(
        out,
        "Refused accesses after unplug ({}; the normal ENODEV path, not problems):",
        normal.len()
    )?;
    // One line per (call site, kind, device, value), with a count: a program that retries
    // after unplug refuses many times from one place.
    type Key = (String, String, String, String);
    let mut grouped: BTreeMap<Key, (usize, u64, String)> = BTreeMap::new();
    for r in normal {
        let dev = r
            .dev
            .and_then(|d| a.device(d))
            .map(Device::label)
            .unwrap_or_else(|| "?".to_owned());
        let key = (
            r.location.clone().unwrap_or_else(|| "?".to_owned()),
            r.detail.clone(),
            dev,
            r.name.clone().unwrap_or_default(),
        );
        let thread = r.thread.clone().unwrap_or_else(|| "?".to_owned());
        grouped.entry(key).or_insert((0, r.at.t, thread)).0 += 1;
    }
    for ((loc, detail, dev, name), (count, first, thread)) in grouped {
        let name = if name.is_empty() {
            String::new()
        } else {
            format!(" ({name})")
        };
        writeln!(
            out,
            "  {loc}: {detail} refused on {dev}{name}, {count}x, first at {} on thread {thread}",
            human_time(first)
        )?;
    }
    Ok(())
}
