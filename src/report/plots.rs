//! Line charts with optional ±sd bands, rendered to PNG and SVG with an embedded font.
//!
//! The font (DejaVu Sans, assets/fonts) is compiled into the binary and registered with
//! plotters' ab_glyph backend, so plots render identically on a machine with no fonts.

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const SIZE: (u32, u32) = (960, 640);
/// Tableau 10: distinct, print-safe line colours (plotters' Palette99 has a pale yellow).
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

fn colour(i: usize) -> RGBAColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b).to_rgba()
}

fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| anyhow!("the embedded font could not be loaded"));
    });
    result
}

/// One line of a chart; `band` is (x, low, high) for a shaded ±sd region.
#[derive(Debug, Clone)]
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub band: Vec<(f64, f64, f64)>,
    /// Index into the palette, so a method keeps its colour across charts.
    pub color: usize,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
    pub lines: Vec<Line>,
}

/// A drawing error as one line naming the figure file and the cause (plotters' `Debug`
/// output, and its bitmap error's `Display`, are dumps of nested enums).
fn draw_error<E: std::error::Error + Send + Sync>(
    file: &Path,
    title: &str,
    e: DrawingAreaErrorKind<E>,
) -> anyhow::Error {
    let text = e.to_string();
    let cause = text.strip_prefix("backend error: ").unwrap_or(&text);
    let cause = cause
        .strip_prefix("Drawing backend error: ")
        .map(String::from)
        .or_else(|| {
            cause
                .strip_prefix("Font loading error: ")
                .map(|f| format!("the embedded font failed: {f}"))
        })
        .unwrap_or_else(|| cause.to_string());
    anyhow!(
        "{}: drawing the figure `{title}` failed: {cause} (fix: rerun `lrprune report`; if it fails again, report it with the results folder)",
        file.display()
    )
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &Chart, file: &Path) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| draw_error(file, &chart.title, e);
    root.fill(&WHITE).map_err(e)?;
    let mut c = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 26))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(64)
        .build_cartesian_2d(
            chart.x_range.0..chart.x_range.1,
            chart.y_range.0..chart.y_range.1,
        )
        .map_err(e)?;
    c.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(e)?;
    for line in &chart.lines {
        let color = colour(line.color);
        if !line.band.is_empty() {
            let mut poly: Vec<(f64, f64)> = line.band.iter().map(|(x, lo, _)| (*x, *lo)).collect();
            poly.extend(line.band.iter().rev().map(|(x, _, hi)| (*x, *hi)));
            c.draw_series(std::iter::once(Polygon::new(
                poly,
                color.mix(0.18).filled(),
            )))
            .map_err(e)?;
        }
        // Past the palette's ten colours lines are dashed, so that e.g. conv3 and conv13
        // of a layer profile stay distinguishable.
        let dashed = line.color >= PALETTE.len();
        let stroke = color.stroke_width(2);
        let series = if dashed {
            c.draw_series(DashedLineSeries::new(line.points.clone(), 9, 5, stroke))
        } else {
            c.draw_series(LineSeries::new(line.points.clone(), stroke))
        }
        .map_err(e)?;
        if !line.label.is_empty() {
            series.label(&line.label).legend(move |(x, y)| {
                let ends = vec![(x, y), (x + 20, y)];
                let style = color.stroke_width(3);
                let dash = if dashed { 5 } else { 20 };
                DashedPathElement::new(ends, dash, 3, style)
            });
        }
    }
    c.configure_series_labels()
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Render `chart` to `<stem>.png` and `<stem>.svg`; returns both paths.
pub fn render(chart: &Chart, stem: &Path) -> Result<[PathBuf; 2]> {
    register_font()?;
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    // Drawn in memory and written by lrprune, not by plotters: a failed write (a full
    // disk) is reported naming the file like any other output. Through a temp file and a
    // rename: a killed report leaves no half-drawn figure.
    let mut pixels = vec![0u8; SIZE.0 as usize * SIZE.1 as usize * 3];
    draw(
        BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area(),
        chart,
        &png,
    )?;
    let image = image::RgbImage::from_raw(SIZE.0, SIZE.1, pixels)
        .ok_or_else(|| anyhow!("{}: the figure's pixel buffer is short", png.display()))?;
    let mut encoded = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut encoded, image::ImageFormat::Png)
        .map_err(|e| anyhow!("{}: encoding the figure failed: {e}", png.display()))?;
    crate::results::write_atomic(&png, |tmp| Ok(std::fs::write(tmp, encoded.get_ref())?))?;
    let mut text = String::new();
    draw(
        SVGBackend::with_string(&mut text, SIZE).into_drawing_area(),
        chart,
        &svg,
    )?;
    crate::results::write_atomic(&svg, |tmp| Ok(std::fs::write(tmp, &text)?))?;
    Ok([png, svg])
}
