//! The XDP program as the agent drives it.
//!
//! - [`program`]: load the embedded object, pin maps and links, attach, detach, counters.
//! - [`maps`]: bans, allowlist, filters and flags, written through shared mappings.
//! - [`table`]: the open-addressed tables, placed exactly as the program looks them up.
//! - [`mmap`]: the shared mappings themselves.
//! - [`clock`]: wall-clock expiries to the program's monotonic clock and back.

pub mod clock;
pub mod frames;
pub mod maps;
pub mod mmap;
pub mod program;
pub mod table;

use std::path::{Path, PathBuf};

use ipnet::IpNet;

pub use maps::{Applied, KernelBan, Maps};
pub use program::{AttachMode, Attachment, ModeChoice, Options, Program};

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
    #[error(
        "cannot add {network}: the kernel tables are full ({capacity} bans of its family); restart the agent with a larger --max-bans-v4/--max-bans-v6"
    )]
    Full { network: IpNet, capacity: usize },
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
