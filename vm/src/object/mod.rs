//! BPF object files (`clang -target bpf` ELF, libbpf conventions).
//!
//! [`Object::parse`] reads the ELF with goblin, finds every program (each
//! function symbol in a program section, named by libbpf's section table in
//! [`section`]), links the `.text` subprograms it calls (bpf-to-bpf calls and
//! callback addresses) after it as libbpf does, and rewrites map and global
//! data references into `lddw` map-index loads (`src=5` `BPF_PSEUDO_MAP_IDX`,
//! `src=6` `BPF_PSEUDO_MAP_IDX_VALUE`) whose index is the position in
//! [`Object::maps`].
//!
//! Supported: BTF-defined maps (`.maps`), legacy `maps` definitions, global
//! data (`.data`, `.rodata*`, `.bss`) as maps, map-in-map and program-array
//! initialisers, `__kconfig` externs ([`kconfig`]), and CO-RE relocations
//! from `.BTF.ext` ([`core`]), resolved against the running kernel's BTF,
//! a file, or a built-in BTF ([`TargetBtf`], chosen with
//! [`Object::parse_with`]). CO-RE relocations are applied to the code
//! sections before linking, so every copy of a `.text` subprogram carries
//! them. `__ksym` externs and kfuncs are refused with an error that says so.

pub mod btf;
pub mod btf_ext;
pub mod core;
pub mod kconfig;
pub mod section;
pub mod target_btf;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use goblin::elf::section_header::{SHF_EXECINSTR, SHT_NOBITS, SHT_PROGBITS};
use goblin::elf::sym::STT_FUNC;
use goblin::elf::Elf;

use crate::insn::{insns_from_bytes, op, Insn};
use crate::program::{Program, ProgramError};
pub use kconfig::{KconfigError, KernelConfig};
pub use section::{AttachTarget, AttachType, ProgramKind, ProgramType, SectionError};
pub use target_btf::{TargetBtf, VMLINUX_BTF};

/// `EM_BPF`.
pub const EM_BPF: u16 = 247;
/// `R_BPF_64_64`: an `lddw` referencing a map, global or function.
pub const R_BPF_64_64: u32 = 1;
/// `R_BPF_64_ABS64`: 64-bit data relocation.
pub const R_BPF_64_ABS64: u32 = 2;
/// `R_BPF_64_ABS32`: 32-bit data relocation.
pub const R_BPF_64_ABS32: u32 = 3;
/// `R_BPF_64_NODYLD32`: relocation in `.BTF.ext`.
pub const R_BPF_64_NODYLD32: u32 = 4;
/// `R_BPF_64_32`: a `call` to a function.
pub const R_BPF_64_32: u32 = 10;

/// `BPF_MAP_TYPE_ARRAY`, the type of global data maps.
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_PROG_ARRAY`.
pub const BPF_MAP_TYPE_PROG_ARRAY: u32 = 3;
/// `BPF_MAP_TYPE_ARRAY_OF_MAPS`.
pub const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;
/// `BPF_MAP_TYPE_HASH_OF_MAPS`.
pub const BPF_MAP_TYPE_HASH_OF_MAPS: u32 = 13;
/// `BPF_F_RDONLY_PROG`: set on `.rodata` maps.
pub const BPF_F_RDONLY_PROG: u32 = 1 << 7;
/// `BPF_F_WRONLY_PROG`: programs may write values but not read them.
pub const BPF_F_WRONLY_PROG: u32 = 1 << 8;
/// `BPF_F_MMAPABLE`: set on global data maps.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Why an object cannot be loaded. Every variant names the file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// Not a parseable ELF file.
    #[error("{file}: not a valid ELF object: {message}")]
    Elf {
        /// The object.
        file: String,
        /// The parser's message.
        message: String,
    },
    /// An ELF file for another machine.
    #[error("{file}: ELF machine is {machine}, not BPF (EM_BPF = 247); compile with `clang -target bpf`")]
    WrongMachine {
        /// The object.
        file: String,
        /// `e_machine`.
        machine: u16,
    },
    /// Big-endian or 32-bit ELF.
    #[error(
        "{file}: {what} objects are not supported (expected 64-bit little-endian, `-target bpfel`)"
    )]
    WrongFormat {
        /// The object.
        file: String,
        /// What it is.
        what: &'static str,
    },
    /// A section that is not a program section.
    #[error("{file}: {source}")]
    Section {
        /// The object.
        file: String,
        /// Details.
        source: SectionError,
    },
    /// A section or symbol whose contents are inconsistent.
    #[error("{file}: section `{section}`: {message}")]
    Malformed {
        /// The object.
        file: String,
        /// The section.
        section: String,
        /// What is wrong.
        message: String,
    },
    /// A relocation that cannot be applied.
    #[error("{file}: program `{program}`: relocation at pc {pc}: {message}")]
    Relocation {
        /// The object.
        file: String,
        /// The program.
        program: String,
        /// pc within the program's section.
        pc: usize,
        /// What is wrong, naming the symbol.
        message: String,
    },
    /// A feature of the object not supported yet.
    #[error("{file}: {what} is not supported yet")]
    Unsupported {
        /// The object.
        file: String,
        /// The feature.
        what: String,
    },
    /// The object uses something only the kernel has (a kfunc user space
    /// does not run, a `__ksym` extern).
    #[error("{file}: {what}")]
    KernelOnly {
        /// The object.
        file: String,
        /// What, naming the symbol and the program.
        what: String,
    },
    /// The linked program is not valid bytecode.
    #[error("{file}: {source}")]
    Program {
        /// The object.
        file: String,
        /// Details.
        source: ProgramError,
    },
    /// A CO-RE relocation that cannot be applied (libbpf refuses the same):
    /// malformed, ambiguous, or whose instruction does not hold the value
    /// the local BTF gives.
    #[error("{file}: section `{section}`: CO-RE relocation #{index} at instruction {insn} ({what}): {message}")]
    CoreRelocation {
        /// The object.
        file: String,
        /// The code section.
        section: String,
        /// Index of the relocation among the section's.
        index: usize,
        /// Instruction index in the section.
        insn: usize,
        /// The relocation: kind, type and field.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The target BTF for CO-RE relocations cannot be loaded.
    #[error("{file}: target BTF for CO-RE relocations: {message}")]
    TargetBtf {
        /// The object.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// `--prog NAME` does not exist.
    #[error("{file}: no program named `{name}` (programs: {available})")]
    NoSuchProgram {
        /// The object.
        file: String,
        /// The requested name.
        name: String,
        /// The programs there are.
        available: String,
    },
}

/// Where a map definition comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapOrigin {
    /// `SEC(".maps")`, described in BTF.
    Btf,
    /// `SEC("maps")` with `struct bpf_map_def`.
    Legacy,
    /// A global data section (`.data`, `.rodata*`, `.bss`), as an array map
    /// with one value.
    GlobalData {
        /// The section.
        section: String,
    },
}

/// A map the object defines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDef {
    /// Map name (the symbol, or the section for global data).
    pub name: String,
    /// `enum bpf_map_type`.
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Maximum entries.
    pub max_entries: u32,
    /// `map_flags`.
    pub flags: u32,
    /// `map_extra` (bloom filters: the number of hash functions).
    pub map_extra: u64,
    /// Where it is defined.
    pub origin: MapOrigin,
    /// Initial value (global data; zeros for `.bss`).
    pub initial: Option<Vec<u8>>,
    /// Global variables in a global data map: name, offset, size (from
    /// BTF).
    pub vars: Vec<GlobalVar>,
    /// Slots initialised in the object (`__array(values, ...)`): the slot
    /// index and the name of a program (program arrays) or of a map
    /// (array and hash of maps).
    pub initial_slots: Vec<(u32, String)>,
    /// Byte offset of the `struct bpf_spin_lock` in each value, when the
    /// value's BTF type has one.
    pub spin_lock: Option<u32>,
    /// Byte offset of the `struct bpf_timer` in each value, when the
    /// value's BTF type has one.
    pub timer: Option<u32>,
    /// Maps of maps: the definition every inner map matches (type, key
    /// and value sizes; entries for arrays), from `__array(values,
    /// struct { ... })`, named `OUTER.inner` as libbpf names its template.
    pub inner: Option<Box<MapDef>>,
}

