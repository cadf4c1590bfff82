//! PNG pictures of a run, drawn from its JSON document with `plotters`:
//!
//! | file | what |
//! |---|---|
//! | `bench-main.png` | the main rows, ns per op of every contender (log scale) |
//! | `bench-sizes.png` | alloc + free pairs against block size |
//! | `bench-scaling.png` | mixed against arena size, one line per live set |
//! | `bench-threads.png` | mixed against thread count (2 cores: 4 and 8 are oversubscribed) |
//! | `bench-processes.png` | mixed (ours) against processes attached to the segment |
//! | `bench-fragmentation.png` | mixed after untimed random-size churn, against the churn ops |
//!
//! Each picture names the machine, the command and the commit measured.
//! Text is drawn with DejaVu Sans from the system's fonts (found through
//! fontconfig by the sans-serif family); the provenance line is monospace,
//! whose glyphs do not reach left of their origin (the ttf backend drops
//! those, such as a sans-serif "j").

use plotters::prelude::*;
use serde_json::Value;
use std::path::Path;

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 640;

/// Colour of a contender, the same in every picture.
fn colour(contender: &str) -> RGBColor {
    match contender {
        "ours" => RGBColor(214, 39, 40),
        "system" => RGBColor(31, 119, 180),
        "mimalloc" => RGBColor(44, 160, 44),
        "rlsf" => RGBColor(148, 103, 189),
        "rlsf-mutex" => RGBColor(140, 86, 75),
        _ => RGBColor(127, 127, 127),
    }
}

/// The median ns/op of `contender` in `row`, if it was measured.
fn median(row: &Value, contender: &str) -> Option<f64> {
    row["contenders"]
        .as_array()?
        .iter()
        .find(|c| c["contender"] == contender)?["ns_per_op"]["median"]
        .as_f64()
}

/// Contenders that appear in the rows of `section`, in JSON order.
fn contenders_in(rows: &[&Value]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for row in rows {
        for c in row["contenders"].as_array().into_iter().flatten() {
            if let Some(key) = c["contender"].as_str() {
                if c["ns_per_op"]["median"].is_f64() && !seen.iter().any(|s| s == key) {
                    seen.push(key.to_owned());
                }
            }
        }
    }
    seen
}

fn rows_of<'a>(doc: &'a Value, section: &str) -> Vec<&'a Value> {
    doc["rows"]
        .as_array()
        .map(|rows| rows.iter().filter(|r| r["section"] == section).collect())
        .unwrap_or_default()
}

