//! Inline SVG charts, drawn by hand so reports need no JavaScript, CSS
//! framework or network access: an x/y chart (lines and dots, linear or
//! log y axis) and a grouped bar chart.

use std::fmt::Write as _;

/// Series colours, in order.
pub const PALETTE: [&str; 8] = [
    "#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563",
];

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 300.0;
const MARGIN_LEFT: f64 = 64.0;
const MARGIN_RIGHT: f64 = 16.0;
const MARGIN_TOP: f64 = 30.0;
const MARGIN_BOTTOM: f64 = 48.0;
/// Bar labels shown at most along the x axis; the rest are skipped.
const BAR_LABELS_MAX: usize = 12;

/// Escapes text for HTML and SVG content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A number for an axis or a table: no more digits than it needs.
pub fn format_number(v: f64) -> String {
    if !v.is_finite() {
        return "–".to_owned();
    }
    let a = v.abs();
    let s = if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// One line or set of dots.
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
    /// Dots (a scatter) rather than a line.
    pub dots: bool,
}

pub struct XyChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_y: bool,
    pub series: Vec<Series>,
}

/// Maps data to pixels along one axis.
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Axis {
    fn fit(values: impl Iterator<Item = f64>, log: bool, from_zero: bool) -> Self {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !lo.is_finite() {
            (lo, hi) = if log { (1.0, 10.0) } else { (0.0, 1.0) };
        }
        if log {
            lo = 10f64.powf(lo.log10().floor());
            hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
        } else {
            if from_zero {
                lo = lo.min(0.0);
            }
            if hi <= lo {
                hi = lo + 1.0;
            } else if from_zero {
                hi = nice_ceiling(hi * 1.05);
            }
        }
        Self { lo, hi, log }
    }

    /// Position in 0..=1.
    fn unit(&self, v: f64) -> f64 {
        if self.log {
            let v = v.max(self.lo);
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (a, b) = (
                self.lo.log10().round() as i32,
                self.hi.log10().round() as i32,
            );
            let mut ticks = Vec::new();
            for e in a..=b {
                let base = 10f64.powi(e);
                ticks.push(base);
                if b - a <= 2 && e < b {
                    ticks.extend([2.0 * base, 5.0 * base]);
                }
            }
            ticks
        } else {
            let step = nice_step((self.hi - self.lo) / 5.0);
            let mut ticks = Vec::new();
            let mut t = (self.lo / step).ceil() * step;
            while t <= self.hi + step * 1e-9 {
                ticks.push(t);
                t += step;
            }
            ticks
        }
    }
}

/// The smallest of 1, 2, 5 × 10^k at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let base = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * base)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * base)
}

fn nice_ceiling(v: f64) -> f64 {
    let step = nice_step(v / 5.0);
    (v / step).ceil() * step
}

fn plot_width() -> f64 {
    WIDTH - MARGIN_LEFT - MARGIN_RIGHT
}

fn plot_height() -> f64 {
    HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
}

fn open_svg(out: &mut String, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" font-family="system-ui, sans-serif" font-size="11"><title>{t}</title><text x="{MARGIN_LEFT}" y="18" font-size="13" font-weight="600">{t}</text>"#,
        t = escape(title)
    );
}

fn axis_labels(out: &mut String, x_label: &str, y_label: &str) {
    let _ = write!(
        out,
        r##"<text x="{x}" y="{y}" text-anchor="middle" fill="#444">{xl}</text><text transform="translate(14 {ym}) rotate(-90)" text-anchor="middle" fill="#444">{yl}</text>"##,
        x = MARGIN_LEFT + plot_width() / 2.0,
        y = HEIGHT - 8.0,
        xl = escape(x_label),
        ym = MARGIN_TOP + plot_height() / 2.0,
        yl = escape(y_label),
    );
}

fn legend(out: &mut String, names: &[(&str, &str)]) {
    let mut x = WIDTH - MARGIN_RIGHT;
    for (name, color) in names.iter().rev() {
        let w = 18.0 + 6.5 * name.chars().count() as f64;
        x -= w;
        let _ = write!(
            out,
            r#"<rect x="{x}" y="9" width="10" height="10" fill="{color}"/><text x="{tx}" y="18">{n}</text>"#,
            tx = x + 13.0,
            n = escape(name)
        );
    }
}

fn y_grid(out: &mut String, axis: &Axis) {
    for t in axis.ticks() {
        let y = MARGIN_TOP + plot_height() * (1.0 - axis.unit(t));
        let _ = write!(
            out,
            r##"<line x1="{MARGIN_LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#e5e7eb"/><text x="{tx}" y="{ty:.1}" text-anchor="end" fill="#444">{label}</text>"##,
            x2 = WIDTH - MARGIN_RIGHT,
            tx = MARGIN_LEFT - 6.0,
            ty = y + 4.0,
            label = format_number(t)
        );
    }
}

