//! The picture of a run: an SVG document (written by hand, no drawing crate) with the `send`
//! throughput over time (top panel), the `send` latencies on a log scale (bottom panel) and the
//! fault windows shaded across both panels, plus a title, a one-line summary and a legend.
//!
//! Invariants:
//! * [`svg`] returns a well-formed SVG document for any history and any windows (including empty
//!   ones, events out of order, completions without an invoke, windows ending before they start
//!   or lying past the last event); every text taken from the input is XML-escaped;
//! * it never panics: no `unwrap` on data, no division by zero, and every coordinate is finite
//!   (formatted with at most one decimal);
//! * the output size is bounded independently of the history length: at most
//!   [`MAX_DOTS`] latency dots (thinned deterministically, rarer outcomes kept first), at most
//!   [`MAX_BUCKETS`] time buckets per polyline and at most [`MAX_WINDOWS`] shaded windows with
//!   truncated names.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::checker::Window;
use crate::history::{Event, Type, F};

/// Most latency dots drawn; beyond this the dots are thinned (every k-th of each outcome).
pub const MAX_DOTS: usize = 20_000;
/// Most time buckets; a run longer than this many seconds gets buckets wider than 1 s.
pub const MAX_BUCKETS: u64 = 1_800;
/// Most fault windows drawn.
pub const MAX_WINDOWS: usize = 200;

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 560.0;
/// Plot area, x.
const LEFT: f64 = 70.0;
const RIGHT: f64 = 970.0;
/// Throughput panel, y.
const TOP1: f64 = 74.0;
const BOTTOM1: f64 = 234.0;
/// Latency panel, y.
const TOP2: f64 = 282.0;
const BOTTOM2: f64 = 482.0;
/// Characters of a fault name shown on its window.
const LABEL_CHARS: usize = 24;
/// Characters of a fault name in its hover title.
const TITLE_CHARS: usize = 200;

const GREEN: &str = "#2ca02c";
const ORANGE: &str = "#ff7f0e";
const RED: &str = "#d62728";
const P50: &str = "#333333";
const P99: &str = "#666666";
const SHADE: &str = "#f4a6a6";

/// Outcome classes in drawing order: ok, info, fail.
const CLASSES: [(&str, &str); 3] = [
    ("ok", GREEN),
    ("info (indeterminate)", ORANGE),
    ("fail", RED),
];

/// One completed send.
struct Done {
    /// Completion time (ms).
    t1: u64,
    /// Latency (ms), when its invoke was seen.
    latency: Option<u64>,
    /// Index in [`CLASSES`].
    class: usize,
}

