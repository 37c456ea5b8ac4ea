//! [`Netns`]: a throwaway network namespace that is deleted on drop, and two ways in: a closure
//! on a thread that joined it, or a program started inside it.

use std::{
    ffi::OsStr,
    fs::File,
    io,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{command, unique};

/// A named network namespace (`ip netns add`), with `lo` up. Deleted on drop, also when the
/// test panics.
#[derive(Debug)]
pub struct Netns {
    /// `trk-<prefix>-<pid>-<n>`, see [`unique::netns_name`].
    name: String,
    /// `/run/netns/<name>`, the bind mount that keeps the namespace alive and lets threads and
    /// programs join it.
    path: PathBuf,
}

impl Netns {
    /// Creates a namespace whose name starts with `trk-<prefix>-` and brings its loopback up.
    pub fn new(prefix: &str) -> io::Result<Netns> {
        let name = unique::netns_name(prefix);
        command::ip(["netns", "add", &name])?;
        // From here on a failure drops the guard, which deletes the namespace.
        let netns = Netns {
            path: Path::new("/run/netns").join(&name),
            name,
        };
        netns.ip(["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `ip -n <name> <args>` and returns its output.
    pub fn ip<I, S>(&self, args: I) -> io::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        command::run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Runs `f` on a new thread that has joined this namespace, so every socket `f` creates
    /// belongs to the namespace (and stays there when used from other threads later). A panic in
    /// `f` is passed on to the caller.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        std::thread::scope(|scope| {
            let thread = scope.spawn(|| {
                if let Err(error) = enter(&self.path) {
                    panic!("cannot join network namespace {}: {error}", self.name);
                }
                f()
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// `program` to be run inside this namespace: `nsenter --net=<path> -- program`.
    ///
    /// Only the network namespace changes. `ip netns exec` would also give the program a mount
    /// namespace with `/sys` remounted, which hides the bpffs pins the agent and the tests share.
    /// nsenter does not fork for a network namespace alone, so the child's pid is the program's.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        command_in(&self.path, program)
    }
}

/// [`Netns::command`] for a namespace known by its path (the agent outlives its borrow).
pub(crate) fn command_in(netns: &Path, program: impl AsRef<OsStr>) -> Command {
    let mut net = std::ffi::OsString::from("--net=");
    net.push(netns);
    let mut command = Command::new("nsenter");
    command.arg(net).arg("--").arg(program);
    command
}

/// Moves the calling thread into the network namespace at `path`, for a thread of a test's
/// own that makes many sockets there (a load generator); [`Netns::run`] is the usual way in.
pub fn enter(path: &Path) -> io::Result<()> {
    let netns = File::open(path)?;
    // SAFETY: the descriptor is open for the whole call; setns only changes the calling
    // thread's network namespace, which is this harness thread's own.
    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(error) = command::ip(["netns", "del", &self.name]) {
            eprintln!(
                "harness: could not delete network namespace {}: {error}",
                self.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_enter_only_the_network_namespace() {
        let command = command_in(Path::new("/run/netns/trk-x-1-2"), "tracking");
        assert_eq!(
            command::display(&command),
            "nsenter --net=/run/netns/trk-x-1-2 -- tracking"
        );
    }
}
