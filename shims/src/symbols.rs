//! The modules mapped into a process and the addresses of their symbols.
//!
//! A probe target is written on the command line and in the API as one of:
//!
//! | spec                     | meaning                                             |
//! |--------------------------|-----------------------------------------------------|
//! | `BINARY:SYMBOL`          | the entry of function `SYMBOL` in `BINARY`          |
//! | `BINARY:SYMBOL+OFFSET`   | `OFFSET` bytes (decimal or `0x` hex) into `SYMBOL`  |
//! | `BINARY:0xADDR`          | the file virtual address `ADDR` of `BINARY`         |
//! | `0xADDR`                 | the absolute (runtime) address `ADDR`               |
//!
//! `BINARY` is an absolute path, a path relative to the current directory
//! (anything containing a `/`), a library name matched against the basenames of
//! the loaded modules (`libc.so.6` exactly, then `libc` as a `libc.so*` prefix),
//! or `self` / empty for the main executable. `SYMBOL` may carry an ELF
//! version: `malloc` matches the default version (`malloc@@GLIBC_2.2.5`),
//! `memcpy@GLIBC_2.2.5` picks a non-default one.
//!
//! [`ProcessModules`] reads `/proc/PID/maps` and computes each module's load
//! bias from its ELF program headers; [`ProcessModules::resolve`] turns a
//! [`TargetSpec`] into a [`Resolved`] runtime address. [`resolve_in_file`] and
//! [`resolve_unloaded`] work on binaries that are not loaded yet (before
//! `userbpf exec` starts its target) and give a [`FileTarget`] that
//! [`FileTarget::at_load_bias`] turns into a runtime address later.
//!
//! Parsed ELF layouts and symbol tables are cached per file identity (device,
//! inode, size, mtime), behind a mutex, so repeated lookups are cheap.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use goblin::container::Ctx;
use goblin::elf::{header, program_header, sym, Elf, ProgramHeader};

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why a target could not be resolved. Every message names the binary, the
/// symbol and the process involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SymbolError {
    /// The target spec does not follow the grammar.
    #[error("invalid target `{spec}`: {reason}")]
    InvalidSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `/proc/PID/maps` could not be read (no such process, no permission).
    #[error("cannot read the memory map of process {pid}: {source}")]
    ProcessMaps {
        /// The process.
        pid: u32,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A line of `/proc/PID/maps` could not be parsed.
    #[error("malformed line in the memory map of process {pid}: `{line}`")]
    MapsSyntax {
        /// The process.
        pid: u32,
        /// The offending line.
        line: String,
    },
    /// No loaded module matches the binary.
    #[error("no module `{binary}` is loaded in process {pid} (loaded: {loaded})")]
    ModuleNotLoaded {
        /// The binary as given.
        binary: String,
        /// The process.
        pid: u32,
        /// The first few loaded modules' basenames.
        loaded: String,
    },
    /// Several loaded modules match a library name.
    #[error("`{binary}` matches several modules in process {pid}: {candidates}")]
    AmbiguousModule {
        /// The binary as given.
        binary: String,
        /// The process.
        pid: u32,
        /// The matching paths.
        candidates: String,
    },
    /// The binary is mapped but cannot be used (deleted, unreadable, no bias).
    #[error("`{binary}` is mapped in process {pid} as {}, but cannot be used: {reason}", path.display())]
    ModuleUnusable {
        /// The binary as given.
        binary: String,
        /// The process.
        pid: u32,
        /// The mapped path.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// An absolute address lies outside every file-backed ELF mapping.
    #[error("address {address:#x} is not inside any module of process {pid}")]
    AddressNotMapped {
        /// The address.
        address: u64,
        /// The process.
        pid: u32,
    },
    /// An absolute address was given where there is no running process.
    #[error("the absolute address {address:#x} needs a running process; use BINARY:SYMBOL or BINARY:0xFILE_ADDRESS")]
    AddressNeedsProcess {
        /// The address.
        address: u64,
    },
    /// A library name matched no file in the library search path.
    #[error("no library `{name}` found in {searched}")]
    LibraryNotFound {
        /// The name as given.
        name: String,
        /// The directories searched.
        searched: String,
    },
    /// A library name matched several files in the library search path.
    #[error("`{name}` matches several libraries: {candidates}")]
    AmbiguousLibrary {
        /// The name as given.
        name: String,
        /// The matching paths.
        candidates: String,
    },
    /// The symbol is not defined in the binary.
    #[error("symbol `{symbol}` not found in {}", path.display())]
    SymbolNotFound {
        /// The symbol as given.
        symbol: String,
        /// The binary.
        path: PathBuf,
    },
    /// The symbol exists but is not a function.
    #[error("symbol `{symbol}` in {} is not a function (it is {kind})", path.display())]
    NotAFunction {
        /// The symbol as given.
        symbol: String,
        /// The binary.
        path: PathBuf,
        /// What it is.
        kind: SymbolKind,
    },
    /// The symbol is a GNU indirect function: its address is the resolver,
    /// the implementation is chosen when the program runs.
    #[error(
        "`{symbol}` in {} is an IFUNC resolver: the implementation it selects is only known at run time{}",
        path.display(),
        plain_alternatives(plain_versions)
    )]
    Ifunc {
        /// The symbol as given.
        symbol: String,
        /// The binary.
        path: PathBuf,
        /// Other versions of the name that are plain functions.
        plain_versions: Vec<String>,
    },
    /// Several distinct functions carry the name.
    #[error("symbol `{symbol}` is ambiguous in {}: {candidates}", path.display())]
    AmbiguousSymbol {
        /// The symbol as given.
        symbol: String,
        /// The binary.
        path: PathBuf,
        /// The candidates and their addresses.
        candidates: String,
    },
    /// `SYMBOL+OFFSET` points past the end of the symbol.
    #[error("offset {offset:#x} is past the end of `{symbol}` (size {size:#x}) in {}", path.display())]
    OffsetPastEnd {
        /// The offset as given.
        offset: u64,
        /// The symbol.
        symbol: String,
        /// The symbol's `st_size`.
        size: u64,
        /// The binary.
        path: PathBuf,
    },
    /// A file virtual address lies outside the file-backed part of every
    /// `PT_LOAD` segment.
    #[error("file address {vaddr:#x} is outside every PT_LOAD segment of {}", path.display())]
    OutsideSegments {
        /// The file virtual address.
        vaddr: u64,
        /// The binary.
        path: PathBuf,
    },
    /// The binary is loaded but none of its mappings matches a `PT_LOAD`.
    #[error("cannot compute the load bias of {} in process {pid}: no mapping matches a PT_LOAD segment", path.display())]
    NoLoadBias {
        /// The binary.
        path: PathBuf,
        /// The process.
        pid: u32,
    },
    /// The binary could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The binary.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file is not an ELF file at all.
    #[error("{} is not an ELF file", path.display())]
    NotElf {
        /// The file.
        path: PathBuf,
    },
    /// The ELF file is malformed or of an unsupported type.
    #[error("{} is not a valid ELF executable or shared object: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn plain_alternatives(versions: &[String]) -> String {
    if versions.is_empty() {
        String::new()
    } else {
        format!(" (plain functions of that name: {})", versions.join(", "))
    }
}