/// Renders the run as an SVG document.
pub fn svg(history: &[Event], windows: &[Window]) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>\n\
         <text x=\"{l}\" y=\"24\" font-size=\"14\" font-weight=\"bold\">Runnel fault-injection run</text>\n",
        w = num(WIDTH),
        h = num(HEIGHT),
        l = num(LEFT),
    );
    if history.is_empty() {
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" font-size=\"14\" text-anchor=\"middle\" fill=\"#666666\">no operations</text>\n</svg>\n",
            num(WIDTH / 2.0),
            num(HEIGHT / 2.0)
        );
        return out;
    }

    // Completed sends, their latencies, the counts and the length of the run.
    let mut last_invoke: HashMap<(u64, F), u64> = HashMap::new();
    let mut done: Vec<Done> = Vec::new();
    let mut totals = [0usize; 3];
    let mut run_ms = 0u64;
    for e in history {
        run_ms = run_ms.max(e.t0).max(e.t1.unwrap_or(0));
        let Some(f) = e.f else { continue };
        let class = match e.ty() {
            Type::Invoke => {
                last_invoke.insert((e.process, f), e.t0);
                continue;
            }
            Type::Ok => 0,
            Type::Info => 1,
            Type::Fail => 2,
        };
        if f != F::Send {
            continue;
        }
        totals[class] += 1;
        if let Some(t1) = e.t1 {
            let latency = last_invoke
                .get(&(e.process, f))
                .map(|t0| t1.saturating_sub(*t0));
            done.push(Done { t1, latency, class });
        }
    }
    for w in windows {
        run_ms = run_ms.max(w.start).max(w.end.unwrap_or(0));
    }

    // Time axis: whole buckets of 1 s (wider for very long runs), at least one.
    let run_s = run_ms.div_ceil(1000).max(1);
    let bucket_ms = run_s.div_ceil(MAX_BUCKETS).max(1).saturating_mul(1000);
    let buckets = run_ms.div_ceil(bucket_ms).max(1);
    let domain_ms = buckets.saturating_mul(bucket_ms);
    let nb = usize::try_from(buckets).unwrap_or(1).max(1);
    let bucket_of = |t: u64| {
        usize::try_from(t / bucket_ms)
            .unwrap_or(usize::MAX)
            .min(nb - 1)
    };
    let x_of = |t_ms: f64| LEFT + (t_ms / domain_ms as f64).clamp(0.0, 1.0) * (RIGHT - LEFT);

    let _ = writeln!(
        out,
        "<text x=\"{LEFT}\" y=\"44\" font-size=\"12\" fill=\"#333333\">acknowledged sends: {} \
         \u{b7} info (indeterminate): {} \u{b7} failed: {} \u{b7} run length: {} s</text>",
        totals[0],
        totals[1],
        totals[2],
        num(run_ms as f64 / 1000.0)
    );

    // Fault windows, behind everything else.
    let mut labels = String::new();
    for w in windows.iter().take(MAX_WINDOWS) {
        let start = w.start.min(domain_ms);
        let end = w.end.unwrap_or(domain_ms).clamp(start, domain_ms);
        let x0 = x_of(start as f64);
        let x1 = x_of(end as f64).max(x0 + 1.0);
        let mut title = format!(
            "{} ({} s",
            truncate(&w.fault, TITLE_CHARS),
            num(start as f64 / 1000.0)
        );
        match w.end {
            Some(_) => {
                let _ = write!(title, " to {} s", num(end as f64 / 1000.0));
            }
            None => title.push_str(", never healed"),
        }
        if let Some(ms) = w.first_ok_after_ms {
            let _ = write!(title, "; first acknowledged send after {ms} ms");
        }
        let _ = write!(
            title,
            "; longest time without an acknowledged send {} ms",
            w.longest_gap_ms
        );
        title.push(')');
        let _ = writeln!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{SHADE}\" fill-opacity=\"0.35\"><title>{}</title></rect>",
            num(x0),
            num(TOP1),
            num(x1 - x0),
            num(BOTTOM2 - TOP1),
            esc(&title)
        );
        let lx = x0 + 2.0;
        let ly = TOP1 + 2.0;
        let _ = writeln!(
            labels,
            "<text x=\"{x}\" y=\"{y}\" transform=\"rotate(90 {x} {y})\" font-size=\"11\" fill=\"#8b1a1a\" stroke=\"#ffffff\" stroke-width=\"3\" stroke-opacity=\"0.8\" paint-order=\"stroke\">{}</text>",
            esc(&truncate(&w.fault, LABEL_CHARS)),
            x = num(lx),
            y = num(ly),
        );
    }
    if windows.len() > MAX_WINDOWS {
        let _ = writeln!(
            labels,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#8b1a1a\">{} more fault windows not drawn</text>",
            num(RIGHT),
            num(TOP1 - 8.0),
            windows.len() - MAX_WINDOWS
        );
    }

    // Time ticks under both panels.
    let domain_s = domain_ms as f64 / 1000.0;
    let step_s = nice_step(domain_s, 10.0);
    let _ = writeln!(out, "<g stroke=\"#eeeeee\">");
    let mut ticks = String::new();
    let mut i = 0u32;
    while i <= 12 {
        let s = f64::from(i) * step_s;
        if s > domain_s * (1.0 + 1e-9) {
            break;
        }
        let x = num(x_of(s * 1000.0));
        let _ = writeln!(
            out,
            "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\"/><line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\"/>",
            num(TOP1),
            num(BOTTOM1),
            num(TOP2),
            num(BOTTOM2)
        );
        for y in [BOTTOM1 + 14.0, BOTTOM2 + 14.0] {
            let _ = writeln!(
                ticks,
                "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                num(y),
                num(s)
            );
        }
        i += 1;
    }
    let _ = writeln!(out, "</g>");
    out.push_str(&ticks);
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#333333\">time since start (s)</text>",
        num((LEFT + RIGHT) / 2.0),
        num(BOTTOM2 + 30.0)
    );

    // Top panel: completions per second by outcome.
    let bucket_s = bucket_ms as f64 / 1000.0;
    let mut per_bucket = vec![vec![0u64; nb]; 3];
    for d in &done {
        per_bucket[d.class][bucket_of(d.t1)] += 1;
    }
    let peak = per_bucket
        .iter()
        .flatten()
        .map(|c| *c as f64 / bucket_s)
        .fold(0.0, f64::max);
    let rate_step = nice_step(peak, 4.0).max(1.0);
    let rate_top = (rate_step * (peak / rate_step).ceil()).max(2.0 * rate_step);
    let y_rate = |r: f64| BOTTOM1 - (r / rate_top).clamp(0.0, 1.0) * (BOTTOM1 - TOP1);
    let _ = writeln!(
        out,
        "<text x=\"{LEFT}\" y=\"{}\" font-size=\"12\" font-weight=\"bold\">send completions per {}</text>",
        num(TOP1 - 8.0),
        if bucket_ms == 1000 {
            "second".to_string()
        } else {
            format!("second ({} s buckets)", num(bucket_s))
        }
    );
    let mut k = 0u32;
    while k <= 6 {
        let r = f64::from(k) * rate_step;
        if r > rate_top * (1.0 + 1e-9) {
            break;
        }
        axis_tick(&mut out, y_rate(r), &num(r));
        k += 1;
    }
    frame(&mut out, TOP1, BOTTOM1);
    for (class, counts) in per_bucket.iter().enumerate() {
        let points: Vec<Option<(f64, f64)>> = counts
            .iter()
            .enumerate()
            .map(|(b, c)| {
                let mid = (b as f64 + 0.5) * bucket_ms as f64;
                Some((x_of(mid), y_rate(*c as f64 / bucket_s)))
            })
            .collect();
        polylines(&mut out, &points, CLASSES[class].1, "1.5", None, false);
    }

    // Bottom panel: latency dots on a log scale.
    let max_latency = done.iter().filter_map(|d| d.latency).max().unwrap_or(0);
    let mut decades = 0u32;
    let mut p: u128 = 1;
    while p < u128::from(max_latency) && decades < 40 {
        p *= 10;
        decades += 1;
    }
    let decades = decades.max(4);
    let y_lat = |ms: u64| {
        let l = (ms.max(1) as f64).log10() / f64::from(decades);
        BOTTOM2 - l.clamp(0.0, 1.0) * (BOTTOM2 - TOP2)
    };
    let label_every = (decades + 1).div_ceil(6).max(1);
    for d in (0..=decades).step_by(label_every as usize) {
        let y = BOTTOM2 - f64::from(d) / f64::from(decades) * (BOTTOM2 - TOP2);
        axis_tick(&mut out, y, &decade_label(d));
    }
    frame(&mut out, TOP2, BOTTOM2);

    let mut candidates = [0usize; 3];
    for d in &done {
        if d.latency.is_some() {
            candidates[d.class] += 1;
        }
    }
    let total_candidates: usize = candidates.iter().sum();
    let thinned = total_candidates > MAX_DOTS;
    let every = thinning(candidates, MAX_DOTS);
    let mut shown = 0usize;
    let mut seen = [0usize; 3];
    for (class, (_, colour)) in CLASSES.iter().enumerate() {
        let _ = writeln!(out, "<g fill=\"{colour}\" fill-opacity=\"0.7\">");
        for d in done.iter().filter(|d| d.class == class) {
            let Some(latency) = d.latency else { continue };
            let n = seen[class];
            seen[class] += 1;
            if n % every[class] != 0 {
                continue;
            }
            shown += 1;
            let _ = writeln!(
                out,
                "<circle cx=\"{}\" cy=\"{}\" r=\"1.6\"/>",
                num(x_of(d.t1 as f64)),
                num(y_lat(latency))
            );
        }
        let _ = writeln!(out, "</g>");
    }
    let _ = writeln!(
        out,
        "<text x=\"{LEFT}\" y=\"{}\" font-size=\"12\" font-weight=\"bold\">send latency (ms, log scale){}</text>",
        num(TOP2 - 8.0),
        if thinned {
            format!(" \u{2014} {shown} of {total_candidates} sends shown")
        } else {
            String::new()
        }
    );

    if thinned {
        let mut ok_latencies: Vec<Vec<u64>> = vec![Vec::new(); nb];
        for d in done.iter().filter(|d| d.class == 0) {
            if let Some(l) = d.latency {
                ok_latencies[bucket_of(d.t1)].push(l);
            }
        }
        let mut p50 = Vec::with_capacity(nb);
        let mut p99 = Vec::with_capacity(nb);
        for (b, ls) in ok_latencies.iter_mut().enumerate() {
            ls.sort_unstable();
            let x = x_of((b as f64 + 0.5) * bucket_ms as f64);
            p50.push(quantile(ls, 50).map(|l| (x, y_lat(l))));
            p99.push(quantile(ls, 99).map(|l| (x, y_lat(l))));
        }
        polylines(&mut out, &p50, P50, "1.5", None, true);
        polylines(&mut out, &p99, P99, "1.5", Some("4 2"), true);
    }

    out.push_str(&labels);

    // Legend.
    let y = HEIGHT - 22.0;
    let mut x = LEFT;
    for (name, colour) in CLASSES {
        let _ = writeln!(
            out,
            "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{colour}\" stroke-width=\"2\"/>\
             <circle cx=\"{}\" cy=\"{y}\" r=\"2.5\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"{}\">{} send</text>",
            num(x),
            num(x + 18.0),
            num(x + 9.0),
            num(x + 24.0),
            num(y + 4.0),
            esc(name),
            y = num(y),
        );
        x += legend_width(name) + 30.0;
    }
    if thinned {
        for (name, colour, dash) in [
            ("p50 ok latency", P50, ""),
            ("p99 ok latency", P99, " stroke-dasharray=\"4 2\""),
        ] {
            let _ = writeln!(
                out,
                "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{colour}\" stroke-width=\"1.5\"{dash}/>\
                 <text x=\"{}\" y=\"{}\">{name}</text>",
                num(x),
                num(x + 18.0),
                num(x + 24.0),
                num(y + 4.0),
                y = num(y),
            );
            x += legend_width(name);
        }
    }
    let _ = writeln!(
        out,
        "<rect x=\"{}\" y=\"{}\" width=\"18\" height=\"10\" fill=\"{SHADE}\" fill-opacity=\"0.35\" stroke=\"{SHADE}\"/>\
         <text x=\"{}\" y=\"{}\">fault window</text>",
        num(x),
        num(y - 5.0),
        num(x + 24.0),
        num(y + 4.0)
    );
    out.push_str("</svg>\n");
    out
}

