//! What a benchmark reports: rows of medians with their spread, ratios against the row they
//! are compared with, and targets that are met or missed, printed as a table and written as
//! Markdown with the machine they ran on.

use std::fmt::Write as _;

/// One measured quantity, repeated.
#[derive(Clone, Debug)]
pub struct Row {
    pub case: String,
    /// Every repetition's value.
    pub samples: Vec<f64>,
    /// How values are shown, e.g. `ns`, `Mpps`, `ms`, `MiB`.
    pub unit: &'static str,
    /// `ratio` of this row's median to another's, and what the other is.
    pub ratio: Option<(f64, String)>,
    /// Ratios to further rows, shown after the first (which a target, if any, is about).
    pub also: Vec<(f64, String)>,
    pub target: Option<Target>,
}

/// A target and whether it was met.
#[derive(Clone, Debug)]
pub struct Target {
    pub text: String,
    pub met: bool,
}

impl Row {
    pub fn new(case: impl Into<String>, unit: &'static str, samples: Vec<f64>) -> Row {
        Row {
            case: case.into(),
            samples,
            unit,
            ratio: None,
            also: Vec::new(),
            target: None,
        }
    }

    pub fn median(&self) -> f64 {
        median(&self.samples)
    }

    /// Compares with `base`: records `self / base` (of the medians).
    pub fn against(mut self, base: &Row) -> Row {
        self.ratio = Some((self.median() / base.median(), base.case.clone()));
        self
    }

    /// Records the median of ratios taken pairwise, each against a `base` measured right next
    /// to it: steadier than a ratio of medians when the machine's speed drifts.
    pub fn paired(mut self, ratios: &[f64], base: &str) -> Row {
        self.ratio = Some((median(ratios), base.to_string()));
        self
    }

    /// Records one more paired ratio, shown after the first: a row compared with several peers.
    pub fn also_paired(mut self, ratios: &[f64], base: &str) -> Row {
        self.also.push((median(ratios), base.to_string()));
        self
    }

    /// A ratio target: met when the ratio is at most `max` (or at least `min` with `at_least`).
    pub fn ratio_at_most(mut self, max: f64) -> Row {
        let r = self.ratio.as_ref().expect("ratio set by `against` first").0;
        self.target = Some(Target {
            text: format!("<= {max}x"),
            met: r <= max,
        });
        self
    }

    pub fn ratio_at_least(mut self, min: f64) -> Row {
        let r = self.ratio.as_ref().expect("ratio set by `against` first").0;
        self.target = Some(Target {
            text: format!(">= {min}x"),
            met: r >= min,
        });
        self
    }

    /// An absolute target on the median.
    pub fn value_at_most(mut self, max: f64) -> Row {
        let m = self.median();
        self.target = Some(Target {
            text: format!("<= {} {}", fmt(max), self.unit),
            met: m <= max,
        });
        self
    }

    pub fn value_at_least(mut self, min: f64) -> Row {
        let m = self.median();
        self.target = Some(Target {
            text: format!(">= {} {}", fmt(min), self.unit),
            met: m >= min,
        });
        self
    }

    fn spread(&self) -> String {
        if self.samples.len() < 2 {
            return "-".into();
        }
        let min = self.samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self
            .samples
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        format!("{}–{}", fmt(min), fmt(max))
    }
}

/// A benchmark's results.
#[derive(Clone, Debug)]
pub struct Report {
    /// Name as given on the command line (`packet`, `flood`, ...).
    pub name: &'static str,
    pub title: String,
    /// How it was measured, in a sentence or two.
    pub method: String,
    pub rows: Vec<Row>,
    /// Observations worth keeping with the numbers (limits, what a missed target is due to).
    pub notes: Vec<String>,
}

impl Report {
    pub fn targets_missed(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| r.target.as_ref().is_some_and(|t| !t.met))
            .collect()
    }

    fn cells(&self) -> Vec<[String; 6]> {
        self.rows
            .iter()
            .map(|r| {
                [
                    r.case.clone(),
                    format!("{} {}", fmt(r.median()), r.unit),
                    r.spread(),
                    r.ratio
                        .iter()
                        .chain(&r.also)
                        .map(|(x, base)| format!("{x:.2}x {base}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                    r.target
                        .as_ref()
                        .map(|t| t.text.clone())
                        .unwrap_or_default(),
                    match &r.target {
                        Some(t) if t.met => "met".into(),
                        Some(_) => "MISSED".into(),
                        None => String::new(),
                    },
                ]
            })
            .collect()
    }

    /// A plain table for the terminal.
    pub fn text(&self) -> String {
        let header = ["case", "median", "spread", "ratio", "target", ""];
        let rows = self.cells();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = format!("== {} ({})\n", self.title, self.name);
        let mut line = |cells: &[String]| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                let _ = write!(l, "{c:<w$}  ", w = widths[i]);
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&header.map(String::from));
        for row in &rows {
            line(row);
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }

    /// A Markdown section.
    pub fn markdown(&self) -> String {
        let mut out = format!("## {}\n\n{}\n\n", self.title, self.method);
        out.push_str("| case | median | spread (min–max) | ratio | target | |\n| --- | --- | --- | --- | --- | --- |\n");
        for c in self.cells() {
            let _ = writeln!(out, "| {} |", c.join(" | "));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out.push('\n');
        out
    }
}

pub fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// `1000000` as `1,000,000`.
pub fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A number with about three significant digits.
pub fn fmt(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// The machine, as the results file states it.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|r| r.trim().to_string()))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cores} cores, {mem} memory, Linux {}",
        kernel.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let floor = Row::new("floor", "ns", vec![10.0, 11.0, 9.0]);
        let hit = Row::new("hit", "ns", vec![14.0, 15.0, 16.0])
            .against(&floor)
            .ratio_at_most(1.5);
        assert_eq!(hit.ratio.as_ref().unwrap().0, 1.5);
        assert!(hit.target.as_ref().unwrap().met);
        let slow = Row::new("slow", "ns", vec![16.0])
            .against(&floor)
            .ratio_at_most(1.5);
        assert!(!slow.target.as_ref().unwrap().met);
    }

    #[test]
    fn a_report_renders_as_text_and_markdown() {
        let r = Report {
            name: "x",
            title: "X".into(),
            method: "m".into(),
            rows: vec![Row::new("a", "ms", vec![1.0, 2.0, 3.0]).value_at_most(2.5)],
            notes: vec!["n".into()],
        };
        assert!(r.text().contains("2.00 ms"));
        assert!(
            r.markdown()
                .contains("| a | 2.00 ms | 1.00–3.00 |  | <= 2.50 ms | met |")
        );
    }
}
