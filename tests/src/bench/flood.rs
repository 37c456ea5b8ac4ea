//! Benchmark 2: dropping a flood end to end. A client namespace floods minimum-size UDP from a
//! banned source over a veth pair; the server namespace holds 100,000 bans (the source among
//! them) in one of four ways, each in a topology of its own, measured in turns within every
//! round:
//!
//! 1. the agent's XDP program on the server's veth end, bans loaded with `tracking ban sync`;
//! 2. an nftables `netdev` table with an `ingress` chain dropping `ip saddr @banned`;
//! 3. iptables in the `raw` table's PREROUTING with an ipset `hash:ip`;
//! 4. no filter: a socket counting the datagrams.
//!
//! A fifth topology, the floor, has the server's end down: the send path alone.
//!
//! Every server veth receives like a NIC, through NAPI with GRO (see [`offload`]). A veth runs
//! its receive path on the sending CPU, in softirq right after each send, so the sender and the
//! filter share one CPU, and the sender's thread pays for both: the receive side's cost is what
//! the sender's thread spends a packet beyond the floor's (exact, from the scheduler's clock),
//! cross-checked against that CPU's softirq ticks in `/proc/stat`. Each method's own counter
//! proves the drops, and a socket listening behind every filter proves nothing got past it.

mod cpu;
mod offload;
mod site;
mod udp;

use std::time::Duration;

use anyhow::Context as _;

use super::{
    Report, Row, Scale, release,
    report::{fmt, median},
};
use site::{BANS, Cpus, Method, SETTLE, Sample, Site};

pub fn run(scale: Scale) -> anyhow::Result<Report> {
    let (duration, baseline, rounds) = match scale {
        Scale::Full => (Duration::from_secs(3), Duration::from_secs(1), 5),
        Scale::Quick => (Duration::from_millis(500), Duration::from_millis(200), 3),
    };
    let binary = release::agent()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpus = Cpus {
        send: 0,
        receive: cores - 1,
        baseline,
        ksoftirqd: cpu::ksoftirqd(0)?,
    };
    let mut sites = Vec::new();
    for method in Method::ALL {
        let site = Site::new(method, &binary, cpus)
            .with_context(|| format!("setting up {}", method.label()))?;
        sites.push(site);
    }
    let xdp = Method::ALL.iter().position(|m| *m == Method::Xdp);
    let mode = sites[xdp.expect("XDP is a method")].attach_mode()?;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); sites.len()];
    for round in 0..rounds {
        // A different method goes first each round, so none always follows the same one.
        for k in 0..sites.len() {
            let i = (round + k) % sites.len();
            samples[i].push(sites[i].flood(duration, cpus)?);
        }
    }
    drop(sites);
    Ok(report(&samples, duration, rounds, cores, cpus, &mode))
}

