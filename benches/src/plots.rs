//! SVG charts a person can open: the latency percentile curve of each operation (log-scale
//! x axis of 1/(1−percentile), labelled as percentiles, like HdrHistogram's plotter) and the
//! reads each server handled.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::coord::ranged1d::SegmentValue;
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;

use crate::error::BenchError;
use crate::hgrm::TICKS_PER_HALF_DISTANCE;
use crate::spread::ServerReads;

/// The charts' colours, in the order series take them.
pub(crate) const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(23, 190, 207),
];

/// "99.9%" for x = 1/(1−p) = 1000.
pub fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x.max(1.0));
    let mut text = format!("{p:.6}");
    while text.ends_with('0') {
        text.pop();
    }
    if text.ends_with('.') {
        text.pop();
    }
    format!("{text}%")
}

/// The points of a percentile curve: (1/(1−p), milliseconds), p below 1.
pub fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(TICKS_PER_HALF_DISTANCE)
        .filter(|v| v.quantile_iterated_to() < 1.0)
        .map(|v| (1.0 / (1.0 - v.quantile_iterated_to()), v.value_iterated_to() as f64 / 1000.0))
        .collect()
}

/// A [`BenchError::Plot`] for `path`.
pub(crate) fn plot_error(path: &Path, e: impl std::fmt::Debug) -> BenchError {
    BenchError::Plot { path: path.display().to_string(), reason: format!("{e:?}") }
}

/// Draws `chart`'s legend at `position` and writes the picture to `path`.
pub(crate) fn finish<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    root: &DrawingArea<SVGBackend<'a>, Shift>,
    position: SeriesLabelPosition,
    path: &Path,
) -> Result<(), BenchError> {
    chart
        .configure_series_labels()
        .position(position)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()
        .map_err(|e| plot_error(path, e))?;
    root.present().map_err(|e| plot_error(path, e))
}

/// Draws every operation's latency by percentile into `path`.
pub fn latency(path: &Path, title: &str, series: &[(String, Histogram<u64>)]) -> Result<(), BenchError> {
    let curves: Vec<(&str, Vec<(f64, f64)>)> = series.iter().map(|(n, h)| (n.as_str(), curve(h))).collect();
    let max_x = curves.iter().flat_map(|(_, c)| c.iter().map(|p| p.0)).fold(100.0, f64::max);
    let max_x = 10f64.powf(max_x.log10().ceil());
    let max_y = curves.iter().flat_map(|(_, c)| c.iter().map(|p| p.1)).fold(0.01, f64::max) * 1.1;
    let root = SVGBackend::new(path, (960, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d((1f64..max_x).log_scale(), 0f64..max_y)
        .map_err(|e| plot_error(path, e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()
        .map_err(|e| plot_error(path, e))?;
    for (i, (name, points)) in curves.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| plot_error(path, e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    finish(&mut chart, &root, SeriesLabelPosition::UpperLeft, path)
}

/// Draws reads per server as bars into `path`, with a dashed line at the even share.
pub fn spread(path: &Path, title: &str, servers: &[ServerReads]) -> Result<(), BenchError> {
    let n = servers.len().max(1) as i32;
    let total: u64 = servers.iter().map(|s| s.reads).sum();
    let max_y = servers.iter().map(|s| s.reads).max().unwrap_or(0).max(1) as f64 * 1.15;
    let root = SVGBackend::new(path, (960, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0f64..max_y)
        .map_err(|e| plot_error(path, e))?;
    let names: Vec<String> = servers.iter().map(|s| s.server.clone()).collect();
    let label = move |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => names.get(*i as usize).cloned().unwrap_or_default(),
        SegmentValue::Last => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("server")
        .y_desc("reads handled")
        .x_label_formatter(&label)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| plot_error(path, e))?;
    let bars = servers.iter().enumerate().map(|(i, s)| {
        let i = i as i32;
        let mut bar = Rectangle::new(
            [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), s.reads as f64)],
            COLORS[0].filled(),
        );
        bar.set_margin(0, 0, 8, 8);
        bar
    });
    chart.draw_series(bars).map_err(|e| plot_error(path, e))?;
    let even = total as f64 / f64::from(n);
    let line = vec![(SegmentValue::Exact(0), even), (SegmentValue::Last, even)];
    chart
        .draw_series(DashedLineSeries::new(line, 6, 4, COLORS[1].stroke_width(2)))
        .map_err(|e| plot_error(path, e))?
        .label(format!("even share ({even:.0})"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], COLORS[1].stroke_width(2)));
    finish(&mut chart, &root, SeriesLabelPosition::UpperRight, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(2.0), "50%");
    }

    #[test]
    fn charts_are_svg() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in 1..1000u64 {
            h.record(v * 7).unwrap();
        }
        let p = dir.path().join("latency.svg");
        latency(&p, "test", &[("read".into(), h.clone()), ("write".into(), h)]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("<svg") && text.contains("99.9%") && text.contains("read"));
        let s = dir.path().join("spread.svg");
        let servers: Vec<ServerReads> =
            (0..3).map(|i| ServerReads { server: format!("Server{i}"), reads: 100 + i, share: 33.3 }).collect();
        spread(&s, "spread", &servers).unwrap();
        let text = std::fs::read_to_string(&s).unwrap();
        assert!(text.contains("Server2") && text.contains("</svg>"));
    }
}
