//! The bpf_conformance suite: its `.data` file format, its conventions
//! (`r1` = memory, `r2` = its length, helper 5 = `unwind`), and a runner that
//! classifies each case.
//!
//! The data format: sections introduced by lines containing `--` (`-- asm`,
//! `-- raw`, `-- mem`, `-- result`, `-- error`; `-- no register offset` and
//! `-- c` sections are ignored), `#` comments to the end of the line.

use std::fmt;

use crate::asm::{assemble, AsmError};
use crate::helpers::{HelperProto, Helpers};
use crate::insn::Insn;
use crate::interp::Vm;
use crate::program::Program;

/// The conformance suite's `unwind` helper id.
pub const UNWIND_HELPER_ID: i32 = 5;

/// A parsed `.data` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestCase {
    /// The `-- asm` section, if any.
    pub asm: Option<String>,
    /// The `-- raw` section, if any, as slots.
    pub raw: Option<Vec<Insn>>,
    /// The `-- mem` bytes (empty without a section).
    pub mem: Vec<u8>,
    /// The expected `r0`.
    pub result: Option<u64>,
    /// The expected error message (`Some("")` for a bare `-- error`).
    pub error: Option<String>,
}

/// A `.data` file that cannot be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct DataError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    None,
    Asm,
    Raw,
    Mem,
    Result,
    Error,
    Ignored,
}

fn parse_u64(tok: &str) -> Option<u64> {
    match tok.strip_prefix("0x").or_else(|| tok.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => tok.parse().ok(),
    }
}

impl TestCase {
    /// Parses the text of a `.data` file.
    pub fn parse(text: &str) -> Result<TestCase, DataError> {
        let mut case = TestCase::default();
        let mut section = Section::None;
        let mut asm = String::new();
        let mut raw_tokens: Vec<(usize, String)> = Vec::new();
        let mut saw_raw = false;
        for (n, line) in text.lines().enumerate() {
            let line_no = n + 1;
            let line = line.trim_end_matches('\r');
            let line = match line.find('#') {
                Some(i) => &line[..i],
                None => line,
            };
            if line.contains("--") {
                section = if line.contains("asm") {
                    case.asm.get_or_insert_with(String::new);
                    Section::Asm
                } else if line.contains("result") {
                    Section::Result
                } else if line.contains("mem") {
                    Section::Mem
                } else if line.contains("raw") {
                    saw_raw = true;
                    Section::Raw
                } else if line.contains("no register offset") || line.contains(" c") {
                    Section::Ignored
                } else if line.contains("error") {
                    case.error.get_or_insert_with(String::new);
                    Section::Error
                } else {
                    return Err(DataError {
                        line: line_no,
                        message: format!("unknown directive `{}`", line.trim()),
                    });
                };
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            match section {
                Section::Asm => {
                    asm.push_str(line);
                    asm.push('\n');
                }
                Section::Raw => {
                    raw_tokens.extend(line.split_whitespace().map(|t| (line_no, t.to_string())))
                }
                Section::Mem => {
                    for tok in line.split_whitespace() {
                        let b = u8::from_str_radix(tok, 16).map_err(|_| DataError {
                            line: line_no,
                            message: format!("invalid memory byte `{tok}`"),
                        })?;
                        case.mem.push(b);
                    }
                }
                Section::Result => {
                    let tok = line.trim();
                    case.result = Some(parse_u64(tok).ok_or_else(|| DataError {
                        line: line_no,
                        message: format!("invalid result `{tok}`"),
                    })?);
                }
                Section::Error => case.error = Some(line.trim().to_string()),
                Section::None | Section::Ignored => {}
            }
        }
        if case.asm.is_some() {
            case.asm = Some(asm);
        }
        if saw_raw {
            case.raw = Some(parse_raw(&raw_tokens)?);
        }
        Ok(case)
    }

    /// The program: the `-- raw` slots if present, else the assembled
    /// `-- asm` section.
    pub fn program(&self) -> Result<Vec<Insn>, CaseFailure> {
        let insns = match (&self.raw, &self.asm) {
            (Some(raw), _) => raw.clone(),
            (None, Some(asm)) => assemble(asm).map_err(CaseFailure::Assemble)?,
            (None, None) => return Err(CaseFailure::NoProgram),
        };
        if insns.is_empty() {
            return Err(CaseFailure::NoProgram);
        }
        Ok(insns)
    }
}

/// Raw words are either `0x`-prefixed (or long) 64-bit words, or two-digit
/// bytes grouped by eight.
fn parse_raw(tokens: &[(usize, String)]) -> Result<Vec<Insn>, DataError> {
    let bytes_form = !tokens.is_empty()
        && tokens
            .iter()
            .all(|(_, t)| t.len() == 2 && t.chars().all(|c| c.is_ascii_hexdigit()));
    if bytes_form {
        let mut bytes = Vec::with_capacity(tokens.len());
        for (line, t) in tokens {
            bytes.push(u8::from_str_radix(t, 16).map_err(|_| DataError {
                line: *line,
                message: format!("invalid raw byte `{t}`"),
            })?);
        }
        return crate::insn::insns_from_bytes(&bytes).map_err(|e| DataError {
            line: tokens.last().map(|t| t.0).unwrap_or(0),
            message: e.to_string(),
        });
    }
    tokens
        .iter()
        .map(|(line, t)| {
            parse_u64(t).map(Insn::from_u64).ok_or_else(|| DataError {
                line: *line,
                message: format!("invalid raw instruction word `{t}`"),
            })
        })
        .collect()
}

/// Why a case did not pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaseFailure {
    /// The file does not parse.
    Data(DataError),
    /// The file has no program.
    NoProgram,
    /// The file expects neither a result nor an error.
    NoExpectation,
    /// The assembler refused the `-- asm` section.
    Assemble(AsmError),
    /// The engine refused the program before running it (decode, validation
    /// or preparation), with its message.
    Load(String),
    /// The program ran and faulted, with the fault's message.
    Fault(String),
    /// The program returned a different `r0`.
    WrongResult {
        /// Expected.
        expected: u64,
        /// Returned.
        got: u64,
    },
    /// The case expects an error but the program returned a result.
    ExpectedError {
        /// The expected message.
        expected: String,
        /// Returned `r0`.
        got: u64,
    },
    /// The case expects an error with another message.
    OtherError {
        /// The expected message.
        expected: String,
        /// The message produced.
        got: String,
    },
}

