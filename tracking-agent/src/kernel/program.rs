//! Loading the XDP program, pinning its maps and links, attaching it to interfaces.
//!
//! Pins, under the pin directory (default `/sys/fs/bpf/tracking`):
//! - `maps-v<layout>-<v4 buckets>-<v6 buckets>-<slots>/<MAP>`: one directory per map layout and
//!   size. A restarted agent with the same layout and sizes reuses these maps, bans, counters and
//!   all; one with new sizes gets fresh maps, fills them, then swaps the program on every link.
//! - `links/<iface>@<mode>`: the XDP link of each interface. A pinned link keeps the program
//!   attached while no agent runs; a new agent replaces the program inside the link atomically
//!   (`bpf_link_update`), so there is no instant without a filter.

use std::{
    ffi::CString,
    fs,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray},
    programs::{
        TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use tracking_common::{
    layout::{
        ALLOW_BUCKETS, ENTRIES4, ENTRIES6, FILTER_WORDS, FILTER4_WORDS, LAYOUT_VERSION, MAX_SLOTS,
        V4_LENS_WORDS, config,
    },
    maps::{self as names, globals},
    stats::{Counter, VERDICTS, Verdict},
};

use super::{
    KernelError,
    maps::{Mappings, Maps},
    mmap::Words,
    overflow::Overflow,
};

/// The program, built by build.rs from `tracking-ebpf`.
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracking"));
const PROGRAM_NAME: &str = "tracking";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// In the driver, before any allocation: the fast path, where the driver supports it.
    Native,
    /// In the kernel's generic receive path: works everywhere, slower.
    Generic,
}

impl AttachMode {
    fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }

    fn xdp(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "native" => Some(AttachMode::Native),
            "generic" => Some(AttachMode::Generic),
            _ => None,
        }
    }
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which attach mode to use.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ModeChoice {
    /// Native where the driver supports it, else generic.
    #[default]
    Auto,
    Native,
    Generic,
}

/// Sizes and places of the kernel state.
#[derive(Clone, Debug)]
pub struct Options {
    /// Directory on a bpffs for the pins.
    pub pin_dir: PathBuf,
    /// IPv4 bans the tables must hold.
    pub max_bans_v4: u32,
    /// IPv6 bans the tables must hold.
    pub max_bans_v6: u32,
    /// The hash key of tables made afresh; `None` draws one at random, as the agent always
    /// does. Tests fix it to build lists that fill chosen buckets. Tables adopted from pins
    /// keep the key they were made with.
    pub hash_key: Option<u64>,
}

/// An interface the program is attached to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attachment {
    pub iface: String,
    pub mode: AttachMode,
    /// The link was already pinned and only its program was replaced.
    pub adopted: bool,
}

