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
    /// Bytes mapped in all: `len`, plus the mirror of `[mirror_from, len)`
    /// right after it (ring buffers).
    mapped: usize,
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
        SharedRegion::anonymous_mirrored(name, len, None)
    }

    /// Like [`SharedRegion::anonymous`]; with `mirror_from`, the bytes from
    /// that (page-aligned) offset to the end are mapped a second time right
    /// after the region, so records that wrap around a ring stay contiguous.
    pub fn anonymous_mirrored(
        name: &str,
        len: usize,
        mirror_from: Option<usize>,
    ) -> std::io::Result<SharedRegion> {
        let cname = CString::new(format!("userbpf:{name}").replace('\0', "_"))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: a valid C string; flags are constants.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(last_os_error("memfd_create"));
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        SharedRegion::map_new(fd, len, None, mirror_from)
    }

    /// A zero-filled region backed by a new file at `path`, created with
    /// `O_EXCL` and mode 0600; the file is removed when this region drops.
    pub fn create_file(path: &Path, len: usize) -> std::io::Result<SharedRegion> {
        SharedRegion::create_file_mirrored(path, len, None)
    }

    /// [`SharedRegion::create_file`] with a mirror (see
    /// [`SharedRegion::anonymous_mirrored`]).
    pub fn create_file_mirrored(
        path: &Path,
        len: usize,
        mirror_from: Option<usize>,
    ) -> std::io::Result<SharedRegion> {
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
        SharedRegion::map_new(fd, len, Some(path.to_path_buf()), mirror_from)
    }

    /// Maps an existing region file created by another process.
    pub fn open_file(path: &Path) -> std::io::Result<SharedRegion> {
        SharedRegion::open_file_mirrored(path, None)
    }

    /// [`SharedRegion::open_file`] with a mirror (see
    /// [`SharedRegion::anonymous_mirrored`]).
    pub fn open_file_mirrored(
        path: &Path,
        mirror_from: Option<usize>,
    ) -> std::io::Result<SharedRegion> {
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
        SharedRegion::map_fd(fd, len, None, mirror_from)
    }

    fn map_new(
        fd: OwnedFd,
        len: usize,
        owned_path: Option<PathBuf>,
        mirror_from: Option<usize>,
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
        SharedRegion::map_fd(fd, len, owned_path, mirror_from)
    }

    fn map_fd(
        fd: OwnedFd,
        len: usize,
        owned_path: Option<PathBuf>,
        mirror_from: Option<usize>,
    ) -> std::io::Result<SharedRegion> {
        let fail = |e: std::io::Error| {
            if let Some(p) = &owned_path {
                let _ = std::fs::remove_file(p);
            }
            Err(e)
        };
        let invalid =
            |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_string());
        if len == 0 {
            return fail(invalid("empty shared region"));
        }
        let page = 4096usize;
        let mirror_len = match mirror_from {
            Some(off) if !off.is_multiple_of(page) || off >= len || !len.is_multiple_of(page) => {
                return fail(invalid("the mirrored part must be page aligned"))
            }
            Some(off) => len - off,
            None => 0,
        };
        let mapped = len + mirror_len;
        // Reserve the whole range first so both parts land next to each other.
        // SAFETY: a fresh anonymous reservation; no address hint.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return fail(last_os_error("mmap (reserve)"));
        }
        let parts = [
            (0usize, len, 0usize),
            (len, mirror_len, mirror_from.unwrap_or(0)),
        ];
        for (at, part_len, file_off) in parts {
            if part_len == 0 {
                continue;
            }
            // SAFETY: `base + at .. + part_len` lies in the reservation made
            // above, which this region owns; MAP_FIXED replaces only it.
            let p = unsafe {
                libc::mmap(
                    base.cast::<u8>().add(at).cast(),
                    part_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd.as_raw_fd(),
                    libc::off_t::try_from(file_off).unwrap_or(0),
                )
            };
            if p == libc::MAP_FAILED {
                let e = last_os_error("mmap");
                // SAFETY: unmapping the reservation made above.
                unsafe { libc::munmap(base, mapped) };
                return fail(e);
            }
        }
        Ok(SharedRegion {
            ptr: base.cast(),
            len,
            mapped,
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
        // SAFETY: unmapping exactly the range reserved in `map_fd`.
        unsafe { libc::munmap(self.ptr.cast(), self.mapped) };
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
    fn mirrored_regions_alias_their_tail() {
        let r = SharedRegion::anonymous_mirrored("m", 3 * 4096, Some(4096)).unwrap();
        // SAFETY: 3 pages plus a 2-page mirror are mapped.
        unsafe {
            r.as_ptr().add(4096 + 10).write(7);
            assert_eq!(r.as_ptr().add(3 * 4096 + 10).read(), 7);
            r.as_ptr().add(4 * 4096 + 5).write(9);
            assert_eq!(r.as_ptr().add(2 * 4096 + 5).read(), 9);
        }
    }

    #[test]
    fn anonymous_regions_are_zeroed() {
        let r = SharedRegion::anonymous("t", 8192).unwrap();
        // SAFETY: the mapping is 8192 bytes long.
        let s = unsafe { std::slice::from_raw_parts(r.as_ptr(), r.len()) };
        assert!(s.iter().all(|&b| b == 0));
    }
}
