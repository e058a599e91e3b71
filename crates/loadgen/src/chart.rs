//! SVG charts for the experiments, drawn with plotters.
//!
//! SVG text is written as `<text>` elements, so no font files are needed
//! and the charts render the same on any machine, offline.

use std::path::Path;

use plotters::prelude::*;

#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {reason}")]
pub struct ChartError {
    path: String,
    reason: String,
}

fn err(path: &Path, e: impl std::fmt::Display) -> ChartError {
    ChartError {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Draws the legend (top right) and writes the file: every chart ends so.
fn finish<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    root: &DrawingArea<DB, plotters::coord::Shift>,
    path: &Path,
) -> Result<(), ChartError>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(path, e))?;
    root.present().map_err(|e| err(path, e))
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// A series of bars: its name (a policy) and a value per category (replica).
pub type BarSeries = (String, Vec<(String, f64)>);

/// Grouped bars: one group per category, one bar per series.
pub fn bar_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[BarSeries],
) -> Result<(), ChartError> {
    let categories: Vec<String> = {
        let mut c: Vec<String> = Vec::new();
        for (_, bars) in series {
            for (cat, _) in bars {
                if !c.contains(cat) {
                    c.push(cat.clone());
                }
            }
        }
        c
    };
    let max = series
        .iter()
        .flat_map(|(_, b)| b.iter().map(|(_, v)| *v))
        .fold(0.0, f64::max)
        .max(1.0);
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let n_cat = categories.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n_cat as f64, 0f64..max * 1.15)
        .map_err(|e| err(path, e))?;
    let labels = categories.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n_cat * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_label)
        .draw()
        .map_err(|e| err(path, e))?;
    let width = 0.8 / series.len().max(1) as f64;
    for (s, (name, bars)) in series.iter().enumerate() {
        let color = PALETTE[s % PALETTE.len()];
        let rects = bars.iter().filter_map(|(cat, v)| {
            let c = categories.iter().position(|x| x == cat)? as f64;
            let x0 = c + 0.1 + width * s as f64;
            Some(Rectangle::new(
                [(x0, 0.0), (x0 + width * 0.95, *v)],
                color.filled(),
            ))
        });
        chart
            .draw_series(rects)
            .map_err(|e| err(path, e))?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    finish(&mut chart, &root, path)
}

/// A line series: name and (x, y) points.
pub type Line = (String, Vec<(f64, f64)>);

/// Lines, with optional vertical markers (e.g. "kill" at t = 2.0 s).
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Line],
    markers: &[(f64, String)],
) -> Result<(), ChartError> {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0f64);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    for (x, _) in markers {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
    }
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    if (x1 - x0).abs() < f64::EPSILON {
        x1 = x0 + 1.0;
    }
    let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.1 };
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, 0f64..y1)
        .map_err(|e| err(path, e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| err(path, e))?;
    for (s, (name, pts)) in series.iter().enumerate() {
        let color = PALETTE[s % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(path, e))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
            });
        if pts.len() <= 12 {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| err(path, e))?;
        }
    }
    // Markers close together (kill, detected, replaced within milliseconds)
    // get their labels on separate lines so they stay readable.
    for (i, (x, label)) in markers.iter().enumerate() {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(*x, 0.0), (*x, y1)],
                RED.stroke_width(1),
            )))
            .map_err(|e| err(path, e))?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!(" {label}"),
                (*x, y1 * (0.97 - 0.06 * i as f64)),
                ("sans-serif", 14).into_font().color(&RED),
            )))
            .map_err(|e| err(path, e))?;
    }
    finish(&mut chart, &root, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("loadgen-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        dir.join(name)
    }

    #[test]
    fn draws_bars_and_lines_as_svg() {
        let bars = tmp("bars.svg");
        let series = vec![
            (
                "spec".to_owned(),
                vec![("s1".to_owned(), 8000.0), ("s2".to_owned(), 1000.0)],
            ),
            (
                "maglev".to_owned(),
                vec![("s1".to_owned(), 5000.0), ("s2".to_owned(), 5000.0)],
            ),
        ];
        bar_chart(&bars, "A-1", "requests", &series).expect("bars");
        let text = std::fs::read_to_string(&bars).expect("read");
        assert!(
            text.starts_with("<svg") && text.contains("maglev") && text.contains("s2"),
            "{}",
            &text[..200.min(text.len())]
        );

        let lines = tmp("lines.svg");
        let series = vec![(
            "latency".to_owned(),
            vec![(0.0, 1.0), (1.0, 3.0), (2.0, 1.5)],
        )];
        line_chart(
            &lines,
            "A-3",
            "t (s)",
            "ms",
            &series,
            &[(1.0, "kill".into())],
        )
        .expect("lines");
        let text = std::fs::read_to_string(&lines).expect("read");
        assert!(
            text.contains("kill") && text.contains("<path") || text.contains("<polyline"),
            "no line drawn"
        );
    }
}