/// A global variable of a global data section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalVar {
    /// The variable's name.
    pub name: String,
    /// Byte offset in the section.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// A program of the object, linked: its instructions followed by the
/// subprograms it uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjProgram {
    /// The function name.
    pub name: String,
    /// What the section name says.
    pub kind: ProgramKind,
    /// Linked instructions.
    pub insns: Vec<Insn>,
    /// Instructions of the program itself (the rest are subprograms).
    pub own_len: usize,
    /// Subprograms appended: name and start pc.
    pub subprograms: Vec<(String, usize)>,
    /// Instructions poisoned because their CO-RE relocation could not be
    /// resolved (they fault with `PoisonedCoreRelocation` if executed).
    pub core_failures: Vec<CoreFailure>,
}

/// A CO-RE relocation that found no match in the target BTF and poisoned
/// its instruction (`call 0xbad2310`), as libbpf does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreFailure {
    /// pc of the poisoned instruction in the linked program.
    pub pc: usize,
    /// The code section the relocation belongs to.
    pub section: String,
    /// Index of the relocation among the section's.
    pub index: usize,
    /// The relocation: kind, type and field.
    pub what: String,
    /// The target BTF (`/sys/kernel/btf/vmlinux`, a path, built-in).
    pub target: String,
    /// A reason beyond "not found in the target", if any.
    pub why: Option<String>,
}

impl std::fmt::Display for CoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CO-RE relocation #{} of section `{}` at pc {} ({}) could not be resolved against {}",
            self.index, self.section, self.pc, self.what, self.target
        )?;
        if let Some(why) = &self.why {
            write!(f, ": {why}")?;
        }
        Ok(())
    }
}

impl ObjProgram {
    /// The program as validated bytecode.
    pub fn to_program(&self) -> Result<Program, ProgramError> {
        Program::new(self.name.clone(), self.insns.clone())
    }

    /// The failed CO-RE relocation whose poisoned instruction is at `pc`,
    /// to explain a `PoisonedCoreRelocation` fault.
    pub fn core_failure_at(&self, pc: usize) -> Option<&CoreFailure> {
        self.core_failures.iter().find(|f| f.pc == pc)
    }
}

/// How [`Object::parse_with`] resolves what depends on the machine.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions<'a> {
    /// Configuration for `__kconfig` externs; `None`: the running kernel's.
    pub kconfig: Option<&'a KernelConfig>,
    /// BTF for CO-RE relocations (default: `/sys/kernel/btf/vmlinux`, or
    /// the built-in BTF when the kernel has none). Loaded only when the
    /// object has CO-RE relocations.
    pub target_btf: TargetBtf,
}

/// A parsed, linked BPF object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// The file name, for messages.
    pub file: String,
    /// Programs in section order.
    pub programs: Vec<ObjProgram>,
    /// Maps, indexed by the `imm` of the rewritten `lddw`s.
    pub maps: Vec<MapDef>,
    /// The `license` section.
    pub license: Option<String>,
    /// The functions the object's BTF describes (`BTF_KIND_FUNC`), by
    /// name (empty without BTF).
    pub functions: BTreeMap<String, FuncSig>,
}

/// What a function's BTF prototype says it returns; the kernel allows
/// `BPF_LD_ABS`/`BPF_LD_IND` and tail calls only in functions returning a
/// scalar (`check_btf_func`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FuncReturn {
    /// `void`.
    Void,
    /// An integer of at most 8 bytes or an enum.
    Scalar,
    /// Anything else (a pointer, a structure).
    Other,
}

/// A function as the object's BTF describes it: what the kernel reads of
/// it in `func_info` (`check_btf_func`, `btf_prepare_func_args`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuncSig {
    /// What it returns.
    pub ret: FuncReturn,
    /// `BTF_FUNC_GLOBAL` linkage (a non-static C function) and default
    /// visibility (libbpf loads `__hidden` functions as static): the
    /// kernel verifies it once, on its own, for any arguments its
    /// prototype allows, and checks each call's arguments against the
    /// prototype.
    pub global: bool,
    /// Its parameters, in order.
    pub params: Vec<FuncParam>,
}

