//! The XDP program as the agent drives it.
//!
//! - [`program`]: load the embedded object, pin maps and links, attach, detach, counters.
//! - [`maps`]: the writer: bans, allowlist, filters and flags, all or nothing.
//! - [`tables`]: the read side: what is held, what is enforced, what the program would decide.
//! - [`table`]: the open-addressed tables, placed exactly as the program looks them up, and
//!   why a lookup is never wrong while the agent writes them.
//! - [`overflow`]: the kernel hash maps for the rare ban whose buckets are full.
//! - [`derived`]: the source filters and prefix-length masks in front of the tables.
//! - [`near4`], [`allow_index`]: what tells a removal which bits to clear, and which bans the
//!   allowlist overlaps.
//! - [`grace`]: waiting until no program run still reads what was freed.
//! - [`mmap`]: the shared mappings themselves.
//! - [`clock`]: wall-clock expiries to the program's monotonic clock and back.

pub mod allow_index;
pub mod clock;
pub mod derived;
pub mod grace;
pub mod maps;
pub mod mmap;
pub mod near4;
pub mod overflow;
pub mod program;
pub mod table;
pub mod tables;

use std::path::{Path, PathBuf};

pub use maps::{Applied, Maps};
pub use program::{AttachMode, Attachment, ModeChoice, Options, Program};
pub use tables::{KernelBan, OverCapacity, Tables};

/// Errors of the kernel layer.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot load the XDP object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the kernel rejected the XDP program: {0}")]
    Verify(#[source] Box<aya::programs::ProgramError>),
    #[error("map {name}: {source}")]
    Map {
        name: String,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("cannot map {name} into memory (was it created without BPF_F_MMAPABLE?): {source}")]
    Mmap {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Layout(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not on a bpffs; pins must live under /sys/fs/bpf or another bpffs mount")]
    NotBpffs(PathBuf),
    #[error("no interface named {0}")]
    NoInterface(String),
    #[error("cannot attach to {iface}: {source}")]
    Attach {
        iface: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("XDP link: {0}")]
    Link(String),
    #[error("{0}")]
    OverCapacity(OverCapacity),
    #[error(
        "the allowlist holds at most {max} {family} networks and this change needs {count}; nothing was changed"
    )]
    AllowlistFull {
        family: &'static str,
        count: usize,
        max: usize,
    },
    #[error("grace period: {0}")]
    Grace(String),
}

impl KernelError {
    pub(crate) fn map(name: &str, e: aya::maps::MapError) -> Self {
        KernelError::Map {
            name: name.to_string(),
            source: Box::new(e),
        }
    }

    pub(crate) fn io(path: &Path, e: std::io::Error) -> Self {
        KernelError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }
}