/// Formats a number with at most one decimal (no trailing ".0"); non-finite values become 0.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "0".into();
    }
    let s = format!("{v:.1}");
    let s = s.strip_suffix(".0").map(str::to_string).unwrap_or(s);
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// XML-escapes a text.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 does not allow.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            '\u{fffe}' | '\u{ffff}' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The first `max` characters of `s`, with an ellipsis when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('\u{2026}');
    t
}

/// The smallest step among 1, 2, 5 × 10^k (k ≥ 0) with `span / step <= max_ticks`.
fn nice_step(span: f64, max_ticks: f64) -> f64 {
    if !span.is_finite() || span <= 0.0 || max_ticks <= 0.0 {
        return 1.0;
    }
    let mut magnitude = 1.0f64;
    for _ in 0..320 {
        for m in [1.0, 2.0, 5.0] {
            let step = m * magnitude;
            if span / step <= max_ticks {
                return step;
            }
        }
        magnitude *= 10.0;
    }
    magnitude
}

/// A y tick: a grid line across the panel and its label left of the axis.
fn axis_tick(out: &mut String, y: f64, label: &str) {
    let _ = writeln!(
        out,
        "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#eeeeee\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
        num(LEFT),
        num(RIGHT),
        num(LEFT - 6.0),
        num(y + 4.0),
        esc(label),
        y = num(y),
    );
}