/// The loaded program and its maps.
pub struct Program {
    ebpf: Ebpf,
    pub maps: Maps,
    stats: PerCpuArray<MapData, Counter>,
    pin_dir: PathBuf,
    generation: String,
    adopted: bool,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

/// Bucket counts and slot count for the requested capacities.
fn sizes(opts: &Options) -> Result<(u32, u32, u32), KernelError> {
    // Half-full at capacity: two-choice placement then keeps every bucket below its size.
    let v4 = (opts.max_bans_v4 as usize * 2)
        .div_ceil(ENTRIES4)
        .next_power_of_two()
        .max(2);
    let v6 = (opts.max_bans_v6 as usize * 2)
        .div_ceil(ENTRIES6)
        .next_power_of_two()
        .max(2);
    let slots = opts.max_bans_v4 as u64 + opts.max_bans_v6 as u64;
    if slots == 0 || slots > MAX_SLOTS as u64 || v4 > u32::MAX as usize / 2 {
        return Err(KernelError::Layout(format!(
            "max bans {} (IPv4) + {} (IPv6) must be between 1 and {MAX_SLOTS}",
            opts.max_bans_v4, opts.max_bans_v6
        )));
    }
    Ok((v4 as u32, v6 as u32, slots as u32))
}

impl Program {
    /// Loads the program, reusing the pinned maps of the same layout and size if present.
    pub fn load(opts: &Options) -> Result<Program, KernelError> {
        ensure_bpffs(&opts.pin_dir)?;
        let (v4_buckets, v6_buckets, slots) = sizes(opts)?;
        let generation = format!("maps-v{LAYOUT_VERSION}-{v4_buckets}-{v6_buckets}-{slots}");
        let dir = opts.pin_dir.join(&generation);
        fs::create_dir_all(&dir).map_err(|e| KernelError::io(&dir, e))?;
        let present = names::ALL.iter().filter(|m| dir.join(m).exists()).count();
        // Pinned maps are adopted with the key they were filled with. Maps without one were
        // left by an agent that died while creating them, before it wrote a single ban.
        let pinned_key = if present == names::ALL.len() {
            pinned_hash_key(&dir)?
        } else {
            None
        };
        if present != 0 && pinned_key.is_none() {
            for m in names::ALL {
                let _ = fs::remove_file(dir.join(m));
            }
        }
        let adopted = pinned_key.is_some();
        let key = match pinned_key {
            Some(key) => key,
            None => match opts.hash_key {
                Some(key) if key != 0 => key,
                _ => random_key().map_err(|e| KernelError::io(Path::new("/dev/urandom"), e))?,
            },
        };

        let v4_mask = v4_buckets - 1;
        let v6_mask = v6_buckets - 1;
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(names::V4_BANS, v4_buckets)
            .map_max_entries(names::V6_BANS, v6_buckets)
            .map_max_entries(names::SLOTS, slots)
            .map_max_entries(names::V4_OVERFLOW, opts.max_bans_v4.max(1))
            .map_max_entries(names::V6_OVERFLOW, opts.max_bans_v6.max(1))
            .override_global(globals::V4_BUCKET_MASK, &v4_mask, true)
            .override_global(globals::V6_BUCKET_MASK, &v6_mask, true)
            .override_global(globals::HASH_KEY, &key, true);
        for m in names::ALL {
            loader.map_pin_path(m, dir.join(m));
        }
        let mut ebpf = loader
            .load(PROGRAM)
            .map_err(|e| KernelError::Load(Box::new(e)))?;
        // Must outlive the program load: dropping it closes the log map.
        let logger = aya_log::EbpfLogger::init(&mut ebpf).ok();
        let xdp = xdp_mut(&mut ebpf, PROGRAM_NAME)?;
        xdp.load().map_err(|e| KernelError::Verify(Box::new(e)))?;

        let open = |name: &'static str, value_size: usize| -> Result<Words, KernelError> {
            let path = dir.join(name);
            let data = MapData::from_pin(&path).map_err(|e| KernelError::map(name, e))?;
            let info = data.info().map_err(|e| KernelError::map(name, e))?;
            if info.value_size() as usize != value_size {
                return Err(KernelError::Layout(format!(
                    "pinned map {} has {}-byte values, expected {value_size}",
                    path.display(),
                    info.value_size()
                )));
            }
            Words::map(name, &data)
        };
        let m = Mappings {
            config: open(names::CONFIG, 8)?,
            v4_filter: open(names::V4_FILTER, 8)?,
            v4_lens: open(names::V4_LENS, 8)?,
            v6_filter: open(names::V6_FILTER, 8)?,
            v4_bans: open(names::V4_BANS, 64)?,
            v6_bans: open(names::V6_BANS, 96)?,
            slots: open(names::SLOTS, 16)?,
            allow4: open(names::ALLOW4, 64)?,
            allow6: open(names::ALLOW6, 96)?,
        };
        let expected = [
            (m.config.len(), config::LEN as usize),
            (m.v4_filter.len(), FILTER4_WORDS as usize),
            (m.v4_lens.len(), V4_LENS_WORDS as usize),
            (m.v6_filter.len(), FILTER_WORDS as usize),
            (m.v4_bans.len(), v4_buckets as usize * 8),
            (m.v6_bans.len(), v6_buckets as usize * 12),
            (m.slots.len(), slots as usize * 2),
            (m.allow4.len(), ALLOW_BUCKETS as usize * 8),
            (m.allow6.len(), ALLOW_BUCKETS as usize * 12),
        ];
        if let Some((got, want)) = expected.iter().find(|(got, want)| got != want) {
            return Err(KernelError::Layout(format!(
                "pinned maps in {} do not match this agent ({got} words where {want} were expected); \
                 run `tracking agent detach` and start again",
                dir.display()
            )));
        }
        if !adopted {
            m.config[config::HASH_KEY as usize].store(key, std::sync::atomic::Ordering::Release);
        }
        let overflow = Overflow::open(&dir)?;
        let maps = Maps::new(
            m,
            overflow,
            key,
            opts.max_bans_v4 as usize,
            opts.max_bans_v6 as usize,
        )?;
        let stats_data = MapData::from_pin(dir.join(names::STATS))
            .map_err(|e| KernelError::map(names::STATS, e))?;
        let stats = PerCpuArray::try_from(aya::maps::Map::PerCpuArray(stats_data))
            .map_err(|e| KernelError::map(names::STATS, e))?;
        Ok(Program {
            ebpf,
            maps,
            stats,
            pin_dir: opts.pin_dir.clone(),
            generation,
            adopted,
            logger,
        })
    }

