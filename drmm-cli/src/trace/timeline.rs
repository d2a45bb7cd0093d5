//! `drmm trace timeline`: an SVG of every entry's lifetime.
//!
//! One row per entry, grouped by device and then by list, a bar from its `ADD` to its end
//! (entries never released run to the end of the trace and end in a red cap), coloured by list
//! and kind; vertical markers for `UNPLUG`, `UNBIND`, `LAST_REF` and the last `CLOSE`; a legend
//! and a time axis. Beyond [`AGGREGATE_ABOVE`] entries the largest lists are aggregated by call
//! site (name, kind and file:line): one bar from the first `ADD` to the last end, with a count
//! and a profile of how many are live, so that 10,000 entries still make a picture a person can
//! read (and a browser can draw: canvases past ~32,000 px do not render).

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use svg::Document;
use svg::node::element::{Group, Line, Polygon, Rectangle, Text, Title};

use super::analysis::{Analysis, DevKind, Device, Moment, Refusal};
use super::human_time;
use super::parse::{List, Trace};

mod labels;
mod rows;

use labels::{clean, fit, row_label, short_type, ticks};
use rows::{AGGREGATE_ABOVE, Bar, MAX_ROWS, Row, rows};

const WIDTH: f64 = 1200.0;
const LABEL_X: f64 = 10.0;
const PLOT_X0: f64 = 360.0;
const PLOT_X1: f64 = 1160.0;
const ROW_H: f64 = 16.0;
const BAR_H: f64 = 10.0;
const DEVICE_H: f64 = 24.0;
const LIST_H: f64 = 18.0;
const FONT: &str = "DejaVu Sans Mono, Menlo, Consolas, monospace";
const FONT_SIZE: f64 = 11.0;
/// Width of one character of [`FONT`] at [`FONT_SIZE`].
const CHAR_W: f64 = 6.7;
const MARKER_FONT: f64 = 10.0;
const MARKER_CHAR_W: f64 = 6.1;
const LEAK_RED: &str = "#d62728";

/// What the horizontal axis shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Axis {
    /// The events' timestamps.
    Time,
    /// The order of the events (their trace lines), evenly spaced: for traces whose timestamps
    /// are all equal, or whose long pauses squeeze the bursts.
    Order,
}

impl Axis {
    /// Where a moment is on this axis.
    fn pos(self, at: Moment) -> u64 {
        match self {
            Axis::Time => at.t,
            Axis::Order => at.line as u64,
        }
    }

    /// A position as text.
    fn show(self, v: u64) -> String {
        match self {
            Axis::Time => human_time(v),
            Axis::Order => format!("line {v}"),
        }
    }
}

/// Bar colour by list and kind.
fn colour(list: List, kind: &str) -> &'static str {
    let group = kind.starts_with("group");
    match (list, kind) {
        (List::Drmm, "action") => "#2f6db5",
        (List::Drmm, "alloc") => "#5fb3d9",
        (List::Drmm, _) if group => "#2a9d8f",
        (List::Devres, "action") => "#e07b16",
        (List::Devres, "alloc") => "#f2c14e",
        (List::Devres, _) if group => "#a0522d",
        _ => "#9a9a9a",
    }
}

/// The lifecycle markers drawn as vertical lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MarkerKind {
    Unplug,
    Unbind,
    LastRef,
    LastClose,
}

impl MarkerKind {
    const ALL: [MarkerKind; 4] = [
        MarkerKind::Unplug,
        MarkerKind::Unbind,
        MarkerKind::LastRef,
        MarkerKind::LastClose,
    ];

