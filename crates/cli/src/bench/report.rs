//! A bench run's results: the JSON report (docs/bench.md names its fields), the tables printed after a run
//! and by `bench compare`, and the SVG bar chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::format::table;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The value of [`Report::format`]; a reader refuses any other.
pub const FORMAT: &str = "oxvirt-bench/1";

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub format: String,
    pub oxvirt_version: String,
    pub profile: String,
    /// Seconds since the Unix epoch when the run started.
    pub started: u64,
    pub machine: Machine,
    /// The targets, in the order they ran (and are printed).
    pub targets: Vec<String>,
    pub workloads: Vec<WorkloadResult>,
}

/// The host the run happened on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub kernel: String,
    pub fio: String,
    pub sysbench: String,
}

/// One workload's figure on each target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadResult {
    pub id: String,
    pub unit: String,
    /// Target name -> figure (higher is better).
    pub results: BTreeMap<String, f64>,
}

impl Report {
    pub fn read(path: &Path) -> anyhow::Result<Report> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let report: Report = serde_json::from_str(&text)
            .with_context(|| format!("{} is not an oxvirt bench report", path.display()))?;
        if report.format != FORMAT {
            bail!(
                "{}: unknown report format '{}' (this oxvirt reads {FORMAT})",
                path.display(),
                report.format
            );
        }
        Ok(report)
    }

    /// The target the others are a percentage of: the host if it ran, else the first.
    fn baseline(&self) -> Option<&str> {
        self.targets
            .iter()
            .find(|t| *t == "host")
            .or(self.targets.first())
            .map(String::as_str)
    }

    /// The absolute figures, then each target as a percentage of the baseline.
    pub fn tables(&self) -> String {
        let mut head = vec!["Workload", "Unit"];
        head.extend(self.targets.iter().map(String::as_str));
        let rows: Vec<Vec<String>> = self
            .workloads
            .iter()
            .map(|w| {
                let mut row = vec![w.id.clone(), w.unit.clone()];
                row.extend(self.targets.iter().map(|t| figure(w.results.get(t))));
                row
            })
            .collect();
        let mut out = format!(
            "Results ({} profile)\n{}",
            self.profile,
            table(&head, &rows)
        );
        let Some(base) = self.baseline() else {
            return out;
        };
        let others: Vec<&String> = self.targets.iter().filter(|t| *t != base).collect();
        if others.is_empty() {
            return out;
        }
        let titles: Vec<String> = others.iter().map(|t| format!("{t} % of {base}")).collect();
        let mut head = vec!["Workload"];
        head.extend(titles.iter().map(String::as_str));
        let rows: Vec<Vec<String>> = self
            .workloads
            .iter()
            .map(|w| {
                let mut row = vec![w.id.clone()];
                row.extend(
                    others
                        .iter()
                        .map(|t| percent(w.results.get(base), w.results.get(*t))),
                );
                row
            })
            .collect();
        let _ = write!(out, "\n{}", table(&head, &rows));
        out
    }

    /// A horizontal bar chart of every target as a percentage of the baseline, one group per workload.
    pub fn chart_svg(&self) -> String {
        use oxvirt_xml::escape_text as e;
        const COLORS: [&str; 4] = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759"];
        const LABEL_W: usize = 160;
        const BAR_W: f64 = 500.0;
        const BAR_H: usize = 14;
        let base = self.baseline().unwrap_or("host");
        let group_h = BAR_H * self.targets.len().max(1) + 10;
        let legend_h = 20 * self.targets.len() + 10;
        let width = LABEL_W + BAR_W as usize + 120;
        let height = 40 + group_h * self.workloads.len() + legend_h;
        let mut svg = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             font-family=\"sans-serif\" font-size=\"12\">\n\
             <text x=\"10\" y=\"20\" font-size=\"14\">oxvirt bench ({} profile): % of {}</text>\n",
            e(&self.profile),
            e(base)
        );
        // Scale to the largest percentage so a target faster than the baseline still fits.
        let max = self
            .workloads
            .iter()
            .flat_map(|w| {
                let b = w.results.get(base).copied();
                self.targets
                    .iter()
                    .filter_map(move |t| Some(w.results.get(t)? / b?))
            })
            .fold(1.0f64, f64::max);
        for (i, w) in self.workloads.iter().enumerate() {
            let top = 40 + i * group_h;
            let _ = writeln!(
                svg,
                "<text x=\"10\" y=\"{}\">{}</text>",
                top + BAR_H,
                e(&w.id)
            );
            for (j, t) in self.targets.iter().enumerate() {
                let (Some(b), Some(v)) = (w.results.get(base), w.results.get(t)) else {
                    continue;
                };
                let ratio = v / b;
                let y = top + j * BAR_H;
                let _ = writeln!(
                    svg,
                    "<rect x=\"{LABEL_W}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" fill=\"{}\"/>\
                     <text x=\"{:.1}\" y=\"{}\">{:.1}%</text>",
                    BAR_W * ratio / max,
                    BAR_H - 2,
                    COLORS[j % COLORS.len()],
                    LABEL_W as f64 + BAR_W * ratio / max + 4.0,
                    y + BAR_H - 3,
                    ratio * 100.0
                );
            }
        }
        let legend_top = 40 + group_h * self.workloads.len();
        for (j, t) in self.targets.iter().enumerate() {
            let y = legend_top + 20 * j;
            let _ = writeln!(
                svg,
                "<rect x=\"{LABEL_W}\" y=\"{y}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
                 <text x=\"{}\" y=\"{}\">{}</text>",
                COLORS[j % COLORS.len()],
                LABEL_W + 18,
                y + 11,
                e(t)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// `bench compare`: every figure of `a` next to `b`'s, and `b` as a percentage of `a`.
pub fn compare(a: &Report, b: &Report) -> anyhow::Result<String> {
    let head = ["Workload", "Target", "Unit", "A", "B", "B/A"];
    let mut rows = Vec::new();
    for wa in &a.workloads {
        let Some(wb) = b.workloads.iter().find(|w| w.id == wa.id) else {
            continue;
        };
        for t in &a.targets {
            if let (Some(va), Some(vb)) = (wa.results.get(t), wb.results.get(t)) {
                rows.push(vec![
                    wa.id.clone(),
                    t.clone(),
                    wa.unit.clone(),
                    figure(Some(va)),
                    figure(Some(vb)),
                    percent(Some(va), Some(vb)),
                ]);
            }
        }
    }
    if rows.is_empty() {
        bail!("the two reports have no workload and target in common");
    }
    Ok(table(&head, &rows))
}

fn figure(value: Option<&f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"))
}

fn percent(base: Option<&f64>, value: Option<&f64>) -> String {
    match (base, value) {
        (Some(b), Some(v)) if *b > 0.0 => format!("{:.1}%", v / b * 100.0),
        _ => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            format: FORMAT.into(),
            oxvirt_version: "0".into(),
            profile: "short".into(),
            started: 0,
            machine: Machine {
                cpu_model: "cpu".into(),
                cpus: 2,
                kernel: "k".into(),
                fio: "fio".into(),
                sysbench: "sb".into(),
            },
            targets: vec!["host".into(), "qemu".into()],
            workloads: vec![WorkloadResult {
                id: "cpu".into(),
                unit: "events/s".into(),
                results: BTreeMap::from([("host".into(), 200.0), ("qemu".into(), 50.0)]),
            }],
        }
    }

    #[test]
    fn tables_give_figures_and_percentages_of_the_host() {
        let text = report().tables();
        assert!(
            text.contains(" cpu        events/s   200.0   50.0\n"),
            "{text}"
        );
        assert!(text.contains("qemu % of host"), "{text}");
        assert!(text.contains("25.0%"), "{text}");
        let same = compare(&report(), &report()).unwrap();
        assert_eq!(same.matches("100.0%").count(), 2, "{same}");
    }

    #[test]
    fn the_chart_is_well_formed_svg() {
        let mut r = report();
        r.targets.push("a<b&".into());
        let svg = r.chart_svg();
        assert!(svg.contains("a&lt;b&amp;"), "{svg}");
        assert!(svg.contains(">25.0%<"), "{svg}");
    }
}
