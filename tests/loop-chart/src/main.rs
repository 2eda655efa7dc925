//! loop-chart: draws the series tests/e2e/loop.sh records (a TSV with
//! columns t, event_rate, read_rate, segments, adapter_value, hpa_desired,
//! replicas, readers; empty cells are missing samples) as OUT.svg and OUT.png.
//!
//! Top: the event rate the generator writes and, where readers read events,
//! the rate they read. Bottom: the true segment count and each
//! stage after it, as step lines drawn widest first so that where they agree
//! they nest, and where one lags its colour shows.
//!
//! Text needs a TrueType font (plotters' ab_glyph backend, no system font
//! libraries): --font PATH, default DejaVu Sans from Debian's fonts-dejavu-core.

use plotters::prelude::*;
use std::error::Error;

const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// One column of the TSV: (t, value) for the rows that have a value.
type Series = Vec<(f64, f64)>;

struct Recording {
    columns: Vec<String>,
    series: Vec<Series>,
}

impl Recording {
    fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text.lines();
        let columns: Vec<String> = lines.next().ok_or("empty file")?.split('\t').map(str::to_owned).collect();
        if columns.first().map(String::as_str) != Some("t") {
            return Err("the first column must be t".into());
        }
        let mut series = vec![Vec::new(); columns.len()];
        for (number, line) in lines.enumerate() {
            let cells: Vec<&str> = line.split('\t').collect();
            let t: f64 = cells[0].parse().map_err(|e| format!("line {}: t: {e}", number + 2))?;
            for (column, cell) in cells.iter().enumerate().skip(1) {
                if !cell.is_empty() {
                    let value = cell.parse().map_err(|e| format!("line {}: {}: {e}", number + 2, columns[column]))?;
                    series[column].push((t, value));
                }
            }
        }
        Ok(Recording { columns, series })
    }

    fn column(&self, name: &str) -> Result<&Series, String> {
        let index = self.columns.iter().position(|c| c == name).ok_or(format!("no column {name}"))?;
        Ok(&self.series[index])
    }
}

/// A sampled value holds until the next sample: the points of a step line.
fn steps(series: &Series) -> Series {
    let mut out = Vec::with_capacity(series.len() * 2);
    for pair in series.windows(2) {
        out.push(pair[0]);
        out.push((pair[1].0, pair[0].1));
    }
    out.extend(series.last());
    out
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, plotters::coord::Shift>, data: &Recording, title: &str) -> Result<(), Box<dyn Error>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let (top, bottom) = root.split_vertically(root.dim_in_pixel().1 * 3 / 10);
    let rate = data.column("event_rate")?;
    let t_end = data.series.iter().flatten().map(|p| p.0).fold(0.0, f64::max).max(1.0);
    // The readers' rate is absent when they read nothing (a simulated stream).
    let read = data.column("read_rate").ok().filter(|r| r.iter().any(|p| p.1 > 0.0));
    let rate_max = rate.iter().chain(read.into_iter().flatten()).map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.1;

    let mut upper =
        ChartBuilder::on(&top).margin(10).x_label_area_size(20).y_label_area_size(70).build_cartesian_2d(0.0..t_end, 0.0..rate_max)?;
    upper
        .configure_mesh()
        .y_desc("events/s")
        .x_labels(10)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 14))
        .draw()?;
    upper
        .draw_series(LineSeries::new(rate.iter().copied(), ShapeStyle::from(&RGBColor(90, 90, 90)).stroke_width(2)))?
        .label("event rate the generator writes")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RGBColor(90, 90, 90)));
    if let Some(read) = read {
        upper
            .draw_series(LineSeries::new(read.iter().copied(), ShapeStyle::from(&RGBColor(40, 150, 80)).stroke_width(1)))?
            .label("events the readers read per second")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RGBColor(40, 150, 80)));
    }
    upper
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .label_font(("sans-serif", 14))
        .draw()?;

    let lines: [(&str, &str, RGBColor, u32); 5] = [
        ("segments", "true segment count", RGBColor(200, 200, 200), 9),
        ("adapter_value", "value the adapter serves", RGBColor(250, 160, 150), 6),
        ("hpa_desired", "HPA desired replicas", RGBColor(240, 180, 40), 4),
        ("replicas", "Deployment replicas", RGBColor(40, 90, 220), 2),
        ("readers", "running flink-reader containers", RGBColor(0, 0, 0), 1),
    ];
    let count_max = lines.iter().filter_map(|l| data.column(l.0).ok()).flatten().map(|p| p.1).fold(0.0, f64::max).max(1.0) + 4.0; // headroom for the legend
    let mut lower =
        ChartBuilder::on(&bottom).margin(10).x_label_area_size(40).y_label_area_size(70).build_cartesian_2d(0.0..t_end, 0.0..count_max)?;
    lower
        .configure_mesh()
        .x_desc("seconds since the HPA was applied")
        .y_desc("count")
        .x_labels(10)
        .y_labels(count_max as usize + 1)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 14))
        .draw()?;
    for (column, label, colour, width) in lines {
        let points = steps(data.column(column)?);
        lower
            .draw_series(LineSeries::new(points, ShapeStyle::from(&colour).stroke_width(width)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], ShapeStyle::from(&colour).stroke_width(width.max(2))));
    }
    lower
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut font = DEFAULT_FONT.to_owned();
    let mut title = "Pravega segments -> adapter -> HPA -> TaskManagers".to_owned();
    while args.first().is_some_and(|a| a.starts_with("--")) {
        let flag = args.remove(0);
        let value = if args.is_empty() { return Err(format!("{flag} needs a value").into()) } else { args.remove(0) };
        match flag.as_str() {
            "--font" => font = value,
            "--title" => title = value,
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    let [input, prefix] = &args[..] else {
        return Err("usage: loop-chart [--font TTF] [--title TEXT] SERIES.tsv OUT-PREFIX".into());
    };
    let bytes = std::fs::read(&font).map_err(|e| format!("{font}: {e} (install fonts-dejavu-core or pass --font)"))?;
    // plotters keeps registered fonts for the life of the process.
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
        .map_err(|_| format!("{font} is not a usable TrueType font"))?;
    let data = Recording::parse(&std::fs::read_to_string(input).map_err(|e| format!("{input}: {e}"))?)?;
    let size = (1200, 700);
    draw(SVGBackend::new(&format!("{prefix}.svg"), size).into_drawing_area(), &data, &title)?;
    draw(BitMapBackend::new(&format!("{prefix}.png"), size).into_drawing_area(), &data, &title)?;
    println!("wrote {prefix}.svg and {prefix}.png");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_missing_cells_and_draws_steps() {
        let data = Recording::parse("t\tsegments\treplicas\n0\t1\t1\n1\t2\t\n2\t2\t2\n").unwrap();
        assert_eq!(data.column("segments").unwrap(), &vec![(0.0, 1.0), (1.0, 2.0), (2.0, 2.0)]);
        assert_eq!(data.column("replicas").unwrap(), &vec![(0.0, 1.0), (2.0, 2.0)]);
        assert_eq!(steps(data.column("replicas").unwrap()), vec![(0.0, 1.0), (2.0, 1.0), (2.0, 2.0)]);
        assert!(Recording::parse("x\ty\n").is_err());
    }
}
