//! The verifier's fuzzing oracles (issue #5), and the generator they share.
//!
//! [`generate`] writes random but *plausible* programs, in the C-like
//! assembly of [`userbpf_vm::asm`]: what a compiler emits for small C
//! functions (scalar arithmetic of every kind, stack spills and fills,
//! context or buffer reads at in-range offsets, bounded `for` loops,
//! branches on scalars, map lookups with their null checks, pointer
//! arithmetic with scalars bounded by `&` or by a comparison, helper
//! calls), with a few deliberate bugs (an offset past the end, a missing
//! null check or bound, an uninitialised read, a bad shift...). A good
//! share of the programs passes the verifier; the others fail it at
//! interesting places.
//!
//! Two oracles use it:
//!
//! - [`verifier_soundness`]: a raw program (`Env::raw(len)`, possibly with
//!   maps) that the verifier accepts runs in the checked interpreter on
//!   many inputs (buffer and map contents, helper results) and must never
//!   fault: a fault is an access the verifier proved safe and was not.
//!   Each run is made twice, in two places whose memory lies at different
//!   addresses, and must leave the same results: a difference is an
//!   address the program leaked (into memory, or its return value). Map
//!   values and the buffer are exactly as large as the verifier was told
//!   (maps of one entry whose value size is a multiple of 8), so any
//!   access past them faults. The inputs are mostly the program's own
//!   bounds, off by one or two (`Inputs`): a wrong bound (an off-by-one
//!   in a branch refinement or an ALU transfer function) only shows on a
//!   value at the edge. (Injected off-by-ones in the verifier's region and
//!   stack checks, branch refinements, `%`, `&` and `>>` bounds and null
//!   checks are all found within a few thousand cases.)
//! - [`socket_filter_program`]: the same generator for socket filters
//!   (`struct __sk_buff` context, no direct packet access), which the root
//!   crate's `tests/verifier_vs_kernel.rs` loads into the Linux verifier to
//!   compare verdicts.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use arbitrary::Unstructured;
use userbpf_verifier::{check, Context, Env, MapInfo, Options, SkbKind};
use userbpf_vm::maps::{Map, MapSet, MapSpec, BPF_ANY};
use userbpf_vm::object::ProgramType;
use userbpf_vm::{asm, Config, Helpers, Program};

use crate::GuardedBuffer;

mod gen;

/// `BPF_MAP_TYPE_HASH`.
pub const MAP_HASH: u32 = 1;
/// `BPF_MAP_TYPE_ARRAY`.
pub const MAP_ARRAY: u32 = 2;

/// `sizeof(struct __sk_buff)`.
const SK_BUFF_SIZE: i64 = userbpf_vm::context::SK_BUFF_SIZE as i64;

/// Where a generated program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// Raw bytecode on a buffer of `len` bytes: `r1` points to it and `r2`
    /// holds `len` (both 0 when `len` is 0), as `userbpf_vm::Vm::run` runs
    /// it and `Env::raw(len)` describes it.
    Raw {
        /// Buffer size in bytes.
        len: u32,
    },
    /// A socket filter (`BPF_PROG_TYPE_SOCKET_FILTER`): `r1` is a
    /// `struct __sk_buff`, read at its fields and written only in `cb[]`.
    SocketFilter,
}

/// A map the generated programs may use: 4-byte keys, one entry, and a
/// value size that is a multiple of 8, so that the interpreter gives a
/// program exactly the value's bytes (values are laid out 8-byte aligned
/// in one region per map): any access past a value faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenMap {
    /// [`MAP_HASH`] or [`MAP_ARRAY`].
    pub map_type: u32,
    /// Value size in bytes (a multiple of 8).
    pub value_size: u32,
}

impl GenMap {
    /// Key size in bytes.
    pub const KEY_SIZE: u32 = 4;
    /// Maximum entries.
    pub const MAX_ENTRIES: u32 = 1;

    /// The map's name (`m0`, `m1`, ...).
    pub fn name(self, idx: usize) -> String {
        format!("m{idx}")
    }

    /// The verifier's view of the map at index `idx`.
    pub fn info(self, idx: usize) -> MapInfo {
        MapInfo::new(
            &self.name(idx),
            self.map_type,
            Self::KEY_SIZE,
            self.value_size,
            Self::MAX_ENTRIES,
        )
    }

    /// The interpreter's map at index `idx`.
    pub fn spec(self, idx: usize) -> MapSpec {
        MapSpec {
            name: self.name(idx),
            map_type: self.map_type,
            key_size: Self::KEY_SIZE,
            value_size: self.value_size,
            max_entries: Self::MAX_ENTRIES,
            flags: 0,
            map_extra: 0,
        }
    }
}