type Result<T, E = SymbolError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------
// Target specs
// ---------------------------------------------------------------------------

/// A parsed probe target (see the [module documentation](self) for the grammar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// A location inside a binary: `BINARY:SYMBOL[+OFFSET]` or `BINARY:0xADDR`.
    InBinary {
        /// The binary: a path, a library name, or `self`/empty for the main
        /// executable.
        binary: String,
        /// Where in the binary.
        location: Location,
    },
    /// A bare absolute runtime address: `0xADDR`.
    Address(u64),
}

/// A location inside a binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `SYMBOL[+OFFSET]`.
    Symbol {
        /// The symbol name, optionally versioned (`name@@VERSION`, `name@VERSION`).
        name: String,
        /// Bytes into the symbol.
        offset: u64,
    },
    /// A file virtual address (`st_value`-style), `0xADDR`.
    FileAddress(u64),
}

impl TargetSpec {
    /// Parses a target spec.
    pub fn parse(spec: &str) -> Result<Self> {
        let invalid = |reason: &str| SymbolError::InvalidSpec {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let text = spec.trim();
        if text.is_empty() {
            return Err(invalid("empty target"));
        }
        let Some((binary, location)) = text.rsplit_once(':') else {
            return match hex_number(text) {
                Some(Ok(address)) => Ok(TargetSpec::Address(address)),
                Some(Err(())) => Err(invalid("bad hexadecimal address")),
                None => Err(invalid(
                    "expected BINARY:SYMBOL[+OFFSET], BINARY:0xADDRESS or 0xADDRESS",
                )),
            };
        };
        if location.is_empty() {
            return Err(invalid("missing symbol or address after `:`"));
        }
        let location = match hex_number(location) {
            Some(Ok(vaddr)) => Location::FileAddress(vaddr),
            Some(Err(())) => return Err(invalid("bad hexadecimal file address")),
            None => {
                let (name, offset) = match location.rsplit_once('+') {
                    Some((name, offset)) => {
                        let offset = parse_number(offset)
                            .ok_or_else(|| invalid("OFFSET must be decimal or 0x hexadecimal"))?;
                        (name, offset)
                    }
                    None => (location, 0),
                };
                if name.is_empty() || name.chars().any(char::is_whitespace) {
                    return Err(invalid("bad symbol name"));
                }
                Location::Symbol {
                    name: name.to_owned(),
                    offset,
                }
            }
        };
        Ok(TargetSpec::InBinary {
            binary: binary.to_owned(),
            location,
        })
    }
}

impl FromStr for TargetSpec {
    type Err = SymbolError;

    fn from_str(s: &str) -> Result<Self> {
        TargetSpec::parse(s)
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetSpec::Address(address) => write!(f, "{address:#x}"),
            TargetSpec::InBinary { binary, location } => write!(f, "{binary}:{location}"),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Symbol { name, offset: 0 } => f.write_str(name),
            Location::Symbol { name, offset } => write!(f, "{name}+{offset:#x}"),
            Location::FileAddress(vaddr) => write!(f, "{vaddr:#x}"),
        }
    }
}

/// `Some(Ok(n))` for `0x...` hex, `Some(Err)` for a bad `0x` number, `None`
/// when the text does not start with `0x`.
fn hex_number(text: &str) -> Option<Result<u64, ()>> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(Err(()));
    }
    Some(u64::from_str_radix(digits, 16).map_err(|_| ()))
}

fn parse_number(text: &str) -> Option<u64> {
    match hex_number(text) {
        Some(result) => result.ok(),
        None if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => text.parse().ok(),
        None => None,
    }
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

/// A target resolved to a runtime address in a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The module's path as the process maps it.
    pub module_path: PathBuf,
    /// The function the address is in, with its version when versioned
    /// (`malloc@@GLIBC_2.2.5`), if one is known.
    pub symbol: Option<String>,
    /// The address as a file virtual address (what `st_value` uses).
    pub file_vaddr: u64,
    /// The offset of the address in the file (what the kernel's uprobe PMU takes).
    pub file_offset: u64,
    /// The runtime address in the process.
    pub address: u64,
    /// The symbol's `st_size`, 0 if unknown.
    pub size: u64,
    /// Bytes from the symbol's start to the address.
    pub offset_in_symbol: u64,
}

/// A target resolved inside a binary that need not be loaded anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTarget {
    /// The binary.
    pub path: PathBuf,
    /// Whether the binary is position-dependent (bias 0) or not.
    pub kind: ElfKind,
    /// The function, with its version when versioned, if one is known.
    pub symbol: Option<String>,
    /// The file virtual address.
    pub file_vaddr: u64,
    /// The offset in the file.
    pub file_offset: u64,
    /// The symbol's `st_size`, 0 if unknown.
    pub size: u64,
    /// Bytes from the symbol's start to the address.
    pub offset_in_symbol: u64,
}

impl FileTarget {
    /// The runtime address once the binary is loaded with `load_bias`
    /// (see [`Module::load_bias`]; 0 for an [`ElfKind::Executable`]).
    pub fn at_load_bias(&self, load_bias: u64) -> Resolved {
        Resolved {
            module_path: self.path.clone(),
            symbol: self.symbol.clone(),
            file_vaddr: self.file_vaddr,
            file_offset: self.file_offset,
            address: self.file_vaddr.wrapping_add(load_bias),
            size: self.size,
            offset_in_symbol: self.offset_in_symbol,
        }
    }

    /// The runtime address in a process that has loaded the binary.
    pub fn in_process(&self, modules: &ProcessModules) -> Result<Resolved> {
        let module = modules.find_path(&self.path.to_string_lossy(), &self.path)?;
        let mut resolved = self.at_load_bias(module.load_bias);
        resolved.module_path = module.path.clone();
        Ok(resolved)
    }
}

// ---------------------------------------------------------------------------
// ELF layout (header and PT_LOAD segments)
// ---------------------------------------------------------------------------

/// The type of a loadable ELF object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElfKind {
    /// `ET_EXEC`: position-dependent, loaded at its file addresses (bias 0).
    Executable,
    /// `ET_DYN`: a PIE executable or a shared library, loaded anywhere.
    SharedObject,
}

/// One `PT_LOAD` program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_memsz`.
    pub mem_size: u64,
    /// `p_offset`.
    pub offset: u64,
    /// `p_filesz`.
    pub file_size: u64,
    /// `p_flags` (`PF_R`, `PF_W`, `PF_X`).
    pub flags: u32,
}

/// The type and loadable segments of an ELF object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfLayout {
    /// `ET_EXEC` or `ET_DYN`.
    pub kind: ElfKind,
    /// The `PT_LOAD` segments, by increasing `p_vaddr`.
    pub segments: Vec<LoadSegment>,
}

