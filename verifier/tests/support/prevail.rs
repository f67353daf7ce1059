//! Reads PREVAIL's YAML verifier tests (`test-data/*.yaml` of the PREVAIL
//! verifier, MIT licensed) into Rust data: one [`Case`] per YAML document,
//! its `pre` facts parsed into [`Fact`]s and its assembly turned into our
//! instructions ([`Code`]).
//!
//! The corpus is read at test time from [`corpus_dir`]; nothing of it is
//! copied into this repository.
//!
//! # How PREVAIL runs a case (`src/test/ebpf_yaml.cpp`)
//!
//! * The entry state is exactly the `pre` facts (`setup_constraints` is off):
//!   `r10` is a stack pointer only if a fact says so, and every register,
//!   stack byte, `packet_size` and `meta_offset` not constrained is
//!   unconstrained (a register's type may even be "uninitialised").
//! * The program type has a 64-byte context with the packet's `data` pointer
//!   at offset 0 and `data_end` at 4, no `data_meta` ([`CTX_SIZE`], ...); the
//!   program has one map ([`MAP_KEY_SIZE`], ...); helper prototypes are
//!   Linux's.
//! * A program need not end in `exit`; the post-condition `post` is the
//!   invariant at the exit (`_|_`: the exit is unreachable).
//! * `messages` is compared with the first verification error plus every
//!   "Code becomes unreachable" note (see [`verdict`]).
//!
//! # Instruction indices and pcs
//!
//! PREVAIL numbers instructions by line (an `lddw` counts once); labels in
//! its messages (`"3: Invalid type ..."`) are such line indices. Our
//! [`Code`] numbers 8-byte slots (an `lddw` takes two): `Code::source[i].0`
//! is the pc of PREVAIL's instruction `i`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;
use userbpf_vm::isa::{
    decode_all, AluOp, AtomicOp, CallTarget, EndianOp, Instruction, JmpCond, Lddw, MemSize,
    PacketMode, Source, Width,
};
use userbpf_vm::{Insn, Reg};

/// Environment variable that overrides [`corpus_dir`].
pub const CORPUS_ENV: &str = "PREVAIL_TEST_DATA";

/// Size in bytes of the context of PREVAIL's YAML test program type
/// (descriptor `{size=64, data=0, end=4, meta=-1}`).
pub const CTX_SIZE: usize = 64;
/// Context offset of the packet's `data` pointer slot, bytes `[0, 4)`: a
/// load of the whole slot gives a `packet` pointer at offset 0, a load of
/// part of it an untyped value; a store overlapping it is an error ("Cannot
/// write to context pointer field"). Other context bytes are scalars.
pub const CTX_DATA_OFFSET: i32 = 0;
/// Context offset of the packet's `data_end` pointer slot, bytes `[4, 8)`:
/// loading it gives a `packet` pointer at offset `packet_size`.
pub const CTX_DATA_END_OFFSET: i32 = 4;
/// Context offset of `data_meta`: -1, the test program type has none.
pub const CTX_META_OFFSET: i32 = -1;
/// Number of maps the test program has: `map_by_idx(0)` is the only valid
/// index ("invalid map index N (have 1 maps)" otherwise). Every map fd
/// (`map_fd N`, `rN.map_fd=N`) resolves to this one map's descriptor.
pub const MAP_COUNT: usize = 1;
/// The test map's key size in bytes.
pub const MAP_KEY_SIZE: u32 = 4;
/// The test map's value size in bytes.
pub const MAP_VALUE_SIZE: u32 = 4;
/// The test map's `max_entries`.
pub const MAP_MAX_ENTRIES: u32 = 4;
/// The test map's (Linux) map type: 0, `BPF_MAP_TYPE_UNSPEC`.
pub const MAP_TYPE: u32 = 0;
/// Bytes of stack per call frame (`subprogram_stack_size`).
pub const SUBPROGRAM_STACK_SIZE: i64 = 512;
/// Maximum call depth (`max_call_stack_frames`); deeper local calls give
/// "too many call stack frames".
pub const MAX_CALL_STACK_FRAMES: usize = 8;
/// Size of PREVAIL's whole stack region: one 512-byte frame per possible
/// call depth. Stack offsets are from the bottom of this region.
pub const TOTAL_STACK_SIZE: i64 = 4096;
/// Upper bound of `packet_size` (`max_packet_size`).
pub const MAX_PACKET_SIZE: i64 = 0xffff;

/// Where the corpus is: `$PREVAIL_TEST_DATA` if set, else the copy in
/// `verifier/tests/prevail/test-data` (PREVAIL's MIT licence beside it).
pub fn corpus_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CORPUS_ENV) {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/prevail/test-data")
}

/// One test case (one YAML document).
#[derive(Debug, Clone)]
pub struct Case {
    /// File name, e.g. `add.yaml`.
    pub file: String,
    /// `test-case`.
    pub name: String,
    /// `pre`: the assumed entry state, one fact per string, in YAML order.
    pub pre: Vec<Fact>,
    /// `options`, as written (see [`Options`] and [`options`]).
    pub options: Vec<String>,
    /// The program, or why its assembly could not be turned into our
    /// instructions (an unsupported form, an undefined label, ...).
    pub code: Result<Code, String>,
    /// The raw `code` blocks in YAML order (the layout): label (with its
    /// angle brackets, e.g. `<start>`) and the block's lines.
    pub blocks: Vec<(String, Vec<String>)>,
    /// `post`: the expected invariant at the exit, as written (`["_|_"]`:
    /// the exit is unreachable). Parse items with [`parse_fact`] if needed.
    pub post: Vec<String>,
    /// `messages`: the expected messages (empty if absent). See [`verdict`].
    pub messages: Vec<String>,
    /// `observe`: invariant observations the PREVAIL harness checks after the
    /// analysis (empty for cases with an `expected-exception`).
    pub observe: Vec<Observation>,
    /// `expected-exception`: the case tests the PREVAIL harness's own input
    /// validation (e.g. a malformed `observe`), not the verifier.
    pub expected_exception: Option<String>,
}

/// An `observe` item: PREVAIL checks an invariant at a label after the
/// analysis. A failing check adds the message
/// `"<at>: observation <mode> failed at <point>"`; it says nothing about
/// the program's safety.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// `at`: `entry`, `exit` or a PREVAIL instruction index.
    pub at: String,
    /// `point`: `pre` (default) or `post`.
    pub point: String,
    /// `mode`: `consistent` (default: the observation intersects the
    /// invariant) or `entailed` (the invariant implies the observation).
    pub mode: String,
    /// `constraints`, in the syntax of `pre`.
    pub constraints: Vec<String>,
}

/// A case's program in our encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    /// The instruction slots (an `lddw` takes two).
    pub insns: Vec<Insn>,
    /// Label (with angle brackets, e.g. `<start>`) -> pc of the block's first
    /// instruction (the program's length for an empty block at the end).
    pub labels: BTreeMap<String, usize>,
    /// For every PREVAIL instruction, in order: its pc and its source line
    /// as written in the YAML (comment included). Index `i` of this vector is
    /// PREVAIL's instruction index `i` (the labels of its messages).
    pub source: Vec<(usize, String)>,
}

impl Code {
    /// The pc of PREVAIL's instruction index `index`.
    pub fn pc_of_index(&self, index: usize) -> Option<usize> {
        self.source.get(index).map(|(pc, _)| *pc)
    }

    /// PREVAIL's instruction index of the instruction at `pc`.
    pub fn index_of_pc(&self, pc: usize) -> Option<usize> {
        self.source.iter().position(|(p, _)| *p == pc)
    }

    /// Whether execution can run past the last instruction: the program is
    /// empty, its last instruction is not `exit` or `goto`, or a label is at
    /// its end. PREVAIL's harness allows that (`must_have_exit = false`): the
    /// end is then just the exit, where no check is made. Most corpus
    /// programs (one-instruction semantics tests) have no `exit` at all.
    pub fn falls_off_end(&self) -> bool {
        let ends = self.source.last().and_then(|(pc, _)| {
            userbpf_vm::isa::decode(&self.insns, *pc).ok().map(|i| {
                matches!(
                    i,
                    Instruction::Exit | Instruction::Ja { .. } | Instruction::JaLong { .. }
                )
            })
        });
        ends != Some(true) || self.labels.values().any(|pc| *pc == self.insns.len())
    }

    /// For a verifier that requires every path to end in `exit`: the code
    /// with `r0 = 0; exit` appended if it [`falls_off_end`](Self::falls_off_end)
    /// (`r0 = 0` so that the appended `exit` checks nothing PREVAIL's implicit
    /// end does not), else a copy. The appended instructions have no entry
    /// in `source`; labels and offsets are unchanged.
    pub fn with_exit_tail(&self) -> Code {
        let mut code = self.clone();
        if self.falls_off_end() {
            Instruction::Alu {
                width: Width::W64,
                op: AluOp::Mov,
                dst: Reg::R0,
                src: Source::Imm(0),
            }
            .encode_into(&mut code.insns);
            Instruction::Exit.encode_into(&mut code.insns);
        }
        code
    }
}

