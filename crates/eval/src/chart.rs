//! `report.png`: accuracy per task (and overall) with Wilson 95% bars, one bar per condition, and
//! each task's chance level as a black tick; drawn with plotters into memory, written atomically.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::report::Report;
use crate::{EvalError, Result};

/// Where a sans-serif TrueType font is looked for (DejaVu, the fontconfig default on Debian and
/// Ubuntu; Liberation and Noto elsewhere).
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
];

/// Registers a system font with plotters once per process (plotters keeps its fonts in a table
/// of its own); false when none is found, and the chart is drawn without text.
fn font() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        for p in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(p) {
                // plotters takes 'static bytes; this happens once per process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        tracing::warn!(
            "no TrueType font found ({}); report.png has no labels",
            FONT_PATHS[0]
        );
        false
    })
}

const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

fn draw_err(e: impl std::fmt::Display) -> EvalError {
    EvalError::Config(format!("drawing report.png: {e}"))
}

/// Draws `report` as a PNG of `width` x `height` pixels (RGB) and returns its bytes.
///
/// # Errors
/// [`EvalError::Config`] when drawing or encoding fails.
pub fn render_png(report: &Report, width: u32, height: u32) -> Result<Vec<u8>> {
    let mut buf = vec![255u8; (width * height * 3) as usize];
    let text = font();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let Some(first) = report.conditions.first() else {
            return Err(EvalError::Config("report.png: no conditions".into()));
        };
        let mut groups: Vec<&str> = first.tasks.keys().map(String::as_str).collect();
        groups.push("overall");
        let n = groups.len() as f64;
        let mut builder = ChartBuilder::on(&root);
        builder
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(56);
        if text {
            builder.caption(
                "accuracy per task (95% Wilson intervals; black tick: chance)",
                ("sans-serif", 18),
            );
        }
        let mut chart = builder
            .build_cartesian_2d(0f64..n, 0f64..100f64)
            .map_err(draw_err)?;
        let mut mesh = chart.configure_mesh();
        mesh.disable_x_mesh().disable_x_axis().y_desc("accuracy %");
        if !text {
            mesh.disable_y_axis();
        }
        mesh.draw().map_err(draw_err)?;
        let nc = report.conditions.len() as f64;
        let w = 0.8 / nc;
        for (j, c) in report.conditions.iter().enumerate() {
            let colour = COLOURS[j % COLOURS.len()];
            let accs: Vec<_> = groups
                .iter()
                .map(|g| {
                    if *g == "overall" {
                        &c.overall
                    } else {
                        &c.tasks[*g]
                    }
                })
                .collect();
            let bars = accs.iter().enumerate().map(|(i, a)| {
                let x0 = i as f64 + 0.1 + j as f64 * w;
                Rectangle::new([(x0, 0.0), (x0 + w, 100.0 * a.accuracy)], colour.filled())
            });
            let series = chart.draw_series(bars).map_err(draw_err)?;
            if text {
                series.label(c.condition.name()).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
                });
            }
            let errs = accs.iter().enumerate().flat_map(|(i, a)| {
                let xm = i as f64 + 0.1 + (j as f64 + 0.5) * w;
                let cap = w * 0.25;
                let (lo, hi) = (100.0 * a.ci_low, 100.0 * a.ci_high);
                [
                    PathElement::new(vec![(xm, lo), (xm, hi)], BLACK.stroke_width(1)),
                    PathElement::new(vec![(xm - cap, lo), (xm + cap, lo)], BLACK.stroke_width(1)),
                    PathElement::new(vec![(xm - cap, hi), (xm + cap, hi)], BLACK.stroke_width(1)),
                ]
            });
            chart.draw_series(errs).map_err(draw_err)?;
        }
        let chance = groups.iter().enumerate().filter_map(|(i, g)| {
            let a = if *g == "overall" {
                &first.overall
            } else {
                &first.tasks[*g]
            };
            (a.chance > 0.0).then(|| {
                PathElement::new(
                    vec![
                        (i as f64 + 0.05, 100.0 * a.chance),
                        (i as f64 + 0.95, 100.0 * a.chance),
                    ],
                    BLACK.stroke_width(2),
                )
            })
        });
        chart.draw_series(chance).map_err(draw_err)?;
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(draw_err)?;
            let style = ("sans-serif", 13).into_font().color(&BLACK);
            for (i, g) in groups.iter().enumerate() {
                let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
                let label = g.chars().take(14).collect::<String>();
                let tw = root
                    .estimate_text_size(&label, &style)
                    .map_or(0, |s| s.0 as i32);
                root.draw(&Text::new(label, (px - tw / 2, py + 8), style.clone()))
                    .map_err(draw_err)?;
            }
        }
        root.present().map_err(draw_err)?;
    }
    let img = image::RgbImage::from_raw(width, height, buf)
        .ok_or_else(|| EvalError::Config("report.png: buffer size".into()))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(draw_err)?;
    Ok(png)
}

/// Writes `report` as `path` (PNG, 960x540), atomically.
///
/// # Errors
/// As [`render_png`]; [`EvalError::Io`] when the file cannot be written.
pub fn write_png(report: &Report, path: &Path) -> Result<()> {
    let png = render_png(report, 960, 540)?;
    vidlm_media::write_atomic(path, &png).map_err(|e| EvalError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_drawn_at_their_heights() {
        let text = "{\"id\":\"a\",\"video\":\"v\",\"question\":\"q\",\"options\":[\"x\",\"y\"],\"answer\":\"A\",\"task\":\"t\"}\n";
        let (_, items) = crate::suite::parse_suite(text, "s", Path::new(".")).unwrap();
        let mut records = std::collections::HashMap::new();
        records.insert(
            "a#video".to_string(),
            serde_json::json!({"id": "a#video", "status": "ok", "answer": "A"}),
        );
        records.insert(
            "a#blind".to_string(),
            serde_json::json!({"id": "a#blind", "status": "ok", "answer": "B"}),
        );
        let conds = [crate::Condition::Video, crate::Condition::Blind];
        let r = crate::report::build(serde_json::json!({}), &items, &conds, &records);
        let png = render_png(&r, 400, 300).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (400, 300));
        // The video bar (100%) is drawn in the first colour; the blind one (0%) leaves no bar.
        let count = |c: RGBColor| img.pixels().filter(|p| p.0 == [c.0, c.1, c.2]).count();
        assert!(count(COLOURS[0]) > 500, "{}", count(COLOURS[0]));
        assert!(count(COLOURS[1]) < 200, "{}", count(COLOURS[1]));
    }
}
