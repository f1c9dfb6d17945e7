//! SVG plots of a run: the ladder timeline, on-chain bytes per day and the capital locked.

use std::path::Path;

use plotters::prelude::*;

use crate::config::BLOCKS_PER_DAY;
use crate::model::Outcome;

/// File names of the plots, in the order [`write_plots`] writes them.
pub const PLOT_FILES: [&str; 3] = ["ladder.svg", "onchain_bytes.svg", "capital.svg"];

const ACTIVE: RGBColor = RGBColor(66, 133, 244);
const DYING: RGBColor = RGBColor(251, 140, 0);
const FORCED: RGBColor = RGBColor(211, 47, 47);
const BASELINE: RGBColor = RGBColor(90, 90, 90);

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// Write the three plots of `outcome` into `dir` (which must exist).
pub fn write_plots(outcome: &Outcome, dir: &Path) -> Result<(), String> {
    let render = |name: &str, f: &dyn Fn(&mut String) -> PlotResult| -> Result<(), String> {
        let mut svg = String::new();
        f(&mut svg).map_err(|e| format!("{name}: {e}"))?;
        let path = dir.join(name);
        std::fs::write(&path, svg).map_err(|e| format!("{}: {e}", path.display()))
    };
    render(PLOT_FILES[0], &|s| ladder(outcome, s))?;
    render(PLOT_FILES[1], &|s| bytes(outcome, s))?;
    render(PLOT_FILES[2], &|s| capital(outcome, s))
}

fn day(block: u32) -> f64 {
    f64::from(block) / f64::from(BLOCKS_PER_DAY)
}

fn title(outcome: &Outcome) -> String {
    let c = &outcome.summary.config;
    format!(
        "{} clients, factories of up to {}, {} days",
        c.clients, c.factory_size, c.days
    )
}

/// One bar per rung (the factories created at one height): active period, then dying period.
fn ladder(outcome: &Outcome, svg: &mut String) -> PlotResult {
    let days = f64::from(outcome.summary.config.days);
    let cohorts = &outcome.cohorts;
    let rows = cohorts.len().max(1);
    let height = (120 + rows * 5).clamp(400, 4000) as u32;
    let root = SVGBackend::with_string(svg, (1200, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Ladder: one bar per rung (its factories), {}",
                title(outcome)
            ),
            ("sans-serif", 22),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..days, 0f64..rows as f64)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_desc("day")
        .y_desc("rung (in order of creation)")
        .draw()?;
    let bar = |i: usize, from: u32, to: u32, color: RGBColor| {
        let y = i as f64;
        Rectangle::new(
            [(day(from).min(days), y + 0.1), (day(to).min(days), y + 0.9)],
            color.filled(),
        )
    };
    chart
        .draw_series(
            cohorts
                .iter()
                .enumerate()
                .map(|(i, c)| bar(i, c.created_block, c.active_end, ACTIVE)),
        )?
        .label("active")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], ACTIVE.filled()));
    // The dying period: the share of the rung's factories whose clients all rotated in one
    // transaction (orange, above) and of those with forced exits (red, below).
    let share = |c: &crate::model::Cohort| f64::from(c.fallbacks) / f64::from(c.factories.max(1));
    let split = |i: usize, c: &crate::model::Cohort, forced: bool| {
        let y = i as f64 + 0.1;
        let mid = y + 0.8 * share(c);
        let (lo, hi, color) = if forced {
            (y, mid, FORCED)
        } else {
            (mid, y + 0.8, DYING)
        };
        Rectangle::new(
            [
                (day(c.active_end).min(days), lo),
                (day(c.dying_end).min(days), hi),
            ],
            color.filled(),
        )
    };
    chart
        .draw_series(
            cohorts
                .iter()
                .enumerate()
                .filter(|(_, c)| c.fallbacks < c.factories)
                .map(|(i, c)| split(i, c, false)),
        )?
        .label("dying: factories rotated in one transaction (share of the bar's height)")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], DYING.filled()));
    chart
        .draw_series(
            cohorts
                .iter()
                .enumerate()
                .filter(|(_, c)| c.fallbacks > 0)
                .map(|(i, c)| split(i, c, true)),
        )?
        .label("dying: factories with forced exits of offline clients")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], FORCED.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// On-chain vbytes per day: factories (and their forced exits) against one channel per user.
fn bytes(outcome: &Outcome, svg: &mut String) -> PlotResult {
    // Day 0 is the launch (every initial client's channel open in the baseline): left out so
    // that the steady state is readable.
    let days: Vec<_> = outcome.days.iter().filter(|d| d.day > 0).collect();
    let top = days
        .iter()
        .map(|d| d.vbytes.max(d.baseline_vbytes))
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.1;
    let last = f64::from(outcome.summary.config.days);
    let root = SVGBackend::with_string(svg, (1200, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "On-chain vbytes per day (launch day excluded), {}",
                title(outcome)
            ),
            ("sans-serif", 22),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..last, 0f64..top)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_desc("day")
        .y_desc("vbytes")
        .draw()?;
    let series = |f: fn(&crate::model::DayStats) -> u64| {
        days.iter()
            .map(move |d| (f64::from(d.day), f(d) as f64))
            .collect::<Vec<_>>()
    };
    chart
        .draw_series(LineSeries::new(series(|d| d.baseline_vbytes), &BASELINE))?
        .label("one channel per user")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BASELINE));
    chart
        .draw_series(LineSeries::new(series(|d| d.vbytes), &ACTIVE))?
        .label("factories (all transactions)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], ACTIVE));
    chart
        .draw_series(LineSeries::new(series(|d| d.forced_vbytes), &FORCED))?
        .label("of which forced exits")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], FORCED));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The LSP's capital locked per day: factory funding amounts against the channels' capacities.
fn capital(outcome: &Outcome, svg: &mut String) -> PlotResult {
    let btc = |sat: u64| sat as f64 / 100_000_000.0;
    let top = outcome
        .days
        .iter()
        .map(|d| d.capital_sat.max(d.baseline_capital_sat))
        .max()
        .map_or(1.0, btc)
        .max(1e-8)
        * 1.1;
    let last = f64::from(outcome.summary.config.days);
    let root = SVGBackend::with_string(svg, (1200, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("LSP capital locked (BTC), {}", title(outcome)),
            ("sans-serif", 22),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..last, 0f64..top)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x| format!("{x:.0}"))
        .x_desc("day")
        .y_desc("BTC")
        .draw()?;
    chart
        .draw_series(
            AreaSeries::new(
                outcome
                    .days
                    .iter()
                    .map(|d| (f64::from(d.day), btc(d.capital_sat))),
                0.0,
                ACTIVE.mix(0.25),
            )
            .border_style(ACTIVE),
        )?
        .label("factories: funding amounts of live factories")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], ACTIVE.mix(0.5).filled()));
    chart
        .draw_series(LineSeries::new(
            outcome
                .days
                .iter()
                .map(|d| (f64::from(d.day), btc(d.baseline_capital_sat))),
            &BASELINE,
        ))?
        .label("one channel per user: capacities")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BASELINE));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