/// A type in PREVAIL's type domain, as the constraint syntax names it
/// (`number`, `ctx`, `stack`, `packet`, `shared`, `map_fd`,
/// `map_fd_programs`; PREVAIL's constraint parser knows no other names, so
/// `uninit`, `socket`, `func`, ... never appear in a `pre`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Type {
    /// `number`: a scalar, not a pointer.
    Number,
    /// `ctx`: a pointer into the program's context; its offset from the
    /// context's start is the `ctx_offset` kind.
    Ctx,
    /// `stack`: a pointer into the stack region; its offset from the bottom
    /// of the whole [`TOTAL_STACK_SIZE`]-byte region is `stack_offset`.
    Stack,
    /// `packet`: a pointer into the packet; its offset from the packet's
    /// `data` is `packet_offset` (valid accesses end by `packet_size`, start
    /// at `meta_offset` or later).
    Packet,
    /// `shared`: a pointer into a shared region (a map value, helper
    /// memory) of `shared_region_size` bytes, at `shared_offset` in it; it
    /// may be null (its `uvalue` may be 0).
    Shared,
    /// `map_fd`: a map (as loaded by `lddw` with a map fd); the fd is the
    /// `map_fd` kind.
    MapFd,
    /// `map_fd_programs`: a program-array map (for `bpf_tail_call`); the
    /// fd is the `map_fd_programs` kind.
    MapFdPrograms,
}

impl Type {
    /// The type of a PREVAIL type name.
    pub fn from_name(name: &str) -> Option<Type> {
        Some(match name {
            "number" => Type::Number,
            "ctx" => Type::Ctx,
            "stack" => Type::Stack,
            "packet" => Type::Packet,
            "shared" => Type::Shared,
            "map_fd" => Type::MapFd,
            "map_fd_programs" => Type::MapFdPrograms,
            _ => return None,
        })
    }

    /// The PREVAIL name.
    pub fn name(self) -> &'static str {
        match self {
            Type::Number => "number",
            Type::Ctx => "ctx",
            Type::Stack => "stack",
            Type::Packet => "packet",
            Type::Shared => "shared",
            Type::MapFd => "map_fd",
            Type::MapFdPrograms => "map_fd_programs",
        }
    }
}

/// A numeric attribute of a register (PREVAIL's `DataKind`s that the
/// constraint syntax can name). Each is a separate variable; those of a
/// pointer kind only mean something while the register has that type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `svalue`: the 64-bit value read as signed (for pointers: the
    /// address).
    SValue,
    /// `uvalue`: the 64-bit value read as unsigned (for pointers: the
    /// address; `uvalue > 0` is PREVAIL's non-null test).
    UValue,
    /// `ctx_offset`: byte offset of a `ctx` pointer from the context start.
    CtxOffset,
    /// `map_fd`: the fd of a `map_fd` value.
    MapFd,
    /// `map_fd_programs`: the fd of a `map_fd_programs` value.
    MapFdPrograms,
    /// `packet_offset`: byte offset of a `packet` pointer from the packet's
    /// `data`.
    PacketOffset,
    /// `shared_offset`: byte offset of a `shared` pointer in its region.
    SharedOffset,
    /// `stack_offset`: byte offset of a `stack` pointer from the bottom of
    /// the [`TOTAL_STACK_SIZE`]-byte stack region. The frame of the
    /// outermost function ends at the region's top (`r10.stack_offset=4096`
    /// in PREVAIL's own entry state), each call moves `r10` down
    /// [`SUBPROGRAM_STACK_SIZE`] bytes; most YAML tests instead put `r10` at
    /// 512, the top of a single frame `[0, 512)`.
    StackOffset,
    /// `shared_region_size`: size in bytes of a `shared` pointer's region.
    SharedRegionSize,
    /// `stack_numeric_size`: for a `stack` pointer, how many bytes from the
    /// pointed-to offset up are known to hold numbers (used for helper
    /// arguments).
    StackNumericSize,
}

impl Kind {
    /// The kind of a PREVAIL kind name.
    pub fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "svalue" => Kind::SValue,
            "uvalue" => Kind::UValue,
            "ctx_offset" => Kind::CtxOffset,
            "map_fd" => Kind::MapFd,
            "map_fd_programs" => Kind::MapFdPrograms,
            "packet_offset" => Kind::PacketOffset,
            "shared_offset" => Kind::SharedOffset,
            "stack_offset" => Kind::StackOffset,
            "shared_region_size" => Kind::SharedRegionSize,
            "stack_numeric_size" => Kind::StackNumericSize,
            _ => return None,
        })
    }

    /// The PREVAIL name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::SValue => "svalue",
            Kind::UValue => "uvalue",
            Kind::CtxOffset => "ctx_offset",
            Kind::MapFd => "map_fd",
            Kind::MapFdPrograms => "map_fd_programs",
            Kind::PacketOffset => "packet_offset",
            Kind::SharedOffset => "shared_offset",
            Kind::StackOffset => "stack_offset",
            Kind::SharedRegionSize => "shared_region_size",
            Kind::StackNumericSize => "stack_numeric_size",
        }
    }
}

/// A numeric variable of the constraint syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Var {
    /// `rN.kind`.
    Reg {
        /// Register number, 0..=10.
        reg: u8,
        /// The attribute.
        kind: Kind,
    },
    /// `packet_size`: the packet's length, `data_end - data`.
    PacketSize,
    /// `meta_offset`: offset of `data_meta` from `data` (at most 0).
    MetaOffset,
}

/// One parsed constraint of a `pre` (or of a `post` / `observe`), in
/// PREVAIL's syntax (`parse_linear_constraints` in `src/test/parse.cpp`).
///
/// Numbers are read as C's `strtoll`/`strtoull` with base 0 read them
/// (`0x` hex, a leading `0` octal); `uvalue` numbers as unsigned (a
/// negative one wraps: `-1` is `u64::MAX`), all others as signed 64-bit.
/// Intervals are inclusive; PREVAIL's own parser takes no infinite bounds,
/// but `-oo` / `+oo` (printed in `post`) are read here as the extremes of
/// the 64-bit type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// `_|_`: the state is unreachable (bottom). PREVAIL only reads it as
    /// bottom when it is the invariant's only item.
    Bottom,
    /// `rN.type=T`: register `reg` has type `ty`.
    Type {
        /// Register number.
        reg: u8,
        /// Its type.
        ty: Type,
    },
    /// `rN.type in {T1, T2, ...}`: the register has one of these types.
    TypeIn {
        /// Register number.
        reg: u8,
        /// The possible types, in the order written.
        types: Vec<Type>,
    },
    /// `rN.type=rM.type`: both registers have the same (unknown) type.
    SameType {
        /// Register number.
        reg: u8,
        /// The other register.
        other: u8,
    },
    /// `rN.svalue=c` or `rN.svalue=[a, b]`: the signed value is in
    /// `min..=max`.
    SValue {
        /// Register number.
        reg: u8,
        /// Lower bound.
        min: i64,
        /// Upper bound.
        max: i64,
    },
    /// `rN.uvalue=c` or `rN.uvalue=[a, b]`: the unsigned value is in
    /// `min..=max`.
    UValue {
        /// Register number.
        reg: u8,
        /// Lower bound.
        min: u64,
        /// Upper bound.
        max: u64,
    },
    /// `rN.kind=c` or `rN.kind=[a, b]` for the pointer attributes
    /// (`ctx_offset`, `stack_offset`, `packet_offset`, `shared_offset`,
    /// `shared_region_size`, `stack_numeric_size`, `map_fd`,
    /// `map_fd_programs`; never `svalue`/`uvalue`, which are
    /// [`Fact::SValue`] / [`Fact::UValue`]): the attribute is in
    /// `min..=max`.
    Attr {
        /// Register number.
        reg: u8,
        /// The attribute.
        kind: Kind,
        /// Lower bound.
        min: i64,
        /// Upper bound.
        max: i64,
    },
    /// `packet_size=c` or `packet_size=[a, b]`.
    PacketSize {
        /// Lower bound.
        min: i64,
        /// Upper bound.
        max: i64,
    },
    /// `meta_offset=c` or `meta_offset=[a, b]`.
    MetaOffset {
        /// Lower bound.
        min: i64,
        /// Upper bound.
        max: i64,
    },
    /// `x=y` between two variables: `rN.uvalue=rN.svalue` (the value is the
    /// same read signed or unsigned, i.e. it is in `0..=i64::MAX`),
    /// `rN.packet_offset=packet_size`, `meta_offset=rN.packet_offset`, ...
    Equal {
        /// Left side.
        lhs: Var,
        /// Right side.
        rhs: Var,
    },
    /// `rN.k-rM.k<=c`: a difference constraint, `lhs - rhs <= bound`.
    DiffLe {
        /// Minuend.
        lhs: Var,
        /// Subtrahend.
        rhs: Var,
        /// Bound.
        bound: i64,
    },
    /// `s[a...b].type=T`: stack bytes `a..=b` (offsets in the stack region,
    /// see [`Kind::StackOffset`]) hold a value of type `ty`. For `number`
    /// PREVAIL marks each byte numeric; for another type it types the cell
    /// that starts at `a` and is `b - a + 1` bytes long.
    StackType {
        /// First byte.
        start: i64,
        /// Last byte (inclusive).
        end: i64,
        /// The type.
        ty: Type,
    },
    /// `s[a...b].svalue=c`: the cell of bytes `a..=b`, read as a signed
    /// little-endian (host order) number of `b - a + 1` bytes, is `value`.
    StackSValue {
        /// First byte.
        start: i64,
        /// Last byte (inclusive).
        end: i64,
        /// The value.
        value: i64,
    },
    /// `s[a...b].uvalue=c`: the same cell read unsigned is `value`.
    StackUValue {
        /// First byte.
        start: i64,
        /// Last byte (inclusive).
        end: i64,
        /// The value.
        value: u64,
    },
    /// Anything else, as written. PREVAIL's parser rejects such an item in
    /// a `pre` ("Unknown constraint"); in a `post` it is PREVAIL's printed
    /// output that its parser does not read back (e.g. `pc[3]=[1, +oo]`).
    Unparsed(String),
}

