//! The rows of the timeline: per device a header, per list a header and its bars, with the
//! largest lists aggregated by call site.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use super::Axis;
use super::labels::short_path;
use crate::trace::analysis::{Analysis, Entry, ProblemKind};
use crate::trace::human_time;
use crate::trace::parse::List;

/// More entries than this: rows aggregate by call site.
pub(crate) const AGGREGATE_ABOVE: usize = 200;
/// At most this many rows are drawn (each list keeps its first rows; a note says how many were
/// left out).
pub(super) const MAX_ROWS: usize = 1500;

/// One drawn bar: an entry, or a call site's entries.
pub(super) struct Bar {
    /// `#id` of an entry, `Nx` of a call site.
    pub(super) prefix: String,
    pub(super) name: String,
    /// Short `file:line`.
    pub(super) loc: String,
    pub(super) tooltip: String,
    pub(super) list: List,
    pub(super) kind: String,
    pub(super) start: u64,
    pub(super) end: u64,
    /// How many of its entries are never released.
    pub(super) never_released: usize,
    /// More than one entry (an aggregated call site).
    pub(super) aggregated: bool,
    /// An aggregated site's entries, (ADD, end): drawn as a live-count profile.
    pub(super) intervals: Vec<(u64, u64)>,
    /// How many of its entries have a problem other than never being released (released out
    /// of order, or after their device): outlined in red.
    pub(super) problems: usize,
}

pub(super) enum Row {
    Device(usize),
    List { list: List, entries: usize },
    Bar(Bar),
    Omitted(usize),
}

/// The entries of each (device, list), in `ADD` order.
fn lists(a: &Analysis) -> Vec<(usize, List, Vec<&Entry>)> {
    let mut out = Vec::new();
    for (index, d) in a.devices.iter().enumerate() {
        for list in [List::Devres, List::Drmm] {
            let entries: Vec<&Entry> = d
                .entries
                .iter()
                .map(|&i| &a.entries[i])
                .filter(|e| e.list == list)
                .collect();
            if !entries.is_empty() {
                out.push((index, list, entries));
            }
        }
    }
    out
}

/// Which lists to aggregate by call site: none if all entries fit in [`AGGREGATE_ABOVE`]
/// rows; otherwise the lists that save the most rows first, until the rows fit (or every list
/// is aggregated). Small lists keep one row per entry.
fn to_aggregate(lists: &[(usize, List, Vec<&Entry>)]) -> Vec<bool> {
    let mut rows: usize = lists.iter().map(|l| l.2.len()).sum();
    let mut chosen = vec![false; lists.len()];
    if rows <= AGGREGATE_ABOVE {
        return chosen;
    }
    let mut savings: Vec<(usize, usize)> = lists
        .iter()
        .enumerate()
        .map(|(i, (_, _, entries))| {
            let sites: HashSet<_> = entries
                .iter()
                .map(|e| (&e.name, &e.kind, &e.file, e.src_line))
                .collect();
            (entries.len() - sites.len(), i)
        })
        .collect();
    savings.sort_by(|a, b| b.cmp(a));
    for (saved, i) in savings {
        if rows <= AGGREGATE_ABOVE || saved == 0 {
            break;
        }
        chosen[i] = true;
        rows -= saved;
    }
    chosen
}

/// Builds the rows: per device a header, per list a header and its bars. Returns the rows,
/// how many entries were aggregated, and how many rows were left out.
pub(super) fn rows(a: &Analysis, end: u64, axis: Axis) -> (Vec<Row>, usize, usize) {
    // By address: the rows hold references into `a.entries`.
    let flagged: HashSet<*const Entry> = a
        .problems
        .iter()
        .filter(|p| p.kind != ProblemKind::EntryNeverReleased)
        .filter_map(|p| p.entry)
        .map(|i| &a.entries[i] as *const Entry)
        .collect();
    let is_flagged = |e: &Entry| flagged.contains(&(e as *const Entry));
    let lists = lists(a);
    let aggregate = to_aggregate(&lists);
    let mut rows = Vec::new();
    let mut omitted = 0;
    let mut aggregated = 0;
    let mut next = lists.iter().zip(&aggregate).peekable();
    for index in 0..a.devices.len() {
        rows.push(Row::Device(index));
        while let Some(((_, list, entries), &agg)) = next.next_if(|((d, _, _), _)| *d == index) {
            rows.push(Row::List {
                list: *list,
                entries: entries.len(),
            });
            let bars = if agg {
                aggregated += entries.len();
                by_site(entries, end, axis, &is_flagged)
            } else {
                entries
                    .iter()
                    .map(|e| one(e, end, axis, is_flagged(e)))
                    .collect()
            };
            let room = MAX_ROWS.saturating_sub(rows.len());
            let total = bars.len();
            rows.extend(bars.into_iter().take(room).map(Row::Bar));
            if total > room {
                omitted += total - room;
                rows.push(Row::Omitted(total - room));
            }
        }
    }
    (rows, aggregated, omitted)
}

