//! Shared memory regions for map storage: an anonymous `memfd` or a 0600
//! file (under `/dev/shm` by default) that other processes open by path.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A shared, read-write mapping of a memfd or a file.
#[derive(Debug)]
pub struct SharedRegion {
    ptr: *mut u8,
    len: usize,
    fd: OwnedFd,
    /// The file to unlink when the creator drops the region.
    owned_path: Option<PathBuf>,
}

// SAFETY: the region is plain shared memory; concurrent access goes through
// atomics or locks in the map implementations, as across processes.
unsafe impl Send for SharedRegion {}
// SAFETY: as above.
unsafe impl Sync for SharedRegion {}

fn last_os_error(what: &str) -> std::io::Error {
    let e = std::io::Error::last_os_error();
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl SharedRegion {
    /// A zero-filled anonymous region of `len` bytes (`memfd_create`).
    pub fn anonymous(name: &str, len: usize) -> std::io::Result<SharedRegion> {
        let cname = CString::new(format!("userbpf:{name}").replace('\0', "_"))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: a valid C string; flags are constants.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(last_os_error("memfd_create"));
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        SharedRegion::map_new(fd, len, None)
    }

    /// A zero-filled region backed by a new file at `path`, created with
    /// `O_EXCL` and mode 0600; the file is removed when this region drops.
    pub fn create_file(path: &Path, len: usize) -> std::io::Result<SharedRegion> {
        let cpath = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: a valid C string; the mode is passed as the variadic arg.
        let fd = unsafe {
            libc::open(
                cpath.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(last_os_error(&format!("creating {}", path.display())));
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        SharedRegion::map_new(fd, len, Some(path.to_path_buf()))
    }

    /// Maps an existing region file created by another process.
    pub fn open_file(path: &Path) -> std::io::Result<SharedRegion> {
        let cpath = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: a valid C string.
        let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(last_os_error(&format!("opening {}", path.display())));
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut st: libc::stat = unsafe_zeroed_stat();
        // SAFETY: `st` is a valid stat buffer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(last_os_error("fstat"));
        }
        let len = usize::try_from(st.st_size).unwrap_or(0);
        SharedRegion::map_fd(fd, len, None)
    }

    fn map_new(
        fd: OwnedFd,
        len: usize,
        owned_path: Option<PathBuf>,
    ) -> std::io::Result<SharedRegion> {
        let size = libc::off_t::try_from(len).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "region too large")
        })?;
        // SAFETY: `fd` is a valid, writable file descriptor.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
            if let Some(p) = &owned_path {
                let _ = std::fs::remove_file(p);
            }
            return Err(last_os_error("ftruncate"));
        }
        SharedRegion::map_fd(fd, len, owned_path)
    }

    fn map_fd(
        fd: OwnedFd,
        len: usize,
        owned_path: Option<PathBuf>,
    ) -> std::io::Result<SharedRegion> {
        if len == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "empty shared region",
            ));
        }
        // SAFETY: a fresh shared mapping of `len` bytes of `fd`; no address
        // hint, so nothing existing is replaced.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            if let Some(p) = &owned_path {
                let _ = std::fs::remove_file(p);
            }
            return Err(last_os_error("mmap"));
        }
        Ok(SharedRegion {
            ptr: ptr.cast(),
            len,
            fd,
            owned_path,
        })
    }

    /// Start of the mapping (page aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: regions have at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file descriptor (a memfd can be passed to another process).
    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// The backing file, for regions created with [`SharedRegion::create_file`].
    pub fn path(&self) -> Option<&Path> {
        self.owned_path.as_deref()
    }
}

fn unsafe_zeroed_stat() -> libc::stat {
    // SAFETY: `struct stat` is plain data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `map_fd`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
        if let Some(p) = &self.owned_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_regions_are_0600_shared_and_removed() {
        let path = std::env::temp_dir().join(format!("userbpf-shm-test-{}", std::process::id()));
        let a = SharedRegion::create_file(&path, 4096).unwrap();
        let mode = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        let b = SharedRegion::open_file(&path).unwrap();
        // SAFETY: both mappings are 4096 bytes long.
        unsafe {
            a.as_ptr().add(100).write(42);
            assert_eq!(b.as_ptr().add(100).read(), 42);
        }
        assert!(SharedRegion::create_file(&path, 4096).is_err(), "O_EXCL");
        drop(b);
        drop(a);
        assert!(!path.exists());
    }

    #[test]
    fn anonymous_regions_are_zeroed() {
        let r = SharedRegion::anonymous("t", 8192).unwrap();
        // SAFETY: the mapping is 8192 bytes long.
        let s = unsafe { std::slice::from_raw_parts(r.as_ptr(), r.len()) };
        assert!(s.iter().all(|&b| b == 0));
    }
}