/// PREVAIL's verifier options for a case (defaults as in its YAML harness).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `!allow_division_by_zero` clears it. Default true: division and
    /// modulo by zero are allowed (BPF defines them: `x / 0 = 0`,
    /// `x % 0 = x`); when false a divisor that may be 0 is an error
    /// ("Possible division by zero").
    pub allow_division_by_zero: bool,
    /// `termination` sets it. Default false: loops are not checked to
    /// terminate (an infinite loop is accepted, its exit just unreachable);
    /// when true every loop must be proven bounded ("Loop counter is too
    /// large").
    pub check_for_termination: bool,
    /// `strict` sets it: extra checks of things that would fail at run time
    /// (e.g. helper map-type checks). Default false.
    pub strict: bool,
    /// `simplify` sets it: the CFG is analysed with chains merged into basic
    /// blocks (display option; may change where widening happens). Default
    /// false in the YAML harness.
    pub simplify: bool,
    /// `big_endian` sets it, `!big_endian` clears it. Default: the host's
    /// byte order (little endian on x86-64 and aarch64). On a big-endian
    /// target `be16/32/64` only truncate and `le16/32/64` swap, and
    /// multi-byte stack cells are read most significant byte first.
    pub big_endian: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            allow_division_by_zero: true,
            check_for_termination: false,
            strict: false,
            simplify: false,
            big_endian: cfg!(target_endian = "big"),
        }
    }
}

/// The options of a case; an unknown option name is an error (PREVAIL
/// throws "Unknown option").
pub fn options(case: &Case) -> Result<Options, String> {
    let mut o = Options::default();
    for name in &case.options {
        match name.as_str() {
            "!allow_division_by_zero" => o.allow_division_by_zero = false,
            "termination" => o.check_for_termination = true,
            "strict" => o.strict = true,
            "simplify" => o.simplify = true,
            "big_endian" => o.big_endian = true,
            "!big_endian" => o.big_endian = false,
            _ => {
                return Err(format!(
                    "{}: {}: unknown option `{name}`",
                    case.file, case.name
                ))
            }
        }
    }
    Ok(o)
}

/// What PREVAIL concluded about a case's program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// No verification error expected: the program is safe.
    Accept,
    /// At least one verification error expected: the program is rejected.
    Reject,
    /// The case has an `expected-exception`: it tests PREVAIL's harness
    /// (malformed input), not the verifier, and has no verdict.
    Excluded,
}

/// The kinds of messages in `messages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A verification failure: `"<label>: <what> (<assertion>)"` (the first
    /// failed assertion, PREVAIL reports only one), or an invalid control
    /// flow found while building the CFG (`"<label>: illegal recursion"`,
    /// `"too many call stack frames"`, `"invalid map index N (have 1
    /// maps)"`).
    Error,
    /// `"<label>: Code becomes unreachable (assume ...)"`: a branch
    /// condition that can never hold, i.e. dead code. A note, not an error.
    Unreachable,
    /// `"<label>: observation <mode> failed at <point>"`: an `observe` check
    /// of the harness failed. Says nothing about the program.
    Observation,
}

/// Classifies one expected message (see [`MessageKind`]).
pub fn classify_message(message: &str) -> MessageKind {
    let rest = match message.split_once(": ") {
        Some((label, rest)) if is_label(label) => rest,
        _ => return MessageKind::Error,
    };
    if rest.starts_with("Code becomes unreachable (") {
        return MessageKind::Unreachable;
    }
    let observation = ["consistent", "entailed"].iter().any(|mode| {
        ["pre", "post"]
            .iter()
            .any(|point| rest == format!("observation {mode} failed at {point}"))
    });
    if observation {
        MessageKind::Observation
    } else {
        MessageKind::Error
    }
}

/// The label that starts a PREVAIL message (`"3"`, `"0/9"` for an
/// instruction inlined from a call at 0, `"0/11:12"` for the edge 11 -> 12,
/// `"exit"`), if it has one.
pub fn message_label(message: &str) -> Option<&str> {
    message
        .split_once(": ")
        .map(|(label, _)| label)
        .filter(|label| is_label(label))
}

fn is_label(s: &str) -> bool {
    s == "entry"
        || s == "exit"
        || (!s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_digit() || c == '/' || c == ':'))
}

/// PREVAIL's verdict on a case.
///
/// Rule (from how `src/test/ebpf_yaml.cpp` builds the messages it compares
/// with `messages`): the actual messages are the first verification error,
/// if any (`AnalysisResult::find_first_error`), or the `InvalidControlFlow`
/// exception's text, plus one "Code becomes unreachable" note per `assume`
/// that cuts all paths, plus failed `observe` checks. So a case is
/// [`Verdict::Reject`] iff some expected message is a [`MessageKind::Error`];
/// unreachable-code notes and observation failures alone, an absent or empty
/// `messages`, and a `post` of `_|_` (exit unreachable, e.g. after an
/// infinite loop or a contradictory `assume`) all mean [`Verdict::Accept`].
/// Cases with an `expected-exception` are [`Verdict::Excluded`].
pub fn verdict(case: &Case) -> Verdict {
    if case.expected_exception.is_some() {
        Verdict::Excluded
    } else if case
        .messages
        .iter()
        .any(|m| classify_message(m) == MessageKind::Error)
    {
        Verdict::Reject
    } else {
        Verdict::Accept
    }
}

/// Whether PREVAIL rejects the case's program: [`verdict`] is
/// [`Verdict::Reject`] (false for [`Verdict::Excluded`] cases, which callers
/// should skip).
pub fn expects_rejection(case: &Case) -> bool {
    verdict(case) == Verdict::Reject
}

/// The expected messages that are verification errors.
pub fn error_messages(case: &Case) -> Vec<&str> {
    case.messages
        .iter()
        .map(String::as_str)
        .filter(|m| classify_message(m) == MessageKind::Error)
        .collect()
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

/// Loads every `*.yaml` file of `dir`, sorted by file name, cases in file
/// order. Fails on unreadable files and on documents that are not test cases
/// (missing `test-case`, `pre`, `code` or `post`, items of the wrong shape);
/// a program that does not assemble is not a failure (see [`Case::code`]).
pub fn load_corpus(dir: &Path) -> Result<Vec<Case>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && entry.path().is_file() {
            files.push(name);
        }
    }
    if files.is_empty() {
        return Err(format!("no *.yaml files in {}", dir.display()));
    }
    files.sort();
    let mut cases = Vec::new();
    for name in files {
        let path = dir.join(&name);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        cases.extend(parse_file(&name, &text)?);
    }
    Ok(cases)
}

/// Parses the text of one YAML file (`file` names it in the cases and
/// errors). Empty documents are skipped.
pub fn parse_file(file: &str, text: &str) -> Result<Vec<Case>, String> {
    let mut cases = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document)
            .map_err(|e| format!("{file}: YAML document {}: {e}", i + 1))?;
        if value.is_null() {
            continue;
        }
        let case = parse_case(file, &value)
            .map_err(|e| format!("{file}: YAML document {}: {e}", i + 1))?;
        cases.push(case);
    }
    Ok(cases)
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn string_list(
    map: &serde_yaml::Mapping,
    key: &str,
    required: bool,
) -> Result<Vec<String>, String> {
    match map.get(key) {
        None | Some(Value::Null) if !required => Ok(Vec::new()),
        None => Err(format!("missing `{key}`")),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|item| scalar_string(item).ok_or_else(|| format!("`{key}` has a non-string item")))
            .collect(),
        Some(_) => Err(format!("`{key}` is not a list")),
    }
}

