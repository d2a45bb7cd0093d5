//! Text of the timeline: XML-safe labels cut to fit, and the time axis' ticks.

use super::Axis;

/// Text safe for XML 1.0 (no control characters; `&`, `<` and `>` are escaped by `svg`).
pub(super) fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Cuts `text` to at most `max` characters, ending in `..` when cut.
pub(super) fn fit(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_owned();
    }
    let keep = max.saturating_sub(2);
    let mut out: String = text.chars().take(keep).collect();
    out.push_str("..");
    out
}

/// Cuts `text` to at most `max` characters by taking out its middle (names often differ at
/// their end).
pub(super) fn fit_middle(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_owned();
    }
    let keep = max.saturating_sub(2);
    let head: String = text.chars().take(keep.div_ceil(2)).collect();
    let tail: String = text.chars().skip(n - keep / 2).collect();
    format!("{head}..{tail}")
}

/// `prefix name loc suffix` in at most `max` characters: the name gives way first (cut in the
/// middle), then the location (cut at its start, its line number stays).
pub(super) fn row_label(prefix: &str, name: &str, loc: &str, suffix: &str, max: usize) -> String {
    const MIN_NAME: usize = 10;
    let len = |s: &str| s.chars().count();
    let fixed = len(prefix) + len(suffix) + 2;
    let full = format!("{prefix} {name} {loc}{suffix}");
    if len(&full) <= max {
        return full;
    }
    let loc_room = max.saturating_sub(fixed + MIN_NAME.min(len(name)));
    let loc = if len(loc) <= loc_room {
        loc.to_owned()
    } else {
        let keep = loc_room.saturating_sub(2);
        let tail: String = loc.chars().skip(len(loc) - keep).collect();
        format!("..{tail}")
    };
    let name_room = max.saturating_sub(fixed + len(&loc));
    fit(
        &format!("{prefix} {} {loc}{suffix}", fit_middle(name, name_room)),
        max,
    )
}

/// A Rust type name without its module paths: `Devres<Registers>` for
/// `drmm::bus::devres::Devres<vgpu::hw::Registers>` (the rows are narrow; the report keeps the
/// full names).
pub(super) fn short_type(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(word.rsplit("::").next().unwrap_or(word));
        word.clear();
    };
    for c in name.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The last two components of a path: `src/device.rs` of `/home/u/drmm/src/device.rs`.
pub(super) fn short_path(path: &str) -> &str {
    let mut cut = path.len();
    for _ in 0..2 {
        match path[..cut].rfind('/') {
            Some(at) => cut = at,
            None => return path,
        }
    }
    &path[cut + 1..]
}

/// Tick positions (in ns) and labels for `[t0, t1]`: about 8 "nice" steps (1, 2, 5 × 10^k).
pub(super) fn ticks(t0: u64, t1: u64, axis: Axis) -> Vec<(u64, String)> {
    let span = (t1 - t0).max(1) as f64;
    let raw = span / 8.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = match raw / mag {
        n if n <= 1.0 => mag,
        n if n <= 2.0 => 2.0 * mag,
        n if n <= 5.0 => 5.0 * mag,
        _ => 10.0 * mag,
    }
    .max(1.0);
    let (unit, div) = match t1 {
        _ if axis == Axis::Order => ("", 1.0),
        0..1_000 => ("ns", 1.0),
        1_000..1_000_000 => ("µs", 1e3),
        1_000_000..1_000_000_000 => ("ms", 1e6),
        _ => ("s", 1e9),
    };
    let decimals = (-(step / div).log10().floor()).clamp(0.0, 6.0) as usize;
    let mut out = Vec::new();
    let mut t = (t0 as f64 / step).ceil() * step;
    // Bounded: near u64::MAX, adding a step to an f64 may not move it.
    while t <= t1 as f64 + 0.5 && out.len() < 20 {
        let label = match axis {
            Axis::Time => format!("{:.*} {unit}", decimals, t / div),
            Axis::Order => format!("line {}", t as u64),
        };
        out.push((t as u64, label));
        t += step;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside_the_range() {
        let t = ticks(0, 30_000, Axis::Time);
        assert_eq!(t.first().map(|t| t.1.as_str()), Some("0 µs"));
        assert!(t.iter().any(|t| t.1 == "5 µs"), "{t:?}");
        assert!(t.len() >= 4 && t.len() <= 12, "{t:?}");
        let t = ticks(1_500_000, 1_503_000, Axis::Time);
        assert!(t.iter().all(|t| t.0 >= 1_500_000 && t.0 <= 1_503_000));
        assert!(t.iter().any(|t| t.1 == "1.5005 ms"), "{t:?}");
        assert_eq!(ticks(0, 1, Axis::Time).len(), 2);
        let lines = ticks(2, 40, Axis::Order);
        assert_eq!(
            lines.first().map(|t| t.1.as_str()),
            Some("line 5"),
            "{lines:?}"
        );
        assert!(ticks(u64::MAX - 1, u64::MAX, Axis::Time).len() <= 20);
    }

    #[test]
    fn labels_are_cut_and_paths_shortened() {
        assert_eq!(fit("abcdef", 4), "ab..");
        assert_eq!(fit("abc", 4), "abc");
        assert_eq!(short_path("/home/u/drmm/src/device.rs"), "src/device.rs");
        assert_eq!(short_path("main.rs"), "main.rs");
        assert_eq!(
            short_type("drmm::bus::devres::Devres<vgpu::hw::Registers>"),
            "Devres<Registers>"
        );
        assert_eq!(short_type("free_irq"), "free_irq");
        assert_eq!(short_type("|d| d.data().x"), "|d| d.data().x");
        assert_eq!(clean("a\nb\u{1}"), "a b ");
        assert_eq!(fit_middle("abcdefghij", 6), "ab..ij");
        assert_eq!(
            row_label("#1", "vram", "src/gem.rs:10", "", 40),
            "#1 vram src/gem.rs:10"
        );
        let long = "obj_with_a_rather_long_descriptive_name_17";
        let label = row_label("#17", long, "module/path_17.rs:170", "", 47);
        assert_eq!(label.chars().count(), 47, "{label}");
        assert!(
            label.starts_with("#17 obj_with_") && label.ends_with("_17 module/path_17.rs:170"),
            "{label}"
        );
        let loc = "a/very_long_module_name_here.rs:170";
        let label = row_label("2000x", long, loc, " (3 unreleased)", 47);
        assert!(label.ends_with(".rs:170 (3 unreleased)"), "{label}");
        assert!(label.chars().count() <= 47, "{label}");
    }
}