impl ElfLayout {
    /// Reads the ELF header and program headers of `path` (cached per file
    /// identity).
    pub fn load(path: &Path) -> Result<Arc<ElfLayout>> {
        layout_for(path, path).map(|(layout, _)| layout)
    }

    /// The load bias of this object given the mappings of its file in a
    /// process: 0 for `ET_EXEC`. For `ET_DYN`, each mapping whose file offset
    /// is a segment's `p_offset` rounded down to a page proposes a bias (its
    /// start minus that segment's `p_vaddr` rounded down to a page); the
    /// proposal that places the most segments consistently wins (each
    /// segment's page mapped at bias + vaddr with the right file offset, and
    /// executable if the segment is). This tells the loader's mappings from
    /// other mappings of the same file, such as a debugger's or a backtrace
    /// symbolizer's read-only `mmap` of the whole file. `None` when no
    /// mapping matches a segment.
    pub fn load_bias(&self, mappings: &[Mapping]) -> Option<u64> {
        if self.kind == ElfKind::Executable {
            return Some(0);
        }
        let page_mask = !(page_size() - 1);
        let mut proposals: Vec<u64> = Vec::new();
        for segment in &self.segments {
            let offset = segment.offset & page_mask;
            for mapping in mappings.iter().filter(|m| m.offset == offset) {
                let bias = mapping.start.wrapping_sub(segment.vaddr & page_mask);
                if !proposals.contains(&bias) {
                    proposals.push(bias);
                }
            }
        }
        // Highest score first; among equals, the earliest proposal (lowest
        // segment, then lowest mapping as `/proc/PID/maps` is sorted).
        let mut best: Option<(usize, u64)> = None;
        for bias in proposals {
            let score = self.segments_placed(bias, mappings, page_mask);
            if best.is_none_or(|(best_score, _)| score > best_score) {
                best = Some((score, bias));
            }
        }
        best.map(|(_, bias)| bias)
    }

    /// How many segments `bias` places on a mapping of the file at the right
    /// file offset, with execute permission where the segment needs it.
    fn segments_placed(&self, bias: u64, mappings: &[Mapping], page_mask: u64) -> usize {
        self.segments
            .iter()
            .filter(|segment| {
                let address = bias.wrapping_add(segment.vaddr & page_mask);
                let offset = segment.offset & page_mask;
                let executable = segment.flags & program_header::PF_X != 0;
                mappings.iter().any(|m| {
                    m.contains(address)
                        && m.offset.wrapping_add(address - m.start) == offset
                        && m.perms.accessible()
                        && (!executable || m.perms.execute)
                })
            })
            .count()
    }

    /// The file offset of a file virtual address, if a segment's file-backed
    /// part contains it.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments.iter().find_map(|segment| {
            let delta = vaddr.checked_sub(segment.vaddr)?;
            if delta < segment.file_size {
                segment.offset.checked_add(delta)
            } else {
                None
            }
        })
    }

    fn from_parts(e_type: u16, phdrs: &[ProgramHeader], path: &Path) -> Result<ElfLayout> {
        let kind = match e_type {
            header::ET_EXEC => ElfKind::Executable,
            header::ET_DYN => ElfKind::SharedObject,
            other => {
                return Err(SymbolError::Malformed {
                    path: path.to_owned(),
                    reason: format!(
                        "ELF type {} is neither an executable nor a shared object",
                        header::et_to_str(other)
                    ),
                })
            }
        };
        let mut segments: Vec<LoadSegment> = phdrs
            .iter()
            .filter(|p| p.p_type == program_header::PT_LOAD)
            .map(|p| LoadSegment {
                vaddr: p.p_vaddr,
                mem_size: p.p_memsz,
                offset: p.p_offset,
                file_size: p.p_filesz,
                flags: p.p_flags,
            })
            .collect();
        if segments.is_empty() {
            return Err(SymbolError::Malformed {
                path: path.to_owned(),
                reason: "no PT_LOAD segment".to_owned(),
            });
        }
        segments.sort_by_key(|s| s.vaddr);
        Ok(ElfLayout { kind, segments })
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    match u64::try_from(size) {
        Ok(size) if size.is_power_of_two() => size,
        _ => 4096,
    }
}

// ---------------------------------------------------------------------------
// File identity and the cache
// ---------------------------------------------------------------------------

/// What makes two opens the same file for the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileId {
    fn of(meta: &Metadata) -> Self {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }

    fn same_file(&self, meta: &Metadata) -> bool {
        self.dev == meta.dev() && self.ino == meta.ino()
    }
}

/// More entries than this and the cache starts over (binaries replaced on
/// disk leave stale entries behind).
const CACHE_LIMIT: usize = 512;

#[derive(Default)]
struct Cache {
    layouts: HashMap<FileId, Arc<ElfLayout>>,
    tables: HashMap<FileId, Arc<SymbolTable>>,
}

static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(Mutex::default);

fn with_cache<T>(f: impl FnOnce(&mut Cache) -> T) -> T {
    // A panic while holding the lock cannot leave a map half-updated in a way
    // that matters (entries are inserted whole), so a poisoned lock is usable.
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    f(&mut cache)
}