    /// Whether the maps were adopted from pins (bans and counters carried over).
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Name of the pinned map directory in use.
    pub fn generation(&self) -> &str {
        &self.generation
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The aya-log reader, to be polled by the daemon.
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
    }

    /// Attaches to `ifaces` (replacing the program in links already pinned), and detaches from
    /// interfaces that are pinned but no longer wanted.
    pub fn attach(
        &mut self,
        ifaces: &[String],
        choice: ModeChoice,
    ) -> Result<Vec<Attachment>, KernelError> {
        let links = self.pin_dir.join("links");
        fs::create_dir_all(&links).map_err(|e| KernelError::io(&links, e))?;
        let pinned = pinned_links(&self.pin_dir);
        let mut done = Vec::new();
        for iface in ifaces {
            let ifindex = ifindex(iface).ok_or_else(|| KernelError::NoInterface(iface.clone()))?;
            let mine: Vec<&PinnedEntry> = pinned.iter().filter(|p| &p.iface == iface).collect();
            let wanted = |m: AttachMode| match choice {
                ModeChoice::Auto => true,
                ModeChoice::Native => m == AttachMode::Native,
                ModeChoice::Generic => m == AttachMode::Generic,
            };
            let mut attached = None;
            for entry in mine.iter().filter(|p| wanted(p.mode)) {
                match self.replace_in_link(&entry.path, ifindex) {
                    Ok(()) => {
                        attached = Some(Attachment {
                            iface: iface.clone(),
                            mode: entry.mode,
                            adopted: true,
                        });
                        break;
                    }
                    Err(e) => tracing::warn!(
                        "pinned link {} is stale ({e}); attaching afresh",
                        entry.path.display()
                    ),
                }
            }
            let attachment = match attached {
                Some(a) => a,
                None => {
                    let mode = self.attach_new(iface, choice, &links)?;
                    Attachment {
                        iface: iface.clone(),
                        mode,
                        adopted: false,
                    }
                }
            };
            // Only now drop links of this interface in other modes (or stale ones): the new one
            // already filters.
            for entry in &mine {
                let stale = entry.mode != attachment.mode || !attachment.adopted;
                if stale && entry.path != link_path(&links, iface, attachment.mode) {
                    unpin_link(&entry.path);
                }
            }
            tracing::info!(
                "{} {iface} ({} mode)",
                if attachment.adopted {
                    "kept filtering"
                } else {
                    "attached to"
                },
                attachment.mode
            );
            done.push(attachment);
        }
        for entry in pinned.iter().filter(|p| !ifaces.contains(&p.iface)) {
            tracing::info!("detaching from {} (no longer configured)", entry.iface);
            unpin_link(&entry.path);
        }
        Ok(done)
    }