/// What to generate for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenSpec {
    /// The program's context.
    pub flavour: Flavour,
    /// Its maps, by the index `map[idx:N]` names.
    pub maps: Vec<GenMap>,
    /// No operations whose results the Linux verifier does not bound
    /// (`BPF_DIV` and `BPF_MOD`, signed or not; multiplications and left
    /// shifts, where it gives up on signs; shifts by a register), and
    /// narrow stores of immediates that fit them (the kernel knows a slot
    /// is zero only when the whole immediate is): comparisons with it,
    /// where these make it reject safe programs, want them out.
    pub kernel_bounds_only: bool,
}

impl GenSpec {
    /// The verifier's environment for programs of this spec.
    pub fn env(&self) -> Env {
        let maps = self
            .maps
            .iter()
            .enumerate()
            .map(|(i, m)| m.info(i))
            .collect();
        match self.flavour {
            Flavour::Raw { len } => Env {
                maps,
                ..Env::raw(len)
            },
            Flavour::SocketFilter => Env {
                prog_type: Some(ProgramType::SocketFilter),
                attach_type: None,
                context: Context::SkBuff(SkbKind::SocketFilter),
                maps,
                subprogram_names: Vec::new(),
                sleepable: false,
                kernel_btf: None,
                attach_btf_name: None,
                non_scalar_returns: Vec::new(),
                global_functions: Vec::new(),
            },
        }
    }
}

/// A generated program.
#[derive(Debug)]
pub struct Generated {
    /// Its C-like assembly (for `userbpf_vm::asm::assemble`).
    pub source: String,
    /// The program.
    pub program: Program,
    /// The verifier's environment for it.
    pub env: Env,
    /// What it was generated for.
    pub spec: GenSpec,
}

/// Generates a program for `spec` from the fuzzer's bytes (always one: a
/// short one when the bytes run out).
///
/// # Panics
/// If the generator writes assembly the assembler or [`Program::new`]
/// refuses (a bug of the generator's).
pub fn generate(u: &mut Unstructured<'_>, spec: &GenSpec) -> Generated {
    let source = gen::program_source(u, spec);
    let insns = match asm::assemble(&source) {
        Ok(i) => i,
        Err(e) => panic!("the verifier-oracle generator wrote bad assembly ({e}):\n{source}"),
    };
    let program = match Program::new("vfuzz", insns) {
        Ok(p) => p,
        Err(e) => panic!("the verifier-oracle generator wrote an invalid program ({e}):\n{source}"),
    };
    Generated {
        source,
        program,
        env: spec.env(),
        spec: spec.clone(),
    }
}

/// A socket filter program from the fuzzer's bytes, with `maps` (see
/// [`generate`] and [`GenSpec::kernel_bounds_only`]).
pub fn socket_filter_program(data: &[u8], maps: &[GenMap], kernel_bounds_only: bool) -> Generated {
    let mut u = Unstructured::new(data);
    generate(
        &mut u,
        &GenSpec {
            flavour: Flavour::SocketFilter,
            maps: maps.to_vec(),
            kernel_bounds_only,
        },
    )
}

/// What [`verifier_soundness`] did with its input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The verifier rejected the program, with this message.
    Rejected(String),
    /// The verifier accepted it, and it ran on every input without a fault.
    Accepted,
}

/// Runs per accepted program (inputs: zeros, all ones, then values from
/// [`Inputs`]; a run of these small programs costs microseconds, the
/// verification milliseconds).
const RUNS: usize = 64;

/// The soundness oracle behind `verifier_soundness`: a raw program (a
/// buffer of a random length, maybe maps) from [`generate`] that the
/// verifier accepts runs 64 times in the checked interpreter, on a
/// guarded buffer and maps filled with random contents (the hash map
/// empty on some runs, so lookups fail too), each run twice in two places
/// whose memory lies at different addresses ([`run_in_interpreter`]).
/// Any fault is a soundness bug of the verifier (the instruction budget
/// included: accepted programs terminate), as is a difference between the
/// two places (an address leaked), and panics with the program, its
/// environment and the input.
pub fn verifier_soundness(data: &[u8]) -> Verdict {
    let mut u = Unstructured::new(data);
    let spec = raw_spec(&mut u);
    let seed = u.arbitrary::<u64>().unwrap_or(0);
    let g = generate(&mut u, &spec);
    if let Err(e) = check(&g.program, &g.env, &Options::default(), None) {
        return Verdict::Rejected(e.message);
    }
    if let Err(fault) = run_in_interpreter(&g, seed, RUNS) {
        panic!(
            "verifier soundness: an accepted program faulted in the checked interpreter, or \
             leaked an address: {fault}"
        );
    }
    Verdict::Accepted
}