fn parse_case(file: &str, value: &Value) -> Result<Case, String> {
    let map = value
        .as_mapping()
        .ok_or_else(|| "document is not a mapping".to_string())?;
    let name = map
        .get("test-case")
        .and_then(scalar_string)
        .ok_or_else(|| "missing `test-case`".to_string())?;
    let ctx = |e: String| format!("test case `{name}`: {e}");
    let expected_exception = match map.get("expected-exception") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            scalar_string(v).ok_or_else(|| ctx("`expected-exception` is not a string".into()))?,
        ),
    };
    let options = string_list(map, "options", false).map_err(ctx)?;
    let pre = string_list(map, "pre", true).map_err(ctx)?;
    let post = string_list(map, "post", true).map_err(ctx)?;
    let messages = string_list(map, "messages", false).map_err(ctx)?;
    let observe = if expected_exception.is_some() {
        Vec::new()
    } else {
        parse_observe(map.get("observe")).map_err(ctx)?
    };
    let code_value = map
        .get("code")
        .ok_or_else(|| ctx("missing `code`".into()))?;
    let (blocks, code) = match read_blocks(code_value) {
        Ok(blocks) => {
            let code = assemble(&blocks);
            (blocks, code)
        }
        Err(e) => (Vec::new(), Err(e)),
    };
    Ok(Case {
        file: file.to_string(),
        name,
        pre: pre.iter().map(|s| parse_fact(s)).collect(),
        options,
        code,
        blocks,
        post,
        messages,
        observe,
        expected_exception,
    })
}

fn parse_observe(value: Option<&Value>) -> Result<Vec<Observation>, String> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Sequence(items)) => items,
        Some(_) => return Err("`observe` is not a list".into()),
    };
    items
        .iter()
        .map(|item| {
            let map = item
                .as_mapping()
                .ok_or_else(|| "`observe` item is not a mapping".to_string())?;
            let field = |key: &str, default: &str| -> Result<String, String> {
                match map.get(key) {
                    None | Some(Value::Null) => Ok(default.to_string()),
                    Some(v) => {
                        scalar_string(v).ok_or_else(|| format!("`observe.{key}` is not a scalar"))
                    }
                }
            };
            let at = field("at", "")?;
            if at.is_empty() {
                return Err("`observe` item without `at`".into());
            }
            Ok(Observation {
                at,
                point: field("point", "pre")?,
                mode: field("mode", "consistent")?,
                constraints: string_list(map, "constraints", true)
                    .map_err(|e| format!("`observe`: {e}"))?,
            })
        })
        .collect()
}

/// Reads `code`: a mapping from label to a block of lines, in YAML order.
fn read_blocks(value: &Value) -> Result<Vec<(String, Vec<String>)>, String> {
    let map = value
        .as_mapping()
        .ok_or_else(|| "`code` is not a mapping of labels to blocks".to_string())?;
    let mut blocks = Vec::new();
    for (label, block) in map {
        let label =
            scalar_string(label).ok_or_else(|| "`code` has a non-string label".to_string())?;
        let lines = match block {
            Value::Null => Vec::new(),
            other => {
                let text =
                    scalar_string(other).ok_or_else(|| format!("block {label} is not a string"))?;
                split_lines(&text)
            }
        };
        blocks.push((label, lines));
    }
    Ok(blocks)
}

/// Splits like repeated `std::getline`: a final newline ends the last line
/// rather than starting an empty one.
fn split_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    if lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

// ---------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------

/// A literal as C's `strto*(s, nullptr, 0)` reads it: sign and magnitude.
#[derive(Debug, Clone, Copy)]
struct Lit {
    neg: bool,
    mag: u64,
}

impl Lit {
    /// `[-+]?` then `0x` hex, `0` octal or decimal digits, nothing else.
    fn parse(s: &str) -> Option<Lit> {
        let (neg, body) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (radix, digits) =
            if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
                (16, hex)
            } else if body.len() > 1 && body.starts_with('0') {
                (8, &body[1..])
            } else {
                (10, body)
            };
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        let mag = u64::from_str_radix(digits, radix).ok()?;
        Some(Lit { neg, mag })
    }

    /// `stoll`: in range of `i64` or nothing.
    fn to_i64(self) -> Option<i64> {
        if self.neg {
            (self.mag <= 1u64 << 63).then(|| 0i64.wrapping_sub(self.mag as i64))
        } else {
            i64::try_from(self.mag).ok()
        }
    }

    /// `stoull`: a negative number wraps.
    fn to_u64(self) -> u64 {
        if self.neg {
            self.mag.wrapping_neg()
        } else {
            self.mag
        }
    }

    /// `stoi`: in range of `i32` or nothing.
    fn to_i32(self) -> Option<i32> {
        self.to_i64().and_then(|v| i32::try_from(v).ok())
    }
}

// ---------------------------------------------------------------------------
// A cursor for the small recursive-descent parsers below
// ---------------------------------------------------------------------------

