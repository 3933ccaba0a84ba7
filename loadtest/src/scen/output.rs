//! Building, printing and writing reports.

use crate::report::{self, Report};
use crate::{Cli, Common};
use anyhow::Result;

/// A report for `scenario` with the run's label, command line, date and machine.
pub(super) fn new_report(cli: &Cli, scenario: &str, params: serde_json::Value) -> Report {
    Report {
        scenario: scenario.into(),
        label: cli.common.label.clone(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        date_utc: report::date_utc(),
        machine: report::machine(),
        params,
        ..Default::default()
    }
}

/// `x` rounded to 3 decimals.
pub(super) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Prints the report and writes `--json` and `--svg` if asked.
pub(super) fn finish(c: &Common, rep: &Report) -> Result<()> {
    let mut rep = rep.clone();
    if let Some(h) = &rep.dist {
        rep.dist_points = report::dist_points(h);
    }
    let rep = &rep;
    report::print_table(rep);
    if let Some(p) = &c.json {
        std::fs::write(p, serde_json::to_string_pretty(rep)?)?;
        eprintln!("wrote {p}");
    }
    write_svg(c, rep)
}

/// `render`: re-prints a saved `--json` report and redraws its plot with `--svg`.
pub(super) fn render(c: &Common, from: &str) -> Result<()> {
    let rep: Report = serde_json::from_slice(&std::fs::read(from)?)?;
    report::print_table(&rep);
    write_svg(c, &rep)
}

fn write_svg(c: &Common, rep: &Report) -> Result<()> {
    if let Some(p) = &c.svg {
        std::fs::write(p, report::svg(rep))?;
        eprintln!("wrote {p}");
    }
    Ok(())
}