/// Opens a regular file without blocking (FIFOs) and returns its identity.
/// `display` names the file in errors.
fn open_regular(path: &Path, display: &Path) -> Result<(File, FileId)> {
    let unreadable = |source| SymbolError::Unreadable {
        path: display.to_owned(),
        source,
    };
    // Check the type before opening: opening a device can have side effects.
    if !fs::metadata(path).map_err(unreadable)?.is_file() {
        return Err(unreadable(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(unreadable(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    Ok((file, FileId::of(&meta)))
}

fn layout_for(path: &Path, display: &Path) -> Result<(Arc<ElfLayout>, FileId)> {
    let (file, id) = open_regular(path, display)?;
    if let Some(layout) = with_cache(|c| c.layouts.get(&id).cloned()) {
        return Ok((layout, id));
    }
    let layout = Arc::new(read_layout(&file, display)?);
    with_cache(|c| {
        if c.layouts.len() >= CACHE_LIMIT {
            c.layouts.clear();
        }
        c.layouts.insert(id, Arc::clone(&layout));
    });
    Ok((layout, id))
}

fn read_layout(file: &File, display: &Path) -> Result<ElfLayout> {
    let malformed = |reason: String| SymbolError::Malformed {
        path: display.to_owned(),
        reason,
    };
    let unreadable = |source| SymbolError::Unreadable {
        path: display.to_owned(),
        source,
    };
    let mut ident = [0u8; header::header64::SIZEOF_EHDR];
    let read = read_fully_at(file, &mut ident, 0).map_err(unreadable)?;
    if read < header::SELFMAG || &ident[..header::SELFMAG] != header::ELFMAG {
        return Err(SymbolError::NotElf {
            path: display.to_owned(),
        });
    }
    let ehdr = Elf::parse_header(&ident[..read]).map_err(|e| malformed(e.to_string()))?;
    let container = ehdr.container().map_err(|e| malformed(e.to_string()))?;
    let endian = ehdr.endianness().map_err(|e| malformed(e.to_string()))?;
    let ctx = Ctx::new(container, endian);
    let entry_size = ProgramHeader::size(ctx);
    if usize::from(ehdr.e_phentsize) != entry_size {
        return Err(malformed(format!(
            "program header entry size {} (expected {entry_size})",
            ehdr.e_phentsize
        )));
    }
    let count = usize::from(ehdr.e_phnum);
    let mut table = vec![0u8; count * entry_size];
    let read = read_fully_at(file, &mut table, ehdr.e_phoff).map_err(unreadable)?;
    if read != table.len() {
        return Err(malformed(
            "program headers past the end of the file".to_owned(),
        ));
    }
    let phdrs =
        ProgramHeader::parse(&table, 0, count, ctx).map_err(|e| malformed(e.to_string()))?;
    ElfLayout::from_parts(ehdr.e_type, &phdrs, display)
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_fully_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let at = offset.saturating_add(done as u64);
        match file.read_at(&mut buf[done..], at) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

// ---------------------------------------------------------------------------
// Symbol tables
// ---------------------------------------------------------------------------

/// What an ELF symbol names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SymbolKind {
    /// `STT_FUNC`.
    Function,
    /// `STT_GNU_IFUNC`: a resolver returning the implementation at load time.
    Ifunc,
    /// `STT_OBJECT`.
    Object,
    /// Anything else defined (`STT_NOTYPE` labels, ...).
    Other,
}

impl fmt::Display for SymbolKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SymbolKind::Function => "a function",
            SymbolKind::Ifunc => "an IFUNC resolver",
            SymbolKind::Object => "a data object",
            SymbolKind::Other => "an untyped symbol",
        })
    }
}

/// An ELF symbol's binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SymbolBinding {
    /// `STB_LOCAL`: file-local (a C `static`).
    Local,
    /// `STB_GLOBAL` or `STB_GNU_UNIQUE`.
    Global,
    /// `STB_WEAK`.
    Weak,
}

/// A defined symbol of a binary, from `.symtab` or `.dynsym`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    /// The name without its version.
    pub name: String,
    /// The version (`GLIBC_2.2.5`), if the symbol is versioned.
    pub version: Option<String>,
    /// Whether the version is the default one (`@@`) rather than a hidden
    /// compatibility one (`@`). True for unversioned symbols.
    pub default_version: bool,
    /// `st_value`: the file virtual address.
    pub value: u64,
    /// `st_size`, 0 if unknown.
    pub size: u64,
    /// What it names.
    pub kind: SymbolKind,
    /// Its binding.
    pub binding: SymbolBinding,
    /// Whether it comes from `.dynsym` (else `.symtab`).
    pub dynamic: bool,
}

impl Symbol {
    /// The name with its version, `malloc@@GLIBC_2.2.5` style.
    pub fn versioned_name(&self) -> String {
        match &self.version {
            None => self.name.clone(),
            Some(version) if self.default_version => format!("{}@@{version}", self.name),
            Some(version) => format!("{}@{version}", self.name),
        }
    }

    fn is_code(&self) -> bool {
        matches!(self.kind, SymbolKind::Function | SymbolKind::Ifunc)
    }

    fn covers(&self, vaddr: u64) -> bool {
        match vaddr.checked_sub(self.value) {
            Some(delta) => delta < self.size || (self.size == 0 && delta == 0),
            None => false,
        }
    }
}

/// The defined symbols of a binary (`.symtab` and `.dynsym`) with its layout.
#[derive(Debug)]
pub struct SymbolTable {
    path: PathBuf,
    layout: ElfLayout,
    symbols: Vec<Symbol>,
    by_name: HashMap<String, Vec<usize>>,
    /// Indices of code symbols by increasing address.
    by_address: Vec<usize>,
}

impl SymbolTable {
    /// Reads the symbols of `path` (cached per file identity: a second call
    /// on an unchanged file costs an `open` and an `fstat`).
    pub fn load(path: &Path) -> Result<Arc<SymbolTable>> {
        table_for(path, path)
    }

    /// The path the table was first read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The binary's type and segments.
    pub fn layout(&self) -> &ElfLayout {
        &self.layout
    }

    /// Every defined symbol (functions, IFUNCs, objects, ...), `.symtab` first.
    pub fn symbols(&self) -> &[Symbol] {
        &self.symbols
    }

    /// The function named `query` (`name`, `name@@VERSION` or
    /// `name@VERSION`): an unversioned query takes the default version; a
    /// global definition wins over file-local ones; an IFUNC is an error
    /// unless a plain function of the same name and version exists.
    pub fn lookup(&self, query: &str) -> Result<&Symbol> {
        self.lookup_in(query, &self.path)
    }

    /// The function (or IFUNC) whose extent contains the file virtual address.
    pub fn function_containing(&self, vaddr: u64) -> Option<&Symbol> {
        let end = self
            .by_address
            .partition_point(|&i| self.symbols[i].value <= vaddr);
        let covering = self.by_address[..end]
            .iter()
            .rev()
            .take(256)
            .map(|&i| &self.symbols[i])
            .find(|s| s.covers(vaddr))?;
        // Among aliases at the same address, prefer the most public name.
        self.by_address[..end]
            .iter()
            .rev()
            .map(|&i| &self.symbols[i])
            .take_while(|s| s.value == covering.value)
            .filter(|s| s.covers(vaddr))
            .min_by_key(|s| preference(s))
    }

    fn lookup_in(&self, query: &str, path: &Path) -> Result<&Symbol> {
        let not_found = || SymbolError::SymbolNotFound {
            symbol: query.to_owned(),
            path: path.to_owned(),
        };
        let (base, wanted_version) = match query.split_once('@') {
            None => (query, None),
            Some((base, rest)) => match rest.strip_prefix('@') {
                Some(version) => (base, Some((version, true))),
                None => (base, Some((rest, false))),
            },
        };
        let all: Vec<&Symbol> = self
            .by_name
            .get(base)
            .map(|indices| indices.iter().map(|&i| &self.symbols[i]).collect())
            .unwrap_or_default();
        let chosen: Vec<&Symbol> = match wanted_version {
            Some((version, must_be_default)) => all
                .iter()
                .copied()
                .filter(|s| {
                    s.version.as_deref() == Some(version) && (!must_be_default || s.default_version)
                })
                .collect(),
            None => {
                let default: Vec<&Symbol> =
                    all.iter().copied().filter(|s| s.default_version).collect();
                if default.is_empty() {
                    all.clone()
                } else {
                    default
                }
            }
        };
        if chosen.is_empty() {
            return Err(not_found());
        }
        let code: Vec<&Symbol> = chosen.iter().copied().filter(|s| s.is_code()).collect();
        if code.is_empty() {
            return Err(SymbolError::NotAFunction {
                symbol: query.to_owned(),
                path: path.to_owned(),
                kind: chosen[0].kind,
            });
        }
        let plain: Vec<&Symbol> = code
            .iter()
            .copied()
            .filter(|s| s.kind == SymbolKind::Function)
            .collect();
        if plain.is_empty() {
            let mut plain_versions: Vec<String> = all
                .iter()
                .filter(|s| s.kind == SymbolKind::Function)
                .map(|s| s.versioned_name())
                .collect();
            plain_versions.sort();
            plain_versions.dedup();
            return Err(SymbolError::Ifunc {
                symbol: query.to_owned(),
                path: path.to_owned(),
                plain_versions,
            });
        }
        // A global definition wins over file-local ones of the same name.
        let public: Vec<&Symbol> = plain
            .iter()
            .copied()
            .filter(|s| s.binding != SymbolBinding::Local)
            .collect();
        let candidates = if public.is_empty() { plain } else { public };
        let mut addresses: Vec<u64> = candidates.iter().map(|s| s.value).collect();
        addresses.sort_unstable();
        addresses.dedup();
        if addresses.len() > 1 {
            let list: Vec<String> = candidates
                .iter()
                .map(|s| format!("{} at {:#x}", s.versioned_name(), s.value))
                .collect();
            return Err(SymbolError::AmbiguousSymbol {
                symbol: query.to_owned(),
                path: path.to_owned(),
                candidates: list.join(", "),
            });
        }
        candidates
            .into_iter()
            .min_by_key(|s| preference(s))
            .ok_or_else(not_found)
    }

