//! Symbol resolution against real processes: this test executable (a PIE),
//! the libc it loaded, a spawned child, and a non-PIE binary from /usr/bin.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use userbpf_shims::symbols::{
    resolve, resolve_in_file, resolve_in_process, resolve_unloaded, ElfKind, ElfLayout, Location,
    ProcessModules, SymbolError, SymbolKind, SymbolTable, TargetSpec,
};

/// A function of the test executable itself, found by name through `.symtab`.
#[no_mangle]
pub extern "C" fn userbpf_symbols_test_target(x: u64) -> u64 {
    let mut acc = x;
    for i in 0..x {
        acc = acc.wrapping_mul(31).wrapping_add(i) ^ (acc >> 7);
    }
    acc
}

const TARGET: &str = "userbpf_symbols_test_target";

fn target_address() -> u64 {
    let f: extern "C" fn(u64) -> u64 = std::hint::black_box(userbpf_symbols_test_target);
    assert_ne!(f(3), 0xdead_beef, "keeps the function alive");
    f as usize as u64
}

fn dlsym(name: &CStr) -> u64 {
    // SAFETY: RTLD_DEFAULT is a valid pseudo-handle and `name` is a valid C string.
    let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    assert!(!address.is_null(), "dlsym({name:?}) failed");
    address as u64
}

fn dlvsym(name: &CStr, version: &CStr) -> Option<u64> {
    // SAFETY: RTLD_DEFAULT is a valid pseudo-handle, both strings are valid C strings.
    let address = unsafe { libc::dlvsym(libc::RTLD_DEFAULT, name.as_ptr(), version.as_ptr()) };
    (!address.is_null()).then_some(address as u64)
}

fn self_exe() -> PathBuf {
    fs::read_link("/proc/self/exe").expect("readlink /proc/self/exe")
}

#[test]
fn libc_malloc_is_the_address_dlsym_returns() {
    let expected = dlsym(c"malloc");
    let resolved = resolve("libc.so.6:malloc").expect("resolve libc.so.6:malloc");
    assert_eq!(resolved.address, expected, "{resolved:?}");
    assert_eq!(resolved.offset_in_symbol, 0);
    assert!(resolved.size > 0, "{resolved:?}");
    assert!(
        resolved
            .symbol
            .as_deref()
            .is_some_and(|s| s.starts_with("malloc")),
        "{resolved:?}"
    );
    assert_eq!(
        resolved.module_path.file_name().and_then(|n| n.to_str()),
        Some("libc.so.6")
    );

    // The `libNAME.so*` prefix form, the `c` short form and an absolute path.
    for spec in ["libc:malloc", "c:malloc"] {
        assert_eq!(resolve(spec).expect(spec).address, expected, "{spec}");
    }
    let by_path = format!("{}:malloc", resolved.module_path.display());
    assert_eq!(resolve(&by_path).expect("by path").address, expected);

    // The default version, spelled out, is the same function.
    if let Some(versioned) = resolved.symbol.as_deref().filter(|s| s.contains("@@")) {
        let spec = format!("libc.so.6:{versioned}");
        assert_eq!(resolve(&spec).expect(&spec).address, expected);
    }

    // The runtime address maps back to the symbol.
    let back = resolve(&format!("{expected:#x}")).expect("absolute address");
    assert_eq!(back.symbol, resolved.symbol);
    assert_eq!(back.file_vaddr, resolved.file_vaddr);
    assert_eq!(back.file_offset, resolved.file_offset);
}

#[test]
fn function_of_the_test_executable_by_self_and_by_path() {
    let expected = target_address();
    let modules = ProcessModules::current().expect("modules");
    let main = modules.main_module().expect("main module");
    assert_eq!(
        main.kind,
        ElfKind::SharedObject,
        "the test executable is a PIE"
    );
    assert_ne!(main.load_bias, 0);
    assert_eq!(
        fs::canonicalize(&main.path).expect("canonical"),
        fs::canonicalize(self_exe()).expect("canonical")
    );

    let exe = self_exe();
    for spec in [
        format!("self:{TARGET}"),
        format!(":{TARGET}"),
        format!("{}:{TARGET}", exe.display()),
        format!("/proc/self/exe:{TARGET}"),
    ] {
        let resolved = modules
            .resolve_str(&spec)
            .unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(resolved.address, expected, "{spec}");
        assert_eq!(resolved.symbol.as_deref(), Some(TARGET));
        assert!(resolved.size > 0);
        assert_eq!(resolved.address, main.runtime_address(resolved.file_vaddr));
    }

    // A path relative to the current directory.
    let cwd = std::env::current_dir().expect("cwd");
    if let Ok(relative) = exe.strip_prefix(&cwd) {
        let spec = format!("./{}:{TARGET}", relative.display());
        assert_eq!(modules.resolve_str(&spec).expect(&spec).address, expected);
    }

    // The file address form gives the same place.
    let by_name = modules
        .resolve_str(&format!("self:{TARGET}"))
        .expect("by name");
    let by_vaddr = modules
        .resolve_str(&format!("self:{:#x}", by_name.file_vaddr))
        .expect("by file address");
    assert_eq!(by_vaddr, by_name);
}