/// A function parameter, as the kernel types the arguments of a global
/// function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuncParam {
    /// Its name (may be empty).
    pub name: String,
    /// Its type, modifiers and typedefs skipped.
    pub ty: ParamType,
    /// Its `arg:` declaration tags without the prefix (`__arg_ctx`:
    /// `ctx`, `__arg_nonnull`: `nonnull`, ...).
    pub tags: Vec<String>,
}

/// The type of a [`FuncParam`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamType {
    /// An integer or an enum.
    Scalar,
    /// A pointer.
    Pointer {
        /// The pointee's kind and name as the kernel prints them
        /// (`btf_type_str`: `STRUCT foo`, `INT int`, `UNKNOWN ` for `void`).
        target: String,
        /// The typedefs on the way to the pointee, outermost first.
        typedefs: Vec<String>,
        /// The name of the structure or union it points to (a context
        /// type is recognised by it or by a typedef).
        record: Option<String>,
        /// The pointee's size (`btf_resolve_size`), if it has one.
        size: Option<u32>,
    },
    /// Anything else (a structure passed by value, a float): its kind and
    /// name as the kernel prints them.
    Other(String),
}

/// A function symbol inside a code section.
#[derive(Clone, Debug)]
struct Func {
    name: String,
    /// First instruction index within the section.
    start: usize,
    /// One past the last.
    end: usize,
}

#[derive(Clone, Debug)]
struct CodeSection {
    name: String,
    insns: Vec<Insn>,
    funcs: Vec<Func>,
    /// Relocations by instruction index: (symbol index, type).
    relocs: BTreeMap<usize, (usize, u32)>,
    /// Instructions poisoned by failed CO-RE relocations, by index.
    core_poison: BTreeMap<usize, CoreFailure>,
}

#[derive(Clone, Debug)]
struct Symbol {
    name: String,
    shndx: usize,
    value: u64,
    kind: u8,
    weak: bool,
}

/// The parsed ELF, before linking.
struct Parsed {
    file: String,
    code: BTreeMap<usize, CodeSection>,
    text: Option<usize>,
    symbols: Vec<Symbol>,
    /// Section index -> map indexes by symbol offset (legacy maps) or the
    /// single global-data map.
    map_sections: BTreeMap<usize, MapSection>,
    maps: Vec<MapDef>,
    license: Option<String>,
    /// `__kconfig` externs: name -> (`.kconfig` map index, offset).
    externs: BTreeMap<String, (usize, u32)>,
    /// The functions BTF describes.
    functions: BTreeMap<String, FuncSig>,
}

enum MapSection {
    /// `.maps` or legacy `maps`: symbol offset -> map index.
    Defs(BTreeMap<u64, usize>),
    /// Global data: the map index.
    Data(usize),
}

/// The map `name` a BTF definition describes (without initial contents or
/// inner map).
fn btf_map(btf: &btf::Btf, name: &str, def: &btf::BtfMapDef) -> MapDef {
    MapDef {
        name: name.to_string(),
        map_type: def.map_type,
        key_size: def.key_size,
        // Program arrays and maps of maps hold ids (u32).
        value_size: if matches!(
            def.map_type,
            BPF_MAP_TYPE_PROG_ARRAY | BPF_MAP_TYPE_ARRAY_OF_MAPS | BPF_MAP_TYPE_HASH_OF_MAPS
        ) && def.value_size == 0
        {
            4
        } else {
            def.value_size
        },
        max_entries: def.max_entries,
        flags: def.flags,
        map_extra: def.map_extra,
        origin: MapOrigin::Btf,
        initial: None,
        vars: Vec::new(),
        initial_slots: Vec::new(),
        spin_lock: (def.value_type != 0)
            .then(|| btf.spin_lock_offset(def.value_type))
            .flatten(),
        timer: (def.value_type != 0)
            .then(|| btf.timer_offset(def.value_type))
            .flatten(),
        inner: None,
    }
}

fn is_data_section(name: &str) -> bool {
    name == ".data"
        || name == ".bss"
        || name == ".rodata"
        || name.starts_with(".rodata.")
        || name.starts_with(".data.")
}

impl Object {
    /// Parses and links `bytes`; `file` names the object in errors.
    /// `__kconfig` externs are resolved from the running kernel's
    /// configuration.
    pub fn parse(file: &str, bytes: &[u8]) -> Result<Object, ObjectError> {
        Object::parse_with(file, bytes, &LoadOptions::default())
    }

    /// [`Object::parse`] with `__kconfig` externs resolved from `config`
    /// instead of the running kernel's configuration.
    pub fn parse_with_kconfig(
        file: &str,
        bytes: &[u8],
        config: &KernelConfig,
    ) -> Result<Object, ObjectError> {
        Object::parse_with(
            file,
            bytes,
            &LoadOptions {
                kconfig: Some(config),
                ..LoadOptions::default()
            },
        )
    }

    /// [`Object::parse`] with explicit choices: the kernel configuration
    /// for `__kconfig` externs and the target BTF for CO-RE relocations.
    pub fn parse_with(
        file: &str,
        bytes: &[u8],
        options: &LoadOptions<'_>,
    ) -> Result<Object, ObjectError> {
        // goblin is not expected to panic on malformed input, but an object
        // file is untrusted: a panic must become an error.
        match catch_unwind(AssertUnwindSafe(|| {
            Object::parse_inner(file, bytes, options)
        })) {
            Ok(r) => r,
            Err(_) => Err(ObjectError::Elf {
                file: file.to_string(),
                message: "the ELF parser panicked on this input".to_string(),
            }),
        }
    }

    fn parse_inner(
        file: &str,
        bytes: &[u8],
        options: &LoadOptions<'_>,
    ) -> Result<Object, ObjectError> {
        let parsed = parse_elf(file, bytes, options)?;
        let mut programs = Vec::new();
        for (&idx, sec) in &parsed.code {
            if Some(idx) == parsed.text {
                continue;
            }
            let kind =
                ProgramKind::from_section(&sec.name).map_err(|source| ObjectError::Section {
                    file: file.to_string(),
                    source,
                })?;
            for f in &sec.funcs {
                programs.push(link(&parsed, idx, f, kind.clone())?);
            }
        }
        Ok(Object {
            file: file.to_string(),
            programs,
            maps: parsed.maps,
            license: parsed.license,
            functions: parsed.functions,
        })
    }