fn report(
    samples: &[Vec<Sample>],
    duration: Duration,
    rounds: usize,
    cores: usize,
    cpus: Cpus,
    mode: &str,
) -> Report {
    let at = |m: Method| &samples[Method::ALL.iter().position(|x| *x == m).expect("a method")];
    let floor = at(Method::Floor);
    let (xdp, nft) = (at(Method::Xdp), at(Method::Nft));
    // Per round: each sample with the floor of its own round.
    let receive = |s: &[Sample]| -> Vec<f64> {
        s.iter()
            .zip(floor)
            .map(|(x, f)| x.receive_ns(f.sender_ns()))
            .collect()
    };
    let mpps = |s: &[Sample]| s.iter().map(Sample::mpps).collect::<Vec<f64>>();
    let ratios = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a / b).collect::<Vec<_>>();
    let filters = [Method::Nft, Method::Xdp, Method::Iptables, Method::Open];

    let mut rows = vec![Row::new(
        "floor: sent, the send path alone",
        "Mpps",
        floor.iter().map(Sample::sent_mpps).collect(),
    )];
    for m in filters {
        let what = if m == Method::Open {
            "received"
        } else {
            "dropped"
        };
        let row = Row::new(format!("{}: {what}", m.label()), "Mpps", mpps(at(m)));
        rows.push(match m {
            Method::Nft => row,
            Method::Xdp => row
                .paired(&ratios(&mpps(xdp), &mpps(nft)), "nftables")
                .ratio_at_least(3.0),
            _ => row.paired(&ratios(&mpps(at(m)), &mpps(nft)), "nftables"),
        });
    }
    rows.push(Row::new(
        "floor: sender CPU per Mpkt",
        "ms",
        floor.iter().map(Sample::sender_ns).collect(),
    ));
    for m in filters {
        let row = Row::new(
            format!("{}: receive CPU per Mpkt", m.label()),
            "ms",
            receive(at(m)),
        );
        rows.push(match m {
            Method::Nft => row,
            _ => row.paired(&ratios(&receive(at(m)), &receive(nft)), "nftables"),
        });
    }

    let per_method = |f: &dyn Fn(&Sample) -> f64, unit: &str| {
        Method::ALL
            .iter()
            .zip(samples)
            .filter(|(m, _)| **m != Method::Floor)
            .map(|(m, s)| {
                let v: Vec<f64> = s.iter().map(f).collect();
                format!("{} {}{unit}", m.label(), fmt(median(&v)))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let med_receive = |m: Method| median(&receive(at(m)));
    let floor_ns = median(&floor.iter().map(Sample::sender_ns).collect::<Vec<_>>());
    let mut notes = vec![
        format!(
            "Sent by the flooder (median per method): {}; the share of it the method counted: {}.",
            per_method(&Sample::sent_mpps, " Mpps"),
            per_method(
                &|x| 100.0 * x.handled as f64 / x.sent.packets.max(1) as f64,
                "%"
            ),
        ),
        format!(
            "The sender thread's CPU a packet (the send path and the receive path it runs inline; \
             the floor's is {} ns): {}.",
            fmt(floor_ns),
            per_method(&Sample::sender_ns, " ns"),
        ),
        format!(
            "Receive CPU a packet by `/proc/stat` instead (the sending CPU's softirq ticks beyond its \
             idle rate, plus the socket thread), a cross-check with the coarseness of 4 ms ticks: {}.",
            per_method(&Sample::softirq_ns, " ns"),
        ),
        format!(
            "What one core could drop or receive at these receive costs alone (1 s / receive CPU a \
             packet): {}.",
            filters
                .iter()
                .map(|m| format!("{} {} Mpps", m.label(), fmt(1e3 / med_receive(*m))))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ];
    let rate_ratio = median(&ratios(&mpps(xdp), &mpps(nft)));
    let cpu_ratio = median(&ratios(&receive(nft), &receive(xdp)));
    if rate_ratio < 3.0 {
        notes.push(format!(
            "The 3x drop-rate target is missed, and cannot be met this way: the sender and the receive \
             path share one CPU (a veth runs the receive path in softirq on the sending CPU, right after \
             each send), so a drop rate is 1 / (send path + receive path). The send path alone costs {} ns \
             a packet here, against {} ns for XDP's receive path and {} ns for nftables', so even a filter \
             costing nothing could not triple nftables' rate (at most {:.2}x). The fairer comparison is the \
             receive CPU a packet: nftables spends {:.2}x what XDP does{}.",
            fmt(floor_ns),
            fmt(med_receive(Method::Xdp)),
            fmt(med_receive(Method::Nft)),
            (floor_ns + med_receive(Method::Nft)) / floor_ns,
            cpu_ratio,
            if cpu_ratio >= 3.0 {
                ", so on that measure the 3x is met"
            } else {
                ", short of 3x on that measure as well"
            }
        ));
    }
    notes.push(format!(
        "XDP on a veth (attached in mode `{mode}`) gets packets a local socket made, with less than the \
         256 bytes of headroom XDP is promised, so the veth copies each into a fresh page-pool page before \
         the program runs, and frees both. A NIC's driver runs XDP on the bare frame before any socket \
         buffer exists, which is where XDP's advantage comes from; here the nftables ingress hook gets the \
         existing buffer for free. These numbers are XDP's worst case, not the NIC case of the mission's \
         24 Mpps."
    ));
    let all = samples.concat();
    notes.push(format!(
        "This VM has {cores} cores, shared with other builds and with other VMs. The sender (and with it \
         the receive path) is pinned to CPU {}, the receiving socket's thread to CPU {}. Others on this \
         VM used {} cores' worth while the floods ran (median), and the hypervisor took {} (steal).",
        cpus.send,
        cpus.receive,
        fmt(median(&all.iter().map(|s| s.others).collect::<Vec<_>>())),
        fmt(median(&all.iter().map(|s| s.steal).collect::<Vec<_>>())),
    ));
    Report {
        name: "flood",
        title: "Dropping a flood".into(),
        method: format!(
            "One thread in a client namespace floods 60-byte UDP frames (`sendmmsg`, 64 a call, a connected \
             socket bound to a banned source) over a veth pair for {} ms, {rounds} rounds, five topologies in \
             turns (a different one first each round); {BANS} IPv4 bans, the source among them, in each \
             filter; iptables is `{}`. Every server veth receives through NAPI with GRO, like a NIC (GRO on \
             the server's end, TSO off on the client's, which attaching XDP does to the peer by itself). \
             Rates come from each method's own counter (the agent's `dropped`, a named nft counter on the \
             rule, the iptables rule's packet count; the socket's count for no filter), read {} ms after \
             the flood; a socket listening behind every filter must receive nothing. A veth runs the \
             receive path in softirq on the sending CPU, so the sender's thread pays for it: receive CPU \
             is the sender thread's CPU time beyond the floor's a packet (the floor: the same flood with \
             the server's end down, measured in the same round), plus ksoftirqd's on that CPU and the \
             receiving socket thread's, all from the scheduler's exact clocks, per million packets the \
             method counted (ms per Mpkt = ns a packet). Ratios are medians of per-round ratios.",
            duration.as_millis(),
            site::iptables_backend(),
            SETTLE.as_millis(),
        ),
        rows,
        notes,
    }
}
