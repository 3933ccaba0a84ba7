//! The SVG plot of a report: latency percentiles (log y) against the offered rate of each
//! step, or, for scenarios without steps, latency by percentile.

use super::{fmt_num, Pct, Report};
use std::fmt::Write as _;

/// Image size, px.
const W: f64 = 920.0;
const H: f64 = 480.0;
/// Margins around the plot area (left, right incl. legend, top, bottom), px.
const L: f64 = 80.0;
const RT: f64 = 260.0;
const T: f64 = 40.0;
const B: f64 = 60.0;
/// Plot area, px.
const PW: f64 = W - L - RT;
const PH: f64 = H - T - B;

/// Picks one percentile out of a [`Pct`].
type PctField = fn(&Pct) -> f64;

/// One plotted line: legend name, colour and (x, latency ms) points.
struct Series {
    name: String,
    color: &'static str,
    pts: Vec<(f64, f64)>,
}

/// The lines to draw and how to label the x axis.
struct Plot {
    series: Vec<Series>,
    xlabel: String,
    /// x is `-log10(1 - percentile)`: label ticks as percentiles
    xlog: bool,
}

/// Data → pixel mapping: linear x, log10 y over whole decades.
struct Scale {
    xmin: f64,
    xmax: f64,
    ly0: f64,
    ly1: f64,
    yfloor: f64,
}

impl Scale {
    fn new(all: &[(f64, f64)]) -> Scale {
        let xmin = all.iter().map(|p| p.0).fold(f64::MAX, f64::min);
        let xmax = all.iter().map(|p| p.0).fold(f64::MIN, f64::max);
        let (xmin, xmax) = if (xmax - xmin).abs() < 1e-9 { (xmin * 0.9, xmax * 1.1 + 1.0) } else { (xmin, xmax) };
        let ymin = all.iter().map(|p| p.1).fold(f64::MAX, f64::min).max(0.001);
        let ymax = all.iter().map(|p| p.1).fold(f64::MIN, f64::max).max(ymin * 10.0);
        let (ly0, ly1) = (ymin.log10().floor(), ymax.log10().ceil());
        Scale { xmin, xmax, ly0, ly1, yfloor: 10f64.powf(ly0) }
    }

    fn px(&self, x: f64) -> f64 {
        L + (x - self.xmin) / (self.xmax - self.xmin) * PW
    }

    fn py(&self, y: f64) -> f64 {
        T + PH - (y.max(self.yfloor).log10() - self.ly0) / (self.ly1 - self.ly0) * PH
    }
}