fn one(e: &Entry, end: u64, axis: Axis, flagged: bool) -> Bar {
    let loc = e.location().unwrap_or_default();
    let ended = match e.end {
        Some((op, at)) => format!("{} at {}", op.as_str(), human_time(at.t)),
        None => "never released".to_owned(),
    };
    let size = e.size.map(|s| format!(", {s} bytes")).unwrap_or_default();
    Bar {
        prefix: format!("#{}", e.id),
        name: e.name.clone(),
        loc: e
            .file
            .as_deref()
            .map(|f| location_short(f, e.src_line))
            .unwrap_or_default(),
        tooltip: format!(
            "#{} {} ({}{size}) {loc}\nADD at {}, {ended}",
            e.id,
            e.name,
            e.kind,
            human_time(e.added.t)
        ),
        list: e.list,
        kind: e.kind.clone(),
        start: axis.pos(e.added),
        end: e.end.map_or(end, |(_, at)| axis.pos(at)),
        never_released: usize::from(e.end.is_none()),
        aggregated: false,
        intervals: Vec::new(),
        problems: usize::from(flagged),
    }
}

fn location_short(file: &str, line: Option<u32>) -> String {
    match line {
        Some(line) => format!("{}:{line}", short_path(file)),
        None => short_path(file).to_owned(),
    }
}

/// One bar per call site, in order of the site's first `ADD`.
fn by_site(
    entries: &[&Entry],
    end: u64,
    axis: Axis,
    is_flagged: &dyn Fn(&Entry) -> bool,
) -> Vec<Bar> {
    let mut sites: Vec<(Bar, usize)> = Vec::new();
    let mut index: HashMap<String, usize> = std::collections::HashMap::new();
    for e in entries {
        let loc = e.location().unwrap_or_default();
        let key = format!("{}\u{0}{}\u{0}{loc}", e.name, e.kind);
        let e_end = e.end.map_or(end, |(_, at)| axis.pos(at));
        let e_start = axis.pos(e.added);
        match index.get(&key) {
            Some(&i) => {
                let (bar, count) = &mut sites[i];
                *count += 1;
                bar.start = bar.start.min(e_start);
                bar.end = bar.end.max(e_end);
                bar.never_released += usize::from(e.end.is_none());
                bar.intervals.push((e_start, e_end));
                bar.problems += usize::from(is_flagged(e));
            }
            None => {
                index.insert(key, sites.len());
                let short = e
                    .file
                    .as_deref()
                    .map(|f| location_short(f, e.src_line))
                    .unwrap_or_default();
                sites.push((
                    Bar {
                        prefix: String::new(),
                        name: e.name.clone(),
                        loc: short,
                        tooltip: format!("{} ({}) {loc}", e.name, e.kind),
                        list: e.list,
                        kind: e.kind.clone(),
                        start: e_start,
                        end: e_end,
                        never_released: usize::from(e.end.is_none()),
                        aggregated: true,
                        intervals: vec![(e_start, e_end)],
                        problems: usize::from(is_flagged(e)),
                    },
                    1,
                ));
            }
        }
    }
    sites
        .into_iter()
        .map(|(mut bar, count)| {
            bar.prefix = format!("{count}x");
            let _ = write!(
                bar.tooltip,
                "\n{count} entries: first ADD at {}, last end at {}, {} never released",
                axis.show(bar.start),
                axis.show(bar.end),
                bar.never_released
            );
            bar
        })
        .collect()
}