struct Cur<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cur<'a> {
    fn new(s: &'a str) -> Cur<'a> {
        Cur { s, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    /// Skips whitespace, then consumes `lit` if it comes next.
    fn eat(&mut self, lit: &str) -> bool {
        self.ws();
        if self.rest().starts_with(lit) {
            self.pos += lit.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, lit: &str) -> Result<(), String> {
        if self.eat(lit) {
            Ok(())
        } else {
            Err(format!("expected `{lit}` at `{}`", self.rest().trim()))
        }
    }

    fn at_end(&mut self) -> bool {
        self.ws();
        self.rest().is_empty()
    }

    fn end(&mut self) -> Result<(), String> {
        if self.at_end() {
            Ok(())
        } else {
            Err(format!("unexpected `{}`", self.rest().trim()))
        }
    }

    /// The word (`[A-Za-z0-9_]+`) that comes next, not consumed.
    fn peek_word(&mut self) -> &'a str {
        self.ws();
        let rest = self.rest();
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        &rest[..len]
    }

    /// Consumes the word `word` if it is the next word.
    fn eat_word(&mut self, word: &str) -> bool {
        if self.peek_word() == word {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    /// A register `[rw]\d\d?` (as a whole word): whether it is an `r`
    /// register, and its number.
    fn reg(&mut self) -> Option<(bool, u8)> {
        let word = self.peek_word();
        let (is64, digits) = if let Some(d) = word.strip_prefix('r') {
            (true, d)
        } else if let Some(d) = word.strip_prefix('w') {
            (false, d)
        } else {
            return None;
        };
        if digits.is_empty() || digits.len() > 2 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let n = digits.parse().ok()?;
        self.pos += word.len();
        Some((is64, n))
    }

    /// A number token `[-+]?[0-9A-Za-z]+` (validated by [`Lit::parse`]),
    /// optionally in brackets as PREVAIL's `IMM` allows.
    fn number(&mut self) -> Option<&'a str> {
        self.ws();
        let save = self.pos;
        let bracket = self.eat("[");
        self.ws();
        let rest = self.rest();
        let sign = usize::from(rest.starts_with(['-', '+']));
        let len = rest[sign..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len() - sign);
        if len == 0 || !rest[sign..].starts_with(|c: char| c.is_ascii_digit()) {
            self.pos = save;
            return None;
        }
        let token = &rest[..sign + len];
        self.pos += token.len();
        if bracket && !self.eat("]") {
            self.pos = save;
            return None;
        }
        Some(token)
    }

    /// A label `<name>`, returned with its brackets.
    fn label(&mut self) -> Option<&'a str> {
        self.ws();
        let rest = self.rest();
        if !rest.starts_with('<') {
            return None;
        }
        let end = rest.find('>')?;
        let name = &rest[1..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        self.pos += end + 1;
        Some(&rest[..=end])
    }
}

// ---------------------------------------------------------------------------
// Facts
// ---------------------------------------------------------------------------

/// One interval bound or constant: a literal or `-oo` / `+oo`.
#[derive(Debug, Clone, Copy)]
enum Bound {
    NegInf,
    Lit(Lit),
    PosInf,
}

impl Bound {
    fn signed(self) -> Option<i64> {
        match self {
            Bound::NegInf => Some(i64::MIN),
            Bound::Lit(l) => l.to_i64(),
            Bound::PosInf => Some(i64::MAX),
        }
    }

    fn unsigned(self) -> u64 {
        match self {
            Bound::NegInf => 0,
            Bound::Lit(l) => l.to_u64(),
            Bound::PosInf => u64::MAX,
        }
    }
}

impl Cur<'_> {
    fn bound(&mut self) -> Option<Bound> {
        if self.eat("-oo") {
            return Some(Bound::NegInf);
        }
        if self.eat("+oo") {
            return Some(Bound::PosInf);
        }
        let save = self.pos;
        self.ws();
        let rest = self.rest();
        let sign = usize::from(rest.starts_with(['-', '+']));
        let len = rest[sign..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len() - sign);
        match Lit::parse(&rest[..sign + len]) {
            Some(l) => {
                self.pos += sign + len;
                Some(Bound::Lit(l))
            }
            None => {
                self.pos = save;
                None
            }
        }
    }

    /// `c`, `[c]` or `[a, b]`.
    fn range(&mut self) -> Option<(Bound, Bound)> {
        if self.eat("[") {
            let lo = self.bound()?;
            if self.eat(",") {
                let hi = self.bound()?;
                self.expect("]").ok()?;
                Some((lo, hi))
            } else {
                self.expect("]").ok()?;
                Some((lo, lo))
            }
        } else {
            let c = self.bound()?;
            Some((c, c))
        }
    }

    /// `rN.kind` (not `.type`), `packet_size` or `meta_offset`.
    fn var(&mut self) -> Option<Var> {
        let save = self.pos;
        if self.eat_word("packet_size") {
            return Some(Var::PacketSize);
        }
        if self.eat_word("meta_offset") {
            return Some(Var::MetaOffset);
        }
        let parsed = (|| {
            let (is64, reg) = self.reg()?;
            if !is64 || reg > 10 || !self.eat(".") {
                return None;
            }
            let kind = Kind::from_name(self.peek_word())?;
            self.eat_word(kind.name());
            Some(Var::Reg { reg, kind })
        })();
        if parsed.is_none() {
            self.pos = save;
        }
        parsed
    }

    fn type_name(&mut self) -> Option<Type> {
        let ty = Type::from_name(self.peek_word())?;
        self.eat_word(ty.name());
        Some(ty)
    }
}

/// Parses one constraint; anything outside the grammar is
/// [`Fact::Unparsed`]. Never panics.
pub fn parse_fact(text: &str) -> Fact {
    if text.trim() == "_|_" {
        return Fact::Bottom;
    }
    let mut c = Cur::new(text);
    match fact(&mut c) {
        Some(f) if c.at_end() => f,
        _ => Fact::Unparsed(text.to_string()),
    }
}

fn fact(c: &mut Cur<'_>) -> Option<Fact> {
    // s[a...b].type|svalue|uvalue=...
    if c.eat("s[") {
        let start = c.bound()?.signed()?;
        c.expect("...").ok()?;
        let end = c.bound()?.signed()?;
        c.expect("]").ok()?;
        c.expect(".").ok()?;
        let field = c.peek_word();
        c.eat_word(field);
        c.expect("=").ok()?;
        return match field {
            "type" => Some(Fact::StackType {
                start,
                end,
                ty: c.type_name()?,
            }),
            "svalue" => Some(Fact::StackSValue {
                start,
                end,
                value: c.range().filter(|(l, h)| same(*l, *h))?.0.signed()?,
            }),
            "uvalue" => Some(Fact::StackUValue {
                start,
                end,
                value: c.range().filter(|(l, h)| same(*l, *h))?.0.unsigned(),
            }),
            _ => None,
        };
    }
    // rN.type ...
    let save = c.pos;
    if let Some((true, reg)) = c.reg() {
        if reg <= 10 && c.eat(".") && c.eat_word("type") {
            if c.eat_word("in") {
                c.expect("{").ok()?;
                let mut types = vec![c.type_name()?];
                while c.eat(",") {
                    types.push(c.type_name()?);
                }
                c.expect("}").ok()?;
                return Some(Fact::TypeIn { reg, types });
            }
            c.expect("=").ok()?;
            if let Some((true, other)) = c.reg() {
                if other <= 10 && c.eat(".") && c.eat_word("type") {
                    return Some(Fact::SameType { reg, other });
                }
                return None;
            }
            return Some(Fact::Type {
                reg,
                ty: c.type_name()?,
            });
        }
    }
    c.pos = save;
    // x=..., x-y<=c
    let lhs = c.var()?;
    if c.eat("=") {
        if let Some(rhs) = c.var() {
            return Some(Fact::Equal { lhs, rhs });
        }
        let (lo, hi) = c.range()?;
        return Some(match lhs {
            Var::PacketSize => Fact::PacketSize {
                min: lo.signed()?,
                max: hi.signed()?,
            },
            Var::MetaOffset => Fact::MetaOffset {
                min: lo.signed()?,
                max: hi.signed()?,
            },
            Var::Reg {
                reg,
                kind: Kind::SValue,
            } => Fact::SValue {
                reg,
                min: lo.signed()?,
                max: hi.signed()?,
            },
            Var::Reg {
                reg,
                kind: Kind::UValue,
            } => Fact::UValue {
                reg,
                min: lo.unsigned(),
                max: hi.unsigned(),
            },
            Var::Reg { reg, kind } => Fact::Attr {
                reg,
                kind,
                min: lo.signed()?,
                max: hi.signed()?,
            },
        });
    }
    c.expect("-").ok()?;
    let rhs = c.var()?;
    c.expect("<=").ok()?;
    let bound = c.bound()?.signed()?;
    Some(Fact::DiffLe { lhs, rhs, bound })
}

fn same(a: Bound, b: Bound) -> bool {
    match (a, b) {
        (Bound::Lit(x), Bound::Lit(y)) => x.neg == y.neg && x.mag == y.mag,
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Assembly
// ---------------------------------------------------------------------------

/// A parsed line: an instruction, or one whose target label is not yet
/// resolved.
#[derive(Debug, Clone)]
enum Line {
    Insn(Instruction),
    /// `goto <L>` (`cond` None) or `if dst cond src goto <L>`.
    Jump {
        cond: Option<(Width, JmpCond, Reg, Source)>,
        target: String,
    },
    /// `if dst &!= src goto <L>`: PREVAIL's negated jset (no bit in
    /// common), which has no BPF encoding; laid out as its equivalent pair
    /// `if dst & src goto +1; goto <L>`.
    JumpUnset {
        width: Width,
        dst: Reg,
        src: Source,
        target: String,
    },
    /// `call <L>`.
    CallLocal {
        target: String,
    },
}

impl Line {
    fn slots(&self) -> usize {
        match self {
            Line::Insn(i) => i.slots(),
            Line::JumpUnset { .. } => 2,
            _ => 1,
        }
    }

    /// The label a jump of this line goes to.
    fn jump_target(&self) -> Option<&str> {
        match self {
            Line::Jump { target, .. } | Line::JumpUnset { target, .. } => Some(target),
            _ => None,
        }
    }
}

/// The text of a line without its `;` comment and surrounding blanks.
fn strip_comment(line: &str) -> &str {
    line.split(';').next().unwrap_or("").trim()
}

/// Assembles a case's blocks (label, lines), laid out in the given order:
/// each block falls through into the next, as in PREVAIL's harness. Jump and
/// local-call offsets are relative in slots (`target - pc - 1`). Fails with
/// "unsupported instruction `...` at line N: why" (N: PREVAIL's 0-based
/// instruction index) for the first line that has no encoding in our ISA, or
/// whose encoding `isa::decode` does not read back as the same instruction.
pub fn assemble(blocks: &[(String, Vec<String>)]) -> Result<Code, String> {
    // Every line parsed first (its index is PREVAIL's instruction index).
    let mut blocks_parsed = Vec::with_capacity(blocks.len());
    let mut index = 0usize;
    for (label, lines) in blocks {
        let mut items = Vec::with_capacity(lines.len());
        for line in lines {
            let text = strip_comment(line);
            let item = parse_line(text).map_err(|why| {
                format!("unsupported instruction `{text}` at line {index}: {why}")
            })?;
            items.push((item, line.clone()));
            index += 1;
        }
        blocks_parsed.push((label, items));
    }
    // The blocks local calls target start functions. Each function's
    // failed `assume`s end in its own `r0 = 0; exit` tail, after its last
    // block: a jump to another function's code is no valid program (the
    // kernel's `jump out of range`).
    let call_targets: std::collections::BTreeSet<&str> = blocks_parsed
        .iter()
        .flat_map(|(_, items)| items.iter())
        .filter_map(|(item, _)| match item {
            Line::CallLocal { target } => Some(target.as_str()),
            _ => None,
        })
        .collect();
    let mut function_of_block = Vec::with_capacity(blocks_parsed.len());
    let mut function = 0usize;
    for (k, (label, _)) in blocks_parsed.iter().enumerate() {
        if k > 0 && call_targets.contains(label.as_str()) {
            function += 1;
        }
        function_of_block.push(function);
    }
    let tail_label = |f: usize| {
        if f == 0 {
            ASSUME_FAILED.to_string()
        } else {
            format!("{ASSUME_FAILED}{f}")
        }
    };
    let assumes_in = |f: usize| {
        blocks_parsed
            .iter()
            .zip(&function_of_block)
            .filter(|(_, &g)| g == f)
            .flat_map(|((_, items), _)| items.iter())
            .any(|(l, _)| l.jump_target() == Some(ASSUME_FAILED))
    };

    /// The program as laid out so far.
    #[derive(Default)]
    struct Layout {
        parsed: Vec<Line>,
        /// The pc and text of each parsed line, for errors.
        texts: Vec<(usize, String)>,
        labels: BTreeMap<String, usize>,
        /// PREVAIL's lines (and the final tail): index = PREVAIL's.
        source: Vec<(usize, String)>,
        pc: usize,
    }
    impl Layout {
        fn push(&mut self, item: Line, text: String, in_source: bool) {
            if in_source {
                self.source.push((self.pc, text.clone()));
            }
            self.texts.push((self.pc, text));
            self.pc += item.slots();
            self.parsed.push(item);
        }
    }
    let mut out = Layout::default();
    // Function `f`'s tail of failed assumes, if it has any; `next`: the
    // block after it (none at the program's end, where a fall-through
    // reaches the tail as PREVAIL's implicit end).
    let emit_tail = |out: &mut Layout, f: usize, next: Option<&str>| -> Result<(), String> {
        if !assumes_in(f) {
            return Ok(());
        }
        // A function that falls through into the next keeps doing so.
        let falls = !matches!(
            out.parsed.last(),
            Some(Line::Insn(
                Instruction::Exit | Instruction::Ja { .. } | Instruction::JaLong { .. }
            )) | Some(Line::Jump { cond: None, .. })
        );
        if let (true, Some(next)) = (falls, next) {
            let jump = Line::Jump {
                cond: None,
                target: next.to_string(),
            };
            out.push(
                jump,
                format!("goto {next} ; (over the tail of failed assumes)"),
                false,
            );
        }
        out.labels.insert(tail_label(f), out.pc);
        for text in ["r0 = 0", "exit"] {
            // Only the tail at the end is listed in `source`.
            out.push(
                parse_line(text)?,
                format!("{text} ; (tail of failed assumes)"),
                next.is_none(),
            );
        }
        Ok(())
    };
    for (k, (label, items)) in blocks_parsed.iter().enumerate() {
        let f = function_of_block[k];
        if k > 0 && function_of_block[k - 1] != f {
            emit_tail(&mut out, function_of_block[k - 1], Some(label.as_str()))?;
        }
        if out.labels.insert((*label).clone(), out.pc).is_some() {
            return Err(format!("duplicate label {label}"));
        }
        for (item, line) in items {
            let item = match item {
                Line::Jump { cond, target } if target == ASSUME_FAILED => Line::Jump {
                    cond: *cond,
                    target: tail_label(f),
                },
                Line::JumpUnset {
                    width,
                    dst,
                    src,
                    target,
                } if target == ASSUME_FAILED => Line::JumpUnset {
                    width: *width,
                    dst: *dst,
                    src: *src,
                    target: tail_label(f),
                },
                other => other.clone(),
            };
            out.push(item, line.clone(), true);
        }
    }
    emit_tail(&mut out, function, None)?;
    let Layout {
        parsed,
        texts,
        labels,
        source,
        pc,
    } = out;
    let resolve = |target: &str, at: usize, index: usize| -> Result<i64, String> {
        let to = labels.get(target).ok_or_else(|| {
            format!(
                "unsupported instruction `{}` at line {index}: undefined label {target}",
                strip_comment(&texts[index].1)
            )
        })?;
        Ok(*to as i64 - at as i64 - 1)
    };
    let mut instructions = Vec::with_capacity(parsed.len());
    for (index, item) in parsed.iter().enumerate() {
        let at = texts[index].0;
        let out_of_range = || {
            format!(
                "unsupported instruction `{}` at line {index}: target out of range",
                strip_comment(&texts[index].1)
            )
        };
        let insn = match item {
            Line::Insn(i) => *i,
            Line::Jump { cond, target } => {
                let rel = resolve(target, at, index)?;
                match (cond, i16::try_from(rel)) {
                    (None, Ok(off)) => Instruction::Ja { off },
                    (None, Err(_)) => Instruction::JaLong {
                        imm: i32::try_from(rel).map_err(|_| out_of_range())?,
                    },
                    (Some((width, cond, dst, src)), Ok(off)) => Instruction::Jump {
                        width: *width,
                        cond: *cond,
                        dst: *dst,
                        src: *src,
                        off,
                    },
                    (Some(_), Err(_)) => return Err(out_of_range()),
                }
            }
            Line::JumpUnset {
                width,
                dst,
                src,
                target,
            } => {
                // The jset skips the `goto`; the `goto` is one slot later.
                instructions.push((
                    at,
                    Instruction::Jump {
                        width: *width,
                        cond: JmpCond::Set,
                        dst: *dst,
                        src: *src,
                        off: 1,
                    },
                ));
                let rel = resolve(target, at + 1, index)?;
                instructions.push((
                    at + 1,
                    Instruction::Ja {
                        off: i16::try_from(rel).map_err(|_| out_of_range())?,
                    },
                ));
                continue;
            }
            Line::CallLocal { target } => {
                let rel = resolve(target, at, index)?;
                Instruction::Call(CallTarget::Local(
                    i32::try_from(rel).map_err(|_| out_of_range())?,
                ))
            }
        };
        instructions.push((at, insn));
    }

    let mut insns = Vec::with_capacity(pc);
    for (_, i) in &instructions {
        i.encode_into(&mut insns);
    }
    // Everything we emit must decode back to itself: this rejects forms that
    // have a bit pattern but no meaning in RFC 9669 (e.g. 32-bit movsx from
    // 32 bits).
    if let Err(e) = check_round_trip(&insns, &instructions) {
        let index = source.iter().position(|(p, _)| *p == e.0).unwrap_or(0);
        let text = source
            .get(index)
            .map(|(_, l)| strip_comment(l))
            .unwrap_or("");
        return Err(format!(
            "unsupported instruction `{text}` at line {index}: not a valid BPF encoding ({})",
            e.1
        ));
    }
    Ok(Code {
        insns,
        labels,
        source,
    })
}

fn check_round_trip(
    insns: &[Insn],
    expected: &[(usize, Instruction)],
) -> Result<(), (usize, String)> {
    let decoded = decode_all(insns).map_err(|e| (e.pc, e.kind.to_string()))?;
    for (d, e) in decoded.iter().zip(expected) {
        if d != e {
            return Err((e.0, format!("decodes as {:?}", d.1)));
        }
    }
    if decoded.len() != expected.len() {
        return Err((0, "instruction count changed".into()));
    }
    Ok(())
}

fn reg_of(n: u8) -> Result<Reg, String> {
    Reg::new(n).ok_or_else(|| format!("no register r{n}"))
}

fn width_of(is64: bool) -> Width {
    if is64 {
        Width::W64
    } else {
        Width::W32
    }
}

/// An ALU / jump / store immediate as PREVAIL's `imm(s, false)` reads it: a
/// negative number as `long`, kept only if it fits 32 bits (PREVAIL would
/// keep a 64-bit value no BPF instruction can hold); a non-negative one as
/// `unsigned long`, truncated to 32 bits.
fn imm32(token: &str) -> Result<i32, String> {
    let lit = Lit::parse(token).ok_or_else(|| format!("bad number `{token}`"))?;
    if lit.neg {
        lit.to_i32()
            .ok_or_else(|| format!("immediate `{token}` does not fit 32 bits"))
    } else {
        Ok(lit.mag as u32 as i32)
    }
}

/// A 64-bit `lddw` constant: `long long` if negative, else `unsigned long
/// long`.
fn imm64(token: &str) -> Result<u64, String> {
    let lit = Lit::parse(token).ok_or_else(|| format!("bad number `{token}`"))?;
    if lit.neg {
        lit.to_i64()
            .map(|v| v as u64)
            .ok_or_else(|| format!("`{token}` does not fit 64 bits"))
    } else {
        Ok(lit.mag)
    }
}

/// An `int` (`stoi`): helper ids, offsets, map fds.
fn int(token: &str) -> Result<i32, String> {
    Lit::parse(token)
        .and_then(Lit::to_i32)
        .ok_or_else(|| format!("bad int `{token}`"))
}

fn mem_size(bits: &str) -> Result<MemSize, String> {
    Ok(match bits {
        "8" => MemSize::B,
        "16" => MemSize::H,
        "32" => MemSize::W,
        "64" => MemSize::DW,
        _ => return Err(format!("bad access width `{bits}`")),
    })
}

impl Cur<'_> {
    /// `*(u32 *)`: whether signed, and the size.
    fn deref_type(&mut self) -> Result<(bool, MemSize), String> {
        self.expect("*")?;
        self.expect("(")?;
        let word = self.peek_word();
        let (signed, bits) = if let Some(b) = word.strip_prefix('u') {
            (false, b)
        } else if let Some(b) = word.strip_prefix('s') {
            (true, b)
        } else {
            return Err(format!("bad access type `{word}`"));
        };
        let size = mem_size(bits)?;
        self.eat_word(word);
        self.expect("*")?;
        self.expect(")")?;
        Ok((signed, size))
    }

    /// `(r1 + 4)` / `(r10 - 8)`: base register and offset.
    fn address(&mut self) -> Result<(Reg, i16), String> {
        self.expect("(")?;
        let (base, off) = self.reg_plus_minus()?;
        self.expect(")")?;
        Ok((base, off))
    }

    fn reg_plus_minus(&mut self) -> Result<(Reg, i16), String> {
        let base = match self.reg() {
            Some((true, n)) => reg_of(n)?,
            _ => return Err("expected an r register as base".into()),
        };
        let negate = if self.eat("+") {
            false
        } else if self.eat("-") {
            true
        } else {
            return Err("expected `+` or `-` after the base register".into());
        };
        let token = self.number().ok_or("expected an offset")?;
        let off = int(token)?;
        let off = if negate { off.checked_neg() } else { Some(off) };
        let off = off
            .and_then(|o| i16::try_from(o).ok())
            .ok_or_else(|| format!("offset `{token}` does not fit 16 bits"))?;
        Ok((base, off))
    }

    /// A register or a 32-bit immediate (PREVAIL's `REG_OR_IMM`).
    fn reg_or_imm(&mut self) -> Result<Source, String> {
        if let Some((_, n)) = self.reg() {
            return Ok(Source::Reg(reg_of(n)?));
        }
        let token = self.number().ok_or("expected a register or a number")?;
        Ok(Source::Imm(imm32(token)?))
    }

    /// `(` number `)`, as in `map_by_idx(0)`.
    fn paren_int(&mut self) -> Result<i32, String> {
        self.expect("(")?;
        let token = self.number().ok_or("expected a number")?;
        let v = int(token)?;
        self.expect(")")?;
        Ok(v)
    }
}

/// Parses one line (comment already stripped) of PREVAIL's assembly
/// (`parse_instruction` in `src/test/parse.cpp`).
fn parse_line(text: &str) -> Result<Line, String> {
    let mut c = Cur::new(text);
    let line = match c.peek_word() {
        "exit" => {
            c.eat_word("exit");
            Line::Insn(Instruction::Exit)
        }
        "callx" => {
            c.eat_word("callx");
            match c.reg() {
                Some((true, n)) => Line::Insn(Instruction::CallX { reg: reg_of(n)? }),
                _ => return Err("expected an r register".into()),
            }
        }
        "call_btf" => {
            c.eat_word("call_btf");
            let btf_id = int(c.number().ok_or("expected a BTF id")?)?;
            let module = if c.eat_word("module") {
                let m = int(c.number().ok_or("expected a module number")?)?;
                i16::try_from(m)
                    .ok()
                    .filter(|m| *m >= 0)
                    .ok_or("module value out of range")?
            } else {
                0
            };
            Line::Insn(Instruction::Call(CallTarget::Kfunc {
                btf_id,
                btf_idx: module,
            }))
        }
        "call" => {
            c.eat_word("call");
            if let Some(label) = c.label() {
                Line::CallLocal {
                    target: label.to_string(),
                }
            } else {
                let id = int(c.number().ok_or("expected a helper id or a label")?)?;
                Line::Insn(Instruction::Call(CallTarget::Helper(id)))
            }
        }
        // `assume COND`: paths where COND is false end. Lowered to a jump
        // on the negated condition to a safe `r0 = 0; exit` tail.
        "assume" => {
            c.eat_word("assume");
            let (width, cond, dst, src) = condition(&mut c)?;
            let negated = cond.map_or(Some(JmpCond::Set), |cond| match cond {
                JmpCond::Eq => Some(JmpCond::Ne),
                JmpCond::Ne => Some(JmpCond::Eq),
                JmpCond::Gt => Some(JmpCond::Le),
                JmpCond::Le => Some(JmpCond::Gt),
                JmpCond::Ge => Some(JmpCond::Lt),
                JmpCond::Lt => Some(JmpCond::Ge),
                JmpCond::SGt => Some(JmpCond::SLe),
                JmpCond::SLe => Some(JmpCond::SGt),
                JmpCond::SGe => Some(JmpCond::SLt),
                JmpCond::SLt => Some(JmpCond::SGe),
                // A jset fails where no bit is in common.
                JmpCond::Set => None,
            });
            conditional(Some((width, negated, dst, src)), ASSUME_FAILED.to_string())
        }
        "lock" => {
            c.eat_word("lock");
            atomic(&mut c)?
        }
        "if" | "goto" => jump(&mut c)?,
        _ if c.rest().starts_with('*') => store(&mut c)?,
        _ => assignment(&mut c)?,
    };
    c.end()?;
    Ok(line)
}

/// `lock *(u64 *)(r1 + 0) += r2 [fetch]`, `x=` (xchg), `cx=` (cmpxchg).
fn atomic(c: &mut Cur<'_>) -> Result<Line, String> {
    let (signed, size) = c.deref_type()?;
    if signed {
        return Err("signed atomic access".into());
    }
    let (dst, off) = c.address()?;
    let op = if c.eat("+=") {
        AtomicOp::Add
    } else if c.eat("|=") {
        AtomicOp::Or
    } else if c.eat("&=") {
        AtomicOp::And
    } else if c.eat("^=") {
        AtomicOp::Xor
    } else if c.eat("x=") {
        AtomicOp::Xchg
    } else if c.eat("cx=") {
        AtomicOp::CmpXchg
    } else {
        return Err("unknown atomic operator".into());
    };
    let src = match c.reg() {
        Some((true, n)) => reg_of(n)?,
        _ => return Err("expected an r register".into()),
    };
    let fetch = c.eat_word("fetch") || op.always_fetches();
    if !matches!(size, MemSize::W | MemSize::DW) {
        return Err("atomic operations are 32 or 64 bit".into());
    }
    Ok(Line::Insn(Instruction::Atomic {
        size,
        op,
        fetch,
        dst,
        src,
        off,
    }))
}

/// `goto <L>` / `if w1 s< r2 goto <L>` (an immediate before the label is
/// ignored, as PREVAIL does).
fn jump(c: &mut Cur<'_>) -> Result<Line, String> {
    let cond = if c.eat_word("if") {
        Some(condition(c)?)
    } else {
        None
    };
    if !c.eat_word("goto") {
        return Err("expected `goto`".into());
    }
    let _ignored = c.number();
    let target = c.label().ok_or("expected a label")?.to_string();
    Ok(conditional(cond, target))
}

/// A jump to `target` when `cond` holds (always without one).
fn conditional(cond: Option<(Width, Option<JmpCond>, Reg, Source)>, target: String) -> Line {
    match cond {
        None => Line::Jump { cond: None, target },
        Some((width, Some(cond), dst, src)) => Line::Jump {
            cond: Some((width, cond, dst, src)),
            target,
        },
        Some((width, None, dst, src)) => Line::JumpUnset {
            width,
            dst,
            src,
            target,
        },
    }
}

/// The label of the `r0 = 0; exit` tail that failed `assume`s jump to.
pub const ASSUME_FAILED: &str = "<assume-failed>";

/// `w1 s< r2`: a comparison (of `if` and `assume`); `None` is PREVAIL's
/// negated jset `&!=` (no bit in common).
fn condition(c: &mut Cur<'_>) -> Result<(Width, Option<JmpCond>, Reg, Source), String> {
    {
        let (is64, n) = c.reg().ok_or("expected a register")?;
        let dst = reg_of(n)?;
        // Longest operators first.
        const OPS: [(&str, Option<JmpCond>); 12] = [
            ("&==", Some(JmpCond::Set)),
            ("&!=", None),
            ("s<=", Some(JmpCond::SLe)),
            ("s>=", Some(JmpCond::SGe)),
            ("==", Some(JmpCond::Eq)),
            ("!=", Some(JmpCond::Ne)),
            ("<=", Some(JmpCond::Le)),
            (">=", Some(JmpCond::Ge)),
            ("s<", Some(JmpCond::SLt)),
            ("s>", Some(JmpCond::SGt)),
            ("<", Some(JmpCond::Lt)),
            (">", Some(JmpCond::Gt)),
        ];
        let (_, cond) = OPS
            .iter()
            .find(|(op, _)| c.eat(op))
            .ok_or("unknown comparison operator")?;
        let src = c.reg_or_imm()?;
        Ok((width_of(is64), *cond, dst, src))
    }
}

/// `*(u32 *)(r1 + 4) = r2` / `= 5`.
fn store(c: &mut Cur<'_>) -> Result<Line, String> {
    // PREVAIL ignores a `s` in a store's type.
    let (_, size) = c.deref_type()?;
    let (dst, off) = c.address()?;
    c.expect("=")?;
    let src = match c.reg() {
        Some((true, n)) => Source::Reg(reg_of(n)?),
        Some((false, _)) => return Err("stored register must be an r register".into()),
        None => Source::Imm(imm32(c.number().ok_or("expected a register or a number")?)?),
    };
    Ok(Line::Insn(Instruction::Store {
        size,
        dst,
        off,
        src,
    }))
}

/// Everything that starts with a destination register.
fn assignment(c: &mut Cur<'_>) -> Result<Line, String> {
    let (is64, n) = c.reg().ok_or("unknown instruction")?;
    let dst = reg_of(n)?;
    let width = width_of(is64);
    c.ws();
    let rest = c.rest();
    let eq = rest.find('=').ok_or("expected an assignment")?;
    let op = &rest[..eq];
    if op.contains(char::is_whitespace) {
        return Err(format!("unknown operator `{op}=`"));
    }
    c.pos += eq + 1;
    if op.is_empty() {
        return plain_assignment(c, is64, dst);
    }
    let alu = match op {
        "+" => AluOp::Add,
        "-" => AluOp::Sub,
        "*" => AluOp::Mul,
        "/" => AluOp::Div,
        "%" => AluOp::Mod,
        "|" => AluOp::Or,
        "&" => AluOp::And,
        "<<" => AluOp::Lsh,
        ">>" => AluOp::Rsh,
        "s>>" => AluOp::Arsh,
        "^" => AluOp::Xor,
        "s/" => AluOp::SDiv,
        "s%" => AluOp::SMod,
        "s8" | "s16" | "s32" => {
            let src = match c.reg() {
                Some((_, s)) => reg_of(s)?,
                None => return Err("sign-extending move of an immediate".into()),
            };
            let bits = op[1..].parse().map_err(|_| "bad width")?;
            if width == Width::W32 && bits == 32 {
                // Sign-extending 32 bits into 32 bits is PREVAIL's spelling
                // of a plain 32-bit move, which has no movsx encoding.
                return Ok(Line::Insn(Instruction::Alu {
                    width,
                    op: AluOp::Mov,
                    dst,
                    src: Source::Reg(src),
                }));
            }
            return Ok(Line::Insn(Instruction::MovSx {
                width,
                dst,
                src,
                bits,
            }));
        }
        _ => return Err(format!("unknown operator `{op}=`")),
    };
    let src = c.reg_or_imm()?;
    if c.eat_word("ll") {
        return Err(format!("`ll` with `{op}=`"));
    }
    Ok(Line::Insn(Instruction::Alu {
        width,
        op: alu,
        dst,
        src,
    }))
}

/// `dst = ...`: moves, loads, unary operations, 64-bit and pseudo loads.
fn plain_assignment(c: &mut Cur<'_>, is64: bool, dst: Reg) -> Result<Line, String> {
    let width = width_of(is64);
    c.ws();
    // Loads: `r0 = *(u8 *)(r1 + 2)`, `r0 = *(u8 *)skb[...]`.
    if c.rest().starts_with('*') {
        if !is64 {
            return Err("load into a w register".into());
        }
        let (signed, size) = c.deref_type()?;
        if c.eat("skb[") {
            if dst != Reg::R0 || signed {
                return Err("legacy packet loads are `r0 = *(uN *)skb[...]`".into());
            }
            let (mode, imm) = if let Some((true, n)) = c.reg() {
                let r = reg_of(n)?;
                if c.eat("+") {
                    (
                        PacketMode::Ind(r),
                        imm32(c.number().ok_or("expected an offset")?)?,
                    )
                } else if c.eat("-") {
                    let token = c.number().ok_or("expected an offset")?;
                    (PacketMode::Ind(r), imm32(&format!("-{token}"))?)
                } else {
                    (PacketMode::Ind(r), 0)
                }
            } else {
                (
                    PacketMode::Abs,
                    imm32(c.number().ok_or("expected an offset")?)?,
                )
            };
            c.expect("]")?;
            if size == MemSize::DW {
                return Err("64-bit legacy packet load".into());
            }
            return Ok(Line::Insn(Instruction::LoadPacket { size, mode, imm }));
        }
        let (src, off) = c.address()?;
        return Ok(Line::Insn(if signed {
            if size == MemSize::DW {
                return Err("sign-extending 64-bit load".into());
            }
            Instruction::LoadSx {
                size,
                dst,
                src,
                off,
            }
        } else {
            Instruction::Load {
                size,
                dst,
                src,
                off,
            }
        }));
    }
    // Unary: `r1 = -r1`, `r1 = be16 r1`, `r1 = swap32 r1`.
    let same_reg = |c: &mut Cur<'_>| -> Result<(), String> {
        match c.reg() {
            Some((w, n)) if w == is64 && reg_of(n)? == dst => Ok(()),
            _ => Err("a unary operation's operand must be its destination".into()),
        }
    };
    let save = c.pos;
    if c.eat("-")
        && !c
            .rest()
            .trim_start()
            .starts_with(|ch: char| ch.is_ascii_digit())
    {
        same_reg(c)?;
        return Ok(Line::Insn(Instruction::Neg { width, dst }));
    }
    c.pos = save;
    let word = c.peek_word();
    let endian = match word {
        "be16" | "be32" | "be64" => Some((EndianOp::ToBe, &word[2..])),
        "le16" | "le32" | "le64" => Some((EndianOp::ToLe, &word[2..])),
        "swap16" | "swap32" | "swap64" => Some((EndianOp::Swap, &word[4..])),
        _ => None,
    };
    if let Some((op, bits)) = endian {
        c.eat_word(word);
        same_reg(c)?;
        let bits = bits.parse().map_err(|_| "bad width")?;
        return Ok(Line::Insn(Instruction::Endian { op, dst, bits }));
    }
    // Pseudo loads.
    let lddw = |value: Lddw| -> Result<Line, String> {
        if is64 {
            Ok(Line::Insn(Instruction::LoadImm64 { dst, value }))
        } else {
            Err("64-bit load into a w register".into())
        }
    };
    match word {
        "map_val" => {
            c.eat_word(word);
            let fd = c.paren_int()?;
            c.expect("+")?;
            let off = int(c.number().ok_or("expected an offset")?)?;
            return lddw(Lddw::MapValue {
                fd,
                off: off as u32,
            });
        }
        "map_fd" | "map_fd_programs" => {
            c.eat_word(word);
            let fd = int(c.number().ok_or("expected a map fd")?)?;
            return lddw(Lddw::MapFd(fd));
        }
        "variable_addr" => {
            c.eat_word(word);
            let id = c.paren_int()?;
            return lddw(Lddw::BtfVar {
                btf_id: id,
                btf_fd: 0,
            });
        }
        "code_addr" => {
            c.eat_word(word);
            let imm = c.paren_int()?;
            return lddw(Lddw::Func(imm));
        }
        "map_by_idx" => {
            c.eat_word(word);
            let idx = c.paren_int()?;
            return lddw(Lddw::MapIdx(idx));
        }
        "mva" => {
            c.eat_word(word);
            c.expect("(")?;
            if !c.eat_word("map_by_idx") {
                return Err("expected `mva(map_by_idx(N)) + off`".into());
            }
            let idx = c.paren_int()?;
            c.expect(")")?;
            c.expect("+")?;
            let off = int(c.number().ok_or("expected an offset")?)?;
            return lddw(Lddw::MapIdxValue {
                idx,
                off: off as u32,
            });
        }
        _ => {}
    }
    // Moves.
    if let Some((_, n)) = c.reg() {
        return Ok(Line::Insn(Instruction::Alu {
            width,
            op: AluOp::Mov,
            dst,
            src: Source::Reg(reg_of(n)?),
        }));
    }
    let token = c.number().ok_or("unknown right-hand side")?;
    if c.eat_word("ll") {
        return lddw(Lddw::Imm(imm64(token)?));
    }
    // `123ll` without a blank: the number token swallowed the suffix.
    if let Some(number) = token.strip_suffix("ll") {
        return lddw(Lddw::Imm(imm64(number)?));
    }
    Ok(Line::Insn(Instruction::Alu {
        width,
        op: AluOp::Mov,
        dst,
        src: Source::Imm(imm32(token)?),
    }))
}