    fn replace_in_link(&mut self, path: &Path, ifindex: u32) -> Result<(), KernelError> {
        let on = link_ifindex(path).map_err(|e| KernelError::Link(e.to_string()))?;
        if on != ifindex {
            return Err(KernelError::Link(format!(
                "the link is on interface index {on}, the interface is now {ifindex}"
            )));
        }
        let pinned = PinnedLink::from_pin(path).map_err(|e| KernelError::Link(e.to_string()))?;
        let link = XdpLink::try_from(FdLink::from(pinned))
            .map_err(|e| KernelError::Link(e.to_string()))?;
        let xdp = xdp_mut(&mut self.ebpf, PROGRAM_NAME)?;
        let id = xdp
            .attach_to_link(link)
            .map_err(|e| KernelError::Link(e.to_string()))?;
        // The pin keeps the link; our handle can go.
        drop(xdp.take_link(id));
        Ok(())
    }

    fn attach_new(
        &mut self,
        iface: &str,
        choice: ModeChoice,
        links: &Path,
    ) -> Result<AttachMode, KernelError> {
        let modes: &[AttachMode] = match choice {
            ModeChoice::Auto => &[AttachMode::Native, AttachMode::Generic],
            ModeChoice::Native => &[AttachMode::Native],
            ModeChoice::Generic => &[AttachMode::Generic],
        };
        let xdp = xdp_mut(&mut self.ebpf, PROGRAM_NAME)?;
        let mut last = None;
        for &mode in modes {
            match xdp.attach(iface, mode.xdp()) {
                Ok(id) => {
                    let link = xdp
                        .take_link(id)
                        .map_err(|e| KernelError::Link(e.to_string()))?;
                    let fd_link = FdLink::try_from(link).map_err(|_| {
                        KernelError::Link(
                            "the kernel attached XDP without a BPF link, which cannot be pinned"
                                .into(),
                        )
                    })?;
                    let path = link_path(links, iface, mode);
                    let _ = fs::remove_file(&path);
                    fd_link.pin(&path).map_err(|e| {
                        KernelError::Link(format!("pinning {}: {e}", path.display()))
                    })?;
                    return Ok(mode);
                }
                Err(e) => {
                    tracing::debug!("{mode} attach to {iface} failed: {e}");
                    last = Some(e);
                }
            }
        }
        Err(KernelError::Attach {
            iface: iface.to_string(),
            source: Box::new(last.expect("at least one mode tried")),
        })
    }

    /// Removes map directories of other layouts or sizes, once no link uses them any more.
    pub fn retire_other_generations(&self) {
        let Ok(entries) = fs::read_dir(&self.pin_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("maps-") && name != self.generation {
                tracing::info!("removing pinned maps {name} of an earlier configuration");
                let _ = remove_pin_dir(&entry.path());
            }
        }
    }

    /// Sum over CPUs of every verdict counter.
    pub fn counters(&self) -> Result<[Counter; VERDICTS as usize], KernelError> {
        let mut out = [Counter::default(); VERDICTS as usize];
        for v in Verdict::ALL {
            let per_cpu = self
                .stats
                .get(&(v as u32), 0)
                .map_err(|e| KernelError::map(names::STATS, e))?;
            for c in per_cpu.iter() {
                out[v as usize].packets += c.packets;
                out[v as usize].bytes += c.bytes;
            }
        }
        Ok(out)
    }

    /// The kernel's id of the loaded program: what `bpftool prog show id` and a test runner
    /// of its own take.
    pub fn id(&self) -> Result<u32, KernelError> {
        let info = xdp(&self.ebpf, PROGRAM_NAME)?
            .info()
            .map_err(|e| KernelError::Verify(Box::new(e)))?;
        Ok(info.id())
    }

