//! The mappings of this process, from `/proc/self/maps`.

use std::io;

/// A line of `/proc/self/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `rwxp`/`rwxs` as the kernel writes them.
    pub perms: [u8; 4],
    /// The path or pseudo-name (`[vdso]`, `[stack]`), or empty.
    pub name: String,
}

impl Mapping {
    /// Whether `addr` lies in it.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
    /// Executable.
    pub fn exec(&self) -> bool {
        self.perms[2] == b'x'
    }
    /// Writable.
    pub fn writable(&self) -> bool {
        self.perms[1] == b'w'
    }
    /// Shared (`s`): another mapping may change its contents.
    pub fn shared(&self) -> bool {
        self.perms[3] == b's'
    }
    /// Backed by a file with a path.
    pub fn file_backed(&self) -> bool {
        self.name.starts_with('/')
    }
    /// Its protection as `mprotect` takes it.
    pub fn prot(&self) -> i32 {
        let mut p = libc::PROT_NONE;
        if self.perms[0] == b'r' {
            p |= libc::PROT_READ;
        }
        if self.writable() {
            p |= libc::PROT_WRITE;
        }
        if self.exec() {
            p |= libc::PROT_EXEC;
        }
        p
    }
}

/// Parses the text of a `maps` file.
pub(crate) fn parse(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (a, b) = parts.next()?.split_once('-')?;
            let perms: [u8; 4] = parts.next()?.as_bytes().try_into().ok()?;
            // (offset, device, inode, then the name, if any)
            let name = parts.nth(3).unwrap_or("").to_string();
            Some(Mapping {
                start: u64::from_str_radix(a, 16).ok()?,
                end: u64::from_str_radix(b, 16).ok()?,
                perms,
                name,
            })
        })
        .collect()
}

/// This process's mappings now.
pub(crate) fn mappings() -> io::Result<Vec<Mapping>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/maps")?))
}

/// The mapping that holds `addr`.
pub(crate) fn mapping_of(addr: u64) -> Option<Mapping> {
    mappings().ok()?.into_iter().find(|m| m.contains(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_and_without_names() {
        let text = "55d0c0000000-55d0c0001000 r-xp 00001000 08:01 1234   /usr/bin/true\n\
                    7ffd1000-7ffd3000 rw-s 00000000 00:00 0 \n\
                    7ffd4000-7ffd6000 r-xp 00000000 00:00 0                  [vdso]\n\
                    garbage\n";
        let m = parse(text);
        assert_eq!(m.len(), 3);
        assert_eq!((m[0].start, m[0].end), (0x55d0_c000_0000, 0x55d0_c000_1000));
        assert!(m[0].exec() && m[0].file_backed() && !m[0].writable());
        assert_eq!(m[0].prot(), libc::PROT_READ | libc::PROT_EXEC);
        assert_eq!(m[0].name, "/usr/bin/true");
        assert!(m[1].shared() && m[1].writable() && m[1].name.is_empty());
        assert_eq!(m[2].name, "[vdso]");
        assert!(m[2].contains(0x7ffd_4000) && !m[2].contains(0x7ffd_6000));
    }

    #[test]
    fn this_process_has_its_code_mapped_executable() {
        let f = lines_parse_with_and_without_names as *const () as u64;
        let m = mapping_of(f).expect("a mapping");
        assert!(m.exec());
    }
}