    fn label(self) -> &'static str {
        match self {
            MarkerKind::Unplug => "UNPLUG",
            MarkerKind::Unbind => "UNBIND",
            MarkerKind::LastRef => "LAST_REF",
            MarkerKind::LastClose => "last CLOSE",
        }
    }

    fn class(self) -> &'static str {
        match self {
            MarkerKind::Unplug => "marker unplug",
            MarkerKind::Unbind => "marker unbind",
            MarkerKind::LastRef => "marker last-ref",
            MarkerKind::LastClose => "marker last-close",
        }
    }

    /// Colour, width and dash pattern.
    fn stroke(self) -> (&'static str, f64, &'static str) {
        match self {
            MarkerKind::Unplug => (LEAK_RED, 1.6, "none"),
            MarkerKind::Unbind => ("#c2185b", 1.6, "7 3"),
            MarkerKind::LastRef => ("#6a3d9a", 1.4, "3 2"),
            MarkerKind::LastClose => ("#444444", 1.2, "1 3"),
        }
    }
}

/// The time range drawn and its mapping to x.
struct Scale {
    t0: u64,
    t1: u64,
}

impl Scale {
    fn x(&self, t: u64) -> f64 {
        let span = (self.t1 - self.t0).max(1) as f64;
        let t = t.clamp(self.t0, self.t1);
        PLOT_X0 + (t - self.t0) as f64 / span * (PLOT_X1 - PLOT_X0)
    }
}