    /// Runs the program once on `frame` through `BPF_PROG_TEST_RUN`: the verdict and the mean
    /// duration over `repeat` runs.
    pub fn test_run(
        &self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, std::time::Duration), KernelError> {
        test_run(
            xdp(&self.ebpf, PROGRAM_NAME)?,
            frame,
            repeat,
            TestRunAttrs::new(),
        )
    }
}

/// The hash key kept in the pinned `CONFIG` map of `dir`, if it has one.
fn pinned_hash_key(dir: &Path) -> Result<Option<u64>, KernelError> {
    let data = MapData::from_pin(dir.join(names::CONFIG))
        .map_err(|e| KernelError::map(names::CONFIG, e))?;
    let words = Words::map(names::CONFIG, &data)?;
    let key = words
        .get(config::HASH_KEY as usize)
        .map(|w| w.load(std::sync::atomic::Ordering::Acquire))
        .unwrap_or(0);
    Ok((key != 0).then_some(key))
}

/// A random, non-zero hash key.
fn random_key() -> std::io::Result<u64> {
    use std::io::Read as _;
    let mut file = fs::File::open("/dev/urandom")?;
    loop {
        let mut bytes = [0u8; 8];
        file.read_exact(&mut bytes)?;
        let key = u64::from_ne_bytes(bytes);
        if key != 0 {
            return Ok(key);
        }
    }
}

impl Program {
    /// Ids of the maps the loaded program uses, for reading their memory use (`bpftool map
    /// show`).
    pub fn map_ids(&self) -> Vec<u32> {
        self.ebpf
            .maps()
            .filter_map(|(_, m)| {
                let data: &MapData = match m {
                    aya::maps::Map::Array(d)
                    | aya::maps::Map::PerCpuArray(d)
                    | aya::maps::Map::HashMap(d)
                    | aya::maps::Map::RingBuf(d) => d,
                    _ => return None,
                };
                data.info().ok().map(|i| i.id())
            })
            .collect()
    }
}

/// The XDP program `name` of a loaded object.
fn xdp<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a Xdp, KernelError> {
    ebpf.program(name)
        .ok_or_else(|| KernelError::Layout(format!("the object has no `{name}` program")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| KernelError::Verify(Box::new(e)))
}

/// Like [`xdp`], to load or attach it.
fn xdp_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp, KernelError> {
    ebpf.program_mut(name)
        .ok_or_else(|| KernelError::Layout(format!("the object has no `{name}` program")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| KernelError::Verify(Box::new(e)))
}

/// Runs `xdp` on `frame` `repeat` times through `BPF_PROG_TEST_RUN`: the last verdict and the
/// mean duration of a run.
fn test_run(
    xdp: &Xdp,
    frame: &[u8],
    repeat: u32,
    attrs: TestRunAttrs,
) -> Result<(u32, std::time::Duration), KernelError> {
    let r = xdp
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            attrs,
            ..Default::default()
        })
        .map_err(|e| KernelError::Verify(Box::new(e)))?;
    Ok((r.return_value, r.duration))
}

fn link_path(links: &Path, iface: &str, mode: AttachMode) -> PathBuf {
    links.join(format!("{iface}@{mode}"))
}

/// A pinned link found in the pin directory.
#[derive(Clone, Debug)]
pub struct PinnedEntry {
    pub iface: String,
    pub mode: AttachMode,
    pub path: PathBuf,
}