    fn parse(bytes: &[u8], path: &Path) -> Result<SymbolTable> {
        let malformed = |reason: String| SymbolError::Malformed {
            path: path.to_owned(),
            reason,
        };
        if bytes.len() < header::SELFMAG || &bytes[..header::SELFMAG] != header::ELFMAG {
            return Err(SymbolError::NotElf {
                path: path.to_owned(),
            });
        }
        let elf = Elf::parse(bytes).map_err(|e| malformed(e.to_string()))?;
        let layout = ElfLayout::from_parts(elf.header.e_type, &elf.program_headers, path)?;

        let mut symbols = Vec::new();
        for sym in elf.syms.iter() {
            let Some(name) = elf.strtab.get_at(sym.st_name) else {
                continue;
            };
            let (name, version, default_version) = match name.split_once('@') {
                None => (name, None, true),
                Some((base, rest)) => match rest.strip_prefix('@') {
                    Some(version) => (base, Some(version), true),
                    None => (base, Some(rest), false),
                },
            };
            if let Some(symbol) = make_symbol(&sym, name, version, default_version, false) {
                symbols.push(symbol);
            }
        }

        let mut versions: HashMap<u16, &str> = HashMap::new();
        if let Some(verdef) = &elf.verdef {
            for def in verdef.iter() {
                if def.vd_flags & goblin::elf::symver::VER_FLG_BASE != 0 {
                    continue;
                }
                if let Some(name) = def
                    .iter()
                    .next()
                    .and_then(|aux| elf.dynstrtab.get_at(aux.vda_name))
                {
                    versions.insert(def.vd_ndx, name);
                }
            }
        }
        for (index, sym) in elf.dynsyms.iter().enumerate() {
            let Some(name) = elf.dynstrtab.get_at(sym.st_name) else {
                continue;
            };
            let versym = elf.versym.as_ref().and_then(|v| v.get_at(index));
            let (version, default_version) = match versym {
                Some(v) => match versions.get(&v.version()) {
                    Some(version) => (Some(*version), !v.is_hidden()),
                    None => (None, true),
                },
                None => (None, true),
            };
            if let Some(symbol) = make_symbol(&sym, name, version, default_version, true) {
                symbols.push(symbol);
            }
        }

        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, symbol) in symbols.iter().enumerate() {
            by_name.entry(symbol.name.clone()).or_default().push(index);
        }
        let mut by_address: Vec<usize> = (0..symbols.len())
            .filter(|&i| symbols[i].is_code())
            .collect();
        by_address.sort_by_key(|&i| symbols[i].value);
        Ok(SymbolTable {
            path: path.to_owned(),
            layout,
            symbols,
            by_name,
            by_address,
        })
    }
}

/// Lower is better: plain functions, then public bindings, then default or
/// no version, then names without a leading `_` (`malloc`, not
/// `__libc_malloc`), then `.dynsym` (exported) names.
fn preference(symbol: &Symbol) -> (bool, bool, bool, bool, bool) {
    (
        symbol.kind != SymbolKind::Function,
        symbol.binding == SymbolBinding::Local,
        !symbol.default_version,
        symbol.name.starts_with('_'),
        !symbol.dynamic,
    )
}

fn make_symbol(
    sym: &sym::Sym,
    name: &str,
    version: Option<&str>,
    default_version: bool,
    dynamic: bool,
) -> Option<Symbol> {
    let undefined = sym.st_shndx as u64 == u64::from(goblin::elf::section_header::SHN_UNDEF);
    if name.is_empty() || undefined {
        return None;
    }
    let kind = match sym.st_type() {
        sym::STT_FUNC => SymbolKind::Function,
        sym::STT_GNU_IFUNC => SymbolKind::Ifunc,
        sym::STT_OBJECT => SymbolKind::Object,
        sym::STT_NOTYPE => SymbolKind::Other,
        _ => return None,
    };
    let binding = match sym.st_bind() {
        sym::STB_LOCAL => SymbolBinding::Local,
        sym::STB_WEAK => SymbolBinding::Weak,
        _ => SymbolBinding::Global,
    };
    Some(Symbol {
        name: name.to_owned(),
        version: version.map(str::to_owned),
        default_version,
        value: sym.st_value,
        size: sym.st_size,
        kind,
        binding,
        dynamic,
    })
}

fn table_for(path: &Path, display: &Path) -> Result<Arc<SymbolTable>> {
    let (mut file, id) = open_regular(path, display)?;
    if let Some(table) = with_cache(|c| c.tables.get(&id).cloned()) {
        return Ok(table);
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|source| SymbolError::Unreadable {
            path: display.to_owned(),
            source,
        })?;
    let table = Arc::new(SymbolTable::parse(&bytes, display)?);
    with_cache(|c| {
        if c.tables.len() >= CACHE_LIMIT {
            c.tables.clear();
        }
        c.tables.insert(id, Arc::clone(&table));
    });
    Ok(table)
}

