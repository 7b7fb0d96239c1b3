//! The benchmarks' SVG plots, beside their tables in `bench-report.md`
//! (plotters' SVG backend; built without a font feature, plotters sizes text
//! by estimate and leaves the font to the viewer).
//!
//! `cargo xtask bench` names the directory in `VIP_BENCH_PLOTS`
//! (`docs/bench/`, which the README shows); without it nothing is drawn.
//! Two kinds:
//! - [`bars`]: one horizontal bar per row at its median, a whisker from min
//!   to max;
//! - [`strips`]: every trial as a dot, per row and series, a tick at each
//!   median, on a log axis (failover gaps span milliseconds to seconds).

use std::path::{Path, PathBuf};

use plotters::prelude::*;

/// A series' colour: vip's, or its peer's or baseline's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Vip,
    Peer,
    Baseline,
}

impl Tone {
    fn color(self) -> RGBColor {
        match self {
            Tone::Vip => RGBColor(0x1f, 0x77, 0xb4),
            Tone::Peer => RGBColor(0xd6, 0x62, 0x1e),
            Tone::Baseline => RGBColor(0x7f, 0x7f, 0x7f),
        }
    }
}

/// One bar: min / median / max of a row.
#[derive(Clone, Debug)]
pub struct Bar {
    pub label: String,
    pub tone: Tone,
    pub min: f64,
    pub med: f64,
    pub max: f64,
}

/// One series of a strip row: every trial's value.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub tone: Tone,
    pub values: Vec<f64>,
}

/// One strip row: a label and its series.
#[derive(Clone, Debug)]
pub struct Strip {
    pub label: String,
    pub series: Vec<Series>,
}

/// Where plots go (`VIP_BENCH_PLOTS`), if anywhere.
#[must_use]
pub fn dir() -> Option<PathBuf> {
    std::env::var_os("VIP_BENCH_PLOTS").map(PathBuf::from)
}

/// The markdown line that shows `file` from `bench-report.md` (at the
/// workspace root, beside `docs/`), or nothing when plots are off.
fn link(title: &str, file: &str) -> String {
    if dir().is_some() {
        format!("\n![{title}](docs/bench/{file})\n")
    } else {
        String::new()
    }
}

const WIDTH: u32 = 900;
const ROW: u32 = 34;
const MARGIN: u32 = 110;
const LABEL_AREA: u32 = 330;

fn canvas(dir: &Path, file: &str, rows: usize) -> (PathBuf, u32) {
    std::fs::create_dir_all(dir).expect("create the plot directory");
    let rows = u32::try_from(rows).expect("few rows");
    (dir.join(file), MARGIN + ROW * rows.max(1))
}

/// The y range of `rows` rows.
#[expect(clippy::cast_precision_loss, reason = "few rows")]
fn y_range(rows: usize) -> std::ops::Range<f64> {
    -0.5..rows as f64 - 0.5
}

/// Row `i`'s centre on the y axis (the first row on top).
#[expect(clippy::cast_precision_loss, reason = "few rows")]
fn row_y(i: usize, rows: usize) -> f64 {
    (rows - 1 - i) as f64
}

/// Draws `bars` into `file` (SVG) and returns the markdown that shows it.
#[must_use]
pub fn bars(file: &str, title: &str, unit: &str, rows: &[Bar]) -> String {
    let Some(dir) = dir() else {
        return String::new();
    };
    draw_bars(&dir, file, title, unit, rows);
    link(title, file)
}