impl fmt::Display for CaseFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaseFailure::Data(e) => write!(f, "data file: {e}"),
            CaseFailure::NoProgram => f.write_str("no program (no -- asm or -- raw section)"),
            CaseFailure::NoExpectation => f.write_str("no -- result or -- error section"),
            CaseFailure::Assemble(e) => write!(f, "assembler: {e}"),
            CaseFailure::Load(e) => write!(f, "load: {e}"),
            CaseFailure::Fault(e) => write!(f, "run: {e}"),
            CaseFailure::WrongResult { expected, got } => {
                write!(f, "r0 = {got:#x}, expected {expected:#x}")
            }
            CaseFailure::ExpectedError { expected, got } => {
                write!(f, "expected error `{expected}`, got r0 = {got:#x}")
            }
            CaseFailure::OtherError { expected, got } => {
                write!(f, "expected error `{expected}`, got `{got}`")
            }
        }
    }
}

/// What an engine reports for one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineError {
    /// Refused before running.
    Load(String),
    /// Faulted while running.
    Fault(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Load(m) | EngineError::Fault(m) => f.write_str(m),
        }
    }
}

/// The suite's helpers: 5 is `unwind` (returns its argument; a 0 result ends
/// the program with `r0` = 0).
pub fn helpers() -> Helpers {
    let mut h = Helpers::new();
    h.register(
        UNWIND_HELPER_ID,
        "unwind",
        HelperProto::SCALARS,
        |ctx, a| {
            if a[0] == 0 {
                ctx.exit(0);
            }
            Ok(a[0])
        },
    );
    h
}