/// A raw program's buffer length and maps.
fn raw_spec(u: &mut Unstructured<'_>) -> GenSpec {
    let lens = [0u32, 1, 4, 8, 13, 16, 16, 32, 32, 64];
    let len = lens[u.choose_index(lens.len()).unwrap_or(6)];
    let sizes = [8u32, 16, 16, 24, 48];
    let mut size = || sizes[u.choose_index(sizes.len()).unwrap_or(1)];
    let (a, b, c) = (size(), size(), size());
    let maps = match u.int_in_range::<u8>(0..=4).unwrap_or(0) {
        0 => Vec::new(),
        1 => vec![GenMap {
            map_type: MAP_ARRAY,
            value_size: a,
        }],
        2 => vec![GenMap {
            map_type: MAP_HASH,
            value_size: a,
        }],
        3 => vec![
            GenMap {
                map_type: MAP_ARRAY,
                value_size: a,
            },
            GenMap {
                map_type: MAP_HASH,
                value_size: b,
            },
        ],
        _ => vec![
            GenMap {
                map_type: MAP_HASH,
                value_size: a,
            },
            GenMap {
                map_type: MAP_ARRAY,
                value_size: b,
            },
            GenMap {
                map_type: MAP_ARRAY,
                value_size: c,
            },
        ],
    };
    GenSpec {
        flavour: Flavour::Raw { len },
        maps,
        kernel_bounds_only: false,
    }
}

/// The kernel helpers that need no hook (the current task, ...), with
/// `bpf_trace_printk` output dropped, and `bpf_ktime_get_ns` (5),
/// `bpf_get_prandom_u32` (7) and `bpf_get_smp_processor_id` (8) returning
/// [`Inputs`] values (the verifier knows nothing of the first two's
/// results and only the range of the third's, a CPU number below
/// `ncpus()`, which the stand-in keeps to: so these are as valid as the
/// real ones, and they reach the bounds the program checks).
fn base_helpers() -> &'static Helpers {
    static HELPERS: OnceLock<Helpers> = OnceLock::new();
    HELPERS.get_or_init(|| {
        let mut h = Helpers::kernel_basics_with_trace(Arc::new(|_: &[u8]| {}));
        h.register_kernel_fn(5, |_, _, _, _, _| helper_value(u64::MAX));
        h.register_kernel_fn(7, |_, _, _, _, _| helper_value(u64::from(u32::MAX)));
        h.register_kernel_fn(8, |_, _, _, _, _| {
            let cpus = userbpf_vm::maps::percpu::ncpus() as u64;
            helper_value(u64::MAX) % cpus.max(1)
        });
        h
    })
}

thread_local! {
    /// Where this thread's stand-in helpers take their results from.
    static HELPER_VALUES: RefCell<Option<Inputs>> = const { RefCell::new(None) };
}

/// A value for a stand-in helper (0 outside [`run_in_interpreter`]).
fn helper_value(mask: u64) -> u64 {
    HELPER_VALUES.with(|h| h.borrow_mut().as_mut().map_or(0, Inputs::value)) & mask
}

/// Input values for the runs of one program: mostly the bounds it checks
/// (the immediates of its comparisons, of the constants it compares with,
/// of its divisions), off by one or two, since that is where a wrong
/// bound lets an access out; then the values bounds checks trip on, its
/// other immediates, small numbers and random ones.
#[derive(Clone)]
struct Inputs {
    rng: XorShift,
    bounds: Vec<u64>,
    dict: Vec<u64>,
}