fn resolve_location(table: &SymbolTable, path: &Path, location: &Location) -> Result<FileTarget> {
    let outside = |vaddr| SymbolError::OutsideSegments {
        vaddr,
        path: path.to_owned(),
    };
    match location {
        Location::Symbol { name, offset } => {
            let symbol = table.lookup_in(name, path)?;
            let past_end = || SymbolError::OffsetPastEnd {
                offset: *offset,
                symbol: symbol.versioned_name(),
                size: symbol.size,
                path: path.to_owned(),
            };
            if symbol.size != 0 && *offset >= symbol.size {
                return Err(past_end());
            }
            let file_vaddr = symbol.value.checked_add(*offset).ok_or_else(past_end)?;
            let file_offset = table
                .layout
                .file_offset(file_vaddr)
                .ok_or_else(|| outside(file_vaddr))?;
            Ok(FileTarget {
                path: path.to_owned(),
                kind: table.layout.kind,
                symbol: Some(symbol.versioned_name()),
                file_vaddr,
                file_offset,
                size: symbol.size,
                offset_in_symbol: *offset,
            })
        }
        Location::FileAddress(vaddr) => {
            let file_offset = table
                .layout
                .file_offset(*vaddr)
                .ok_or_else(|| outside(*vaddr))?;
            let symbol = table.function_containing(*vaddr);
            Ok(FileTarget {
                path: path.to_owned(),
                kind: table.layout.kind,
                symbol: symbol.map(Symbol::versioned_name),
                file_vaddr: *vaddr,
                file_offset,
                size: symbol.map_or(0, |s| s.size),
                offset_in_symbol: symbol.map_or(0, |s| vaddr - s.value),
            })
        }
    }
}

// ---------------------------------------------------------------------------
// File-level resolution (binary not loaded)
// ---------------------------------------------------------------------------

/// Resolves a location in a binary that need not be loaded anywhere.
pub fn resolve_in_file(path: &Path, location: &Location) -> Result<FileTarget> {
    let table = table_for(path, path)?;
    resolve_location(&table, path, location)
}

/// Resolves a spec before its process exists (`userbpf exec`): `self` or an
/// empty binary is `main_executable`, a binary containing `/` is a path, and
/// a library name is looked up with [`find_library`]. A bare absolute address
/// is an error.
pub fn resolve_unloaded(spec: &TargetSpec, main_executable: &Path) -> Result<FileTarget> {
    match spec {
        TargetSpec::Address(address) => Err(SymbolError::AddressNeedsProcess { address: *address }),
        TargetSpec::InBinary { binary, location } => {
            let path = if binary.is_empty() || binary == "self" {
                main_executable.to_owned()
            } else if binary.contains('/') {
                PathBuf::from(binary)
            } else {
                find_library(binary)?
            };
            resolve_in_file(&path, location)
        }
    }
}

/// The directories [`find_library`] searches: `LD_LIBRARY_PATH`, then the
/// usual x86-64 Linux library directories.
pub fn library_search_path() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|value| {
            std::env::split_paths(&value)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    dirs.extend(
        [
            "/lib/x86_64-linux-gnu",
            "/usr/lib/x86_64-linux-gnu",
            "/lib64",
            "/usr/lib64",
            "/lib",
            "/usr/lib",
            "/usr/local/lib",
        ]
        .iter()
        .map(PathBuf::from),
    );
    dirs
}

/// Finds a library file by name, as [`ProcessModules::find`] matches names:
/// an exact file name first, then `libNAME.so*`. Non-ELF files (linker
/// scripts such as `libc.so`) are skipped. This ignores `RPATH`/`RUNPATH` and
/// `ld.so.cache`: give a path when the library lives elsewhere.
pub fn find_library(name: &str) -> Result<PathBuf> {
    let dirs = library_search_path();
    let is_elf = |path: &Path| ElfLayout::load(path).is_ok();
    for dir in &dirs {
        let candidate = dir.join(name);
        if is_elf(&candidate) {
            return Ok(candidate);
        }
    }
    for dir in &dirs {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        let mut found: Vec<PathBuf> = Vec::new();
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            let path = entry.path();
            if library_name_matches(name, file_name) && is_elf(&path) {
                let real = fs::canonicalize(&path).unwrap_or(path);
                if !found.contains(&real) {
                    found.push(real);
                }
            }
        }
        found.sort();
        match found.len() {
            0 => continue,
            1 => return Ok(found.remove(0)),
            _ => {
                return Err(SymbolError::AmbiguousLibrary {
                    name: name.to_owned(),
                    candidates: join_paths(&found),
                })
            }
        }
    }
    Err(SymbolError::LibraryNotFound {
        name: name.to_owned(),
        searched: join_paths(&dirs),
    })
}

/// `libc` matches `libc.so` and `libc.so.6` (and `c` matches them too), not
/// `libcap.so`.
fn library_name_matches(name: &str, file_name: &str) -> bool {
    let mut prefixes = vec![format!("{name}.so")];
    if !name.starts_with("lib") {
        prefixes.push(format!("lib{name}.so"));
    }
    prefixes.iter().any(|prefix| {
        file_name
            .strip_prefix(prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    })
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------
// Process mappings and modules
// ---------------------------------------------------------------------------

/// The permissions of a mapping (`r-xp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Perms {
    /// `r`.
    pub read: bool,
    /// `w`.
    pub write: bool,
    /// `x`.
    pub execute: bool,
    /// `s` (shared) rather than `p` (private, copy-on-write).
    pub shared: bool,
}

impl Perms {
    fn accessible(&self) -> bool {
        self.read || self.write || self.execute
    }
}

impl fmt::Display for Perms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = |on: bool, c: char| if on { c } else { '-' };
        write!(
            f,
            "{}{}{}{}",
            flag(self.read, 'r'),
            flag(self.write, 'w'),
            flag(self.execute, 'x'),
            if self.shared { 's' } else { 'p' }
        )
    }
}

/// One line of `/proc/PID/maps` for a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Permissions.
    pub perms: Perms,
    /// Offset in the file of `start`.
    pub offset: u64,
    /// The file's inode as the kernel reports it.
    pub inode: u64,
}

impl Mapping {
    /// Whether the mapping contains `address`.
    pub fn contains(&self, address: u64) -> bool {
        self.start <= address && address < self.end
    }
}

/// Parses one maps line into the mapping and the path (possibly empty or a
/// pseudo path like `[heap]`).
fn parse_maps_line(line: &str) -> Option<(Mapping, &str)> {
    fn field<'a>(rest: &mut &'a str) -> Option<&'a str> {
        let text = rest.trim_start_matches(' ');
        let end = text.find(' ').unwrap_or(text.len());
        let (value, tail) = text.split_at(end);
        *rest = tail;
        (!value.is_empty()).then_some(value)
    }
    let mut rest = line;
    let (start, end) = field(&mut rest)?.split_once('-')?;
    let perms = field(&mut rest)?.as_bytes();
    let offset = field(&mut rest)?;
    let _device = field(&mut rest)?;
    let inode = field(&mut rest)?;
    if perms.len() < 4 {
        return None;
    }
    let mapping = Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        perms: Perms {
            read: perms[0] == b'r',
            write: perms[1] == b'w',
            execute: perms[2] == b'x',
            shared: perms[3] == b's',
        },
        offset: u64::from_str_radix(offset, 16).ok()?,
        inode: inode.parse().ok()?,
    };
    Some((mapping, rest.trim_start_matches(' ')))
}

/// An ELF object mapped into a process: the main executable or a shared
/// library.
#[derive(Debug, Clone)]
pub struct Module {
    /// The path the process mapped (as `/proc/PID/maps` shows it).
    pub path: PathBuf,
    /// The mappings of that file, in address order.
    pub mappings: Vec<Mapping>,
    /// Runtime address minus file virtual address (0 for `ET_EXEC`).
    pub load_bias: u64,
    /// `ET_EXEC` or `ET_DYN`.
    pub kind: ElfKind,
    /// Where this process reads the file (through `/proc/PID/root` for
    /// another process).
    open_path: PathBuf,
    file_id: FileId,
}