/// SVG: latency percentiles (log y) vs offered rate (steps), or the latency-by-percentile curve.
pub fn svg(r: &Report) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"##
    );
    let title = format!("livechat {} {} — {}", r.scenario, r.label, r.date_utc);
    let _ = write!(s, r#"<text x="{L}" y="22" font-size="14" font-weight="bold">{}</text>"#, esc(&title));
    let plot = if r.steps.len() >= 2 { step_plot(r) } else { percentile_plot(r) };
    let all: Vec<(f64, f64)> = plot.series.iter().flat_map(|x| x.pts.iter().copied()).collect();
    if all.is_empty() {
        s.push_str(r#"<text x="100" y="200">no data</text></svg>"#);
        return s;
    }
    let sc = Scale::new(&all);
    let _ = write!(s, r##"<rect x="{L}" y="{T}" width="{PW}" height="{PH}" fill="none" stroke="#333"/>"##);
    y_grid(&mut s, &sc);
    x_grid(&mut s, &sc, plot.xlog);
    axis_titles(&mut s, &plot.xlabel);
    for (i, series) in plot.series.iter().enumerate() {
        draw_series(&mut s, &sc, i, series);
    }
    s.push_str("</svg>\n");
    s
}

/// p50/p90/p99/p99.9 of each step against its offered rate (deliveries/s when that differs
/// from messages/s).
fn step_plot(r: &Report) -> Plot {
    let use_deliv = r.steps.iter().any(|s| s.offered_deliveries_per_s > s.offered_msgs_per_s);
    let xlabel = if use_deliv { "offered deliveries/s" } else { "offered messages/s" }.to_string();
    let xs: Vec<f64> =
        r.steps.iter().map(|s| if use_deliv { s.offered_deliveries_per_s } else { s.offered_msgs_per_s }).collect();
    let pick: [(&str, &'static str, PctField); 4] = [
        ("p50", "#1f77b4", |p| p.p50_ms),
        ("p90", "#2ca02c", |p| p.p90_ms),
        ("p99", "#d62728", |p| p.p99_ms),
        ("p99.9", "#9467bd", |p| p.p999_ms),
    ];
    let series = pick
        .into_iter()
        .map(|(name, color, f)| {
            let pts = r
                .steps
                .iter()
                .zip(&xs)
                .filter(|(s, _)| s.latency.count > 0)
                .map(|(st, &x)| (x, f(&st.latency).max(0.001)))
                .collect();
            Series { name: name.to_string(), color, pts }
        })
        .collect();
    Plot { series, xlabel, xlog: false }
}

/// The report's distribution, latency by percentile (x = `-log10(1 - q)`: 99% → 2).
fn percentile_plot(r: &Report) -> Plot {
    let pts: Vec<(f64, f64)> =
        r.dist_points.iter().map(|&(q, ms)| (-(1.0 - (q / 100.0).min(0.99999f64)).log10(), ms.max(0.001))).collect();
    let series = vec![Series { name: r.dist_name.clone(), color: "#d62728", pts }];
    Plot { series, xlabel: "percentile".to_string(), xlog: true }
}

/// Horizontal grid lines and labels, one per decade of latency.
fn y_grid(s: &mut String, sc: &Scale) {
    let mut e = sc.ly0 as i32;
    while e as f64 <= sc.ly1 {
        let v = 10f64.powi(e);
        let y = sc.py(v);
        let _ = write!(
            s,
            r##"<line x1="{L}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{} ms</text>"##,
            L + PW,
            L - 6.0,
            y + 4.0,
            if v < 1.0 { format!("{v}") } else { format!("{v:.0}") }
        );
        e += 1;
    }
}

/// Six vertical grid lines with rate (or percentile) labels.
fn x_grid(s: &mut String, sc: &Scale, xlog: bool) {
    for i in 0..=5 {
        let x = sc.xmin + (sc.xmax - sc.xmin) * i as f64 / 5.0;
        let lab = if xlog {
            let q = 1.0 - 10f64.powf(-x);
            if x < 0.5 {
                "0%".to_string()
            } else {
                format!("{}%", (q * 100.0 * 1000.0).round() / 1000.0)
            }
        } else {
            fmt_num(x)
        };
        let _ = write!(
            s,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2:.1}" stroke="#ddd"/><text x="{0:.1}" y="{3:.1}" text-anchor="middle">{4}</text>"##,
            sc.px(x),
            T,
            T + PH,
            T + PH + 18.0,
            lab
        );
    }
}

/// The x axis title below the plot and the rotated y axis title.
fn axis_titles(s: &mut String, xlabel: &str) {
    let _ =
        write!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, L + PW / 2.0, H - 15.0, esc(xlabel));
    let _ = write!(
        s,
        r#"<text x="18" y="{:.1}" transform="rotate(-90 18 {:.1})" text-anchor="middle">latency (ms, log)</text>"#,
        T + PH / 2.0,
        T + PH / 2.0
    );
}

/// Line, points and legend entry (row `i`) of one series.
fn draw_series(s: &mut String, sc: &Scale, i: usize, series: &Series) {
    let color = series.color;
    let poly: Vec<String> = series.pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", sc.px(x), sc.py(y))).collect();
    let _ = write!(s, r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#, poly.join(" "));
    for &(x, y) in &series.pts {
        let _ = write!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#, sc.px(x), sc.py(y));
    }
    let ly = T + 20.0 + i as f64 * 20.0;
    let _ = write!(
        s,
        r#"<line x1="{0:.1}" y1="{1:.1}" x2="{2:.1}" y2="{1:.1}" stroke="{color}" stroke-width="2"/><text x="{3:.1}" y="{4:.1}">{5}</text>"#,
        L + PW + 15.0,
        ly,
        L + PW + 40.0,
        L + PW + 46.0,
        ly + 4.0,
        esc(&series.name)
    );
}

fn esc(x: &str) -> String {
    x.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
