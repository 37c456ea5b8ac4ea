//! Programs measured side by side on the same frames: in every round the floor first, then each
//! program (a different one first each round), so that a program's cost beyond the floor is taken
//! against a floor measured moments before, and ratios between programs are ratios of the same
//! round.

use anyhow::ensure;

use super::measure;
use crate::{bench::Row, xdp::XdpRun};

/// A program under measurement.
pub struct Contender<'a> {
    /// As the tables name it.
    pub name: &'static str,
    pub run: &'a XdpRun,
}

/// What a case runs.
pub enum Input<'a> {
    /// One frame, repeated; every program must answer `verdict`.
    Hot { frame: &'a [u8], verdict: u32 },
    /// Many frames, once each; every program must drop exactly `drops` of them.
    Cold { frames: &'a [Vec<u8>], drops: usize },
}

/// A case's costs: the floor's a round, and each program's beyond the floor a round.
pub struct Measured {
    pub floor: Vec<f64>,
    /// By program, then by round.
    pub beyond: Vec<Vec<f64>>,
    /// By program, then by round: the whole cost, floor included.
    pub total: Vec<Vec<f64>>,
}

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn once(run: &XdpRun, input: &Input, repeat: u32) -> anyhow::Result<(bool, f64)> {
    Ok(match input {
        Input::Hot { frame, verdict } => {
            let (v, ns) = measure::hot(run, frame, repeat)?;
            (v == *verdict, ns)
        }
        Input::Cold { frames, drops } => {
            let (n, ns) = measure::cold(run, frames, XDP_DROP)?;
            (n == *drops, ns)
        }
    })
}

pub fn measure(
    floor: &XdpRun,
    contenders: &[Contender],
    case: &str,
    input: &Input,
    repeat: u32,
    rounds: usize,
) -> anyhow::Result<Measured> {
    let mut m = Measured {
        floor: Vec::new(),
        beyond: vec![Vec::new(); contenders.len()],
        total: vec![Vec::new(); contenders.len()],
    };
    let floor_input = match input {
        Input::Hot { frame, .. } => Input::Hot {
            frame,
            verdict: XDP_PASS,
        },
        Input::Cold { frames, .. } => Input::Cold { frames, drops: 0 },
    };
    for round in 0..rounds {
        let (ok, f) = once(floor, &floor_input, repeat)?;
        ensure!(ok, "{case}: the floor did not pass everything");
        m.floor.push(f);
        for k in 0..contenders.len() {
            let i = (round + k) % contenders.len();
            let c = &contenders[i];
            let (ok, ns) = once(c.run, input, repeat)?;
            ensure!(
                ok,
                "{case}: {} gave another verdict than the bans call for ({})",
                c.name,
                match input {
                    Input::Hot { verdict, .. } => format!("{verdict} expected"),
                    Input::Cold { drops, frames } => format!("{drops} of {} drops", frames.len()),
                }
            );
            m.total[i].push(ns);
            m.beyond[i].push(ns - f);
        }
    }
    Ok(m)
}

/// A ratio of two costs beyond the floor, each round's: a cost lost in the noise (at or below
/// the floor) counts as a tenth of a nanosecond, so that a ratio is never negative or infinite.
fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .map(|(a, b)| a.max(0.1) / b.max(0.1))
        .collect()
}

/// The rows of one case, `label: <program>` each, costs beyond the floor: the first program's
/// with its ratio to each other one, and a target on its ratio to program `target.0` of at most
/// `target.1`.
pub fn rows(
    label: &str,
    contenders: &[Contender],
    m: &Measured,
    target: Option<(usize, f64)>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut first = Row::new(
        format!("{label}: {}", contenders[0].name),
        "ns",
        m.beyond[0].clone(),
    );
    let order: Vec<usize> = match target {
        Some((t, _)) => std::iter::once(t)
            .chain((1..contenders.len()).filter(|j| *j != t))
            .collect(),
        None => (1..contenders.len()).collect(),
    };
    for (n, j) in order.into_iter().enumerate() {
        let r = ratios(&m.beyond[0], &m.beyond[j]);
        first = if n == 0 {
            first.paired(&r, contenders[j].name)
        } else {
            first.also_paired(&r, contenders[j].name)
        };
    }
    if let Some((_, max)) = target {
        first = first.ratio_at_most(max);
    }
    rows.push(first);
    for (c, beyond) in contenders.iter().zip(&m.beyond).skip(1) {
        rows.push(Row::new(
            format!("{label}: {}", c.name),
            "ns",
            beyond.clone(),
        ));
    }
    rows
}