impl Module {
    /// The file name of the module (`libc.so.6`).
    pub fn file_name(&self) -> Option<&str> {
        self.path.file_name().and_then(|n| n.to_str())
    }

    /// Whether one of the module's file mappings contains `address`.
    pub fn contains(&self, address: u64) -> bool {
        self.mappings.iter().any(|m| m.contains(address))
    }

    /// The runtime address of a file virtual address.
    pub fn runtime_address(&self, file_vaddr: u64) -> u64 {
        file_vaddr.wrapping_add(self.load_bias)
    }

    /// The file virtual address of a runtime address.
    pub fn file_vaddr(&self, address: u64) -> u64 {
        address.wrapping_sub(self.load_bias)
    }

    /// The module's symbol table (cached).
    pub fn symbols(&self) -> Result<Arc<SymbolTable>> {
        table_for(&self.open_path, &self.path)
    }
}

/// The ELF modules mapped into a process, read from `/proc/PID/maps` at one
/// moment (libraries loaded later need a new snapshot).
#[derive(Debug, Clone)]
pub struct ProcessModules {
    pid: u32,
    modules: Vec<Module>,
    main: Option<usize>,
    /// Mapped files that look like binaries but cannot be used, with why.
    unusable: Vec<(PathBuf, String)>,
}

impl ProcessModules {
    /// The modules of the current process (`/proc/self/maps`).
    pub fn current() -> Result<Self> {
        Self::read(std::process::id(), None)
    }

    /// The modules of process `pid` (`/proc/PID/maps`; files are read through
    /// `/proc/PID/root` when it is accessible, so another mount namespace
    /// works too).
    pub fn of_pid(pid: u32) -> Result<Self> {
        if pid == std::process::id() {
            return Self::current();
        }
        Self::read(pid, Some(PathBuf::from(format!("/proc/{pid}/root"))))
    }

    fn read(pid: u32, root: Option<PathBuf>) -> Result<Self> {
        let proc_dir = if root.is_some() {
            PathBuf::from(format!("/proc/{pid}"))
        } else {
            PathBuf::from("/proc/self")
        };
        let maps = fs::read_to_string(proc_dir.join("maps"))
            .map_err(|source| SymbolError::ProcessMaps { pid, source })?;
        let root = root.filter(|r| fs::metadata(r.join(".")).is_ok());

        // Group the file mappings by path, in order of first appearance.
        let mut groups: Vec<(&str, Vec<Mapping>)> = Vec::new();
        let mut group_of: HashMap<&str, usize> = HashMap::new();
        for line in maps.lines().filter(|l| !l.trim().is_empty()) {
            let (mapping, path) = parse_maps_line(line).ok_or_else(|| SymbolError::MapsSyntax {
                pid,
                line: line.to_owned(),
            })?;
            if !path.starts_with('/') {
                continue; // anonymous, [heap], [stack], [vdso], ...
            }
            let index = *group_of.entry(path).or_insert_with(|| {
                groups.push((path, Vec::new()));
                groups.len() - 1
            });
            groups[index].1.push(mapping);
        }

        let mut modules = Vec::new();
        let mut unusable = Vec::new();
        for (path, mut mappings) in groups {
            if let Some(deleted) = path.strip_suffix(" (deleted)") {
                if !deleted.starts_with("/dev/") && !deleted.starts_with("/memfd:") {
                    unusable.push((PathBuf::from(deleted), "the file was deleted".to_owned()));
                }
                continue;
            }
            if path.starts_with("/dev/") {
                continue;
            }
            let path = PathBuf::from(path);
            let open_path = match &root {
                Some(root) => root.join(path.strip_prefix("/").unwrap_or(&path)),
                None => path.clone(),
            };
            let (layout, file_id) = match layout_for(&open_path, &path) {
                Ok(found) => found,
                Err(SymbolError::NotElf { .. }) => continue,
                Err(e) => {
                    unusable.push((path, e.to_string()));
                    continue;
                }
            };
            mappings.sort_by_key(|m| m.start);
            let Some(load_bias) = layout.load_bias(&mappings) else {
                let reason = SymbolError::NoLoadBias {
                    path: path.clone(),
                    pid,
                }
                .to_string();
                unusable.push((path, reason));
                continue;
            };
            modules.push(Module {
                path,
                mappings,
                load_bias,
                kind: layout.kind,
                open_path,
                file_id,
            });
        }

        let main = main_module_index(&proc_dir, &modules);
        Ok(ProcessModules {
            pid,
            modules,
            main,
            unusable,
        })
    }

    /// The process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The ELF modules, in order of their first mapping in `/proc/PID/maps`.
    pub fn modules(&self) -> &[Module] {
        &self.modules
    }

    /// The main executable's module.
    pub fn main_module(&self) -> Option<&Module> {
        self.main.and_then(|i| self.modules.get(i))
    }

    /// The module with a file mapping containing `address`.
    pub fn module_containing(&self, address: u64) -> Option<&Module> {
        self.modules.iter().find(|m| m.contains(address))
    }

