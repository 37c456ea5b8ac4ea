//! Shared mappings of the program's mmap-able array maps.
//!
//! The agent writes ban tables, filters and configuration through these mappings with plain
//! atomic stores: no syscall per entry, which is what lets a million bans load in milliseconds,
//! and 8-byte stores that the program can never see half-written.

use std::{
    os::fd::AsFd,
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;

use rustix::mm;

use super::KernelError;

/// A map's values as a slice of 64-bit words, shared with the kernel.
pub struct Words {
    ptr: NonNull<AtomicU64>,
    words: usize,
    bytes: usize,
    name: &'static str,
}

// SAFETY: the mapping is plain shared memory accessed only through atomics.
unsafe impl Send for Words {}
// SAFETY: as above.
unsafe impl Sync for Words {}

impl Words {
    /// Maps all values of an array map created with `BPF_F_MMAPABLE`.
    pub fn map(name: &'static str, map: &MapData) -> Result<Self, KernelError> {
        let info = map.info().map_err(|e| KernelError::map(name, e))?;
        let value_size = info.value_size() as usize;
        if !value_size.is_multiple_of(8) {
            return Err(KernelError::Layout(format!(
                "map {name} has {value_size}-byte values, not a multiple of 8"
            )));
        }
        let len = value_size * info.max_entries() as usize;
        let page = page_size();
        let bytes = len.div_ceil(page) * page;
        // SAFETY: mapping a BPF array map fd; the kernel checks the size and flags and keeps the
        // memory alive until munmap, even if the fd is closed.
        let ptr = unsafe {
            mm::mmap(
                std::ptr::null_mut(),
                bytes,
                mm::ProtFlags::READ | mm::ProtFlags::WRITE,
                mm::MapFlags::SHARED,
                map.fd().as_fd(),
                0,
            )
        }
        .map_err(|errno| KernelError::Mmap {
            name,
            source: errno.into(),
        })?;
        Ok(Words {
            ptr: NonNull::new(ptr.cast()).expect("mmap returned null"),
            words: len / 8,
            bytes,
            name,
        })
    }

    /// `words` zeroed words of private memory shaped like a map's: for planning changes on a
    /// copy, and for tests of the tables without a kernel map.
    pub fn anonymous(name: &'static str, words: usize) -> Result<Self, KernelError> {
        let bytes = (words * 8).div_ceil(page_size()).max(1) * page_size();
        // SAFETY: a fresh private anonymous mapping; no file or address is involved.
        let ptr = unsafe {
            mm::mmap_anonymous(
                std::ptr::null_mut(),
                bytes,
                mm::ProtFlags::READ | mm::ProtFlags::WRITE,
                mm::MapFlags::PRIVATE,
            )
        }
        .map_err(|errno| KernelError::Mmap {
            name,
            source: errno.into(),
        })?;
        Ok(Words {
            ptr: NonNull::new(ptr.cast()).expect("mmap returned null"),
            words,
            bytes,
            name,
        })
    }

    /// A private copy of these words.
    pub fn copy(&self) -> Result<Self, KernelError> {
        let copy = Words::anonymous(self.name, self.words)?;
        for (to, from) in copy.iter().zip(self.iter()) {
            to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        Ok(copy)
    }

    /// Map name, for messages.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The words.
    pub fn as_slice(&self) -> &[AtomicU64] {
        // SAFETY: `ptr` points to `words` initialised, 8-aligned words that stay mapped for the
        // lifetime of `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.words) }
    }

    pub fn len(&self) -> usize {
        self.words
    }

    pub fn is_empty(&self) -> bool {
        self.words == 0
    }
}

impl std::ops::Deref for Words {
    type Target = [AtomicU64];

    fn deref(&self) -> &[AtomicU64] {
        self.as_slice()
    }
}

impl Drop for Words {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        let _ = unsafe { mm::munmap(self.ptr.as_ptr().cast(), self.bytes) };
    }
}

fn page_size() -> usize {
    rustix::param::page_size()
}