#[test]
fn offsets_into_symbols() {
    let expected = target_address();
    let plus_one = resolve(&format!("self:{TARGET}+1")).expect("+1");
    assert_eq!(plus_one.address, expected + 1);
    assert_eq!(plus_one.offset_in_symbol, 1);
    let plus_hex = resolve(&format!("self:{TARGET}+0x4")).expect("+0x4");
    assert_eq!(plus_hex.address, expected + 4);
    assert_eq!(plus_hex.offset_in_symbol, 4);
    assert_eq!(plus_hex.file_vaddr, plus_one.file_vaddr + 3);
    assert_eq!(plus_hex.file_offset, plus_one.file_offset + 3);

    // An address inside the function names it, with the offset.
    let inside = resolve(&format!("{:#x}", expected + 4)).expect("absolute");
    assert_eq!(inside.symbol.as_deref(), Some(TARGET));
    assert_eq!(inside.offset_in_symbol, 4);

    let malloc = dlsym(c"malloc");
    assert_eq!(
        resolve("libc.so.6:malloc+16").expect("+16").address,
        malloc + 16
    );

    // At or past the end.
    let size = plus_one.size;
    for offset in [format!("{size}"), "0x100000".to_owned()] {
        let err = resolve(&format!("self:{TARGET}+{offset}")).expect_err("past the end");
        assert!(matches!(err, SymbolError::OffsetPastEnd { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains(&format!("is past the end of `{TARGET}` (size {size:#x})")),
            "{message}"
        );
    }
}

#[test]
fn errors_name_the_symbol_the_module_and_the_process() {
    let libc = resolve("libc.so.6:malloc").expect("malloc").module_path;

    let err = resolve("libc.so.6:userbpf_no_such_symbol").expect_err("missing symbol");
    assert!(matches!(err, SymbolError::SymbolNotFound { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "symbol `userbpf_no_such_symbol` not found in {}",
            libc.display()
        )
    );

    let err = resolve("libuserbpf_nope:malloc").expect_err("missing module");
    let message = err.to_string();
    let prefix = format!(
        "no module `libuserbpf_nope` is loaded in process {} (loaded: ",
        std::process::id()
    );
    assert!(message.starts_with(&prefix), "{message}");
    assert!(message.contains("libc.so.6"), "{message}");

    let err = resolve("/nonexistent/libfoo.so:malloc").expect_err("missing path");
    assert!(
        err.to_string()
            .contains("no module `/nonexistent/libfoo.so`"),
        "{err}"
    );

    // Data objects are not probe targets.
    let err = resolve("libc.so.6:environ").expect_err("data object");
    assert!(
        matches!(
            err,
            SymbolError::NotAFunction {
                kind: SymbolKind::Object,
                ..
            }
        ),
        "{err}"
    );

    // Addresses outside every module.
    let err = resolve("0x10").expect_err("unmapped");
    assert!(
        err.to_string()
            .contains("address 0x10 is not inside any module"),
        "{err}"
    );

    // Bad specs.
    for spec in [
        "",
        "malloc",
        "libc:",
        "libc:malloc+",
        "libc:malloc+0xZZ",
        "0xnothex",
    ] {
        let err = resolve(spec).expect_err(spec);
        assert!(
            matches!(err, SymbolError::InvalidSpec { .. }),
            "{spec}: {err}"
        );
    }
}

#[test]
fn ifunc_is_reported_and_plain_versions_resolve() {
    let libc = resolve("libc.so.6:malloc").expect("malloc").module_path;
    let table = SymbolTable::load(&libc).expect("libc symbols");
    let ifunc = table
        .symbols()
        .iter()
        .find(|s| s.kind == SymbolKind::Ifunc && s.default_version && s.name == "memcpy")
        .or_else(|| {
            table
                .symbols()
                .iter()
                .find(|s| s.kind == SymbolKind::Ifunc && s.default_version)
        });
    let Some(ifunc) = ifunc else {
        println!("skipped: {} has no IFUNC symbol", libc.display());
        return;
    };
    // Unless a plain function shares the name and the default version.
    let shadowed = table
        .symbols()
        .iter()
        .any(|s| s.name == ifunc.name && s.kind == SymbolKind::Function && s.default_version);
    if !shadowed {
        let err = resolve(&format!("libc.so.6:{}", ifunc.name)).expect_err("ifunc");
        assert!(matches!(err, SymbolError::Ifunc { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains(&format!("`{}`", ifunc.name)), "{message}");
        assert!(message.contains("IFUNC resolver"), "{message}");
    }

    // glibc keeps memcpy@GLIBC_2.2.5 as a plain function.
    if let Some(expected) = dlvsym(c"memcpy", c"GLIBC_2.2.5") {
        if table.symbols().iter().any(|s| {
            s.name == "memcpy"
                && s.version.as_deref() == Some("GLIBC_2.2.5")
                && s.kind == SymbolKind::Function
        }) {
            let resolved = resolve("libc.so.6:memcpy@GLIBC_2.2.5").expect("old memcpy");
            assert_eq!(resolved.address, expected);
            assert_eq!(resolved.symbol.as_deref(), Some("memcpy@GLIBC_2.2.5"));
        }
    }
}

struct PhdrObject {
    name: String,
    bias: u64,
}

unsafe extern "C" fn collect_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut c_void,
) -> c_int {
    // SAFETY: dl_iterate_phdr passes a valid info for the duration of the
    // call, and `data` is the `Vec` that `loaded_objects` passed in.
    let (info, objects) = unsafe { (&*info, &mut *(data as *mut Vec<PhdrObject>)) };
    let name = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: a non-null dlpi_name is a NUL-terminated string owned by ld.so.
        unsafe { CStr::from_ptr(info.dlpi_name as *const c_char) }
            .to_string_lossy()
            .into_owned()
    };
    objects.push(PhdrObject {
        name,
        bias: info.dlpi_addr,
    });
    0
}

fn loaded_objects() -> Vec<PhdrObject> {
    let mut objects: Vec<PhdrObject> = Vec::new();
    // SAFETY: the callback only reads the info it is given and pushes into
    // the Vec passed as `data`, which outlives the call.
    unsafe {
        libc::dl_iterate_phdr(
            Some(collect_object),
            &mut objects as *mut Vec<PhdrObject> as *mut c_void,
        );
    }
    objects
}

/// A read-only private mapping of a whole file, unmapped on drop.
struct FileMapping {
    address: *mut c_void,
    len: usize,
}

impl FileMapping {
    fn new(path: &Path) -> FileMapping {
        let file = fs::File::open(path).expect("open");
        let len = usize::try_from(file.metadata().expect("metadata").len()).expect("len");
        // SAFETY: a fresh read-only private mapping of an open file; the kernel
        // picks the address, so no existing mapping is touched.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        assert_ne!(address, libc::MAP_FAILED, "mmap {}", path.display());
        FileMapping { address, len }
    }
}

impl Drop for FileMapping {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `new` with this address and length
        // and nothing references it.
        unsafe { libc::munmap(self.address, self.len) };
    }
}

#[test]
fn load_biases_match_dl_iterate_phdr() {
    // An extra mapping of libc at offset 0 (what a debugger or a backtrace
    // symbolizer does) must not be mistaken for the loader's.
    let libc = resolve("libc.so.6:malloc").expect("malloc").module_path;
    let _stray = FileMapping::new(&libc);
    let modules = ProcessModules::current().expect("modules");
    let libc_module = modules.find("libc.so.6").expect("libc");
    assert!(
        libc_module
            .mappings
            .iter()
            .filter(|m| m.offset == 0)
            .count()
            >= 2,
        "the stray mapping is listed: {:?}",
        libc_module.mappings
    );
    let objects = loaded_objects();
    let mut checked = 0;
    for object in &objects {
        let module = if object.name.is_empty() {
            modules.main_module()
        } else if object.name.starts_with('/') {
            let canonical = fs::canonicalize(&object.name).expect("canonical");
            modules.modules().iter().find(|m| m.path == canonical)
        } else {
            None // linux-vdso.so.1 is not a file
        };
        if let Some(module) = module {
            assert_eq!(
                module.load_bias,
                object.bias,
                "load bias of {} ({})",
                module.path.display(),
                object.name
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "checked {checked} of {} objects",
        objects.len()
    );
}

#[test]
fn symbol_tables_are_cached() {
    let libc = resolve("libc.so.6:malloc").expect("malloc").module_path;
    let first = SymbolTable::load(&libc).expect("load");
    let second = SymbolTable::load(&libc).expect("load again");
    assert!(Arc::ptr_eq(&first, &second));
    let layout = ElfLayout::load(&libc).expect("layout");
    assert!(Arc::ptr_eq(
        &layout,
        &ElfLayout::load(&libc).expect("layout again")
    ));
    assert_eq!(*layout, *first.layout());
}

#[test]
fn unloaded_binaries_resolve_at_file_level() {
    let modules = ProcessModules::current().expect("modules");
    let exe = self_exe();

    // Our own function, as `userbpf exec` would before the target starts.
    let spec: TargetSpec = format!("self:{TARGET}+2").parse().expect("spec");
    let file = resolve_unloaded(&spec, &exe).expect("file-level self");
    assert_eq!(file.kind, ElfKind::SharedObject);
    let main = modules.main_module().expect("main");
    assert_eq!(
        file.at_load_bias(main.load_bias).address,
        target_address() + 2
    );
    assert_eq!(
        file.in_process(&modules).expect("in process").address,
        target_address() + 2
    );

    // A library by name, found in the library directories.
    let spec: TargetSpec = "libc:malloc".parse().expect("spec");
    let file = resolve_unloaded(&spec, &exe).expect("file-level libc");
    let loaded = modules.resolve(&spec).expect("loaded libc");
    assert_eq!(file.file_vaddr, loaded.file_vaddr);
    assert_eq!(file.file_offset, loaded.file_offset);
    assert_eq!(
        file.in_process(&modules).expect("in process").address,
        dlsym(c"malloc")
    );

    // The file offset really is where the function's bytes are in the file.
    let mut bytes = Vec::new();
    fs::File::open(&file.path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .expect("read libc");
    let start = usize::try_from(file.file_offset).expect("offset");
    let in_file = &bytes[start..start + 16];
    // SAFETY: malloc's first 16 bytes are mapped, readable code.
    let in_memory = unsafe { std::slice::from_raw_parts(dlsym(c"malloc") as *const u8, 16) };
    assert_eq!(in_file, in_memory);

    let err = resolve_unloaded(&"0x1234".parse().expect("spec"), &exe).expect_err("address");
    assert!(
        matches!(err, SymbolError::AddressNeedsProcess { .. }),
        "{err}"
    );
    let err = resolve_in_file(Path::new("/nonexistent/bin"), &Location::FileAddress(0))
        .expect_err("unreadable");
    assert!(
        err.to_string().starts_with("cannot read /nonexistent/bin"),
        "{err}"
    );
    let err = resolve_in_file(Path::new("/proc/self/maps"), &Location::FileAddress(0))
        .expect_err("not a regular file");
    assert!(
        matches!(
            err,
            SymbolError::Unreadable { .. } | SymbolError::NotElf { .. }
        ),
        "{err}"
    );
    let err =
        resolve_in_file(Path::new("/etc/passwd"), &Location::FileAddress(0)).expect_err("not ELF");
    assert!(matches!(err, SymbolError::NotElf { .. }), "{err}");
}

#[test]
fn spec_parsing_and_display() {
    let cases = [
        ("libc.so.6:malloc", "libc.so.6:malloc"),
        ("libc:malloc+16", "libc:malloc+0x10"),
        ("/usr/bin/app:main+0x1f", "/usr/bin/app:main+0x1f"),
        ("self:0x1130", "self:0x1130"),
        ("0x7fff0000", "0x7fff0000"),
        (
            "libc.so.6:malloc@@GLIBC_2.2.5",
            "libc.so.6:malloc@@GLIBC_2.2.5",
        ),
    ];
    for (input, shown) in cases {
        let spec = TargetSpec::parse(input).expect(input);
        assert_eq!(spec.to_string(), shown);
        assert_eq!(TargetSpec::parse(shown).expect(shown), spec);
    }
    assert_eq!(
        TargetSpec::parse("./a.out:f+7").expect("relative"),
        TargetSpec::InBinary {
            binary: "./a.out".to_owned(),
            location: Location::Symbol {
                name: "f".to_owned(),
                offset: 7
            },
        }
    );
    assert_eq!(
        TargetSpec::parse(":f").expect("empty binary"),
        TargetSpec::InBinary {
            binary: String::new(),
            location: Location::Symbol {
                name: "f".to_owned(),
                offset: 0
            },
        }
    );
}

/// Kills and reaps the child when dropped, so a failing assertion does not
/// leave it behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn another_process_by_pid() {
    let child = KillOnDrop(Command::new("sleep").arg("5").spawn().expect("spawn sleep"));
    let pid = child.0.id();

    // Wait until the dynamic loader has mapped libc into the child.
    let deadline = Instant::now() + Duration::from_secs(4);
    let modules = loop {
        let modules = ProcessModules::of_pid(pid).expect("child modules");
        if modules.find("libc.so.6").is_ok() {
            break modules;
        }
        assert!(
            Instant::now() < deadline,
            "libc never appeared in process {pid}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(modules.pid(), pid);

    let resolved = modules
        .resolve_str("libc.so.6:nanosleep")
        .expect("nanosleep in child");
    let libc = modules.find("libc.so.6").expect("libc");
    let mapping = libc
        .mappings
        .iter()
        .find(|m| m.contains(resolved.address))
        .unwrap_or_else(|| {
            panic!(
                "{:#x} is outside libc's mappings in {pid}",
                resolved.address
            )
        });
    assert!(
        mapping.perms.execute,
        "nanosleep is in a non-executable mapping {mapping:?}"
    );
    assert_eq!(resolved.address, libc.load_bias + resolved.file_vaddr);

    // Same libc file as ours: same file address, and the one-shot API agrees.
    let ours = resolve("libc.so.6:nanosleep").expect("nanosleep here");
    if fs::canonicalize(&ours.module_path).ok() == fs::canonicalize(&resolved.module_path).ok() {
        assert_eq!(ours.file_vaddr, resolved.file_vaddr);
    }
    assert_eq!(
        resolve_in_process(pid, "libc.so.6:nanosleep").expect("one-shot"),
        resolved
    );

    // The child's main executable is `sleep`.
    let main = modules.main_module().expect("child main module");
    assert!(
        main.path.to_string_lossy().contains("sleep"),
        "{}",
        main.path.display()
    );

    let err = modules
        .resolve_str("libuserbpf_nope:f")
        .expect_err("missing module");
    assert!(
        err.to_string().starts_with(&format!(
            "no module `libuserbpf_nope` is loaded in process {pid} (loaded: "
        )),
        "{err}"
    );
    drop(child);

    let err = ProcessModules::of_pid(u32::MAX - 1).expect_err("no such process");
    assert!(matches!(err, SymbolError::ProcessMaps { .. }), "{err}");
}

/// An `ET_EXEC` x86-64 ELF in /usr/bin, if there is one.
fn non_pie_binaries() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir("/usr/bin") else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    paths
        .into_iter()
        .filter(|path| {
            let mut header = [0u8; 20];
            let ok = fs::metadata(path).is_ok_and(|m| m.is_file())
                && fs::File::open(path)
                    .and_then(|mut f| f.read_exact(&mut header))
                    .is_ok();
            // ELF magic, ELFCLASS64, little-endian, ET_EXEC, EM_X86_64.
            ok && header[..4] == *b"\x7fELF"
                && header[4] == 2
                && header[5] == 1
                && u16::from_le_bytes([header[16], header[17]]) == 2
                && u16::from_le_bytes([header[18], header[19]]) == 62
        })
        .take(20)
        .collect()
}

#[test]
fn non_pie_executable_has_bias_zero() {
    let candidates = non_pie_binaries();
    if candidates.is_empty() {
        println!("skipped: no ET_EXEC x86-64 binary in /usr/bin");
        return;
    }
    for path in &candidates {
        let layout = ElfLayout::load(path).expect("layout");
        assert_eq!(layout.kind, ElfKind::Executable, "{}", path.display());
        assert_eq!(layout.load_bias(&[]), Some(0));
        let Ok(table) = SymbolTable::load(path) else {
            continue;
        };
        let Some(function) = table.symbols().iter().find(|s| {
            s.kind == SymbolKind::Function
                && s.size > 4
                && s.default_version
                && table
                    .lookup(&s.name)
                    .is_ok_and(|found| found.value == s.value)
        }) else {
            continue;
        };
        let location = Location::Symbol {
            name: function.name.clone(),
            offset: 4,
        };
        let file = resolve_in_file(path, &location).expect("file-level");
        assert_eq!(file.kind, ElfKind::Executable);
        assert_eq!(file.file_vaddr, function.value + 4);
        assert_eq!(layout.file_offset(file.file_vaddr), Some(file.file_offset));
        let runtime = file.at_load_bias(layout.load_bias(&[]).expect("bias"));
        assert_eq!(
            runtime.address,
            function.value + 4,
            "ET_EXEC runs at its file addresses"
        );
        println!(
            "{}: {} at {:#x} (file offset {:#x})",
            path.display(),
            function.name,
            file.file_vaddr,
            file.file_offset
        );
        return;
    }
    println!(
        "skipped the symbol check: none of {} ET_EXEC binaries has a sized function symbol",
        candidates.len()
    );
}