impl XyChart {
    pub fn to_svg(&self) -> String {
        let mut out = String::new();
        open_svg(&mut out, &self.title);
        let all = || self.series.iter().flat_map(|s| s.points.iter());
        let x = Axis::fit(all().map(|p| p.0), false, false);
        let y = Axis::fit(all().map(|p| p.1), self.log_y, true);
        y_grid(&mut out, &y);
        for t in x.ticks() {
            let px = MARGIN_LEFT + plot_width() * x.unit(t);
            let _ = write!(
                out,
                r##"<line x1="{px:.1}" x2="{px:.1}" y1="{y1}" y2="{y2}" stroke="#9ca3af"/><text x="{px:.1}" y="{ty}" text-anchor="middle" fill="#444">{label}</text>"##,
                y1 = HEIGHT - MARGIN_BOTTOM,
                y2 = HEIGHT - MARGIN_BOTTOM + 4.0,
                ty = HEIGHT - MARGIN_BOTTOM + 16.0,
                label = format_number(t)
            );
        }
        let _ = write!(
            out,
            r##"<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{w}" height="{h}" fill="none" stroke="#9ca3af"/>"##,
            w = plot_width(),
            h = plot_height()
        );
        let to_px = |(vx, vy): (f64, f64)| {
            (
                MARGIN_LEFT + plot_width() * x.unit(vx),
                MARGIN_TOP + plot_height() * (1.0 - y.unit(vy)),
            )
        };
        for s in &self.series {
            if s.dots {
                // Sparse dots darker, dense ones lighter, so both read.
                let opacity = if s.points.len() < 500 { 0.7 } else { 0.35 };
                let _ = write!(out, r#"<g fill="{}" fill-opacity="{opacity}">"#, s.color);
                for &p in &s.points {
                    let (px, py) = to_px(p);
                    let _ = write!(out, r#"<circle cx="{px:.1}" cy="{py:.1}" r="1.6"/>"#);
                }
                out.push_str("</g>");
            } else if let [only] = s.points[..] {
                // A one-point line is a marker.
                let (px, py) = to_px(only);
                let _ = write!(
                    out,
                    r#"<circle cx="{px:.1}" cy="{py:.1}" r="3.5" fill="{}"/>"#,
                    s.color
                );
            } else if !s.points.is_empty() {
                let path: Vec<String> = s
                    .points
                    .iter()
                    .map(|&p| {
                        let (px, py) = to_px(p);
                        format!("{px:.1},{py:.1}")
                    })
                    .collect();
                let _ = write!(
                    out,
                    r#"<polyline fill="none" stroke="{}" stroke-width="1.8" points="{}"/>"#,
                    s.color,
                    path.join(" ")
                );
            }
        }
        let names: Vec<(&str, &str)> = self
            .series
            .iter()
            .map(|s| (s.name.as_str(), s.color))
            .collect();
        legend(&mut out, &names);
        axis_labels(&mut out, &self.x_label, &self.y_label);
        out.push_str("</svg>");
        out
    }
}

/// Grouped bars: one group of bars per category, one bar per series.
pub struct BarChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub categories: Vec<String>,
    /// `(name, colour, one value per category)`.
    pub series: Vec<(String, &'static str, Vec<f64>)>,
}

impl BarChart {
    pub fn to_svg(&self) -> String {
        let mut out = String::new();
        open_svg(&mut out, &self.title);
        let y = Axis::fit(
            self.series.iter().flat_map(|s| s.2.iter().copied()),
            false,
            true,
        );
        y_grid(&mut out, &y);
        let n = self.categories.len().max(1);
        let slot = plot_width() / n as f64;
        let bars = self.series.len().max(1);
        let bar_w = (slot * 0.8 / bars as f64).max(1.0);
        let label_every = n.div_ceil(BAR_LABELS_MAX);
        let show_values = n * bars <= 2 * BAR_LABELS_MAX;
        for (c, category) in self.categories.iter().enumerate() {
            let x0 = MARGIN_LEFT + slot * c as f64 + slot * 0.1;
            for (b, (name, color, values)) in self.series.iter().enumerate() {
                let v = values.get(c).copied().unwrap_or(0.0);
                if !v.is_finite() {
                    continue;
                }
                let top = MARGIN_TOP + plot_height() * (1.0 - y.unit(v));
                let bx = x0 + bar_w * b as f64;
                let _ = write!(
                    out,
                    r#"<rect x="{bx:.1}" y="{top:.1}" width="{w:.1}" height="{h:.1}" fill="{color}"><title>{t}</title></rect>"#,
                    w = (bar_w - 1.0).max(0.5),
                    h = (HEIGHT - MARGIN_BOTTOM - top).max(0.0),
                    t = escape(&format!("{category} {name}: {}", format_number(v)))
                );
                if show_values {
                    let _ = write!(
                        out,
                        r##"<text x="{tx:.1}" y="{ty:.1}" text-anchor="middle" font-size="10" fill="#222">{v}</text>"##,
                        tx = bx + bar_w / 2.0,
                        ty = top - 3.0,
                        v = format_number(v)
                    );
                }
            }
            if c % label_every == 0 {
                let _ = write!(
                    out,
                    r##"<text x="{tx:.1}" y="{ty}" text-anchor="middle" fill="#444">{l}</text>"##,
                    tx = MARGIN_LEFT + slot * (c as f64 + 0.5),
                    ty = HEIGHT - MARGIN_BOTTOM + 16.0,
                    l = escape(category)
                );
            }
        }
        let _ = write!(
            out,
            r##"<line x1="{MARGIN_LEFT}" x2="{x2}" y1="{yb}" y2="{yb}" stroke="#9ca3af"/>"##,
            x2 = WIDTH - MARGIN_RIGHT,
            yb = HEIGHT - MARGIN_BOTTOM
        );
        if self.series.len() > 1 {
            let names: Vec<(&str, &str)> =
                self.series.iter().map(|s| (s.0.as_str(), s.1)).collect();
            legend(&mut out, &names);
        }
        axis_labels(&mut out, &self.x_label, &self.y_label);
        out.push_str("</svg>");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(format_number(1500.0), "1500");
        assert_eq!(format_number(12.34), "12.3");
        assert_eq!(format_number(0.5), "0.5");
        assert_eq!(format_number(2.0), "2");
    }

    #[test]
    fn log_axis_spans_whole_decades() {
        let axis = Axis::fit([0.3, 42.0].into_iter(), true, true);
        assert_eq!((axis.lo, axis.hi), (0.1, 100.0));
        assert_eq!(axis.ticks().first(), Some(&0.1));
    }
}