fn draw_bars(dir: &Path, file: &str, title: &str, unit: &str, bars: &[Bar]) {
    let (path, height) = canvas(dir, file, bars.len());
    let n = bars.len();
    let top = bars.iter().map(|b| b.max).fold(0.0, f64::max).max(1e-9) * 1.1;
    {
        let root = SVGBackend::new(&path, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).expect("fill");
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(LABEL_AREA)
            .build_cartesian_2d(0.0..top, y_range(n))
            .expect("chart");
        let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(unit)
            .y_labels(0)
            .draw()
            .expect("mesh");
        row_labels(&root, &chart, 0.0, &labels);
        for (i, b) in bars.iter().enumerate() {
            let y = row_y(i, n);
            let c = b.tone.color();
            chart
                .draw_series([Rectangle::new(
                    [(0.0, y - 0.3), (b.med, y + 0.3)],
                    c.mix(0.8).filled(),
                )])
                .expect("bar");
            chart
                .draw_series([
                    PathElement::new([(b.min, y), (b.max, y)], BLACK.stroke_width(1)),
                    PathElement::new([(b.min, y - 0.15), (b.min, y + 0.15)], BLACK),
                    PathElement::new([(b.max, y - 0.15), (b.max, y + 0.15)], BLACK),
                ])
                .expect("whisker");
            chart
                .draw_series([Text::new(
                    if b.med < 10.0 {
                        format!("{:.2}", b.med)
                    } else {
                        format!("{:.1}", b.med)
                    },
                    (b.max, y - 0.1),
                    ("sans-serif", 12),
                )])
                .expect("value");
        }
        root.present().expect("write the plot");
    }
}

/// Draws `rows` into `file` (SVG, log axis) and returns the markdown that
/// shows it.
#[must_use]
pub fn strips(file: &str, title: &str, unit: &str, rows: &[Strip]) -> String {
    let Some(dir) = dir() else {
        return String::new();
    };
    draw_strips(&dir, file, title, unit, rows);
    link(title, file)
}

fn draw_strips(dir: &Path, file: &str, title: &str, unit: &str, rows: &[Strip]) {
    let (path, height) = canvas(dir, file, rows.len());
    let n = rows.len();
    let values = rows
        .iter()
        .flat_map(|r| &r.series)
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| *v > 0.0);
    let (lo, hi) = values.fold((f64::MAX, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if hi > 0.0 {
        (lo / 1.5, hi * 1.5)
    } else {
        (0.1, 10.0)
    };
    {
        let root = SVGBackend::new(&path, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).expect("fill");
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(LABEL_AREA)
            .build_cartesian_2d((lo..hi).log_scale(), y_range(n))
            .expect("chart");
        let labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(unit)
            .y_labels(0)
            .x_label_formatter(&|v| log_label(*v))
            .draw()
            .expect("mesh");
        row_labels(&root, &chart, lo, &labels);
        let mut legend: Vec<(String, Tone)> = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let k = row.series.len().max(1);
            for (j, s) in row.series.iter().enumerate() {
                #[expect(clippy::cast_precision_loss, reason = "few series")]
                let y = row_y(i, n) + 0.3 - 0.6 * (j as f64 + 0.5) / k as f64;
                let c = s.tone.color();
                chart
                    .draw_series(
                        s.values
                            .iter()
                            .map(|v| Circle::new((v.max(lo), y), 3, c.mix(0.7).filled())),
                    )
                    .expect("dots");
                if let Some(m) = median(&s.values) {
                    chart
                        .draw_series([PathElement::new(
                            [(m.max(lo), y - 0.12), (m.max(lo), y + 0.12)],
                            c.stroke_width(3),
                        )])
                        .expect("median");
                }
                if !legend.iter().any(|(name, _)| *name == s.name) {
                    legend.push((s.name.clone(), s.tone));
                }
            }
        }
        // The legend: one dot per series name, top right, beside the title.
        for (j, (name, tone)) in legend.iter().enumerate() {
            let x = i32::try_from(WIDTH).expect("pixels") - 200;
            let y = 10 + 14 * i32::try_from(j).expect("few");
            root.draw(&Circle::new((x, y), 4, tone.color().filled()))
                .expect("legend dot");
            root.draw(&Text::new(
                name.clone(),
                (x + 10, y - 7),
                ("sans-serif", 12),
            ))
            .expect("legend text");
        }
        root.present().expect("write the plot");
    }
}