    /// Sets the initial value of global variable `name` (a `const volatile`
    /// in `.rodata`, or a `.data`/`.bss` variable) before the maps are
    /// created, as libbpf skeletons do (`skel->rodata->targ_pid = ...`).
    /// `value` must have the variable's size.
    pub fn set_global(&mut self, name: &str, value: &[u8]) -> Result<(), ObjectError> {
        let unsupported = |what: String| ObjectError::Unsupported {
            file: self.file.clone(),
            what,
        };
        let Some((map, var)) = self.maps.iter_mut().find_map(|m| {
            let var = m.vars.iter().find(|v| v.name == name)?.clone();
            Some((m, var))
        }) else {
            return Err(unsupported(format!(
                "setting `{name}`: no such global variable (globals need BTF, -g)"
            )));
        };
        if value.len() != var.size as usize {
            return Err(ObjectError::Malformed {
                file: self.file.clone(),
                section: map.name.clone(),
                message: format!(
                    "`{name}` is {} bytes, the value given has {}",
                    var.size,
                    value.len()
                ),
            });
        }
        let init = map
            .initial
            .get_or_insert_with(|| vec![0; map.value_size as usize]);
        let start = var.offset as usize;
        match init.get_mut(start..start + value.len()) {
            Some(dst) => {
                dst.copy_from_slice(value);
                Ok(())
            }
            None => Err(ObjectError::Malformed {
                file: self.file.clone(),
                section: map.name.clone(),
                message: format!("`{name}` lies outside its section"),
            }),
        }
    }

    /// The global variable `name`, if the object has one.
    pub fn global(&self, name: &str) -> Option<&GlobalVar> {
        self.maps
            .iter()
            .flat_map(|m| m.vars.iter())
            .find(|v| v.name == name)
    }