impl Inputs {
    fn new(program: &Program, seed: u64) -> Inputs {
        let mut dict: Vec<u64> = vec![
            0,
            1,
            2,
            0x7f,
            0x80,
            0xff,
            0x7fff,
            0x8000,
            0xffff,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            i64::MAX as u64,
            1 << 63,
            u64::MAX,
        ];
        let mut bounds = Vec::new();
        for insn in program.insns() {
            let v = i64::from(insn.imm);
            let class = insn.code & 0x07;
            let op = insn.code & 0xf0;
            let imm_source = insn.code & 0x08 == 0;
            // Conditional jumps (not ja, call, exit), and constants moved
            // into registers (compared with), divided by or masked with.
            let bound = imm_source
                && match class {
                    0x05 | 0x06 => !matches!(op, 0x00 | 0x80 | 0x90),
                    0x04 | 0x07 => matches!(op, 0xb0 | 0x90 | 0x30 | 0x50),
                    _ => false,
                };
            for d in -2..=2 {
                let n = v.wrapping_add(d) as u64;
                dict.push(n);
                if bound {
                    bounds.push(n);
                    bounds.push(n & 0xffff_ffff);
                }
            }
            for k in 1..=4 {
                dict.push((v.wrapping_add(1) << k) as u64);
            }
        }
        for list in [&mut dict, &mut bounds] {
            list.sort_unstable();
            list.dedup();
        }
        Inputs {
            rng: XorShift(seed | 1),
            bounds,
            dict,
        }
    }

    /// A value: a bound (half the time), a dictionary value, a small
    /// number or a random one.
    fn value(&mut self) -> u64 {
        let x = self.rng.next_u64();
        let pick = |list: &[u64]| list[((x >> 8) % list.len().max(1) as u64) as usize];
        match x % 8 {
            0..=3 if !self.bounds.is_empty() => pick(&self.bounds),
            0..=5 => pick(&self.dict),
            6 => (x >> 8) % 72,
            _ => self.rng.next_u64(),
        }
    }

    /// `n` bytes: values written little-endian on 1, 2, 4 or 8 bytes, with
    /// random bytes among them.
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n.saturating_add(8));
        while out.len() < n {
            let x = self.rng.next_u64();
            if x.is_multiple_of(5) {
                out.push((x >> 32) as u8);
            } else {
                let width = [1, 2, 4, 8][((x >> 8) % 4) as usize];
                let v = self.value();
                out.extend_from_slice(&v.to_le_bytes()[..width]);
            }
        }
        out.truncate(n);
        out
    }
}

/// A xorshift generator (deterministic inputs for oracles and tests).
#[derive(Clone, Debug)]
pub struct XorShift(pub u64);

