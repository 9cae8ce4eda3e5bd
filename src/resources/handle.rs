//! One figure's file, opened once and re-read in place.
//!
//! A sample used to cost an `open`, a `read` or two and a `close` per file;
//! on cgroupfs each open allocates the kernel's per-open state (kernfs
//! open file, seq_file buffer). A kept handle is re-read with one
//! `pread` at offset 0, which makes the kernel regenerate the text (seq_file
//! restarts at position 0), so the figures are as fresh as with a new open.
//!
//! Handles are kept only on the kernel's own filesystems (cgroup v1, cgroup
//! v2, procfs), where a file whose cgroup or process is gone stops reading
//! (`ENODEV`, `ESRCH`) and the sampler notices the container left. On any
//! other filesystem (the test fixtures, an odd bind mount) an unlinked file
//! would keep reading its last contents, so there the resolved path is
//! opened afresh each sample instead.
//!
//! The cost of keeping: seven descriptors per sampled container (the daemon
//! raises its open-file limit to the hard one at start), and a kept
//! `/proc/PID/net/dev` holds the container's network namespace until the
//! sampler forgets the container, at the latest one sample after it stops
//! being passed in or its PID changes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::sys::statfs::{fstatfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC, PROC_SUPER_MAGIC};

use super::parse::{format_error, read_into};
use super::ResourceError;

/// How a [`Handle`] reads.
#[derive(Debug)]
enum Kept {
    /// A cgroup file: one record, so a read shorter than asked is the whole
    /// file and no second `pread` is needed to see end of file.
    Cgroup(File),
    /// A procfs file (`net/dev`): one record per line, a short read may be a
    /// full kernel buffer, so read until `pread` returns 0.
    Proc(File),
    /// Elsewhere: reopen the path every read.
    Path,
}

/// A file a figure comes from.
#[derive(Debug)]
pub(crate) struct Handle {
    path: PathBuf,
    kept: Kept,
}

impl Handle {
    /// Opens `path`; a file that does not exist is an error here (the
    /// container is not where it was said to be, or is gone).
    pub(crate) fn open(path: PathBuf) -> Result<Handle, ResourceError> {
        let file = File::open(&path).map_err(|source| ResourceError::Read {
            path: path.clone(),
            source,
        })?;
        let kept = match fstatfs(&file).map(|s| s.filesystem_type()) {
            Ok(t) if t == CGROUP_SUPER_MAGIC || t == CGROUP2_SUPER_MAGIC => Kept::Cgroup(file),
            Ok(t) if t == PROC_SUPER_MAGIC => Kept::Proc(file),
            _ => Kept::Path,
        };
        Ok(Handle { path, kept })
    }

    /// Opens `path` when it exists; None when it does not (a figure the
    /// kernel does not keep, such as v2 `memory.peak` before 5.19).
    pub(crate) fn open_optional(path: PathBuf) -> Result<Option<Handle>, ResourceError> {
        match Handle::open(path) {
            Ok(h) => Ok(Some(h)),
            Err(ResourceError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file is read through a kept descriptor.
    #[cfg(test)]
    pub(crate) fn is_kept(&self) -> bool {
        !matches!(self.kept, Kept::Path)
    }

    /// The file's current text, read into `buf` (its length is kept as
    /// grown, so a steady-state read neither allocates nor zeroes memory).
    pub(crate) fn read<'a>(&self, buf: &'a mut Vec<u8>) -> Result<&'a str, ResourceError> {
        let (file, single_record) = match &self.kept {
            Kept::Cgroup(f) => (f, true),
            Kept::Proc(f) => (f, false),
            Kept::Path => return read_into(&self.path, buf),
        };
        let mut filled = 0;
        loop {
            if buf.len() < filled + 1024 {
                buf.resize(filled + 4096, 0);
            }
            let asked = buf.len() - filled;
            match file.read_at(&mut buf[filled..], filled as u64) {
                Ok(n) => {
                    filled += n;
                    if n == 0 || (single_record && n < asked) {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ResourceError::Read {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
        std::str::from_utf8(&buf[..filled]).map_err(|_| format_error(&self.path, "not UTF-8 text"))
    }
}