/// A panel's frame.
fn frame(out: &mut String, top: f64, bottom: f64) {
    let _ = writeln!(
        out,
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999999\"/>",
        num(LEFT),
        num(top),
        num(RIGHT - LEFT),
        num(bottom - top)
    );
}

/// Polylines through the runs of consecutive present points (a lone point becomes a dot),
/// optionally over a white halo so they stay visible over dense dots.
fn polylines(
    out: &mut String,
    points: &[Option<(f64, f64)>],
    colour: &str,
    width: &str,
    dash: Option<&str>,
    halo: bool,
) {
    let dash = dash
        .map(|d| format!(" stroke-dasharray=\"{d}\""))
        .unwrap_or_default();
    for run in points.split(Option::is_none) {
        match run {
            [] => {}
            [Some((x, y))] => {
                let _ = writeln!(
                    out,
                    "<circle cx=\"{}\" cy=\"{}\" r=\"1.5\" fill=\"{colour}\"/>",
                    num(*x),
                    num(*y)
                );
            }
            run => {
                let mut pts = String::new();
                for (x, y) in run.iter().flatten() {
                    if !pts.is_empty() {
                        pts.push(' ');
                    }
                    let _ = write!(pts, "{},{}", num(*x), num(*y));
                }
                if halo {
                    let _ = writeln!(
                        out,
                        "<polyline fill=\"none\" stroke=\"#ffffff\" stroke-opacity=\"0.8\" stroke-width=\"4\" points=\"{pts}\"/>"
                    );
                }
                let _ = writeln!(
                    out,
                    "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"{width}\"{dash} points=\"{pts}\"/>"
                );
            }
        }
    }
}