impl XorShift {
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// A verifier message with its numbers replaced by `N`, to group
/// messages that differ only in pcs, offsets and sizes.
pub fn message_group(message: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for c in message.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

/// `bpf_for_each_map_elem`, whose order over a hash map depends on the
/// map's random hash seed.
const FOR_EACH_MAP_ELEM: &str = "bpf_for_each_map_elem#164";

/// A map's entries after a run, in key order (key, value).
type Entries = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// One place for a program to run: its maps, its interpreter, its guarded
/// context.
struct Place {
    set: Arc<MapSet>,
    vm: userbpf_vm::Vm,
    buf: GuardedBuffer,
}

impl Place {
    /// A place for `g`, with `len` bytes of context.
    fn new(g: &Generated, len: usize) -> Result<Place, String> {
        let mut set = MapSet::default();
        for (i, m) in g.spec.maps.iter().enumerate() {
            match Map::create(m.spec(i)) {
                Ok(map) => {
                    set.push(map);
                }
                Err(e) => panic!("cannot create map {i} ({m:?}): {e}"),
            }
        }
        let set = Arc::new(set);
        let vm = set
            .vm(&g.program, base_helpers(), Config::default())
            .map_err(|e| format!("the interpreter cannot prepare it: {e}\n{}", g.source))?;
        Ok(Place {
            set,
            vm,
            buf: GuardedBuffer::new(len, &[]),
        })
    }

    /// Sets the context and the maps' contents (`contents`: per map, the
    /// key to fill, if any, and its value).
    fn fill(&mut self, g: &Generated, input: &[u8], contents: &[(Option<u32>, Vec<u8>)]) {
        self.buf.as_mut_slice().copy_from_slice(input);
        for ((map, m), (key, value)) in self.set.maps().iter().zip(&g.spec.maps).zip(contents) {
            if m.map_type != MAP_ARRAY {
                for k in map.keys() {
                    let _ = map.delete(&k);
                }
            }
            if let Some(k) = key {
                if let Err(e) = map.update(&k.to_le_bytes(), value, BPF_ANY) {
                    panic!("cannot fill map {m:?}: {e}");
                }
            }
        }
    }

    /// What a run leaves: the context's bytes and every map's entries,
    /// in key order.
    fn outputs(&mut self) -> (Vec<u8>, Vec<Entries>) {
        let maps = self
            .set
            .maps()
            .iter()
            .map(|map| {
                let mut keys = map.keys();
                keys.sort();
                keys.into_iter()
                    .map(|k| {
                        let v = map.lookup(&k);
                        (k, v)
                    })
                    .collect()
            })
            .collect();
        (self.buf.as_mut_slice().to_vec(), maps)
    }
}

/// Runs `g` `runs` times in the checked interpreter, on a guarded context
/// (the raw buffer; for socket filters, a `struct __sk_buff`'s bytes) and
/// maps filled from `Inputs` (`seed`; the first run on zeros, the second
/// on all ones; the hash maps empty on some runs), the time and random
/// number helpers returning such values too. A fault (or a program the
/// interpreter cannot prepare) is returned, described with the program,
/// its environment and the input.
///
/// Each run is made twice, in two places whose memory lies at different
/// addresses (other maps, another interpreter and its stack, another
/// context buffer), on the same inputs: the return values, the contexts
/// and the maps' contents must be the same. A difference is an address
/// that reached what the program leaves (userbpf's verifier lets no
/// pointer leak, into memory or through a comparison), and is returned
/// as a fault is. (Programs that walk a hash map with
/// `bpf_for_each_map_elem` run once: the order of its walk depends on
/// the map's random hash seed.)
///
/// # Panics
/// If the maps cannot be created or filled (an environment problem).
pub fn run_in_interpreter(g: &Generated, seed: u64, runs: usize) -> Result<(), String> {
    let spec = &g.spec;
    let len = match spec.flavour {
        Flavour::Raw { len } => len as usize,
        Flavour::SocketFilter => SK_BUFF_SIZE as usize,
    };
    let mut a = Place::new(g, len)?;
    let mut b = if g.source.contains(FOR_EACH_MAP_ELEM) {
        None
    } else {
        Some(Place::new(g, len)?)
    };
    let mut inputs = Inputs::new(&g.program, seed);
    let mut helper_values = Inputs::new(&g.program, seed.rotate_left(17));
    // Hash map contents per run: empty, or one of the keys programs use.
    let hash_keys = [None, Some(0u32), Some(1), Some(0), Some(2)];
    for run in 0..runs {
        let input = match run {
            0 => vec![0; len],
            1 => vec![0xff; len],
            _ => inputs.bytes(len),
        };
        let contents: Vec<(Option<u32>, Vec<u8>)> = spec
            .maps
            .iter()
            .map(|m| {
                let value = if run == 0 {
                    vec![0; m.value_size as usize]
                } else {
                    inputs.bytes(m.value_size as usize)
                };
                let key = match m.map_type {
                    MAP_ARRAY => Some(0u32),
                    _ => hash_keys[run % hash_keys.len()],
                };
                (key, value)
            })
            .collect();
        let describe = |what: String| {
            format!(
                "run {run}: {what}\nenv: {:?} maps {:?}\ninput: {input:?}\nmap contents \
                 (key, value): {contents:?}\nprogram:\n{}",
                spec.flavour, spec.maps, g.source
            )
        };
        // Both places draw the same helper results.
        let values = helper_values.clone();
        let mut results = Vec::new();
        for place in std::iter::once(&mut a).chain(b.as_mut()) {
            HELPER_VALUES.with(|h| *h.borrow_mut() = Some(values.clone()));
            place.fill(g, &input, &contents);
            let r0 = place.vm.run(place.buf.as_mut_slice());
            let ran = r0.map_err(|fault| describe(fault.to_string()))?;
            results.push((ran, place.outputs()));
        }
        HELPER_VALUES.with(|h| {
            if let Some(v) = h.borrow_mut().take() {
                helper_values = v;
            }
        });
        if let [first, second] = &results[..] {
            if first != second {
                return Err(describe(format!(
                    "an address reached the program's output: at one place it returned {} and \
                     left {:?}, at another {} and {:?}",
                    first.0, first.1, second.0, second.1
                )));
            }
        }
    }
    HELPER_VALUES.with(|h| *h.borrow_mut() = None);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_programs_assemble() {
        let mut x = XorShift(0x9e37_79b9_7f4a_7c15);
        for i in 0..3000 {
            let data: Vec<u8> = (0..600).map(|_| x.next_u64() as u8).collect();
            let spec = if i % 2 == 0 {
                raw_spec(&mut Unstructured::new(&data[..8]))
            } else {
                GenSpec {
                    flavour: Flavour::SocketFilter,
                    kernel_bounds_only: i % 4 == 1,
                    maps: vec![GenMap {
                        map_type: MAP_ARRAY,
                        value_size: 16,
                    }],
                }
            };
            let g = generate(&mut Unstructured::new(&data[8..]), &spec);
            assert!(g.program.len() > 1, "{}", g.source);
        }
    }
}