/// The caption's second line: machine, command, commit.
fn provenance(doc: &Value) -> String {
    let m = &doc["machine"];
    format!(
        "{} ({} cores), {}; {}; {}",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["source"].as_str().unwrap_or("?"),
        doc["command"].as_str().unwrap_or("?"),
        m["build"].as_str().unwrap_or("?"),
    )
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
/// Where a row sits on a curve's x axis.
type XOf = fn(&Value) -> Option<f64>;
/// A curve: its legend, colour and points.
type Line = (String, RGBColor, Vec<(f64, f64)>);

/// Draws every picture of `doc` into `dir`; returns the files written.
pub fn render(doc: &Value, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let main = rows_of(doc, "main");
    if !main.is_empty() {
        let path = dir.join("bench-main.png");
        bars(
            doc,
            &main,
            &path,
            "ns per op, median (log scale; lower is better)",
        )?;
        written.push(path);
    }
    let curves: [(&str, &str, &str, XOf); 5] = [
        (
            "sizes",
            "bench-sizes.png",
            "block size (bytes, log scale)",
            |r| r["spec"]["size"].as_f64(),
        ),
        (
            "scaling",
            "bench-scaling.png",
            "arena size (MiB, log scale)",
            |r| r["spec"]["arena"].as_f64().map(|a| a / (1 << 20) as f64),
        ),
        ("threads", "bench-threads.png", "threads (log scale)", |r| {
            r["spec"]["threads"].as_f64()
        }),
        (
            "processes",
            "bench-processes.png",
            "processes attached to the segment (log scale)",
            |r| Some(r["spec"]["processes"].as_f64().unwrap_or(1.0)),
        ),
        (
            "fragmentation",
            "bench-fragmentation.png",
            "untimed churn ops before the timed part (log scale)",
            |r| r["spec"]["warmup"].as_f64(),
        ),
    ];
    for (section, file, x_label, x_of) in curves {
        let mut rows = rows_of(doc, section);
        // Contenders of the section's own rows (the processes rows are ours only).
        let own = contenders_in(&rows);
        if (section == "threads" || section == "processes") && !rows.is_empty() {
            // Threads 1 and 2 and the one-process point are main rows; the
            // curve starts there.
            let arena = rows[0]["spec"]["arena"].clone();
            let one_thread = section == "processes";
            rows.extend(main.iter().copied().filter(|r| {
                r["spec"]["kind"] == "mixed"
                    && r["spec"]["arena"] == arena
                    && (!one_thread || r["spec"]["threads"] == 1)
            }));
        }
        if rows.len() < 2 {
            continue;
        }
        let path = dir.join(file);
        curve(doc, section, &rows, &own, &path, x_label, x_of)?;
        written.push(path);
    }
    Ok(written)
}

fn bars(doc: &Value, rows: &[&Value], path: &Path, y_label: &str) -> Result<()> {
    let contenders = contenders_in(rows);
    let values: Vec<f64> = rows
        .iter()
        .flat_map(|r| contenders.iter().filter_map(|c| median(r, c)))
        .collect();
    let max = values.iter().copied().fold(1.0, f64::max) * 2.0;
    let min = values.iter().copied().fold(max, f64::min) / 2.0;
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, body) = root.split_vertically(50);
    top.draw(&Text::new(
        "matrix-bench: main workloads".to_owned(),
        (10, 5),
        ("sans-serif", 22),
    ))?;
    top.draw(&Text::new(provenance(doc), (10, 30), ("monospace", 12)))?;
    let groups = rows.len() as f64;
    let mut chart = ChartBuilder::on(&body)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..groups, (min..max).log_scale())?;
    let labels: Vec<String> = rows
        .iter()
        .map(|r| r["label"].as_str().unwrap_or("?").to_owned())
        .collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(rows.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_label)
        .draw()?;
    let width = 0.8 / contenders.len().max(1) as f64;
    for (k, c) in contenders.iter().enumerate() {
        let colour = colour(c);
        let bars: Vec<_> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let v = median(r, c)?;
                let x0 = i as f64 + 0.1 + k as f64 * width;
                Some(Rectangle::new(
                    [(x0, min), (x0 + width * 0.9, v)],
                    colour.filled(),
                ))
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(c.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn curve(
    doc: &Value,
    section: &str,
    rows: &[&Value],
    contenders: &[String],
    path: &Path,
    x_label: &str,
    x_of: XOf,
) -> Result<()> {
    // One line per contender, and for the scaling rows per live set too.
    let mut lines: Vec<Line> = Vec::new();
    let split_by_live = section == "scaling";
    for c in contenders {
        let mut lives: Vec<u64> = rows
            .iter()
            .filter_map(|r| r["spec"]["live"].as_u64())
            .collect();
        lives.sort_unstable();
        lives.dedup();
        if !split_by_live {
            lives = vec![u64::MAX];
        }
        for (shade, live) in lives.iter().enumerate() {
            let mut points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| !split_by_live || r["spec"]["live"].as_u64() == Some(*live))
                .filter_map(|r| Some((x_of(r)?, median(r, c)?)))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            points.dedup_by(|a, b| a.0 == b.0);
            if points.is_empty() {
                continue;
            }
            let base = colour(c);
            let fade = |v: u8| v.saturating_add((shade as u8).saturating_mul(45));
            let colour = RGBColor(fade(base.0), fade(base.1), fade(base.2));
            let name = if split_by_live {
                format!("{c}, {live} live")
            } else {
                c.clone()
            };
            lines.push((name, colour, points));
        }
    }
    let xs: Vec<f64> = lines.iter().flat_map(|l| l.2.iter().map(|p| p.0)).collect();
    let ys: Vec<f64> = lines.iter().flat_map(|l| l.2.iter().map(|p| p.1)).collect();
    let (x_min, x_max) = (
        xs.iter().copied().fold(f64::MAX, f64::min) / 1.5,
        xs.iter().copied().fold(f64::MIN, f64::max) * 1.5,
    );
    let y_max = ys.iter().copied().fold(1.0, f64::max) * 1.15;
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, body) = root.split_vertically(50);
    let title = match section {
        "sizes" => "alloc + free pairs by block size (one thread)",
        "scaling" => "mixed (one thread) by arena size and live blocks",
        "processes" => "mixed (one thread, ours) by processes attached, every other one allocating",
        "fragmentation" => "mixed (one thread) after random-size churn",
        _ => "mixed by thread count (2 cores)",
    };
    top.draw(&Text::new(
        format!("matrix-bench: {title}"),
        (10, 5),
        ("sans-serif", 22),
    ))?;
    top.draw(&Text::new(provenance(doc), (10, 30), ("monospace", 12)))?;
    let mut chart = ChartBuilder::on(&body)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((x_min..x_max).log_scale(), 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("ns per op, median (lower is better)")
        .draw()?;
    for (name, colour, points) in lines {
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], colour.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, colour.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
