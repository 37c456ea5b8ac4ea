//! [`Loaded`]: the agent's XDP program loaded with throwaway pins and not attached, driven
//! through the agent's own kernel layer (`tracking_agent::kernel`), for verdicts on crafted
//! frames through `BPF_PROG_TEST_RUN`. Unpinned on drop.

use std::{net::IpAddr, path::PathBuf};

use ipnet::IpNet;
use tracking_agent::{
    ban::Effective,
    kernel::{Applied, KernelError, Options, Program, program::detach_all},
    time::Timestamp,
};
use tracking_common::stats::Verdict;

use crate::{bpffs, frames, root::require_root, unique, xdp::XdpRun};

/// A loaded program and its pins.
pub struct Loaded {
    program: Option<Program>,
    pins: PathBuf,
}

impl Loaded {
    /// The program with tables for 4096 IPv4 and 1024 IPv6 bans and a random hash key.
    pub fn new() -> Loaded {
        Loaded::with(4096, 1024, None)
    }

    /// The program with tables of the given capacities and, when given, hash key.
    pub fn with(max_bans_v4: u32, max_bans_v6: u32, hash_key: Option<u64>) -> Loaded {
        require_root();
        bpffs::ensure_mounted().expect("bpffs");
        let pins = PathBuf::from(bpffs::ROOT).join(format!("trk-verdict-{}", unique::tag()));
        let program = Program::load(&Options {
            pin_dir: pins.clone(),
            max_bans_v4,
            max_bans_v6,
            hash_key,
        })
        .expect("load the program");
        Loaded {
            program: Some(program),
            pins,
        }
    }

    /// Loads the program again on the same pins, as a restarted agent does: the maps are
    /// adopted.
    pub fn reload(&mut self, max_bans_v4: u32, max_bans_v6: u32) {
        drop(self.program.take());
        self.program = Some(
            Program::load(&Options {
                pin_dir: self.pins.clone(),
                max_bans_v4,
                max_bans_v6,
                hash_key: None,
            })
            .expect("reload the program"),
        );
    }

    pub fn program(&mut self) -> &mut Program {
        self.program.as_mut().expect("loaded")
    }

    pub fn program_ref(&self) -> &Program {
        self.program.as_ref().expect("loaded")
    }

    /// A runner of this program of its own, for other threads.
    pub fn runner(&self) -> XdpRun {
        XdpRun::from_id(self.program_ref().id().expect("program id")).expect("program fd")
    }

    pub fn apply(&mut self, effects: &[(IpNet, Effective)]) -> Result<Applied, KernelError> {
        self.program().maps.apply(effects)
    }

    pub fn ban(&mut self, nets: &[&str]) {
        self.ban_until(nets, None);
    }

    pub fn ban_until(&mut self, nets: &[&str], expires: Option<Timestamp>) {
        let effects: Vec<_> = nets
            .iter()
            .map(|n| (net(n), Effective::Banned { expires }))
            .collect();
        self.apply(&effects).expect("apply bans");
    }

    pub fn unban(&mut self, nets: &[&str]) {
        let effects: Vec<_> = nets.iter().map(|n| (net(n), Effective::Unbanned)).collect();
        self.apply(&effects).expect("apply unbans");
    }

    pub fn allow(&mut self, nets: &[&str]) {
        let nets: Vec<IpNet> = nets.iter().map(|n| net(n)).collect();
        self.program().maps.set_allowlist(&nets).expect("allowlist");
    }

    /// The verdict of one run on `frame`.
    pub fn run(&self, frame: &[u8]) -> u32 {
        self.program_ref().test_run(frame, 1).expect("test run").0
    }

    /// The verdict on a UDP packet from `src`.
    pub fn verdict_of(&self, src: &str) -> u32 {
        self.verdict_from(src.parse().unwrap())
    }

    /// The verdict on a UDP packet from `src`.
    pub fn verdict_from(&self, src: IpAddr) -> u32 {
        self.run(&frames::udp_from(src))
    }

    pub fn counter(&self, v: Verdict) -> u64 {
        self.program_ref().counters().expect("counters")[v as usize].packets
    }

    pub fn hits(&self, n: &str) -> u64 {
        self.program_ref()
            .maps
            .get(&net(n))
            .expect("ban present")
            .hits
    }
}

impl Default for Loaded {
    fn default() -> Self {
        Loaded::new()
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        drop(self.program.take());
        if let Err(e) = detach_all(&self.pins) {
            eprintln!("cleanup of {}: {e}", self.pins.display());
        }
    }
}

/// A network as an operator types it, normalised.
pub fn net(s: &str) -> IpNet {
    tracking_agent::ban::parse_network(s)
        .expect("valid network")
        .0
}
