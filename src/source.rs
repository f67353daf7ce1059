//! Reading programs from files: raw bytecode (`.bin`, any other extension),
//! assembler text (`.s`, `.asm`), and BPF ELF objects (`.bpf.o`).

use std::path::{Path, PathBuf};

use userbpf_vm::asm::{assemble, AsmError};
use userbpf_vm::object::{LoadOptions, Object, ObjectError};
use userbpf_vm::program::{Program, ProgramError};

/// Why a program file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Assembler text that does not assemble.
    #[error("{}: {source}", path.display())]
    Assemble {
        /// The file.
        path: PathBuf,
        /// Details with the line.
        source: AsmError,
    },
    /// Bytecode that is not a valid program.
    #[error("{}: {source}", path.display())]
    Program {
        /// The file.
        path: PathBuf,
        /// Details with the pc.
        source: ProgramError,
    },
    /// An ELF object that does not load.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// An object with several programs and no `--prog`.
    #[error("{}: the object has several programs ({available}); choose one with --prog", path.display())]
    ChooseProgram {
        /// The file.
        path: PathBuf,
        /// The program names.
        available: String,
    },
    /// `--prog` given for a file that holds a single unnamed program.
    #[error("{}: --prog {requested} selects a program inside an ELF object, but this file holds one raw program (named `{name}` after the file)", path.display())]
    ProgNotInRawFile {
        /// The file.
        path: PathBuf,
        /// The requested name.
        requested: String,
        /// The name the raw program gets.
        name: String,
    },
}

/// How a file's content is interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// Little-endian instruction slots.
    Raw,
    /// Assembler text (either syntax of [`userbpf_vm::asm`]).
    Asm,
    /// An ELF object.
    Elf,
}

/// Guesses the kind of a file from its name and first bytes.
pub fn source_kind(path: &Path, bytes: &[u8]) -> SourceKind {
    if bytes.starts_with(b"\x7fELF") {
        return SourceKind::Elf;
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("s" | "S" | "asm") => SourceKind::Asm,
        _ => SourceKind::Raw,
    }
}

/// The name a raw or assembler program gets: its file stem.
pub fn program_name(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("program")
        .to_string()
}

/// Reads the program in `path`. `prog` selects a program in an ELF object.
pub fn load_program(path: &Path, prog: Option<&str>) -> Result<Program, SourceError> {
    let bytes = read(path)?;
    let kind = source_kind(path, &bytes);
    if kind == SourceKind::Elf {
        let object = Object::parse(&path.display().to_string(), &bytes)?;
        return select_program(path, &object, prog)?
            .to_program()
            .map_err(|source| SourceError::Program {
                path: path.to_path_buf(),
                source,
            });
    }
    let name = program_name(path);
    if let Some(requested) = prog {
        if requested != name {
            return Err(SourceError::ProgNotInRawFile {
                path: path.to_path_buf(),
                requested: requested.to_string(),
                name,
            });
        }
    }
    let insns = match kind {
        SourceKind::Asm => {
            let text = String::from_utf8_lossy(&bytes);
            assemble(&text).map_err(|source| SourceError::Assemble {
                path: path.to_path_buf(),
                source,
            })?
        }
        _ => userbpf_vm::insn::insns_from_bytes(&bytes).map_err(|e| SourceError::Program {
            path: path.to_path_buf(),
            source: ProgramError::Length {
                program: name.clone(),
                source: e,
            },
        })?,
    };
    Program::new(name, insns).map_err(|source| SourceError::Program {
        path: path.to_path_buf(),
        source,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, SourceError> {
    std::fs::read(path).map_err(|source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the BPF object in `path`.
pub fn load_object(path: &Path) -> Result<Object, SourceError> {
    load_object_with(path, &LoadOptions::default())
}

/// Reads the BPF object in `path`, resolving its `__kconfig` externs from
/// `config` instead of the running kernel's configuration.
pub fn load_object_with_kconfig(
    path: &Path,
    config: &userbpf_vm::object::KernelConfig,
) -> Result<Object, SourceError> {
    load_object_with(
        path,
        &LoadOptions {
            kconfig: Some(config),
            ..LoadOptions::default()
        },
    )
}

/// Reads the BPF object in `path` with explicit load options (kernel
/// configuration, target BTF for CO-RE relocations).
pub fn load_object_with(path: &Path, options: &LoadOptions<'_>) -> Result<Object, SourceError> {
    let bytes = read(path)?;
    Ok(Object::parse_with(
        &path.display().to_string(),
        &bytes,
        options,
    )?)
}

/// The program `prog` of `object`, or its only program.
pub fn select_program<'o>(
    path: &Path,
    object: &'o Object,
    prog: Option<&str>,
) -> Result<&'o userbpf_vm::object::ObjProgram, SourceError> {
    match (prog, object.programs.as_slice()) {
        (Some(name), _) => Ok(object.program(name)?),
        (None, [only]) => Ok(only),
        (None, all) => Err(SourceError::ChooseProgram {
            path: path.to_path_buf(),
            available: all
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}
