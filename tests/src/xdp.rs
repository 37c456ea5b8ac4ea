//! Running an XDP program that is loaded in the kernel on crafted frames, through
//! `BPF_PROG_TEST_RUN`: the program an agent attached (found through its pinned link), or one a
//! test loaded (by its id). Each [`XdpRun`] holds its own descriptor, so test threads can run the
//! program at the same time as the agent, or another thread, writes its maps.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    time::Duration,
};

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The verdicts an XDP program returns.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// The `test` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid prefix of `union bpf_attr` for `cmd`; the kernel reads and
    // writes no more than the size given.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// A loaded XDP program, held by a descriptor of its own.
pub struct XdpRun {
    fd: OwnedFd,
}

impl XdpRun {
    /// The program with this id.
    pub fn from_id(id: u32) -> io::Result<XdpRun> {
        #[repr(C)]
        struct GetAttr {
            id: u32,
            next_id: u32,
            open_flags: u32,
        }
        let fd = bpf(
            BPF_PROG_GET_FD_BY_ID,
            &mut GetAttr {
                id,
                next_id: 0,
                open_flags: 0,
            },
        )?;
        Ok(XdpRun { fd: owned(fd) })
    }

    /// The program in the XDP link pinned at `path` (`<pins>/links/<iface>@<mode>`), which
    /// is the one filtering that interface now.
    pub fn attached_at(path: &Path) -> io::Result<XdpRun> {
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
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let link = owned(bpf(
            BPF_OBJ_GET,
            &mut ObjAttr {
                pathname: c.as_ptr() as u64,
                bpf_fd: 0,
                file_flags: 0,
            },
        )?);
        // struct bpf_link_info: type, id, prog_id, ...
        let mut info = [0u32; 16];
        bpf(
            BPF_OBJ_GET_INFO_BY_FD,
            &mut InfoAttr {
                bpf_fd: link.as_raw_fd() as u32,
                info_len: size_of_val(&info) as u32,
                info: info.as_mut_ptr() as u64,
            },
        )?;
        XdpRun::from_id(info[2])
    }

    /// The verdict of one run on `frame`.
    pub fn run(&self, frame: &[u8]) -> io::Result<u32> {
        Ok(self.run_repeat(frame, 1)?.0)
    }

    /// `repeat` runs on `frame`: the last verdict and the kernel's mean time a run.
    pub fn run_repeat(&self, frame: &[u8], repeat: u32) -> io::Result<(u32, Duration)> {
        let mut attr = TestAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat,
            ..TestAttr::default()
        };
        bpf(BPF_PROG_TEST_RUN, &mut attr)?;
        Ok((attr.retval, Duration::from_nanos(attr.duration as u64)))
    }
}