/// The links pinned under `pin_dir`.
pub fn pinned_links(pin_dir: &Path) -> Vec<PinnedEntry> {
    let Ok(entries) = fs::read_dir(pin_dir.join("links")) else {
        return Vec::new();
    };
    let mut out: Vec<PinnedEntry> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (iface, mode) = name.rsplit_once('@')?;
            Some(PinnedEntry {
                iface: iface.to_string(),
                mode: AttachMode::parse(mode)?,
                path: e.path(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.iface.cmp(&b.iface));
    out
}

/// Unpins a link; with no other holder, that detaches the program from the interface.
fn unpin_link(path: &Path) {
    match PinnedLink::from_pin(path) {
        Ok(link) => {
            if let Err(e) = link.unpin() {
                tracing::warn!("cannot unpin {}: {e}", path.display());
            }
        }
        Err(_) => {
            let _ = fs::remove_file(path);
        }
    }
}

/// What `tracking agent detach` removed.
#[derive(Debug, Default)]
pub struct Detached {
    pub interfaces: Vec<String>,
    pub pins_removed: bool,
}

/// Detaches the program from every pinned interface and removes all pins under `pin_dir`.
pub fn detach_all(pin_dir: &Path) -> Result<Detached, KernelError> {
    let mut out = Detached::default();
    for entry in pinned_links(pin_dir) {
        unpin_link(&entry.path);
        out.interfaces.push(entry.iface);
    }
    if pin_dir.exists() {
        remove_pin_dir(pin_dir).map_err(|e| KernelError::io(pin_dir, e))?;
        out.pins_removed = true;
    }
    Ok(out)
}

fn remove_pin_dir(dir: &Path) -> std::io::Result<()> {
    // bpffs has no recursive removal: files (pins) first, then directories bottom-up.
    for entry in fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_pin_dir(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
    }
    fs::remove_dir(dir)
}

/// Mounts bpffs on /sys/fs/bpf if the pin directory would otherwise not be on one.
fn ensure_bpffs(pin_dir: &Path) -> Result<(), KernelError> {
    let mut probe = pin_dir.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    if fs_magic(&probe) == Some(BPF_FS_MAGIC) {
        return Ok(());
    }
    let sys_bpf = Path::new("/sys/fs/bpf");
    if pin_dir.starts_with(sys_bpf) && fs_magic(sys_bpf) != Some(BPF_FS_MAGIC) {
        fs::create_dir_all(sys_bpf).map_err(|e| KernelError::io(sys_bpf, e))?;
        // Two agents (or tests) starting at once must not both mount: the second mount would
        // hide the first one's pins. Lock the directory being mounted over, then look again.
        let dir = fs::File::open(sys_bpf).map_err(|e| KernelError::io(sys_bpf, e))?;
        // Released when `dir` closes.
        rustix::fs::flock(&dir, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|errno| KernelError::io(sys_bpf, errno.into()))?;
        if fs_magic(sys_bpf) == Some(BPF_FS_MAGIC) {
            return Ok(());
        }
        tracing::info!("mounting bpffs on /sys/fs/bpf");
        rustix::mount::mount(
            "bpf",
            sys_bpf,
            "bpf",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .map_err(|errno| KernelError::io(sys_bpf, errno.into()))?;
        return Ok(());
    }
    Err(KernelError::NotBpffs(pin_dir.to_path_buf()))
}

fn fs_magic(path: &Path) -> Option<i64> {
    // `f_type` is an i64 on x86_64 and narrower elsewhere.
    #[allow(clippy::unnecessary_cast)]
    rustix::fs::statfs(path).ok().map(|st| st.f_type as i64)
}

/// `if_nametoindex`, from libc: rustix's equivalent needs a socket to ask through.
fn ifindex(iface: &str) -> Option<u32> {
    let c = CString::new(iface).ok()?;
    // SAFETY: valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Interface index the XDP link pinned at `path` is attached to (0 once the interface is gone).
/// aya's `LinkInfo` does not expose it, so ask `BPF_OBJ_GET_INFO_BY_FD` directly.
fn link_ifindex(path: &Path) -> std::io::Result<u32> {
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    #[repr(C)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut obj = ObjAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: attr valid for its size; the path outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &mut obj as *mut ObjAttr,
            size_of::<ObjAttr>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new fd that we own.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    // struct bpf_link_info: type, id, prog_id, then an 8-aligned union whose `xdp` member
    // starts with the ifindex.
    let mut info = [0u32; 16];
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: attr and info are valid for the sizes given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            size_of::<InfoAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(info[4])
}
