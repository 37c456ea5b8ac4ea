//! The benchmarks' own XDP programs (`tests/ebpf`, built by this crate's build script and embedded
//! here, never in the agent): the floor that only passes, the NIC-like sender that redirects
//! every frame to one interface, and the reference peer with kernel hash maps and LPM tries (see
//! [`super::reference`]).

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
};

use crate::xdp::XdpRun;

/// `tests/ebpf/src/pass.rs`.
static PASS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracking-pass"));
/// `tests/ebpf/src/redirect.rs`.
static REDIRECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracking-redirect"));
/// `tests/ebpf/src/reference.rs`.
pub(super) static REFERENCE: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracking-reference"));

/// The XDP program `name` of a loaded object, to load or run it.
pub(super) fn xdp_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut Xdp> {
    Ok(ebpf
        .program_mut(name)
        .with_context(|| format!("the object has no `{name}` program"))?
        .try_into()?)
}

pub(super) fn xdp<'a>(ebpf: &'a Ebpf, name: &str) -> anyhow::Result<&'a Xdp> {
    Ok(ebpf
        .program(name)
        .with_context(|| format!("the object has no `{name}` program"))?
        .try_into()?)
}

/// A runner of the loaded program `name` of its own (`BPF_PROG_TEST_RUN` by descriptor), the
/// same way every program of the packet benchmark is run.
pub(super) fn runner(ebpf: &Ebpf, name: &str) -> anyhow::Result<XdpRun> {
    let id = xdp(ebpf, name)?.info()?.id();
    XdpRun::from_id(id).with_context(|| format!("a descriptor of program {id}"))
}

/// The floor: what running any XDP program at all costs under `BPF_PROG_TEST_RUN`.
pub struct Floor {
    /// Holds the program loaded.
    _ebpf: Ebpf,
    pub run: XdpRun,
}

impl Floor {
    pub fn load() -> anyhow::Result<Floor> {
        let mut ebpf = Ebpf::load(PASS).context("the floor's object")?;
        xdp_mut(&mut ebpf, "pass")?
            .load()
            .context("verifying the floor")?;
        let run = runner(&ebpf, "pass")?;
        Ok(Floor { _ebpf: ebpf, run })
    }
}

/// Sends raw frames out of an interface the way a traffic generator does (xdp-trafficgen), with
/// `BPF_PROG_TEST_RUN` in live-frames mode running the redirect program. Aimed at one end of a
/// veth pair, the frames reach the other end as XDP frames, as from a NIC's driver: no socket and
/// no socket buffer on the way.
pub struct Redirect {
    ebpf: Ebpf,
    /// `redirect`, or `redirect_varied` with a list of sources.
    program: &'static str,
}

impl Redirect {
    /// Frames the kernel runs through the program between two flushes of the redirect queue.
    const BATCH: u32 = 64;

    /// Loads the program with every frame going to `ifindex`, an interface index in the network
    /// namespace [`Redirect::send`] will be called from.
    pub fn load(ifindex: u32) -> anyhow::Result<Redirect> {
        let mut ebpf = EbpfLoader::new()
            .override_global("TARGET_IFINDEX", &ifindex, true)
            .load(REDIRECT)
            .context("the redirect program's object")?;
        xdp_mut(&mut ebpf, "redirect")?
            .load()
            .context("verifying the redirect program")?;
        Ok(Redirect {
            ebpf,
            program: "redirect",
        })
    }

    /// Like [`Redirect::load`], but every frame (IPv4) gets the next of `sources` as its source
    /// address, round and round, with its header checksum fixed: a flood from many sources.
    pub fn varied(ifindex: u32, sources: &[std::net::Ipv4Addr]) -> anyhow::Result<Redirect> {
        let count = u32::try_from(sources.len())?;
        anyhow::ensure!(count > 0, "no sources to vary");
        let mut ebpf = EbpfLoader::new()
            .override_global("TARGET_IFINDEX", &ifindex, true)
            .override_global("SOURCE_COUNT", &count, true)
            .map_max_entries("SOURCES", count)
            .load(REDIRECT)
            .context("the redirect program's object")?;
        xdp_mut(&mut ebpf, "redirect_varied")?
            .load()
            .context("verifying the varying redirect program")?;
        let mut map: aya::maps::Array<_, u32> = aya::maps::Array::try_from(
            ebpf.map_mut("SOURCES")
                .context("the redirect program has no SOURCES map")?,
        )?;
        for (i, s) in sources.iter().enumerate() {
            map.set(i as u32, u32::from_ne_bytes(s.octets()), 0)?;
        }
        Ok(Redirect {
            ebpf,
            program: "redirect_varied",
        })
    }

    /// Sends `frame` `count` times (at most 4096 bytes less the headroom) and returns the
    /// kernel's mean time a frame. Runs on the calling CPU, in the calling thread's network
    /// namespace (where the target interface index is looked up); a frame the interface
    /// cannot take is dropped and not reported. `BPF_F_TEST_XDP_LIVE_FRAMES` needs Linux 5.18.
    pub fn send(&self, frame: &[u8], count: u32) -> anyhow::Result<std::time::Duration> {
        let r = xdp(&self.ebpf, self.program)?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: count,
                attrs: TestRunAttrs::new().xdp_live_frames(Self::BATCH),
                ..Default::default()
            })
            .context("a live-frames test run")?;
        Ok(r.duration)
    }
}
