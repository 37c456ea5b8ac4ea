//! `cargo xtask bench [NAME...] [--quick]`: runs the benchmarks (all by default), prints a table
//! each, and writes the results with the machine's description to `docs/benchmarks.md` (only the
//! sections of the benchmarks that ran are replaced). Needs root.

use std::{path::PathBuf, process::ExitCode};

use tests::bench::{self, Report, Scale};

const ALL: [&str; 8] = [
    "packet", "flood", "load", "hook", "active", "memory", "fleet", "django",
];

fn main() -> ExitCode {
    let mut names = Vec::new();
    let mut scale = Scale::Full;
    let mut out: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => scale = Scale::Quick,
            "--out" => out = args.next().map(PathBuf::from),
            "-h" | "--help" => {
                println!(
                    "usage: bench [{}|all]... [--quick] [--out FILE]",
                    ALL.join("|")
                );
                return ExitCode::SUCCESS;
            }
            "all" => names.extend(ALL.iter().map(|s| s.to_string())),
            n if ALL.contains(&n) => names.push(n.to_string()),
            other => {
                eprintln!(
                    "error: unknown benchmark or flag `{other}` (benchmarks: {})",
                    ALL.join(", ")
                );
                return ExitCode::from(2);
            }
        }
    }
    if names.is_empty() {
        names.extend(ALL.iter().map(|s| s.to_string()));
    }
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "error: the benchmarks load XDP programs and create network namespaces; run them as root"
        );
        return ExitCode::FAILURE;
    }
    // Full runs record their results; quick ones only when asked.
    if out.is_none() && scale == Scale::Full {
        out = Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/benchmarks.md"
        )));
    }
    let mut reports = Vec::new();
    let mut failed = false;
    for name in &names {
        let result = match name.as_str() {
            "packet" => bench::packet::run(scale),
            "flood" => bench::flood::run(scale),
            "load" => bench::load::run(scale),
            "hook" => bench::hook::run(scale),
            "active" => bench::active::run(scale),
            "memory" => bench::memory::run(scale),
            "fleet" => bench::fleet::run(scale),
            "django" => bench::django::run(scale),
            _ => unreachable!("checked above"),
        };
        match result {
            Ok(r) => {
                print!("{}", r.text());
                reports.push(r);
            }
            Err(e) => {
                eprintln!("error: benchmark {name} failed: {e:#}");
                failed = true;
            }
        }
    }
    if let Some(path) = out {
        match write(&path, &reports, scale) {
            Ok(()) => println!("results written to {}", path.display()),
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", path.display());
                failed = true;
            }
        }
    }
    let missed: usize = reports.iter().map(|r| r.targets_missed().len()).sum();
    if missed > 0 {
        println!("{missed} target(s) missed; see the tables above");
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Replaces the sections of the reports in `path`, keeping those of benchmarks that did not run.
fn write(path: &std::path::Path, reports: &[Report], scale: Scale) -> std::io::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let mut sections: Vec<(String, String)> = ALL
        .iter()
        .filter_map(|name| {
            let start = format!("<!-- bench:{name} -->");
            let end = format!("<!-- /bench:{name} -->");
            let from = old.find(&start)?;
            let to = old[from..].find(&end)? + from + end.len();
            Some((name.to_string(), old[from..to].to_string()))
        })
        .collect();
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    for r in reports {
        let text = format!(
            "<!-- bench:{0} -->\n{1}_Run {now} on {2}{3}._\n<!-- /bench:{0} -->",
            r.name,
            r.markdown(),
            bench::machine(),
            if scale == Scale::Quick {
                ", quick sizes"
            } else {
                ""
            }
        );
        match sections.iter_mut().find(|(n, _)| n == r.name) {
            Some(s) => s.1 = text,
            None => sections.push((r.name.to_string(), text)),
        }
    }
    sections.sort_by_key(|(n, _)| ALL.iter().position(|a| a == n));
    let mut doc = String::from(
        "# Benchmarks\n\nProduced by `cargo xtask bench` (one benchmark: `cargo xtask bench packet`; small sizes: \
         `--quick`). Each comparison runs in the same invocation on the same machine, repeated; the tables give \
         the median, the spread of the repetitions, and ratios of medians. The machine is shared and noisy, so \
         the ratios are what counts. Each section says when and on what machine it ran.\n\n",
    );
    for (_, s) in sections {
        doc.push_str(&s);
        doc.push_str("\n\n");
    }
    std::fs::write(path, doc)
}