    /// The module a target spec's `BINARY` names: `self` or empty for the
    /// main executable, a path (anything with a `/`, relative to the current
    /// directory), or a library name (exact basename, then `libNAME.so*`).
    pub fn find(&self, binary: &str) -> Result<&Module> {
        if binary.is_empty() || binary == "self" {
            return self.main_module().ok_or_else(|| self.not_loaded(binary));
        }
        if binary.contains('/') {
            return self.find_path(binary, Path::new(binary));
        }
        let exact: Vec<&Module> = self
            .modules
            .iter()
            .filter(|m| m.file_name() == Some(binary))
            .collect();
        let matches = if exact.is_empty() {
            self.modules
                .iter()
                .filter(|m| {
                    m.file_name()
                        .is_some_and(|n| library_name_matches(binary, n))
                })
                .collect()
        } else {
            exact
        };
        match matches.as_slice() {
            [module] => Ok(module),
            [] => {
                let name_matches = |path: &Path| {
                    path.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n == binary || library_name_matches(binary, n))
                };
                Err(self.unusable_error(binary, name_matches))
            }
            several => Err(SymbolError::AmbiguousModule {
                binary: binary.to_owned(),
                pid: self.pid,
                candidates: several
                    .iter()
                    .map(|m| m.path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    fn find_path(&self, binary: &str, path: &Path) -> Result<&Module> {
        let canonical = fs::canonicalize(path).ok();
        let meta = fs::metadata(path).ok();
        let found = self.modules.iter().find(|m| {
            m.path == path
                || canonical.as_deref() == Some(m.path.as_path())
                || meta.as_ref().is_some_and(|meta| m.file_id.same_file(meta))
        });
        found.ok_or_else(|| {
            self.unusable_error(binary, |p| p == path || canonical.as_deref() == Some(p))
        })
    }

    fn unusable_error(&self, binary: &str, matches: impl Fn(&Path) -> bool) -> SymbolError {
        match self.unusable.iter().find(|(path, _)| matches(path)) {
            Some((path, reason)) => SymbolError::ModuleUnusable {
                binary: binary.to_owned(),
                pid: self.pid,
                path: path.clone(),
                reason: reason.clone(),
            },
            None => self.not_loaded(binary),
        }
    }

    fn not_loaded(&self, binary: &str) -> SymbolError {
        const SHOWN: usize = 8;
        let mut names: Vec<String> = self
            .modules
            .iter()
            .take(SHOWN)
            .map(|m| {
                m.file_name()
                    .map_or_else(|| m.path.display().to_string(), str::to_owned)
            })
            .collect();
        if self.modules.len() > SHOWN {
            names.push(format!("… {} more", self.modules.len() - SHOWN));
        }
        if names.is_empty() {
            names.push("none".to_owned());
        }
        SymbolError::ModuleNotLoaded {
            binary: binary.to_owned(),
            pid: self.pid,
            loaded: names.join(", "),
        }
    }

    /// Resolves a target to a runtime address in this process. For a bare
    /// address, the symbol is filled in when a function covers it (and left
    /// out if the module's symbols cannot be read).
    pub fn resolve(&self, spec: &TargetSpec) -> Result<Resolved> {
        match spec {
            TargetSpec::InBinary { binary, location } => {
                let module = self.find(binary)?;
                let table = module.symbols()?;
                let target = resolve_location(&table, &module.path, location)?;
                Ok(target.at_load_bias(module.load_bias))
            }
            TargetSpec::Address(address) => {
                let address = *address;
                let module =
                    self.module_containing(address)
                        .ok_or(SymbolError::AddressNotMapped {
                            address,
                            pid: self.pid,
                        })?;
                let file_vaddr = module.file_vaddr(address);
                let file_offset = module
                    .mappings
                    .iter()
                    .find(|m| m.contains(address))
                    .map_or(0, |m| m.offset.wrapping_add(address - m.start));
                let table = module.symbols().ok();
                let symbol = table
                    .as_ref()
                    .and_then(|t| t.function_containing(file_vaddr));
                Ok(Resolved {
                    module_path: module.path.clone(),
                    symbol: symbol.map(Symbol::versioned_name),
                    file_vaddr,
                    file_offset,
                    address,
                    size: symbol.map_or(0, |s| s.size),
                    offset_in_symbol: symbol.map_or(0, |s| file_vaddr - s.value),
                })
            }
        }
    }

    /// Parses and resolves a target spec.
    pub fn resolve_str(&self, spec: &str) -> Result<Resolved> {
        self.resolve(&TargetSpec::parse(spec)?)
    }
}

/// The main executable: the module that is the same file as `/proc/PID/exe`,
/// else the one at the path it links to, else the first module mapped.
fn main_module_index(proc_dir: &Path, modules: &[Module]) -> Option<usize> {
    let exe = proc_dir.join("exe");
    if let Ok(meta) = fs::metadata(&exe) {
        if let Some(index) = modules.iter().position(|m| m.file_id.same_file(&meta)) {
            return Some(index);
        }
    }
    if let Ok(target) = fs::read_link(&exe) {
        if let Some(index) = modules.iter().position(|m| m.path == target) {
            return Some(index);
        }
    }
    (!modules.is_empty()).then_some(0)
}

/// Resolves a target spec in the current process.
pub fn resolve(spec: &str) -> Result<Resolved> {
    ProcessModules::current()?.resolve_str(spec)
}

/// Resolves a target spec in process `pid`.
pub fn resolve_in_process(pid: u32, spec: &str) -> Result<Resolved> {
    ProcessModules::of_pid(pid)?.resolve_str(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines() {
        let line = "7f1c2a000000-7f1c2a028000 r--p 00000000 fd:01 1234567                    /usr/lib/x86_64-linux-gnu/libc.so.6";
        let (m, path) = parse_maps_line(line).expect("parses");
        assert_eq!(
            (m.start, m.end, m.offset, m.inode),
            (0x7f1c2a000000, 0x7f1c2a028000, 0, 1234567)
        );
        assert_eq!(m.perms.to_string(), "r--p");
        assert_eq!(path, "/usr/lib/x86_64-linux-gnu/libc.so.6");

        let line = "55d0-55e0 r-xs 00001000 00:05 42   /tmp/dir with spaces/a b (deleted)";
        let (m, path) = parse_maps_line(line).expect("parses");
        assert!(m.perms.execute && m.perms.shared && !m.perms.write);
        assert_eq!(m.offset, 0x1000);
        assert_eq!(path, "/tmp/dir with spaces/a b (deleted)");

        let (_, path) = parse_maps_line("7ffd-7ffe rw-p 00000000 00:00 0").expect("parses");
        assert_eq!(path, "");
        assert!(parse_maps_line("garbage").is_none());
    }

    #[test]
    fn library_names() {
        assert!(library_name_matches("libc", "libc.so.6"));
        assert!(library_name_matches("c", "libc.so.6"));
        assert!(library_name_matches("libc", "libc.so"));
        assert!(!library_name_matches("libc", "libcap.so.2"));
        assert!(!library_name_matches("libc", "libc.sox"));
    }

    #[test]
    fn bias_of_a_shared_object() {
        let layout = ElfLayout {
            kind: ElfKind::SharedObject,
            segments: vec![
                LoadSegment {
                    vaddr: 0,
                    mem_size: 0x800,
                    offset: 0,
                    file_size: 0x800,
                    flags: 4,
                },
                LoadSegment {
                    vaddr: 0x1800,
                    mem_size: 0x100,
                    offset: 0x800,
                    file_size: 0x100,
                    flags: 5,
                },
            ],
        };
        let read = Perms {
            read: true,
            ..Perms::default()
        };
        let read_exec = Perms {
            execute: true,
            ..read
        };
        let bias = 0x7000_0000;
        let mapping = |start: u64, perms| Mapping {
            start,
            end: start + 0x1000,
            perms,
            offset: 0,
            inode: 1,
        };
        // A stray read-only mapping of the file (a symbolizer's mmap) comes first.
        let mappings = [
            mapping(0x6000_0000, read),
            mapping(bias, read),
            mapping(bias + 0x1000, read_exec),
        ];
        assert_eq!(layout.load_bias(&mappings), Some(bias));
        assert_eq!(layout.load_bias(&mappings[1..]), Some(bias));
        assert_eq!(layout.load_bias(&mappings[..1]), Some(0x6000_0000));
        assert_eq!(layout.load_bias(&[]), None);
        assert_eq!(layout.file_offset(0x1810), Some(0x810));
        assert_eq!(layout.file_offset(0x1900), None);
        let exec = ElfLayout {
            kind: ElfKind::Executable,
            ..layout
        };
        assert_eq!(exec.load_bias(&[]), Some(0));
    }
}