/// Per class, keep every k-th dot so that at most about `budget` dots are drawn in all; the
/// rarer classes are served first, so a few failures stay visible among many successes.
fn thinning(counts: [usize; 3], budget: usize) -> [usize; 3] {
    let mut every = [1usize; 3];
    let mut order = [0usize, 1, 2];
    order.sort_by_key(|c| counts[*c]);
    let mut remaining = budget;
    for (i, class) in order.iter().enumerate() {
        let n = counts[*class];
        let share = (remaining / (order.len() - i)).max(1);
        let k = n.div_ceil(share).max(1);
        every[*class] = k;
        remaining = remaining.saturating_sub(n.div_ceil(k));
    }
    every
}

/// The `pct`-th percentile (nearest rank below) of sorted values.
fn quantile(sorted: &[u64], pct: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    sorted.get((sorted.len() - 1) * pct / 100).copied()
}

/// The label of 10^d ms.
fn decade_label(d: u32) -> String {
    match d {
        0..=2 => 10u64.pow(d).to_string(),
        3..=5 => format!("{}k", 10u64.pow(d - 3)),
        6..=8 => format!("{}M", 10u64.pow(d - 6)),
        _ => format!("1e{d}"),
    }
}

/// Rough width of a legend entry (swatch and text).
fn legend_width(name: &str) -> f64 {
    24.0 + 6.5 * (name.chars().count() as f64 + 5.0) + 12.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invoke(process: u64, f: F, t0: u64) -> Event {
        Event {
            process,
            ty: Some(Type::Invoke),
            f: Some(f),
            t0,
            ..Default::default()
        }
    }

    fn complete(process: u64, ty: Type, t1: u64) -> Event {
        Event {
            process,
            ty: Some(ty),
            f: Some(F::Send),
            t1: Some(t1),
            ..Default::default()
        }
    }

    fn well_formed(s: &str) {
        assert!(s.starts_with("<svg"), "{}", &s[..s.len().min(200)]);
        assert!(s.ends_with("</svg>\n") || s.ends_with("</svg>"));
        for bad in ["NaN", "=\"inf", "=\"-inf", ",inf", ",-inf", "inf,", "inf\""] {
            assert!(!s.contains(bad), "non-finite number");
        }
        // Every element opened is closed (a crude balance check over the tags used).
        for tag in ["g", "text", "rect", "title"] {
            let opened =
                s.matches(&format!("<{tag} ")).count() + s.matches(&format!("<{tag}>")).count();
            let self_closed = s
                .split(&format!("<{tag} "))
                .skip(1)
                .filter(|rest| rest.split('>').next().is_some_and(|t| t.ends_with('/')))
                .count();
            let closed = s.matches(&format!("</{tag}>")).count();
            assert_eq!(opened, self_closed + closed, "unbalanced <{tag}>");
        }
    }

    #[test]
    fn empty_history_is_a_valid_svg() {
        let s = svg(&[], &[]);
        well_formed(&s);
        assert!(s.contains("no operations"));
    }

    #[test]
    fn small_history_draws_lines_dots_and_windows() {
        let mut h = Vec::new();
        // Three seconds of sends: ok, info (a timeout), fail.
        for (i, (ty, t0, t1)) in [
            (Type::Ok, 100, 120),
            (Type::Ok, 900, 950),
            (Type::Info, 1100, 2900),
            (Type::Fail, 1500, 1510),
            (Type::Ok, 2100, 2130),
            (Type::Ok, 2600, 2605),
        ]
        .into_iter()
        .enumerate()
        {
            let p = i as u64 % 3;
            h.push(invoke(p, F::Send, t0));
            h.push(complete(p, ty, t1));
        }
        // A poll in between must not be matched with a send completion.
        h.push(invoke(0, F::Poll, 2700));
        let windows = [Window {
            fault: "kill <&> node 2 \"x\" 'y'".into(),
            start: 1000,
            end: Some(2000),
            first_ok_after_ms: Some(1100),
            longest_gap_ms: 0,
        }];
        let s = svg(&h, &windows);
        well_formed(&s);
        assert!(s.contains("<polyline"));
        assert!(s.contains("<circle"));
        assert!(s.contains(GREEN) && s.contains(ORANGE) && s.contains(RED));
        assert!(s.contains(&format!("fill=\"{SHADE}\" fill-opacity=\"0.35\"")));
        assert!(s.contains("kill &lt;&amp;&gt; node 2 &quot;x&quot; &apos;y&apos;"));
        assert!(!s.contains("<&>"));
        assert!(s.contains("acknowledged sends: 4"));
        assert!(s.contains("info (indeterminate): 1"));
        assert!(s.contains("failed: 1"));
        assert!(s.contains("run length: 2.9 s"));
        // The info send's latency is 1800 ms: a dot below the 10 s decade, above 1 s.
        assert!(
            !s.contains("sends shown"),
            "small histories are not thinned"
        );
    }

    #[test]
    fn unmatched_and_odd_input_does_not_panic() {
        let h = vec![
            complete(7, Type::Ok, 5),
            complete(8, Type::Info, u64::MAX),
            invoke(9, F::Send, u64::MAX),
            complete(9, Type::Fail, 3),
            Event::default(),
        ];
        let windows = [
            Window {
                fault: "é".repeat(500),
                start: 50,
                end: Some(10),
                first_ok_after_ms: None,
                longest_gap_ms: 0,
            },
            Window {
                fault: String::new(),
                start: u64::MAX,
                end: None,
                first_ok_after_ms: None,
                longest_gap_ms: 0,
            },
        ];
        let s = svg(&h, &windows);
        well_formed(&s);
        let s = svg(&[Event::default()], &[]);
        well_formed(&s);
    }

    #[test]
    fn large_history_is_thinned_and_bounded() {
        let mut h = Vec::new();
        for i in 0..50_000u64 {
            let p = i % 64;
            let t0 = i * 6;
            let (ty, lat) = match i % 100 {
                0 => (Type::Info, 10_000),
                1 => (Type::Fail, 3),
                _ => (Type::Ok, 1 + (i * 7919) % 400),
            };
            h.push(invoke(p, F::Send, t0));
            h.push(complete(p, ty, t0 + lat));
        }
        let windows: Vec<Window> = (0..300)
            .map(|i| Window {
                fault: format!("pause node {i}"),
                start: i * 1000,
                end: None,
                first_ok_after_ms: None,
                longest_gap_ms: 0,
            })
            .collect();
        let s = svg(&h, &windows);
        well_formed(&s);
        assert!(s.len() < 3_000_000, "{} bytes", s.len());
        let dots = s.matches("r=\"1.6\"").count();
        assert!(dots <= MAX_DOTS + 3, "{dots} dots");
        assert!(s.contains("sends shown"));
        assert!(s.contains(P50) && s.contains(P99));
        assert!(s.contains("100 more fault windows not drawn"));
        // Rare outcomes are all kept.
        for colour in [ORANGE, RED] {
            let group = s
                .split(&format!("<g fill=\"{colour}\" fill-opacity=\"0.7\">"))
                .nth(1)
                .and_then(|rest| rest.split("</g>").next())
                .unwrap_or_default();
            assert_eq!(group.matches("<circle").count(), 500, "{colour}");
        }
    }

    #[test]
    fn helpers() {
        assert_eq!(num(1.0), "1");
        assert_eq!(num(1.25), "1.2");
        assert_eq!(num(-0.01), "0");
        assert_eq!(num(f64::NAN), "0");
        assert_eq!(nice_step(0.0, 4.0), 1.0);
        assert_eq!(nice_step(9.0, 4.0), 5.0);
        assert_eq!(nice_step(30.0, 10.0), 5.0);
        assert_eq!(thinning([10, 20, 30], 100), [1, 1, 1]);
        let every = thinning([49_000, 500, 500], 20_000);
        assert_eq!(every[1], 1);
        assert_eq!(every[2], 1);
        assert!(49_000usize.div_ceil(every[0]) + 1000 <= 20_000);
        assert_eq!(quantile(&[1, 2, 3, 4], 50), Some(2));
        assert_eq!(quantile(&[], 99), None);
        assert_eq!(decade_label(4), "10k");
        assert_eq!(truncate("abcdef", 4), "abc\u{2026}");
    }
}