/// Rounds to a tenth of a pixel, so the SVG stays short.
fn r(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn text(x: f64, y: f64, content: &str, size: f64) -> Text {
    Text::new(clean(content))
        .set("x", r(x))
        .set("y", r(y))
        .set("font-family", FONT)
        .set("font-size", size)
}

/// Writes the timeline of `a` to `path`; returns a one-line summary.
///
/// # Errors
///
/// Those of creating or writing the file.
pub(crate) fn write(path: &Path, trace: &Trace, a: &Analysis, axis: Axis) -> io::Result<String> {
    let (doc, summary) = render(trace, a, axis);
    svg::save(path, &doc)?;
    Ok(summary)
}

/// Device markers: (x in ns, kind, device label).
fn markers(a: &Analysis, axis: Axis) -> Vec<(u64, MarkerKind, String, usize)> {
    let mut out = Vec::new();
    for (index, d) in a.devices.iter().enumerate() {
        let mut push = |at: Option<Moment>, kind| {
            if let Some(at) = at {
                out.push((axis.pos(at), kind, d.label(), index));
            }
        };
        push(d.unplugged, MarkerKind::Unplug);
        push(d.unbound, MarkerKind::Unbind);
        push(d.last_ref, MarkerKind::LastRef);
        push(d.last_close, MarkerKind::LastClose);
    }
    out.sort_by_key(|m| m.0);
    out
}

/// Lanes for marker labels so that they do not overlap: (lane, anchor at the end?).
fn label_lanes(
    scale: &Scale,
    marks: &[(u64, MarkerKind, String, usize)],
) -> (Vec<(usize, bool)>, usize) {
    let mut lane_ends: Vec<f64> = Vec::new();
    let mut out = Vec::new();
    for (t, kind, dev, _) in marks {
        let x = scale.x(*t);
        let w = (kind.label().len() + 1 + dev.chars().count()) as f64 * MARKER_CHAR_W;
        let at_end = x + 3.0 + w > WIDTH - 4.0;
        let (left, right) = if at_end {
            (x - 3.0 - w, x)
        } else {
            (x, x + 3.0 + w)
        };
        let lane = match lane_ends.iter().position(|&e| e + 4.0 < left) {
            Some(lane) => lane,
            None => {
                lane_ends.push(f64::MIN);
                lane_ends.len() - 1
            }
        };
        lane_ends[lane] = right;
        out.push((lane, at_end));
    }
    let lanes = lane_ends.len();
    (out, lanes)
}

/// Builds the document; returns it and a one-line summary.
pub(super) fn render(trace: &Trace, a: &Analysis, axis: Axis) -> (Document, String) {
    let start = |axis: Axis| {
        a.entries
            .iter()
            .map(|e| axis.pos(e.added))
            .chain(
                a.devices
                    .iter()
                    .filter_map(|d| d.created.or(d.added).map(|m| axis.pos(m))),
            )
            .min()
            .unwrap_or(0)
    };
    // A trace whose timestamps are all equal has nothing to draw on a time axis.
    let same_time = axis == Axis::Time && start(Axis::Time) >= a.end_t && a.end_line > 0;
    let axis = if same_time { Axis::Order } else { axis };
    let t0 = start(axis);
    let end = match axis {
        Axis::Time => a.end_t,
        Axis::Order => a.end_line as u64,
    };
    let t1 = end.max(t0.saturating_add(1));
    let scale = Scale { t0, t1 };
    let (rows, aggregated, omitted) = rows(a, t1, axis);
    let marks = markers(a, axis);
    let (lanes, lane_count) = label_lanes(&scale, &marks);

    // Vertical layout, top to bottom.
    let title_y = 22.0;
    let legend_y = 42.0;
    let legend_rows = 2.0;
    let mut y = legend_y + legend_rows * 18.0;
    let mut notes = Vec::new();
    if same_time {
        notes.push(
            "every event has the same timestamp: the axis shows their order (trace lines)"
                .to_owned(),
        );
    }
    if aggregated > 0 {
        notes.push(format!(
            "{} entries (more than {AGGREGATE_ABOVE} rows): {aggregated} of them in rows per call site (name, kind, file:line) with their count;",
            a.entries.len()
        ));
        notes.push(
            "such a bar runs from the site's first ADD to its last end, its profile is how many of them are live"
                .to_owned(),
        );
    }
    if omitted > 0 {
        notes.push(format!(
            "{omitted} row(s) beyond {MAX_ROWS} not drawn; see `drmm trace report`"
        ));
    }
    let notes_y = y;
    y += notes.len() as f64 * 16.0;
    let lanes_y = y + 12.0;
    y += lane_count as f64 * 13.0;
    let tick_label_y = y + 14.0;
    let axis_y = y + 20.0;
    let rows_top = axis_y + 4.0;
    let rows_h: f64 = rows
        .iter()
        .map(|row| match row {
            Row::Device(_) => DEVICE_H,
            Row::List { .. } => LIST_H,
            Row::Bar(_) | Row::Omitted(_) => ROW_H,
        })
        .sum();
    let rows_bottom = rows_top + rows_h;
    let bottom_axis = rows.len() > 40;
    let height = rows_bottom + if bottom_axis { 34.0 } else { 14.0 };

    let mut doc = Document::new()
        .set("width", WIDTH)
        .set("height", r(height))
        .set("viewBox", (0, 0, WIDTH, r(height)))
        .add(
            Rectangle::new()
                .set("width", "100%")
                .set("height", "100%")
                .set("fill", "white"),
        );

    let bar_count = rows.iter().filter(|r| matches!(r, Row::Bar(_))).count();
    let title = format!("drmm timeline: {}", trace.path);
    doc = doc.add(
        text(LABEL_X, title_y, &title, 14.0)
            .set("font-weight", "bold")
            .set("class", "title"),
    );
    let summary = format!(
        "{} device(s), {} entries, {} .. {}",
        a.devices.len(),
        a.entries.len(),
        axis.show(t0),
        axis.show(t1)
    );
    doc = doc.add(
        text(PLOT_X1, title_y, &summary, FONT_SIZE)
            .set("text-anchor", "end")
            .set("fill", "#555555"),
    );
    doc = doc.add(legend(legend_y));
    for (i, note) in notes.iter().enumerate() {
        doc = doc.add(
            text(LABEL_X, notes_y + 12.0 + i as f64 * 16.0, note, FONT_SIZE)
                .set("class", "note")
                .set("fill", "#8a4b00"),
        );
    }

    // Axis with ticks and a light grid over the rows.
    let mut axis_g = Group::new().set("class", "axis");
    axis_g = axis_g.add(
        Line::new()
            .set("x1", PLOT_X0)
            .set("x2", PLOT_X1)
            .set("y1", r(axis_y))
            .set("y2", r(axis_y))
            .set("stroke", "#333333"),
    );
    for (t, label) in ticks(t0, t1, axis) {
        let x = r(scale.x(t));
        axis_g = axis_g
            .add(
                Line::new()
                    .set("x1", x)
                    .set("x2", x)
                    .set("y1", r(axis_y - 4.0))
                    .set("y2", r(rows_bottom))
                    .set("stroke", "#e3e3e3")
                    .set("class", "grid"),
            )
            .add(
                text(x, tick_label_y, &label, 10.0)
                    .set("text-anchor", "middle")
                    .set("class", "tick"),
            );
        if bottom_axis {
            axis_g = axis_g.add(
                text(x, rows_bottom + 14.0, &label, 10.0)
                    .set("text-anchor", "middle")
                    .set("class", "tick"),
            );
        }
    }

    // Rows.
    let mut body = Group::new().set("class", "rows");
    let mut y = rows_top;
    let mut zebra = false;
    let mut group_start: Option<(f64, usize)> = None;
    // Each device's rows, top to bottom: its markers are strong there, faint elsewhere.
    let mut group_span: std::collections::HashMap<usize, (f64, f64)> =
        std::collections::HashMap::new();
    let mut shade = Group::new().set("class", "device-bands");
    let close_band = |shade: Group, start: Option<(f64, usize)>, end_y: f64| match start {
        Some((top, n)) => shade.add(
            Rectangle::new()
                .set("x", 4)
                .set("y", r(top))
                .set("width", WIDTH - 8.0)
                .set("height", r(end_y - top))
                .set("fill", if n % 2 == 0 { "#f3f6fa" } else { "#faf6f0" }),
        ),
        None => shade,
    };
    for row in &rows {
        match row {
            Row::Device(index) => {
                shade = close_band(shade, group_start, y);
                if let Some((top, i)) = group_start {
                    group_span.insert(i, (top, y));
                }
                group_start = Some((y, *index));
                let d = &a.devices[*index];
                body = body.add(device_row(d, y, &scale, t1, axis));
                for refusal in a
                    .refusals
                    .iter()
                    .filter(|r| r.detail == "devres" && r.dev == Some(d.id))
                {
                    body = body.add(refused_mark(refusal, y, &scale, axis));
                }
                y += DEVICE_H;
                zebra = false;
            }
            Row::List { list, entries } => {
                let label = format!("{} list, {entries} entries", list.as_str());
                body = body.add(
                    text(LABEL_X + 12.0, y + 13.0, &label, FONT_SIZE)
                        .set("font-style", "italic")
                        .set("fill", "#333333")
                        .set("class", "list-label"),
                );
                y += LIST_H;
                zebra = false;
            }
            Row::Bar(bar) => {
                body = body.add(bar_row(bar, y, &scale, zebra));
                zebra = !zebra;
                y += ROW_H;
            }
            Row::Omitted(n) => {
                body = body.add(
                    text(
                        LABEL_X + 24.0,
                        y + 12.0,
                        &format!("... {n} more row(s) not drawn"),
                        FONT_SIZE,
                    )
                    .set("fill", "#8a4b00"),
                );
                y += ROW_H;
            }
        }
    }
    shade = close_band(shade, group_start, y);
    if let Some((top, i)) = group_start {
        group_span.insert(i, (top, y));
    }

    // Markers over everything, labels in lanes above the axis.
    let mut marker_group = Group::new().set("class", "markers");
    for ((t, kind, dev, dev_index), (lane, at_end)) in marks.iter().zip(lanes) {
        let (own_top, own_bottom) = group_span
            .get(dev_index)
            .copied()
            .unwrap_or((axis_y, rows_bottom));
        let x = r(scale.x(*t));
        let (colour, width, dash) = kind.stroke();
        let label_y = lanes_y + lane as f64 * 13.0;
        // A lead from the label down to the tick labels, then the marker itself from the axis
        // down, so that the line never crosses a tick label.
        marker_group = marker_group
            .add(
                Line::new()
                    .set("x1", x)
                    .set("x2", x)
                    .set("y1", r(label_y + 2.0))
                    .set("y2", r(tick_label_y - 13.0))
                    .set("stroke", colour)
                    .set("stroke-width", 1)
                    .set("stroke-dasharray", dash)
                    .set("class", "marker-lead"),
            )
            .add(
                Line::new()
                    .set("x1", x)
                    .set("x2", x)
                    .set("y1", r(axis_y))
                    .set("y2", r(rows_bottom))
                    .set("stroke", colour)
                    .set("stroke-width", 1)
                    .set("stroke-opacity", 0.3)
                    .set("stroke-dasharray", dash)
                    .set("class", "marker-faint"),
            )
            .add(
                Line::new()
                    .set("x1", x)
                    .set("x2", x)
                    .set("y1", r(own_top))
                    .set("y2", r(own_bottom))
                    .set("stroke", colour)
                    .set("stroke-width", width)
                    .set("stroke-dasharray", dash)
                    .set("class", kind.class())
                    .add(Title::new(clean(&format!(
                        "{} {dev} at {}",
                        kind.label(),
                        axis.show(*t)
                    )))),
            )
            .add(
                text(
                    if at_end { x - 3.0 } else { x + 3.0 },
                    label_y,
                    &format!("{} {dev}", kind.label()),
                    MARKER_FONT,
                )
                .set("text-anchor", if at_end { "end" } else { "start" })
                .set("fill", colour)
                .set("class", "marker-label"),
            );
    }
    doc = doc.add(shade).add(axis_g).add(body).add(marker_group);
    let summary = if aggregated > 0 {
        format!(
            "{} entries in {bar_count} rows ({aggregated} aggregated by call site)",
            a.entries.len()
        )
    } else {
        format!("{bar_count} entry rows")
    };
    (doc, summary)
}

/// The device header: its name and a thin grey bar for its own life.
fn device_row(d: &Device, y: f64, scale: &Scale, end: u64, axis: Axis) -> Group {
    let label = d.describe();
    let mut g = Group::new().set("class", "device");
    g = g.add(
        text(LABEL_X + 2.0, y + 16.0, &fit(&label, 50), 12.0)
            .set("font-weight", "bold")
            .set("class", "device-label"),
    );
    let born = d.created.or(d.added).map(|m| axis.pos(m));
    if let Some(born) = born {
        let gone = d.released.map(|m| axis.pos(m));
        // A bus device still present at the end is fine; a logical one never released leaks.
        let leaks = d.kind == DevKind::Logical;
        let x0 = scale.x(born);
        let x1 = scale.x(gone.unwrap_or(end)).max(x0 + 2.0);
        let life = match gone {
            Some(t) => format!(
                "{} lives {} .. {}",
                d.label(),
                axis.show(born),
                axis.show(t)
            ),
            None => format!(
                "{} lives from {} and is never released (or removed)",
                d.label(),
                axis.show(born)
            ),
        };
        g = g.add(
            Rectangle::new()
                .set("x", r(x0))
                .set("y", r(y + 10.0))
                .set("width", r(x1 - x0))
                .set("height", 4)
                .set(
                    "fill",
                    if gone.is_none() && leaks {
                        LEAK_RED
                    } else {
                        "#8c8c8c"
                    },
                )
                .set("class", "device-life")
                .add(Title::new(clean(&life))),
        );
    }
    g
}

/// A red triangle on the device's header row where a revoked `Devres` value was reached.
fn refused_mark(refusal: &Refusal, y: f64, scale: &Scale, axis: Axis) -> Polygon {
    let x = scale.x(axis.pos(refusal.at));
    let what = refusal.name.as_deref().unwrap_or("a Devres value");
    let place = refusal
        .location
        .as_deref()
        .map(|l| format!(" at {l}"))
        .unwrap_or_default();
    Polygon::new()
        .set("points", triangle_down(x, y + 4.0))
        .set("fill", LEAK_RED)
        .set("class", "refused-devres")
        .add(Title::new(clean(&format!(
            "access after revocation: {what}{place}, {}",
            axis.show(axis.pos(refusal.at))
        ))))
}

/// A triangle pointing down, its top edge centred on `x` at `top`.
fn triangle_down(x: f64, top: f64) -> String {
    format!(
        "{},{} {},{} {},{}",
        r(x - 5.0),
        r(top),
        r(x + 5.0),
        r(top),
        r(x),
        r(top + 9.0)
    )
}

fn bar_row(bar: &Bar, y: f64, scale: &Scale, zebra: bool) -> Group {
    let mut g = Group::new().set("class", "row");
    if zebra {
        g = g.add(
            Rectangle::new()
                .set("x", LABEL_X + 18.0)
                .set("y", r(y))
                .set("width", PLOT_X1 - LABEL_X - 18.0)
                .set("height", ROW_H)
                .set("fill", "#000000")
                .set("fill-opacity", 0.035),
        );
    }
    let max_chars = ((PLOT_X0 - 8.0 - (LABEL_X + 24.0)) / CHAR_W) as usize;
    let suffix = if bar.never_released > 0 && bar.aggregated {
        format!(" ({} unreleased)", bar.never_released)
    } else {
        String::new()
    };
    let label = row_label(
        &bar.prefix,
        &short_type(&bar.name),
        &bar.loc,
        &suffix,
        max_chars,
    );
    g = g.add(
        text(LABEL_X + 24.0, y + 12.0, &label, FONT_SIZE)
            .set("class", "row-label")
            .add(Title::new(clean(&bar.tooltip))),
    );
    let x0 = scale.x(bar.start);
    let x1 = scale.x(bar.end).max(x0 + 2.0);
    let class = match (bar.never_released > 0, bar.problems > 0) {
        (false, false) => "bar",
        (true, false) => "bar never-released",
        (false, true) => "bar problem",
        (true, true) => "bar never-released problem",
    };
    let top = y + (ROW_H - BAR_H) / 2.0;
    g = g.add(
        Rectangle::new()
            .set("x", r(x0))
            .set("y", r(top))
            .set("width", r(x1 - x0))
            .set("height", BAR_H)
            .set("fill", colour(bar.list, &bar.kind))
            .set("fill-opacity", if bar.aggregated { 0.3 } else { 1.0 })
            .set("class", class)
            .set("data-list", bar.list.as_str())
            .set("stroke", if bar.problems > 0 { LEAK_RED } else { "none" })
            .set("stroke-width", 1.5)
            .add(Title::new(clean(&bar.tooltip))),
    );
    if bar.aggregated {
        g = g.add(profile(bar, scale, top));
    }
    if bar.never_released > 0 {
        // A red cap and an arrow past the end: this entry outlived the trace.
        g = g
            .add(
                Rectangle::new()
                    .set("x", r(x1 - 3.0))
                    .set("y", r(top))
                    .set("width", 3)
                    .set("height", BAR_H)
                    .set("fill", LEAK_RED)
                    .set("class", "leak-cap"),
            )
            .add(
                Polygon::new()
                    .set(
                        "points",
                        format!(
                            "{},{} {},{} {},{}",
                            r(x1 + 1.0),
                            r(top),
                            r(x1 + 7.0),
                            r(top + BAR_H / 2.0),
                            r(x1 + 1.0),
                            r(top + BAR_H)
                        ),
                    )
                    .set("fill", LEAK_RED),
            );
    }
    g
}

/// How many of an aggregated site's entries are live along the plot: an area over the bar, its
/// height relative to the site's peak.
fn profile(bar: &Bar, scale: &Scale, top: f64) -> Polygon {
    const BINS: usize = 400;
    let bin_w = (PLOT_X1 - PLOT_X0) / BINS as f64;
    let bin = |t: u64| (((scale.x(t) - PLOT_X0) / bin_w) as usize).min(BINS - 1);
    let mut diff = vec![0i64; BINS + 1];
    for &(start, end) in &bar.intervals {
        diff[bin(start)] += 1;
        diff[bin(end) + 1] -= 1;
    }
    let mut live = Vec::with_capacity(BINS);
    let mut now = 0i64;
    for d in &diff[..BINS] {
        now += d;
        live.push(now.max(0));
    }
    let peak = live.iter().copied().max().unwrap_or(1).max(1) as f64;
    let bottom = top + BAR_H;
    let mut points = format!("{},{}", r(PLOT_X0), r(bottom));
    for (i, &n) in live.iter().enumerate() {
        let h = n as f64 / peak * BAR_H;
        let (x0, x1) = (PLOT_X0 + i as f64 * bin_w, PLOT_X0 + (i + 1) as f64 * bin_w);
        let _ = write!(
            points,
            " {},{} {},{}",
            r(x0),
            r(bottom - h),
            r(x1),
            r(bottom - h)
        );
    }
    let _ = write!(points, " {},{}", r(PLOT_X1), r(bottom));
    Polygon::new()
        .set("points", points)
        .set("fill", colour(bar.list, &bar.kind))
        .set("class", "profile")
}

/// The legend: bar colours on the first line, the leak cap and the markers on the second.
fn legend(y: f64) -> Group {
    let mut g = Group::new().set("class", "legend");
    let mut x = LABEL_X;
    for list in [List::Drmm, List::Devres] {
        for kind in ["action", "alloc", "group"] {
            let label = format!("{} {kind}", list.as_str());
            g = g
                .add(
                    Rectangle::new()
                        .set("x", r(x))
                        .set("y", r(y - 9.0))
                        .set("width", 14)
                        .set("height", BAR_H)
                        .set("fill", colour(list, kind)),
                )
                .add(text(x + 18.0, y, &label, FONT_SIZE));
            x += 18.0 + label.len() as f64 * CHAR_W + 16.0;
        }
    }
    let y = y + 18.0;
    let mut x = LABEL_X;
    g = g
        .add(
            Rectangle::new()
                .set("x", r(x))
                .set("y", r(y - 9.0))
                .set("width", 14)
                .set("height", BAR_H)
                .set("fill", "#9a9a9a"),
        )
        .add(
            Rectangle::new()
                .set("x", r(x + 11.0))
                .set("y", r(y - 9.0))
                .set("width", 3)
                .set("height", BAR_H)
                .set("fill", LEAK_RED),
        );
    let label = "never released (runs to the end)";
    g = g.add(text(x + 18.0, y, label, FONT_SIZE));
    x += 18.0 + label.len() as f64 * CHAR_W + 16.0;
    g = g.add(
        Rectangle::new()
            .set("x", r(x))
            .set("y", r(y - 9.0))
            .set("width", 14)
            .set("height", BAR_H)
            .set("fill", "#9a9a9a")
            .set("stroke", LEAK_RED)
            .set("stroke-width", 1.5),
    );
    let label = "out of order / after its device";
    g = g.add(text(x + 18.0, y, label, FONT_SIZE));
    x += 18.0 + label.len() as f64 * CHAR_W + 16.0;
    g = g.add(
        Polygon::new()
            .set("points", triangle_down(x + 6.0, y - 9.0))
            .set("fill", LEAK_RED),
    );
    let label = "access after revocation";
    g = g.add(text(x + 16.0, y, label, FONT_SIZE));
    x += 16.0 + label.len() as f64 * CHAR_W + 16.0;
    for kind in MarkerKind::ALL {
        let (colour, width, dash) = kind.stroke();
        g = g
            .add(
                Line::new()
                    .set("x1", r(x + 6.0))
                    .set("x2", r(x + 6.0))
                    .set("y1", r(y - 11.0))
                    .set("y2", r(y + 3.0))
                    .set("stroke", colour)
                    .set("stroke-width", width)
                    .set("stroke-dasharray", dash),
            )
            .add(text(x + 14.0, y, kind.label(), FONT_SIZE));
        x += 14.0 + kind.label().len() as f64 * CHAR_W + 18.0;
    }
    g
}