/// Writes each row's label left of the plot, level with the row.
fn row_labels<X: Ranged<ValueType = f64>>(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    chart: &ChartContext<
        '_,
        SVGBackend<'_>,
        Cartesian2d<X, plotters::coord::types::RangedCoordf64>,
    >,
    x0: f64,
    labels: &[String],
) {
    let n = labels.len();
    for (i, label) in labels.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(x0, row_y(i, n)));
        let style = TextStyle::from(("sans-serif", 13).into_font()).pos(
            plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Right,
                plotters::style::text_anchor::VPos::Center,
            ),
        );
        root.draw(&Text::new(label.clone(), (px - 8, py), style))
            .expect("row label");
    }
}

/// A log axis's label at 1, 2 and 5 times a power of ten only (the others
/// crowd each other out).
fn log_label(v: f64) -> String {
    let lead = v / 10f64.powf(v.log10().floor());
    if [1.0, 2.0, 5.0].iter().any(|l| (lead - l).abs() < 1e-6) {
        if v >= 1.0 {
            format!("{v:.0}")
        } else {
            format!("{v}")
        }
    } else {
        String::new()
    }
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    Some(s[s.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vip-plot-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn bars_draw_each_row_with_its_label_and_median() {
        let d = scratch("bars");
        let rows = [
            Bar {
                label: "vip".into(),
                tone: Tone::Vip,
                min: 30.0,
                med: 32.5,
                max: 33.0,
            },
            Bar {
                label: "HAProxy".into(),
                tone: Tone::Peer,
                min: 17.0,
                med: 17.3,
                max: 18.0,
            },
        ];
        draw_bars(&d, "b.svg", "conn/s", "k/s", &rows);
        let svg = std::fs::read_to_string(d.join("b.svg")).unwrap();
        let _ = std::fs::remove_dir_all(&d);
        assert!(svg.starts_with("<svg"), "{svg:.80}");
        for text in ["vip", "HAProxy", "32.5", "17.3", "conn/s", "k/s"] {
            assert!(svg.lines().any(|l| l == text), "no {text} in the plot");
        }
    }

    /// The README shows the plots the benches draw: each is in the
    /// repository.
    #[test]
    fn the_readme_shows_plots_that_exist() {
        let readme = include_str!("../../README.md");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let files: Vec<&str> = readme
            .match_indices("](docs/bench/")
            .map(|(i, _)| {
                let rest = &readme[i + 2..];
                &rest[..rest.find(')').expect("a closed link")]
            })
            .collect();
        assert_eq!(files.len(), 4, "{files:?}");
        for f in files {
            let svg = std::fs::read_to_string(root.join(f))
                .unwrap_or_else(|e| panic!("the README shows {f}: {e}"));
            assert!(svg.starts_with("<svg"), "{f} is no SVG");
        }
    }

    #[test]
    fn a_log_axis_is_labelled_at_one_two_and_five() {
        let shown: Vec<String> = [0.5, 0.7, 1.0, 3.0, 20.0, 40.0, 500.0, 1000.0]
            .iter()
            .copied()
            .map(log_label)
            .collect();
        assert_eq!(shown, ["0.5", "", "1", "", "20", "", "500", "1000"]);
    }

    #[test]
    fn strips_draw_every_trial() {
        let d = scratch("strips");
        let rows = [Strip {
            label: "10 ms kill -9".into(),
            series: vec![
                Series {
                    name: "vip".into(),
                    tone: Tone::Vip,
                    values: vec![1.0, 2.0, 3.0],
                },
                Series {
                    name: "peer".into(),
                    tone: Tone::Peer,
                    values: vec![100.0, 120.0],
                },
            ],
        }];
        draw_strips(&d, "s.svg", "gaps", "ms", &rows);
        let svg = std::fs::read_to_string(d.join("s.svg")).unwrap();
        let _ = std::fs::remove_dir_all(&d);
        // Five trials and two legend dots.
        assert_eq!(svg.matches("<circle").count(), 7, "{svg}");
        for text in ["10 ms kill -9", "vip", "peer", "gaps"] {
            assert!(svg.lines().any(|l| l == text), "no {text} in the plot");
        }
    }
}