/// Runs `insns` on the interpreter with the suite's conventions.
pub fn run_interpreter(insns: &[Insn], mem: &mut [u8]) -> Result<u64, EngineError> {
    let program = Program::new("conformance", insns.to_vec())
        .map_err(|e| EngineError::Load(e.to_string()))?;
    let mut vm = Vm::new(&program, helpers()).map_err(|e| EngineError::Load(e.to_string()))?;
    vm.run(mem).map_err(|f| EngineError::Fault(f.to_string()))
}

/// Runs a `.data` file's text through `engine` and compares with its
/// expectation, as the bpf_conformance runner does: a case passes when `r0`
/// matches `-- result`, or when the engine fails with exactly the message of
/// `-- error`.
pub fn run_case(
    text: &str,
    engine: impl FnOnce(&[Insn], &mut [u8]) -> Result<u64, EngineError>,
) -> Result<(), CaseFailure> {
    let case = TestCase::parse(text).map_err(CaseFailure::Data)?;
    let insns = case.program()?;
    if case.result.is_none() && case.error.is_none() {
        return Err(CaseFailure::NoExpectation);
    }
    let mut mem = case.mem.clone();
    match (engine(&insns, &mut mem), &case.error) {
        (Ok(got), None) => {
            let expected = case.result.unwrap_or(0);
            if got == expected {
                Ok(())
            } else {
                Err(CaseFailure::WrongResult { expected, got })
            }
        }
        (Ok(got), Some(expected)) => Err(CaseFailure::ExpectedError {
            expected: expected.clone(),
            got,
        }),
        (Err(e), Some(expected)) if !expected.is_empty() && e.to_string() == *expected => Ok(()),
        (Err(e), Some(expected)) => Err(CaseFailure::OtherError {
            expected: expected.clone(),
            got: e.to_string(),
        }),
        (Err(EngineError::Load(m)), None) => Err(CaseFailure::Load(m)),
        (Err(EngineError::Fault(m)), None) => Err(CaseFailure::Fault(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_comments_and_both_raw_forms() {
        let c = TestCase::parse(
            "# c\n-- asm\nmov %r0, 1 # one\nexit\n-- mem\n11 22\n-- result\n0x10\n",
        )
        .unwrap();
        assert_eq!(c.asm.as_deref(), Some("mov %r0, 1 \nexit\n"));
        assert_eq!(c.mem, vec![0x11, 0x22]);
        assert_eq!(c.result, Some(16));
        let c = TestCase::parse("-- raw\n0x00000000000000b7\n0x0000000000000095\n-- result\n0")
            .unwrap();
        assert_eq!(c.raw.as_ref().map(|r| r.len()), Some(2));
        let c =
            TestCase::parse("-- raw\nb7 00 00 00 00 00 00 00\n95 00 00 00 00 00 00 00\n-- error\n")
                .unwrap();
        assert_eq!(c.raw.as_ref().map(|r| r[1].code), Some(0x95));
        assert_eq!(c.error.as_deref(), Some(""));
        assert!(TestCase::parse("-- asm\n-- Unknown directive\n").is_err());
    }

    #[test]
    fn run_case_classifies_outcomes() {
        let ok = "-- asm\nmov %r0, 3\nexit\n-- result\n0x3\n";
        assert_eq!(run_case(ok, run_interpreter), Ok(()));
        let wrong = "-- asm\nmov %r0, 3\nexit\n-- result\n0x4\n";
        assert_eq!(
            run_case(wrong, run_interpreter),
            Err(CaseFailure::WrongResult {
                expected: 4,
                got: 3
            })
        );
        assert_eq!(
            run_case("-- result\n0x0\n", run_interpreter),
            Err(CaseFailure::NoProgram)
        );
    }

    #[test]
    fn unwind_helper_ends_the_program_on_zero() {
        let text = "-- asm\nmov %r1, 0\ncall 5\nmov %r0, 2\nexit\n-- result\n0x0\n";
        assert_eq!(run_case(text, run_interpreter), Ok(()));
    }
}