    /// The program called `name`.
    pub fn program(&self, name: &str) -> Result<&ObjProgram, ObjectError> {
        self.programs
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| ObjectError::NoSuchProgram {
                file: self.file.clone(),
                name: name.to_string(),
                available: self
                    .programs
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

fn parse_elf(file: &str, bytes: &[u8], options: &LoadOptions<'_>) -> Result<Parsed, ObjectError> {
    let kconfig = options.kconfig;
    let elf = Elf::parse(bytes).map_err(|e| ObjectError::Elf {
        file: file.to_string(),
        message: e.to_string(),
    })?;
    if elf.header.e_machine != EM_BPF {
        return Err(ObjectError::WrongMachine {
            file: file.to_string(),
            machine: elf.header.e_machine,
        });
    }
    if !elf.is_64 {
        return Err(ObjectError::WrongFormat {
            file: file.to_string(),
            what: "32-bit",
        });
    }
    if !elf.little_endian {
        return Err(ObjectError::WrongFormat {
            file: file.to_string(),
            what: "big-endian",
        });
    }
    let malformed = |section: &str, message: String| ObjectError::Malformed {
        file: file.to_string(),
        section: section.to_string(),
        message,
    };
    let section_name = |i: usize| -> String {
        elf.section_headers
            .get(i)
            .and_then(|sh| elf.shdr_strtab.get_at(sh.sh_name))
            .unwrap_or("")
            .to_string()
    };
    let section_data = |i: usize| -> Result<&[u8], ObjectError> {
        let sh = &elf.section_headers[i];
        if sh.sh_type == SHT_NOBITS {
            return Ok(&[]);
        }
        let start = usize::try_from(sh.sh_offset).unwrap_or(usize::MAX);
        let len = usize::try_from(sh.sh_size).unwrap_or(usize::MAX);
        start
            .checked_add(len)
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(|| {
                malformed(
                    &section_name(i),
                    format!("data [{start:#x}, +{len:#x}) lies outside the file"),
                )
            })
    };

    let symbols: Vec<Symbol> = elf
        .syms
        .iter()
        .map(|s| Symbol {
            name: elf.strtab.get_at(s.st_name).unwrap_or("").to_string(),
            shndx: s.st_shndx,
            value: s.st_value,
            kind: s.st_type(),
            weak: s.st_bind() == goblin::elf::sym::STB_WEAK,
        })
        .collect();
    let sym_sizes: Vec<u64> = elf.syms.iter().map(|s| s.st_size).collect();
    // Functions of restricted visibility (`__hidden`: STV_HIDDEN, or
    // STV_INTERNAL): libbpf marks them static in the BTF it loads, so the
    // kernel verifies them at their call sites (libbpf's usdt.bpf.h and
    // its other `__weak __hidden` helpers).
    let hidden: std::collections::BTreeSet<String> = elf
        .syms
        .iter()
        .filter(|s| s.st_type() == goblin::elf::sym::STT_FUNC && matches!(s.st_other & 3, 1 | 2))
        .filter_map(|s| elf.strtab.get_at(s.st_name).map(str::to_string))
        .collect();

    // BTF first: `.maps` needs it whatever the section order.
    let mut btf = None;
    for (i, _) in elf.section_headers.iter().enumerate() {
        if section_name(i) == ".BTF" {
            btf = Some(
                btf::Btf::parse(section_data(i)?).map_err(|e| malformed(".BTF", e.to_string()))?,
            );
        }
    }

    let mut code = BTreeMap::new();
    let mut text = None;
    // Program arrays with initialisers: (map index, start of `values`, end
    // of the definition) in `.maps`.
    let mut prog_array_values: Vec<(usize, u64, u64)> = Vec::new();
    let mut maps_section = None;
    let mut map_sections = BTreeMap::new();
    let mut maps = Vec::new();
    let mut license = None;
    for (i, sh) in elf.section_headers.iter().enumerate() {
        let name = section_name(i);
        if sh.sh_type == SHT_PROGBITS && sh.sh_flags & u64::from(SHF_EXECINSTR) != 0 {
            if sh.sh_size == 0 {
                continue;
            }
            let data = section_data(i)?;
            let insns = insns_from_bytes(data).map_err(|e| malformed(&name, e.to_string()))?;
            let mut funcs: Vec<Func> = Vec::new();
            for (si, s) in symbols.iter().enumerate() {
                if s.shndx != i || s.kind != STT_FUNC {
                    continue;
                }
                let size = sym_sizes[si];
                if !s.value.is_multiple_of(8) || !size.is_multiple_of(8) {
                    return Err(malformed(
                        &name,
                        format!("function `{}` is not aligned to instructions", s.name),
                    ));
                }
                let start = (s.value / 8) as usize;
                let end = start.saturating_add((size / 8) as usize);
                if start >= insns.len() || end > insns.len() {
                    return Err(malformed(
                        &name,
                        format!("function `{}` lies outside the section", s.name),
                    ));
                }
                funcs.push(Func {
                    name: s.name.clone(),
                    start,
                    end,
                });
            }
            funcs.sort_by_key(|f| f.start);
            // Symbols without a size extend to the next function.
            for k in 0..funcs.len() {
                if funcs[k].end <= funcs[k].start {
                    funcs[k].end = funcs.get(k + 1).map(|f| f.start).unwrap_or(insns.len());
                }
            }
            if name == ".text" {
                text = Some(i);
            } else if funcs.is_empty() {
                return Err(malformed(
                    &name,
                    "program section without a function symbol".to_string(),
                ));
            }
            code.insert(
                i,
                CodeSection {
                    name,
                    insns,
                    funcs,
                    relocs: BTreeMap::new(),
                    core_poison: BTreeMap::new(),
                },
            );
        } else if name == "license" {
            let data = section_data(i)?;
            let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
            license = Some(String::from_utf8_lossy(&data[..end]).into_owned());
        } else if name == "maps" {
            let data = section_data(i)?;
            let mut by_off = BTreeMap::new();
            for s in symbols
                .iter()
                .filter(|s| s.shndx == i && !s.name.is_empty())
            {
                let off = usize::try_from(s.value).unwrap_or(usize::MAX);
                let def = off
                    .checked_add(20)
                    .and_then(|e| data.get(off..e))
                    .ok_or_else(|| {
                        malformed(
                            &name,
                            format!("map `{}` has no complete bpf_map_def", s.name),
                        )
                    })?;
                let w = |k: usize| u32::from_le_bytes([def[k], def[k + 1], def[k + 2], def[k + 3]]);
                by_off.insert(s.value, maps.len());
                maps.push(MapDef {
                    name: s.name.clone(),
                    map_type: w(0),
                    key_size: w(4),
                    value_size: w(8),
                    max_entries: w(12),
                    flags: w(16),
                    map_extra: 0,
                    origin: MapOrigin::Legacy,
                    initial: None,
                    vars: Vec::new(),
                    initial_slots: Vec::new(),
                    spin_lock: None,
                    timer: None,
                    inner: None,
                });
            }
            map_sections.insert(i, MapSection::Defs(by_off));
        } else if name == ".maps" {
            maps_section = Some(i);
            let btf = btf.as_ref().ok_or_else(|| {
                malformed(
                    &name,
                    "BTF-defined maps need a .BTF section (compile with -g)".to_string(),
                )
            })?;
            let sec = btf
                .datasec(".maps")
                .ok_or_else(|| malformed(&name, "no `.maps` data section in BTF".to_string()))?;
            let mut by_off = BTreeMap::new();
            let mut syms: Vec<&Symbol> = symbols
                .iter()
                .filter(|s| s.shndx == i && !s.name.is_empty())
                .collect();
            syms.sort_by_key(|s| s.value);
            for s in syms {
                let entry = sec
                    .members
                    .iter()
                    .find(|m| btf.get(m.type_id).is_some_and(|t| t.name == s.name))
                    .ok_or_else(|| {
                        malformed(&name, format!("map `{}` has no BTF description", s.name))
                    })?;
                let def = btf
                    .map_def(entry.type_id)
                    .map_err(|e| malformed(&name, format!("map `{}`: {e}", s.name)))?;

                if def.has_values {
                    let end = s.value + u64::from(entry.size);
                    prog_array_values.push((
                        maps.len(),
                        s.value + u64::from(def.values_offset),
                        end,
                    ));
                }
                let is_map_of_maps = matches!(
                    def.map_type,
                    BPF_MAP_TYPE_ARRAY_OF_MAPS | BPF_MAP_TYPE_HASH_OF_MAPS
                );
                if def.inner.is_some() && !is_map_of_maps {
                    return Err(malformed(
                        &name,
                        format!(
                            "map `{}`: only maps of maps have an inner map definition (`__array(values, struct {{ ... }})`)",
                            s.name
                        ),
                    ));
                }
                by_off.insert(s.value, maps.len());
                let mut map = btf_map(btf, &s.name, &def);
                map.inner = def
                    .inner
                    .as_deref()
                    .map(|inner| Box::new(btf_map(btf, &format!("{}.inner", s.name), inner)));
                maps.push(map);
            }
            map_sections.insert(i, MapSection::Defs(by_off));
        } else if is_data_section(&name) && (sh.sh_type == SHT_PROGBITS || sh.sh_type == SHT_NOBITS)
        {
            let size = u32::try_from(sh.sh_size)
                .map_err(|_| malformed(&name, "global data section too large".to_string()))?;
            let initial = if sh.sh_type == SHT_NOBITS {
                vec![0; size as usize]
            } else {
                section_data(i)?.to_vec()
            };
            let readonly = name.starts_with(".rodata");
            map_sections.insert(i, MapSection::Data(maps.len()));
            maps.push(MapDef {
                name: name.clone(),
                map_type: BPF_MAP_TYPE_ARRAY,
                key_size: 4,
                value_size: size,
                max_entries: 1,
                flags: BPF_F_MMAPABLE | if readonly { BPF_F_RDONLY_PROG } else { 0 },
                map_extra: 0,
                origin: MapOrigin::GlobalData {
                    section: name.clone(),
                },
                initial: Some(initial),
                initial_slots: Vec::new(),
                spin_lock: None,
                timer: None,
                inner: None,
                vars: btf
                    .as_ref()
                    .and_then(|b| b.datasec(&name).map(|sec| (b, sec)))
                    .map(|(b, sec)| {
                        sec.members
                            .iter()
                            .filter_map(|m| {
                                let var = b.get(m.type_id)?;
                                Some(GlobalVar {
                                    name: var.name.clone(),
                                    offset: m.offset,
                                    size: m.size,
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
    }

    // CO-RE relocations patch the code sections before linking.
    for (i, _) in elf.section_headers.iter().enumerate() {
        if section_name(i) == ".BTF.ext" {
            let data = section_data(i)?;
            apply_core(file, data, btf.as_ref(), &mut code, &options.target_btf)?;
        }
    }

    // Relocations of code sections.
    for (reloc_idx, relocs) in &elf.shdr_relocs {
        let Some(target) = elf
            .section_headers
            .get(*reloc_idx)
            .map(|sh| sh.sh_info as usize)
        else {
            continue;
        };
        let Some(sec) = code.get_mut(&target) else {
            continue;
        };
        for r in relocs.iter() {
            if !r.r_offset.is_multiple_of(8) {
                return Err(malformed(
                    &sec.name,
                    format!(
                        "relocation at offset {:#x} is not on an instruction",
                        r.r_offset
                    ),
                ));
            }
            let pc = (r.r_offset / 8) as usize;
            if pc >= sec.insns.len() || r.r_sym >= symbols.len() {
                return Err(malformed(
                    &sec.name,
                    format!("relocation at offset {:#x} is out of range", r.r_offset),
                ));
            }
            sec.relocs.insert(pc, (r.r_sym, r.r_type));
        }
    }
    // Program array initialisers: each relocation in `values` names a
    // program for slot (offset - start) / 8.
    if let Some(ms) = maps_section {
        for (reloc_idx, relocs) in &elf.shdr_relocs {
            if elf
                .section_headers
                .get(*reloc_idx)
                .map(|sh| sh.sh_info as usize)
                != Some(ms)
            {
                continue;
            }
            for r in relocs.iter() {
                let Some(&(m, start, _)) = prog_array_values
                    .iter()
                    .find(|(_, start, end)| r.r_offset >= *start && r.r_offset < *end)
                else {
                    continue;
                };
                let slot = u32::try_from((r.r_offset - start) / 8).unwrap_or(u32::MAX);
                let Some(sym) = symbols.get(r.r_sym) else {
                    return Err(malformed(
                        ".maps",
                        format!("relocation at {:#x} names no symbol", r.r_offset),
                    ));
                };
                maps[m].initial_slots.push((slot, sym.name.clone()));
            }
        }
    }
    // `__kconfig` externs: a read-only `.kconfig` map filled from the
    // kernel configuration.
    let mut externs = BTreeMap::new();
    if let Some(b) = &btf {
        let (kexterns, size) = kconfig::layout(b, |name| {
            symbols
                .iter()
                .any(|s| s.name == name && s.shndx == 0 && s.weak)
        })
        .map_err(|m| malformed(".kconfig", m))?;
        if !kexterns.is_empty() {
            let system;
            let config = match kconfig {
                Some(c) => c,
                None => {
                    system = KernelConfig::system().map_err(|e| ObjectError::Unsupported {
                        file: file.to_string(),
                        what: format!(
                            "extern `{}` (__kconfig) without a kernel configuration ({e})",
                            kexterns[0].name
                        ),
                    })?;
                    &system
                }
            };
            let mut initial = vec![0u8; size as usize];
            kconfig::fill(&kexterns, config, &mut initial).map_err(|m| malformed(".kconfig", m))?;
            for e in &kexterns {
                externs.insert(e.name.clone(), (maps.len(), e.offset));
            }
            maps.push(MapDef {
                name: ".kconfig".to_string(),
                map_type: BPF_MAP_TYPE_ARRAY,
                key_size: 4,
                value_size: size,
                max_entries: 1,
                flags: BPF_F_MMAPABLE | BPF_F_RDONLY_PROG,
                map_extra: 0,
                origin: MapOrigin::GlobalData {
                    section: ".kconfig".to_string(),
                },
                initial: Some(initial),
                initial_slots: Vec::new(),
                spin_lock: None,
                timer: None,
                inner: None,
                vars: kexterns
                    .iter()
                    .map(|e| GlobalVar {
                        name: e.name.clone(),
                        offset: e.offset,
                        size: e.size,
                    })
                    .collect(),
            });
        }
    }
    Ok(Parsed {
        file: file.to_string(),
        code,
        text,
        symbols,
        map_sections,
        maps,
        license,
        externs,
        functions: btf
            .as_ref()
            .map(|b| {
                let mut sigs = function_sigs(b);
                for (name, sig) in sigs.iter_mut() {
                    sig.global &= !hidden.contains(name);
                }
                sigs
            })
            .unwrap_or_default(),
    })
}

/// Each function (`FUNC`) of `btf`: what it returns, its linkage, its
/// parameters and their `arg:` tags.
fn function_sigs(btf: &btf::Btf) -> BTreeMap<String, FuncSig> {
    // `arg:` declaration tags: (function type id, parameter) -> tags.
    let mut tags: BTreeMap<(u32, u32), Vec<String>> = BTreeMap::new();
    for id in 1..=btf.len() {
        if let Some(t) = btf.get(id).filter(|t| t.kind == btf::Kind::DeclTag) {
            if let Some(tag) = t.name.strip_prefix("arg:") {
                tags.entry((t.size_or_type, t.extra))
                    .or_default()
                    .push(tag.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    for id in 1..=btf.len() {
        let Some(f) = btf.get(id).filter(|t| t.kind == btf::Kind::Func) else {
            continue;
        };
        let Some(proto) = btf
            .get(f.size_or_type)
            .filter(|t| t.kind == btf::Kind::FuncProto)
        else {
            continue;
        };
        let ret = if proto.size_or_type == 0 {
            FuncReturn::Void
        } else {
            match btf.resolve(proto.size_or_type) {
                Some((_, t))
                    if (t.kind == btf::Kind::Int && t.size_or_type <= 8)
                        || matches!(t.kind, btf::Kind::Enum | btf::Kind::Enum64) =>
                {
                    FuncReturn::Scalar
                }
                _ => FuncReturn::Other,
            }
        };
        let params = proto
            .params
            .iter()
            .zip(0u32..)
            .map(|(p, i)| FuncParam {
                name: p.name.clone(),
                ty: param_type(btf, p.type_id),
                tags: tags.get(&(id, i)).cloned().unwrap_or_default(),
            })
            .collect();
        // `BTF_FUNC_GLOBAL` is 1 (the linkage is the `vlen` of a FUNC).
        let global = f.vlen == 1;
        out.insert(
            f.name,
            FuncSig {
                ret,
                global,
                params,
            },
        );
    }
    out
}

/// `btf_type_str` and the name: how the kernel prints a type in its
/// messages about function arguments.
fn kernel_type_str(t: Option<&btf::Type>) -> String {
    match t {
        None => "UNKNOWN ".to_string(),
        Some(t) => format!("{} {}", t.kind.c_name().to_uppercase(), t.name),
    }
}

/// The type of a parameter of type `id`, as `btf_prepare_func_args`
/// reads it.
fn param_type(btf: &btf::Btf, id: u32) -> ParamType {
    let Some((_, t)) = btf.resolve(id) else {
        return ParamType::Other(kernel_type_str(None));
    };
    match t.kind {
        btf::Kind::Int | btf::Kind::Enum | btf::Kind::Enum64 => ParamType::Scalar,
        btf::Kind::Ptr => {
            // The names the pointee goes by: each typedef on the way, then
            // the structure's own.
            let mut typedefs = Vec::new();
            let mut record = None;
            let mut at = t.size_or_type;
            let mut pointee = None;
            for _ in 0..32 {
                let Some(p) = btf.get(at).filter(|_| at != 0) else {
                    break;
                };
                match p.kind {
                    btf::Kind::Typedef => {
                        typedefs.push(p.name.clone());
                        at = p.size_or_type;
                    }
                    btf::Kind::Volatile
                    | btf::Kind::Const
                    | btf::Kind::Restrict
                    | btf::Kind::TypeTag => at = p.size_or_type,
                    _ => {
                        if p.is_composite() && !p.name.is_empty() {
                            record = Some(p.name.clone());
                        }
                        pointee = Some(p);
                        break;
                    }
                }
            }
            let size = match &pointee {
                Some(p) if !matches!(p.kind, btf::Kind::Fwd | btf::Kind::FuncProto) => {
                    btf.size_of(at)
                }
                _ => None,
            };
            ParamType::Pointer {
                target: kernel_type_str(pointee.as_ref()),
                typedefs,
                record,
                size,
            }
        }
        _ => ParamType::Other(kernel_type_str(Some(&t))),
    }
}

/// A code segment placed in a linked program.
struct Placed {
    section: usize,
    func_start: usize,
    func_end: usize,
    base: usize,
}

/// Links program `f` of section `sec_idx`: copies it, appends the `.text`
/// functions it reaches, fixes calls and function addresses, and rewrites map
/// and global data loads.
fn link(
    parsed: &Parsed,
    sec_idx: usize,
    f: &Func,
    kind: ProgramKind,
) -> Result<ObjProgram, ObjectError> {
    let file = &parsed.file;
    let err = |pc: usize, message: String| ObjectError::Relocation {
        file: file.clone(),
        program: f.name.clone(),
        pc,
        message,
    };
    let sec = &parsed.code[&sec_idx];
    let mut insns: Vec<Insn> = sec.insns[f.start..f.end].to_vec();
    let mut placed = vec![Placed {
        section: sec_idx,
        func_start: f.start,
        func_end: f.end,
        base: 0,
    }];
    let mut subprograms = Vec::new();
    let mut next = 0;
    while next < placed.len() {
        let (s_idx, fs, fe, base) = {
            let p = &placed[next];
            (p.section, p.func_start, p.func_end, p.base)
        };
        next += 1;
        let s = &parsed.code[&s_idx];
        let mut i = fs;
        while i < fe {
            let pos = base + (i - fs);
            let insn = s.insns[i];
            let reloc = s.relocs.get(&i).copied();
            let is_lddw = insn.code == op::LDDW;
            let is_call = insn.code == op::CALL && insn.src == op::CALL_LOCAL;
            if let Some((sym_idx, rtype)) = reloc {
                let sym = &parsed.symbols[sym_idx];
                // clang marks calls to extern functions (kfuncs) like local
                // calls; the undefined symbol tells them apart.
                let is_call = is_call && sym.shndx != 0;
                if is_call {
                    if rtype != R_BPF_64_32 {
                        return Err(err(
                            i,
                            format!("call to `{}` has relocation type {rtype}", sym.name),
                        ));
                    }
                    let target = (sym.value / 8) as i64 + i64::from(insn.imm) + 1;
                    let at = place(
                        parsed,
                        &mut placed,
                        &mut insns,
                        &mut subprograms,
                        sym.shndx,
                        target,
                    )
                    .map_err(|m| err(i, format!("call to `{}`: {m}", sym.name)))?;
                    insns[pos].imm = rel(at, pos).map_err(|m| err(i, m))?;
                } else if is_lddw {
                    if rtype != R_BPF_64_64 {
                        return Err(err(
                            i,
                            format!("lddw of `{}` has relocation type {rtype}", sym.name),
                        ));
                    }
                    if i + 1 >= fe {
                        return Err(err(i, "lddw at the end of the function".to_string()));
                    }
                    if parsed.code.contains_key(&sym.shndx) {
                        // A function address (callback for bpf_loop & co).
                        let target = (sym.value as i64 + i64::from(insn.imm)) / 8;
                        let at = place(
                            parsed,
                            &mut placed,
                            &mut insns,
                            &mut subprograms,
                            sym.shndx,
                            target,
                        )
                        .map_err(|m| err(i, format!("address of `{}`: {m}", sym.name)))?;
                        insns[pos].src = op::PSEUDO_FUNC;
                        insns[pos].imm = rel(at, pos).map_err(|m| err(i, m))?;
                        insns[pos + 1].imm = 0;
                    } else {
                        match parsed.map_sections.get(&sym.shndx) {
                            Some(MapSection::Defs(by_off)) => {
                                let Some(&m) = by_off.get(&sym.value) else {
                                    return Err(err(
                                        i,
                                        format!("`{}` is not a map definition", sym.name),
                                    ));
                                };
                                insns[pos].src = op::PSEUDO_MAP_IDX;
                                insns[pos].imm = m as i32;
                            }
                            Some(MapSection::Data(m)) => {
                                let off = sym.value as i64 + i64::from(insn.imm);
                                insns[pos].src = op::PSEUDO_MAP_IDX_VALUE;
                                insns[pos].imm = *m as i32;
                                insns[pos + 1].imm = off as i32;
                            }
                            None if sym.shndx == 0 => {
                                let Some(&(m, off)) = parsed.externs.get(&sym.name) else {
                                    return Err(ObjectError::KernelOnly {
                                        file: file.clone(),
                                        what: format!(
                                            "extern `{}` (used by program `{}`): a `__ksym` \
                                             extern names a kernel symbol, which a user-space \
                                             program cannot reach (or the extern has no BTF)",
                                            sym.name, f.name
                                        ),
                                    });
                                };
                                insns[pos].src = op::PSEUDO_MAP_IDX_VALUE;
                                insns[pos].imm = m as i32;
                                insns[pos + 1].imm = off as i32 + insn.imm;
                            }
                            None => {
                                return Err(err(
                                    i,
                                    format!(
                                        "`{}` is neither a map, global data nor a function",
                                        sym.name
                                    ),
                                ))
                            }
                        }
                    }
                } else if insn.code == op::CALL
                    && ((rtype == R_BPF_64_32 && insn.src == op::CALL_KFUNC) || sym.shndx == 0)
                {
                    let Some(id) = crate::kfunc::id_of(&sym.name) else {
                        return Err(ObjectError::KernelOnly {
                            file: file.clone(),
                            what: format!(
                                "kfunc `{}` (used by program `{}`) does not exist in user space; \
                                 the kfuncs user space runs are {}",
                                sym.name,
                                f.name,
                                crate::kfunc::KFUNCS
                                    .iter()
                                    .map(|(n, _)| *n)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        });
                    };
                    insns[pos].src = op::CALL_KFUNC;
                    insns[pos].imm = id;
                    insns[pos].off = 0;
                } else {
                    return Err(err(
                        i,
                        format!(
                            "relocation of type {rtype} against `{}` on {}",
                            sym.name, insn
                        ),
                    ));
                }
            } else if is_call {
                // A call inside the same section without relocation.
                let target = i as i64 + i64::from(insn.imm) + 1;
                let at = place(
                    parsed,
                    &mut placed,
                    &mut insns,
                    &mut subprograms,
                    s_idx,
                    target,
                )
                .map_err(|m| err(i, format!("local call: {m}")))?;
                insns[pos].imm = rel(at, pos).map_err(|m| err(i, m))?;
            }
            i += if is_lddw { 2 } else { 1 };
        }
    }
    let own_len = f.end - f.start;
    let mut core_failures = Vec::new();
    for p in &placed {
        let s = &parsed.code[&p.section];
        for (&i, failure) in s.core_poison.range(p.func_start..p.func_end) {
            core_failures.push(CoreFailure {
                pc: p.base + (i - p.func_start),
                ..failure.clone()
            });
        }
    }
    Ok(ObjProgram {
        name: f.name.clone(),
        kind,
        insns,
        own_len,
        subprograms,
        core_failures,
    })
}

fn rel(at: usize, pos: usize) -> Result<i32, String> {
    i32::try_from(at as i64 - pos as i64 - 1).map_err(|_| "call offset overflows".to_string())
}

/// The linked position of instruction `target` of section `s_idx`, placing
/// the function containing it if needed.
fn place(
    parsed: &Parsed,
    placed: &mut Vec<Placed>,
    insns: &mut Vec<Insn>,
    subprograms: &mut Vec<(String, usize)>,
    s_idx: usize,
    target: i64,
) -> Result<usize, String> {
    let Some(sec) = parsed.code.get(&s_idx) else {
        return Err("target is not in a code section".to_string());
    };
    let t = usize::try_from(target)
        .ok()
        .filter(|&t| t < sec.insns.len())
        .ok_or_else(|| {
            format!(
                "target instruction {target} is outside section `{}`",
                sec.name
            )
        })?;
    if let Some(p) = placed
        .iter()
        .find(|p| p.section == s_idx && p.func_start <= t && t < p.func_end)
    {
        return Ok(p.base + (t - p.func_start));
    }
    let Some(func) = sec.funcs.iter().find(|f| f.start <= t && t < f.end) else {
        return Err(format!(
            "target instruction {t} of `{}` is in no function",
            sec.name
        ));
    };
    let base = insns.len();
    insns.extend_from_slice(&sec.insns[func.start..func.end]);
    subprograms.push((func.name.clone(), base));
    placed.push(Placed {
        section: s_idx,
        func_start: func.start,
        func_end: func.end,
        base,
    });
    Ok(base + (t - func.start))
}

/// Applies the CO-RE relocations of `.BTF.ext` (`data`) to the code
/// sections, loading the target BTF only if there are any.
fn apply_core(
    file: &str,
    data: &[u8],
    btf: Option<&btf::Btf>,
    code: &mut BTreeMap<usize, CodeSection>,
    target: &TargetBtf,
) -> Result<(), ObjectError> {
    let malformed = |message: String| ObjectError::Malformed {
        file: file.to_string(),
        section: ".BTF.ext".to_string(),
        message,
    };
    let Some(local) = btf else {
        return Err(malformed("a .BTF.ext section without .BTF".to_string()));
    };
    let sections = btf_ext::parse_core_relos(data, local).map_err(|e| malformed(e.to_string()))?;
    if sections.is_empty() {
        return Ok(());
    }
    let loaded = target.load().map_err(|message| ObjectError::TargetBtf {
        file: file.to_string(),
        message,
    })?;
    let mut resolver = core::Resolver::new(local, &loaded.btf);
    for rs in &sections {
        let Some(sec) = code.values_mut().find(|s| s.name == rs.section) else {
            return Err(malformed(format!(
                "CO-RE relocations for section `{}`, which is not a code section",
                rs.section
            )));
        };
        for (index, relo) in rs.relos.iter().enumerate() {
            let insn = (relo.insn_off / 8) as usize;
            match resolver.apply(relo, &mut sec.insns) {
                Ok(None) => {}
                Ok(Some(poisoned)) => {
                    let failure = CoreFailure {
                        pc: insn,
                        section: rs.section.clone(),
                        index,
                        what: resolver.describe(relo),
                        target: loaded.origin.clone(),
                        why: poisoned.why,
                    };
                    sec.core_poison.insert(insn, failure.clone());
                    if sec.insns.get(insn + 1) == Some(&core::poison_insn()) {
                        sec.core_poison.insert(insn + 1, failure);
                    }
                }
                Err(message) => {
                    return Err(ObjectError::CoreRelocation {
                        file: file.to_string(),
                        section: rs.section.clone(),
                        index,
                        insn,
                        what: resolver.describe(relo),
                        message,
                    })
                }
            }
        }
    }
    Ok(())
}
