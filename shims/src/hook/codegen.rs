//! Machine code for the hooks (x86-64): the prologue bytes a patch
//! displaces, relocated into the trampoline; the entry trampoline that
//! builds a `struct pt_regs` and calls the dispatcher; the return
//! trampoline that uretprobes put in place of a return address.

use iced_x86::code_asm::*;
use iced_x86::{
    BlockEncoderOptions, Code, Decoder, DecoderOptions, FlowControl, Instruction, OpKind,
};

/// Bytes of the `jmp rel32` a site is patched with.
pub const JMP_LEN: usize = 5;

/// `struct pt_regs` offsets (x86-64, the kernel's layout).
mod off {
    pub const R15: i32 = 0;
    pub const R14: i32 = 8;
    pub const R13: i32 = 16;
    pub const R12: i32 = 24;
    pub const BP: i32 = 32;
    pub const BX: i32 = 40;
    pub const R11: i32 = 48;
    pub const R10: i32 = 56;
    pub const R9: i32 = 64;
    pub const R8: i32 = 72;
    pub const AX: i32 = 80;
    pub const CX: i32 = 88;
    pub const DX: i32 = 96;
    pub const SI: i32 = 104;
    pub const DI: i32 = 112;
    pub const ORIG_AX: i32 = 120;
    pub const IP: i32 = 128;
    pub const CS: i32 = 136;
    pub const FLAGS: i32 = 144;
    pub const SP: i32 = 152;
    pub const SS: i32 = 160;
}

/// Size of `struct pt_regs`.
pub const PT_REGS: i32 = 168;
/// The System V red zone, skipped before anything is pushed (a probe in
/// the middle of a leaf function may have live data there).
const RED_ZONE: i32 = 128;

/// The instructions a patch at a site displaces.
#[derive(Debug, Clone)]
pub struct Window {
    /// The site's address.
    pub site: u64,
    /// Bytes displaced (whole instructions, at least [`JMP_LEN`]).
    pub len: usize,
    /// The displaced instructions, decoded at the site.
    pub insns: Vec<Instruction>,
}

impl Window {
    /// Offsets (from the site) of the displaced instructions.
    pub fn boundaries(&self) -> Vec<u64> {
        self.insns.iter().map(|i| i.ip() - self.site).collect()
    }
}

/// Decodes the instructions at `site` (`code` are its bytes, at least
/// [`JMP_LEN`] + 15 when the function is that long) that a patch would
/// displace, and checks they can run elsewhere.
pub fn decode_window(site: u64, code: &[u8]) -> Result<Window, String> {
    let mut decoder = Decoder::with_ip(64, code, site, DecoderOptions::NONE);
    let mut insns = Vec::new();
    let mut len = 0usize;
    while len < JMP_LEN {
        if !decoder.can_decode() {
            return Err(format!(
                "only {len} bytes of instructions at {site:#x}: too short to patch"
            ));
        }
        let insn = decoder.decode();
        movable(&insn)?;
        len += insn.len();
        match insn.flow_control() {
            FlowControl::Return | FlowControl::Interrupt | FlowControl::Exception
                if len < JMP_LEN =>
            {
                return Err(format!(
                    "the function ends after {len} bytes at {:#x} ({insn}): too short for a {JMP_LEN}-byte jump",
                    insn.ip()
                ));
            }
            FlowControl::UnconditionalBranch
            | FlowControl::IndirectBranch
            | FlowControl::Return
                if len < JMP_LEN =>
            {
                return Err(format!(
                    "control leaves the function after {len} bytes at {:#x} ({insn}): too short to patch",
                    insn.ip()
                ));
            }
            _ => {}
        }
        if matches!(
            insn.flow_control(),
            FlowControl::Call | FlowControl::IndirectCall
        ) && (call_as_jump(&insn).is_none()
            || (insn.op0_kind() == OpKind::Memory && insn.memory_base() == iced_x86::Register::RSP))
        {
            return Err(format!(
                "the call at {:#x} ({insn}) cannot be moved out of the bytes a patch replaces",
                insn.ip()
            ));
        }
        insns.push(insn);
    }
    no_branch_inside(site, len, &insns)?;
    Ok(Window { site, len, insns })
}

/// Refuses an instruction that cannot run elsewhere: not code, or a
/// `syscall` (the syscall rewriter's).
fn movable(insn: &Instruction) -> Result<(), String> {
    if insn.is_invalid() {
        return Err(format!(
            "invalid instruction at {:#x}: not code, or not the start of an instruction",
            insn.ip()
        ));
    }
    if insn.op_code().mnemonic() == iced_x86::Mnemonic::Syscall {
        return Err(format!(
            "a syscall instruction at {:#x} is among the bytes a patch replaces",
            insn.ip()
        ));
    }
    Ok(())
}

/// Refuses a window one of whose instructions branches into its middle
/// (the copy would jump into the patch).
fn no_branch_inside(site: u64, len: usize, insns: &[Instruction]) -> Result<(), String> {
    for insn in insns {
        if is_relative_branch(insn) {
            let target = insn.near_branch_target();
            if target > site && target < site + len as u64 {
                return Err(format!(
                    "the instruction at {:#x} ({insn}) branches into the bytes a patch replaces",
                    insn.ip()
                ));
            }
        }
    }
    Ok(())
}

/// For a site too close to its function's end for a jump (a function of
/// a `ret`, `xor eax, eax; ret`): the window made of the function's
/// remaining instructions, which must end in a `ret` or a jump (control
/// never reaches past them), followed by the alignment padding after the
/// function (`nop`s or `int3`s, never executed) up to [`JMP_LEN`] bytes.
/// `code` holds the bytes from `site`; `fn_end` is where the function's
/// symbol ends.
pub fn decode_window_into_padding(site: u64, code: &[u8], fn_end: u64) -> Result<Window, String> {
    let mut decoder = Decoder::with_ip(64, code, site, DecoderOptions::NONE);
    let mut insns = Vec::new();
    let mut len = 0usize;
    let mut last_flow = FlowControl::Next;
    while site + (len as u64) < fn_end {
        if !decoder.can_decode() {
            return Err(format!("the function at {site:#x} is cut short"));
        }
        let insn = decoder.decode();
        movable(&insn)?;
        if matches!(
            insn.flow_control(),
            FlowControl::Call | FlowControl::IndirectCall
        ) {
            return Err(format!(
                "the call at {:#x} ({insn}) is too close to the function's end",
                insn.ip()
            ));
        }
        last_flow = insn.flow_control();
        len += insn.len();
        insns.push(insn);
    }
    if site + len as u64 != fn_end
        || !matches!(
            last_flow,
            FlowControl::Return | FlowControl::UnconditionalBranch | FlowControl::IndirectBranch
        )
    {
        return Err(format!(
            "the function ends {} bytes after {site:#x} without a return or a jump: too short for a {JMP_LEN}-byte jump",
            fn_end.saturating_sub(site)
        ));
    }
    while len < JMP_LEN {
        let insn = if decoder.can_decode() {
            decoder.decode()
        } else {
            Instruction::default()
        };
        let padding = insn.code() == Code::Int3
            || insn.mnemonic() == iced_x86::Mnemonic::Nop
            || insn.code() == Code::Nopw
            || insn.code() == Code::Nopd
            || insn.code() == Code::Nopq;
        if insn.is_invalid() || !padding {
            return Err(format!(
                "only {len} bytes from {site:#x} to the end of its function, and no padding after it: too short for a {JMP_LEN}-byte jump"
            ));
        }
        len += insn.len();
        insns.push(insn);
    }
    no_branch_inside(site, len, &insns)?;
    Ok(Window { site, len, insns })
}

/// The jump that stands for `insn` if it is a call (after a push of its
/// return address): `call rel32` -> `jmp rel32`, `call r/m64` -> `jmp
/// r/m64` (a memory operand based on `rsp` is refused by
/// [`decode_window`]: the push moves it).
fn call_as_jump(insn: &Instruction) -> Option<Instruction> {
    let code = match insn.code() {
        Code::Call_rel32_64 => Code::Jmp_rel32_64,
        Code::Call_rm64 => Code::Jmp_rm64,
        _ => return None,
    };
    let mut j = *insn;
    j.set_code(code);
    Some(j)
}

fn is_relative_branch(insn: &Instruction) -> bool {
    (0..insn.op_count()).any(|i| {
        matches!(
            insn.op_kind(i),
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
        )
    })
}

/// Checks that no instruction of the function after the window branches
/// into it (`code`: the function's bytes from the site, `window_len`
/// bytes displaced). Linear decoding: data in the code can only make this
/// refuse a site, never accept a wrong one... except for branches hidden
/// behind data, which linear decoding cannot see.
pub fn check_no_branch_into(site: u64, code: &[u8], window_len: usize) -> Result<(), String> {
    let mut decoder = Decoder::with_ip(64, code, site, DecoderOptions::NONE);
    let end = site + window_len as u64;
    while decoder.can_decode() {
        let insn = decoder.decode();
        if insn.ip() < end || insn.is_invalid() {
            continue;
        }
        if is_relative_branch(&insn) {
            let t = insn.near_branch_target();
            if t > site && t < end {
                return Err(format!(
                    "the instruction at {:#x} ({insn}) branches to {t:#x}, inside the {window_len} bytes a patch at {site:#x} replaces",
                    insn.ip()
                ));
            }
        }
    }
    Ok(())
}

/// What the dispatcher of an entry trampoline is called with:
/// `extern "C" fn(site: usize, regs: *mut PtRegs, full: u64) -> u64`
/// (`full` zero: only the lean words of `regs` were saved; see
/// [`entry_trampoline`]), one of [`RUN`], [`RETURN_NOW`],
/// [`RUN_AND_RETURN_HERE`].
pub type EntryDispatch = extern "C" fn(usize, *mut u8, u64) -> u64;
/// The return handler's dispatcher: `extern "C" fn(regs: *mut PtRegs,
/// full: u64) -> u64` (`full` zero: a lean handler saved only the lean
/// words), the address to return to.
pub type ReturnDispatch = extern "C" fn(*mut u8, u64) -> u64;

/// Entry dispatcher's answer: run the function.
pub const RUN: u64 = 0;
/// Entry dispatcher's answer: return from the function at once with
/// `regs.ax`.
pub const RETURN_NOW: u64 = 1;
/// Entry dispatcher's answer: run the function as a call from the
/// trampoline, whose return comes back to the return handler (the
/// dispatcher has kept the real return address: the call puts the
/// trampoline's in its stack slot).
pub const RUN_AND_RETURN_HERE: u64 = 2;
/// Entry dispatcher's answer: as [`RUN_AND_RETURN_HERE`], through the
/// lean return handler (every return probe of the site is lean).
pub const RUN_AND_RETURN_LEAN: u64 = 3;

/// How much vector state an entry trampoline saves around the dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorSave {
    /// `xmm0-15` (`ymm0-15` whole where the CPU has AVX), at a
    /// function's entry. The System V ABI lets a callee change all of
    /// them, but `__m256` arguments live in the upper halves, and a
    /// caller built with interprocedural register allocation (GCC's
    /// `-fipa-ra`, on at -O2) keeps values in those it knows the callee
    /// leaves alone; the dispatcher's code may change any of them (libc's
    /// AVX `memcpy` ends with `vzeroupper`).
    Sse,
    /// x87, MXCSR and `xmm0-15` (`fxsave64`), and `ymm0-15` whole where
    /// the CPU has AVX (`xsave64`): a site inside a function, where every
    /// register may be live.
    All,
}

/// An entry trampoline as assembled.
#[derive(Debug, Clone)]
pub struct EntryCode {
    /// The machine code.
    pub code: Vec<u8>,
    /// Where the displaced instructions start (run them there, then jump
    /// back: the site unhooked).
    pub orig: u64,
    /// For each displaced instruction (in order), its address in the copy.
    pub orig_insns: Vec<u64>,
    /// The return address a [`RUN_AND_RETURN_HERE`] call leaves in the
    /// function's return slot (0: the trampoline has no such way).
    pub wrap_return: u64,
    /// The same for [`RUN_AND_RETURN_LEAN`].
    pub wrap_return_lean: u64,
}

fn save_gprs(a: &mut CodeAssembler) -> Result<(), IcedError> {
    save_callee_saved(a)?;
    save_lean_gprs(a)?;
    save_constants(a)
}

/// `r15`-`r12` and `bp` (`bx` is among the lean ones: the trampoline
/// uses it).
fn save_callee_saved(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(qword_ptr(rsp + off::R15), r15)?;
    a.mov(qword_ptr(rsp + off::R14), r14)?;
    a.mov(qword_ptr(rsp + off::R13), r13)?;
    a.mov(qword_ptr(rsp + off::R12), r12)?;
    a.mov(qword_ptr(rsp + off::BP), rbp)?;
    Ok(())
}

/// `orig_ax`, `cs` and `ss`, as the kernel's uprobes show them.
fn save_constants(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(qword_ptr(rsp + off::ORIG_AX), -1i32)?;
    a.mov(qword_ptr(rsp + off::CS), 0x33i32)?;
    a.mov(qword_ptr(rsp + off::SS), 0x2bi32)?;
    Ok(())
}

/// What the dispatcher's call may change (and `bx`, which the trampoline
/// uses), but `ax` (saved first).
fn save_lean_gprs(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(qword_ptr(rsp + off::BX), rbx)?;
    a.mov(qword_ptr(rsp + off::R11), r11)?;
    a.mov(qword_ptr(rsp + off::R10), r10)?;
    a.mov(qword_ptr(rsp + off::R9), r9)?;
    a.mov(qword_ptr(rsp + off::R8), r8)?;
    a.mov(qword_ptr(rsp + off::CX), rcx)?;
    a.mov(qword_ptr(rsp + off::DX), rdx)?;
    a.mov(qword_ptr(rsp + off::SI), rsi)?;
    a.mov(qword_ptr(rsp + off::DI), rdi)?;
    Ok(())
}

/// Restores the registers a call may change: the caller-saved ones, and
/// `rbx`, which the trampoline uses. (`rbp`, `r12`-`r15` are callee-saved:
/// the dispatcher, an `extern "C"` function, left them as they were; the
/// `pt_regs` copies are only read.)
fn restore_gprs(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(rbx, qword_ptr(rsp + off::BX))?;
    a.mov(r11, qword_ptr(rsp + off::R11))?;
    a.mov(r10, qword_ptr(rsp + off::R10))?;
    a.mov(r9, qword_ptr(rsp + off::R9))?;
    a.mov(r8, qword_ptr(rsp + off::R8))?;
    a.mov(rcx, qword_ptr(rsp + off::CX))?;
    a.mov(rdx, qword_ptr(rsp + off::DX))?;
    a.mov(rsi, qword_ptr(rsp + off::SI))?;
    a.mov(rdi, qword_ptr(rsp + off::DI))?;
    a.mov(rax, qword_ptr(rsp + off::AX))?;
    Ok(())
}

/// Saves the flags into `pt_regs.flags` (through `rax`, already saved).
fn save_flags(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.pushfq()?;
    a.pop(rax)?;
    a.mov(qword_ptr(rsp + off::FLAGS), rax)?;
    Ok(())
}

/// Calls `target` with `rbx` = the `pt_regs` (rsp on entry) and the
/// vectors saved, on a 16-byte aligned stack. Leaves rsp = rbx.
fn call_saving_vectors(
    a: &mut CodeAssembler,
    vectors: VectorSave,
    target: u64,
) -> Result<(), IcedError> {
    a.mov(rbx, rsp)?;
    a.and(rsp, -16)?;
    match vectors {
        VectorSave::Sse => {
            a.lea(rsp, ptr(rsp - VECTOR_BYTES))?;
            store_vectors(a)?;
        }
        VectorSave::All if avx() => {
            // x87, SSE and AVX state: `ymm0-15` whole. (The flags are
            // saved in the frame already.)
            a.lea(rsp, ptr(rsp - XSAVE_BYTES))?;
            a.and(rsp, -64)?;
            // XRSTOR wants the header's reserved bytes zero.
            for i in 0..8 {
                a.mov(qword_ptr(rsp + 512 + 8 * i), 0i32)?;
            }
            a.mov(eax, XSAVE_COMPONENTS)?;
            a.xor(edx, edx)?;
            a.xsave64(ptr(rsp))?;
            // The dispatcher's `full` (a site inside a function saves the
            // full frame).
            a.mov(edx, 1)?;
        }
        VectorSave::All => {
            a.lea(rsp, ptr(rsp - 512))?;
            a.fxsave64(ptr(rsp))?;
        }
    }
    a.mov(rax, target)?;
    a.call(rax)?;
    match vectors {
        VectorSave::Sse => load_vectors(a)?,
        VectorSave::All if avx() => {
            // (rax: the dispatcher's answer; r11 is restored later.)
            a.mov(r11, rax)?;
            a.mov(eax, XSAVE_COMPONENTS)?;
            a.xor(edx, edx)?;
            a.xrstor64(ptr(rsp))?;
            a.mov(rax, r11)?;
        }
        VectorSave::All => a.fxrstor64(ptr(rsp))?,
    }
    a.mov(rsp, rbx)?;
    Ok(())
}

const XMM: [AsmRegisterXmm; 16] = [
    xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13, xmm14,
    xmm15,
];

const YMM: [AsmRegisterYmm; 16] = [
    ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11, ymm12, ymm13, ymm14,
    ymm15,
];

/// `XSAVE` components a site inside a function keeps: x87, SSE, AVX.
const XSAVE_COMPONENTS: u32 = 0b111;

/// Room for the `XSAVE` area of [`XSAVE_COMPONENTS`] (legacy 512 bytes,
/// header 64, AVX 256) and its 64-byte alignment.
const XSAVE_BYTES: i32 = 512 + 64 + 256 + 64;

/// Bytes [`store_vectors`] takes (room for `ymm0-15`).
const VECTOR_BYTES: i32 = 512;

/// Whether the CPU (and the kernel) has AVX: the vector saves then keep
/// `ymm0-15` whole, at the same number of stores.
fn avx() -> bool {
    std::arch::is_x86_feature_detected!("avx")
}

/// `xmm0-15`, or `ymm0-15` with AVX, to `[rsp]` ([`VECTOR_BYTES`],
/// 16-byte aligned).
fn store_vectors(a: &mut CodeAssembler) -> Result<(), IcedError> {
    move_vectors(a, true)
}

/// The vector registers back from `[rsp]`.
fn load_vectors(a: &mut CodeAssembler) -> Result<(), IcedError> {
    move_vectors(a, false)
}

fn move_vectors(a: &mut CodeAssembler, store: bool) -> Result<(), IcedError> {
    let avx = avx();
    for i in 0..16 {
        match (avx, store) {
            (true, true) => a.vmovdqu(ymmword_ptr(rsp + 32 * i as i32), YMM[i])?,
            (true, false) => a.vmovdqu(YMM[i], ymmword_ptr(rsp + 32 * i as i32))?,
            (false, true) => a.movdqa(xmmword_ptr(rsp + 16 * i as i32), XMM[i])?,
            (false, false) => a.movdqa(XMM[i], xmmword_ptr(rsp + 16 * i as i32))?,
        }
    }
    Ok(())
}

fn asm_err(e: IcedError) -> String {
    format!("assembling a trampoline: {e}")
}

/// What an entry trampoline's *direct lane* needs: a hit whose site's
/// probe list names leaf code (at most one entry and one return probe,
/// each lean and verified native code calling nothing, see
/// `userbpf_vm::interp::LeafCode`) runs it from the trampoline, on a frame of the general registers and a stack
/// of its own, with no call into the dispatcher and no vector register
/// saved (the code uses none: [`check_leaf`]). The lane enters and leaves
/// the dispatcher's per-thread state itself (`userbpf_vm::thread_words`:
/// the re-entrancy guard, the quiet flag, the quiescence counter), so the
/// grace periods that free probe lists cover it.
#[derive(Debug, Clone, Copy)]
pub struct DirectLane {
    /// The address of the site's probe-list pointer.
    pub list: u64,
    /// The offset in a probe list of the entry probe's leaf code (0:
    /// none).
    pub entry_offset: i32,
    /// The offset in a probe list of the return probe's leaf code (0:
    /// none). A list with leaf code has no probe that is not a leaf: at
    /// most one entry and one return probe.
    pub ret_offset: i32,
    /// The offset of the thread words from the thread pointer (`fs`).
    pub words: i32,
    /// The address of a counter of leaf runs that returned a non-zero
    /// status (none should).
    pub faults: u64,
}

/// What the trampoline of a function's entry (where the status flags
/// are dead) can do that others cannot.
#[derive(Debug, Clone, Copy)]
pub struct FunctionEntry {
    /// The address of a byte: the trampoline saves the callee-saved
    /// registers, `orig_ax`, `cs`, `ss` and the flags only while it is
    /// non-zero, and tells the dispatcher which it did (`full`).
    pub full_flag: u64,
    /// The direct lane, if the trampoline has one.
    pub direct: Option<DirectLane>,
}

/// Bytes the direct lane reserves for a leaf run's head
/// (`userbpf_vm::interp::ClosedHead`, rounded up to 16).
const LEAF_HEAD: i32 = (std::mem::size_of::<userbpf_vm::interp::ClosedHead>() as i32 + 15) & !15;

/// Checks that `code` (at `ip`) can run from a direct lane, which saves
/// only the general registers: every instruction decodes, uses
/// (explicitly or implicitly) only general registers, calls nothing,
/// makes no system call, and needs nothing beyond the integer
/// instruction set (no x87, MMX, SSE or AVX state, even through memory).
pub fn check_leaf(ip: u64, code: &[u8]) -> Result<(), String> {
    use iced_x86::{CpuidFeature as F, InstructionInfoFactory, Mnemonic};
    const PLAIN: [F; 17] = [
        F::INTEL8086,
        F::INTEL186,
        F::INTEL286,
        F::INTEL386,
        F::INTEL486,
        F::X64,
        F::CMOV,
        F::CX8,
        F::BMI1,
        F::BMI2,
        F::LZCNT,
        F::POPCNT,
        F::MOVBE,
        F::ADX,
        F::MULTIBYTENOP,
        F::PAUSE,
        F::CET_IBT,
    ];
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    while decoder.can_decode() {
        let insn = decoder.decode();
        let at = insn.ip();
        if insn.is_invalid() {
            return Err(format!("undecodable code at {at:#x}"));
        }
        if matches!(
            insn.flow_control(),
            FlowControl::Call | FlowControl::IndirectCall | FlowControl::Interrupt
        ) || matches!(
            insn.mnemonic(),
            Mnemonic::Syscall | Mnemonic::Sysenter | Mnemonic::Int | Mnemonic::Int1
        ) {
            return Err(format!("{insn} at {at:#x} leaves the code"));
        }
        if let Some(f) = insn.cpuid_features().iter().find(|f| !PLAIN.contains(f)) {
            return Err(format!("{insn} at {at:#x} needs {f:?}"));
        }
        for used in info.info(&insn).used_registers() {
            let r = used.register();
            if !(r.is_gpr() || r.is_ip() || r.is_segment_register()) {
                return Err(format!("{insn} at {at:#x} uses {r:?}"));
            }
        }
    }
    Ok(())
}

/// [`check_leaf`] on the machine code of `code`.
///
/// # Safety
/// `code` is live: its `len` bytes from `entry` are mapped (leaf code
/// lives as long as the program that owns it; the caller holds that).
pub unsafe fn check_leaf_code(code: &userbpf_vm::interp::LeafCode) -> Result<(), String> {
    // SAFETY: per the contract, `len` bytes of finalized (readable) code.
    let bytes = unsafe { std::slice::from_raw_parts(code.entry as *const u8, code.len) };
    check_leaf(code.entry as u64, bytes)
}

/// The offset of `userbpf_vm::thread_words` from `fs`, if a displacement
/// reaches it (the lanes address the words as `fs:[r11 + 8i]`).
pub fn thread_words_offset() -> Option<i32> {
    i32::try_from(userbpf_vm::thread_words::fs_offset()).ok()
}

/// Leaves the hooks after a lane's leaf ran (`r11`, `rax` changed): the
/// thread's quiescence counter even, the guard down.
fn leave_hooks(a: &mut CodeAssembler, words: i32) -> Result<(), IcedError> {
    use userbpf_vm::thread_words::{HOOK_DEPTH, HOOK_SLOT};
    a.mov(r11, i64::from(words))?;
    a.mov(rax, word(HOOK_SLOT))?;
    a.add(qword_ptr(rax), 1i32)?;
    a.mov(word(HOOK_DEPTH), 0i32)?;
    Ok(())
}

/// Runs the leaf code at `rcx` on the `pt_regs` frame at `rsp` (`r1`),
/// with a head and 512 bytes of stack below it; leaves the status in
/// `rdx` and `rsp` as it was. Changes every register a call may, and
/// `rbx`.
fn call_leaf(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let regs = std::mem::offset_of!(userbpf_vm::interp::ClosedHead, regs) as i32;
    let stack = userbpf_vm::interp::LEAF_STACK as i32;
    a.mov(rbx, rsp)?;
    a.and(rsp, -16)?;
    a.sub(rsp, LEAF_HEAD + stack)?;
    a.xor(eax, eax)?;
    for r in [0, 5, 6, 7, 8, 9] {
        a.mov(qword_ptr(rsp + regs + 8 * r), rax)?;
    }
    a.lea(rdx, ptr(rsp + LEAF_HEAD + stack))?;
    a.mov(qword_ptr(rsp + regs + 80), rdx)?;
    // (head, pc 0, r1 = the pt_regs, r2 = its length, r3, r4 = 0), as a
    // VM calls closed code on a context.
    a.mov(rax, rcx)?;
    a.mov(rdi, rsp)?;
    a.xor(esi, esi)?;
    a.mov(rdx, rbx)?;
    a.mov(ecx, PT_REGS)?;
    a.xor(r8d, r8d)?;
    a.xor(r9d, r9d)?;
    a.call(rax)?;
    a.mov(rsp, rbx)?;
    Ok(())
}

/// Thread word `i` with `r11` = the words' offset: `fs:[r11 + 8i]`.
fn word(i: usize) -> AsmMemoryOperand {
    qword_ptr(r11 + 8 * i as i32).fs()
}

/// Offsets in [`crate::hook::thread::ReturnStack`].
mod rs {
    use crate::hook::thread::{PendingReturn, ReturnStack};
    use std::mem::{offset_of, size_of};
    pub const LEN: i32 = offset_of!(ReturnStack, len) as i32;
    pub const ENTRIES: i32 = offset_of!(ReturnStack, entries) as i32;
    pub const ENTRY: i32 = size_of::<PendingReturn>() as i32;
    pub const RET_ADDR: i32 = offset_of!(PendingReturn, ret_addr) as i32;
    pub const SLOT: i32 = offset_of!(PendingReturn, slot) as i32;
    pub const HIJACK: i32 = offset_of!(PendingReturn, hijack) as i32;
    pub const SITE: i32 = offset_of!(PendingReturn, site) as i32;
    pub const MAX: i32 = crate::hook::thread::MAX_RETURN_DEPTH as i32;
}

/// The labels of an entry trampoline the direct lane goes to.
struct LaneExits {
    /// The displaced instructions (the function unhooked).
    orig: CodeLabel,
    /// Runs the function as a call from its return slot, through the
    /// lean return handler ([`RUN_AND_RETURN_LEAN`]).
    wrap_lean: CodeLabel,
    /// Where that call returns (the hijacking return address).
    back_lean: CodeLabel,
}

/// The direct lane (see [`DirectLane`]), after `ax` and the lean general
/// registers are saved in the frame (`frame` bytes from `rsp` to the
/// site's `rsp`): falls through when the hit must take the dispatcher.
fn direct_lane(
    a: &mut CodeAssembler,
    d: &DirectLane,
    site: u64,
    token: usize,
    frame: i32,
    exits: &LaneExits,
) -> Result<(), IcedError> {
    use userbpf_vm::thread_words::{HOOK_DEPTH, HOOK_RETURNS, HOOK_SLOT, QUIET};
    let mut normal = a.create_label();
    let mut to_normal = a.create_label();
    let mut depth_ok = a.create_label();
    let mut quiet_ok = a.create_label();
    let mut no_return = a.create_label();
    let mut with_return = a.create_label();
    let mut to_leave = a.create_label();
    let mut leave = a.create_label();
    let mut run_leaf = a.create_label();
    let mut ran = a.create_label();
    let mut push = a.create_label();
    let mut entry_exit = a.create_label();
    // Until the list shows leaf code, nothing changes the flags (a full
    // frame saved after the lane records them): `jrcxz`, `lea`.
    // Enter: the thread registered (a slot), not inside the dispatcher,
    // not doing userbpf's own work.
    a.mov(r11, i64::from(d.words))?;
    a.mov(rax, word(HOOK_SLOT))?;
    a.mov(rcx, rax)?;
    a.jrcxz(to_normal)?;
    a.mov(rcx, word(HOOK_DEPTH))?;
    a.jrcxz(depth_ok)?;
    a.set_label(&mut to_normal)?;
    a.jmp(normal)?;
    a.set_label(&mut depth_ok)?;
    a.mov(rcx, word(QUIET))?;
    a.jrcxz(quiet_ok)?;
    a.jmp(normal)?;
    a.set_label(&mut quiet_ok)?;
    a.mov(word(HOOK_DEPTH), 1i32)?;
    // The quiescence counter odd (only this thread writes it); the list
    // is read after it (the writer's membarrier orders the two).
    a.mov(rcx, qword_ptr(rax))?;
    a.lea(rcx, ptr(rcx + 1))?;
    a.mov(qword_ptr(rax), rcx)?;
    a.mov(r8, d.list)?;
    a.mov(r8, qword_ptr(r8))?;
    // The return probe's leaf, kept in the frame's `orig_ax` (which lean
    // probes never read) across the entry leaf's run.
    a.mov(rcx, qword_ptr(r8 + d.ret_offset))?;
    a.mov(qword_ptr(rsp + off::ORIG_AX), rcx)?;
    a.jrcxz(no_return)?;
    a.jmp(with_return)?;
    a.set_label(&mut no_return)?;
    a.mov(rcx, qword_ptr(r8 + d.entry_offset))?;
    a.jrcxz(to_leave)?;
    a.jmp(run_leaf)?;
    a.set_label(&mut to_leave)?;
    a.jmp(leave)?;

    // A return probe: push the pending return (as `hijack_return` does)
    // unless the thread's return stack is full or holds entries a
    // `longjmp` skipped (the dispatcher drops those).
    a.set_label(&mut with_return)?;
    a.mov(r9, word(HOOK_RETURNS))?;
    a.test(r9, r9)?;
    a.je(leave)?;
    a.mov(r10, qword_ptr(r9 + rs::LEN))?;
    a.cmp(r10, rs::MAX)?;
    a.jae(leave)?;
    a.lea(rdx, ptr(rsp + frame))?;
    // rsi: the new entry (the latest pending one just below it).
    a.imul_3(rsi, r10, rs::ENTRY)?;
    a.lea(rsi, ptr(r9 + rsi + rs::ENTRIES))?;
    a.test(r10, r10)?;
    a.je(push)?;
    a.cmp(qword_ptr(rsi + (rs::SLOT - rs::ENTRY)), rdx)?;
    a.jbe(leave)?;
    a.set_label(&mut push)?;
    a.mov(rdi, qword_ptr(rdx))?;
    a.mov(qword_ptr(rsi + rs::RET_ADDR), rdi)?;
    a.mov(qword_ptr(rsi + rs::SLOT), rdx)?;
    a.lea(rdi, ptr(exits.back_lean))?;
    a.mov(qword_ptr(rsi + rs::HIJACK), rdi)?;
    a.mov(rdi, token as u64)?;
    a.mov(qword_ptr(rsi + rs::SITE), rdi)?;
    a.add(r10, 1)?;
    a.mov(qword_ptr(r9 + rs::LEN), r10)?;
    a.mov(rcx, qword_ptr(r8 + d.entry_offset))?;
    a.test(rcx, rcx)?;
    a.je(ran)?;

    // The entry probe's leaf.
    a.set_label(&mut run_leaf)?;
    a.mov(rax, site)?;
    a.mov(qword_ptr(rsp + off::IP), rax)?;
    a.lea(rax, ptr(rsp + frame))?;
    a.mov(qword_ptr(rsp + off::SP), rax)?;
    call_leaf(a)?;
    a.test(rdx, rdx)?;
    a.je(ran)?;
    a.mov(rax, d.faults)?;
    a.lock().inc(qword_ptr(rax))?;
    a.set_label(&mut ran)?;
    // Leave; then the function, as a call from its return slot when a
    // return probe waits.
    leave_hooks(a, d.words)?;
    a.mov(rcx, qword_ptr(rsp + off::ORIG_AX))?;
    a.jrcxz(entry_exit)?;
    a.jmp(exits.wrap_lean)?;
    a.set_label(&mut entry_exit)?;
    restore_gprs(a)?;
    a.lea(rsp, ptr(rsp + frame))?;
    a.jmp(exits.orig)?;
    // No leaf code in the list (any more), or no room for the return:
    // leave, and take the dispatcher.
    a.set_label(&mut leave)?;
    a.mov(rcx, qword_ptr(rax))?;
    a.lea(rcx, ptr(rcx + 1))?;
    a.mov(qword_ptr(rax), rcx)?;
    a.mov(word(HOOK_DEPTH), 0i32)?;
    a.set_label(&mut normal)?;
    Ok(())
}

/// The lean return handler's direct lane: what [`return_handler`] needs
/// to run a site's return leaf itself.
#[derive(Debug, Clone, Copy)]
pub struct ReturnLane {
    /// The offset of the thread words from the thread pointer (`fs`).
    pub words: i32,
    /// The offset in a site of its probe-list pointer.
    pub site_list: i32,
    /// The offset in a probe list of the return probe's leaf code.
    pub ret_offset: i32,
    /// The offset in a site of its counter of leaf runs that returned a
    /// non-zero status.
    pub site_faults: i32,
}

/// The return handler's direct lane, after `ax` and the lean general
/// registers are saved (`frame` bytes from `rsp` to the `rsp` after the
/// function's `ret`): when the thread's latest pending return is this
/// one and its site's list has a return leaf, pops it, runs the leaf and
/// returns; otherwise falls through to the dispatcher's way.
fn return_lane(a: &mut CodeAssembler, d: &ReturnLane, frame: i32) -> Result<(), IcedError> {
    use userbpf_vm::thread_words::{HOOK_DEPTH, HOOK_RETURNS, HOOK_SLOT, QUIET};
    let mut normal = a.create_label();
    let mut leave = a.create_label();
    let mut ok = a.create_label();
    // (The flags are dead after a return.)
    a.mov(r11, i64::from(d.words))?;
    a.mov(rax, word(HOOK_SLOT))?;
    a.test(rax, rax)?;
    a.je(normal)?;
    a.mov(rcx, word(HOOK_DEPTH))?;
    a.or(rcx, word(QUIET))?;
    a.jne(normal)?;
    a.mov(r9, word(HOOK_RETURNS))?;
    a.test(r9, r9)?;
    a.je(normal)?;
    a.mov(r10, qword_ptr(r9 + rs::LEN))?;
    a.test(r10, r10)?;
    a.je(normal)?;
    a.imul_3(rsi, r10, rs::ENTRY)?;
    a.lea(rsi, ptr(r9 + rsi + (rs::ENTRIES - rs::ENTRY)))?;
    a.lea(rdx, ptr(rsp + frame - 8))?;
    a.cmp(qword_ptr(rsi + rs::SLOT), rdx)?;
    a.jne(normal)?;
    // Enter (as the entry lane does).
    a.mov(word(HOOK_DEPTH), 1i32)?;
    a.add(qword_ptr(rax), 1i32)?;
    a.mov(rdi, qword_ptr(rsi + rs::SITE))?;
    a.mov(rcx, qword_ptr(rdi + d.site_list))?;
    a.mov(rcx, qword_ptr(rcx + d.ret_offset))?;
    a.test(rcx, rcx)?;
    a.je(leave)?;
    // Pop; the real return address back in the slot and in `ip`.
    a.sub(r10, 1)?;
    a.mov(qword_ptr(r9 + rs::LEN), r10)?;
    a.mov(rdx, qword_ptr(rsi + rs::RET_ADDR))?;
    a.mov(qword_ptr(rsp + off::IP), rdx)?;
    a.mov(qword_ptr(rsp + frame - 8), rdx)?;
    a.lea(rdx, ptr(rsp + frame))?;
    a.mov(qword_ptr(rsp + off::SP), rdx)?;
    // (The site, for a fault, in `orig_ax`: lean probes never read it.)
    a.mov(qword_ptr(rsp + off::ORIG_AX), rdi)?;
    call_leaf(a)?;
    a.test(rdx, rdx)?;
    a.je(ok)?;
    a.mov(rax, qword_ptr(rsp + off::ORIG_AX))?;
    a.lock().inc(qword_ptr(rax + d.site_faults))?;
    a.set_label(&mut ok)?;
    leave_hooks(a, d.words)?;
    restore_gprs(a)?;
    a.lea(rsp, ptr(rsp + frame - 8))?;
    a.ret()?;
    a.set_label(&mut leave)?;
    a.add(qword_ptr(rax), 1i32)?;
    a.mov(word(HOOK_DEPTH), 0i32)?;
    a.set_label(&mut normal)?;
    Ok(())
}

/// Assembles the entry trampoline of `window` at `ip`: it saves the
/// registers as a `struct pt_regs` (`ip` = the site, `sp` = the site's
/// `rsp`), calls `dispatch(site_token, regs)`, then, as it answers:
/// runs the displaced instructions and jumps back after them ([`RUN`]);
/// returns from the function with `regs.ax` ([`RETURN_NOW`]); or, with a
/// `return_handler` (a function's entry), calls the displaced
/// instructions from the function's own return slot, so that the
/// function's `ret` comes back here (where the return stack buffer
/// expects it) and jumps to the handler ([`RUN_AND_RETURN_HERE`]).
///
/// At a function's entry (`at_entry`), the trampoline saves the full
/// frame only while the entry's flag says so, and may run leaf code
/// itself (see [`FunctionEntry`]).
pub fn entry_trampoline(
    ip: u64,
    window: &Window,
    site_token: usize,
    dispatch: EntryDispatch,
    vectors: VectorSave,
    return_handler: Option<ReturnHandlers>,
    at_entry: Option<FunctionEntry>,
) -> Result<EntryCode, String> {
    let frame = RED_ZONE + PT_REGS;
    type Built = (
        CodeAssembler,
        CodeLabel,
        Vec<CodeLabel>,
        Option<(CodeLabel, CodeLabel)>,
    );
    let build = || -> Result<Built, IcedError> {
        let mut a = CodeAssembler::new(64)?;
        let mut over = a.create_label();
        let wrap = a.create_label();
        let wrap_lean = a.create_label();
        let back_full = a.create_label();
        let back_lean = a.create_label();
        let mut orig = a.create_label();
        a.lea(rsp, ptr(rsp - frame))?;
        a.mov(qword_ptr(rsp + off::AX), rax)?;
        match at_entry {
            None => {
                save_flags(&mut a)?;
                save_gprs(&mut a)?;
                a.mov(edx, 1)?;
            }
            Some(FunctionEntry { full_flag, direct }) => {
                // (No flag changes before `save_flags`: `jrcxz`.)
                save_lean_gprs(&mut a)?;
                if let Some(d) = direct.filter(|_| return_handler.is_some()) {
                    let exits = LaneExits {
                        orig,
                        wrap_lean,
                        back_lean,
                    };
                    direct_lane(&mut a, &d, window.site, site_token, frame, &exits)?;
                }
                let mut lean = a.create_label();
                let mut saved = a.create_label();
                a.mov(rcx, full_flag)?;
                a.movzx(ecx, byte_ptr(rcx))?;
                a.jrcxz(lean)?;
                save_flags(&mut a)?;
                save_callee_saved(&mut a)?;
                save_constants(&mut a)?;
                a.mov(edx, 1)?;
                a.jmp(saved)?;
                a.set_label(&mut lean)?;
                a.xor(edx, edx)?;
                a.set_label(&mut saved)?;
            }
        }
        a.mov(rax, window.site)?;
        a.mov(qword_ptr(rsp + off::IP), rax)?;
        a.lea(rax, ptr(rsp + frame))?;
        a.mov(qword_ptr(rsp + off::SP), rax)?;
        a.mov(rdi, site_token as u64)?;
        a.mov(rsi, rsp)?;
        call_saving_vectors(&mut a, vectors, dispatch as *const () as u64)?;
        a.cmp(rax, RETURN_NOW as i32)?;
        a.je(over)?;
        if return_handler.is_some() {
            a.cmp(rax, RUN_AND_RETURN_HERE as i32)?;
            a.je(wrap)?;
            a.ja(wrap_lean)?;
        }
        // At a function's entry the status flags are dead (the System V
        // ABI keeps none across a call, and DF is clear): `popfq`, slow,
        // is only needed inside a function.
        if vectors == VectorSave::All {
            a.push(qword_ptr(rsp + off::FLAGS))?;
            a.popfq()?;
        }
        restore_gprs(&mut a)?;
        a.lea(rsp, ptr(rsp + frame))?;
        a.jmp(orig)?;
        // Return at once: the callee-saved registers as they were, rax
        // from the dispatcher.
        a.set_label(&mut over)?;
        restore_gprs(&mut a)?;
        a.lea(rsp, ptr(rsp + frame))?;
        a.ret()?;
        // Run the function as a call from its own return slot (the
        // dispatcher kept the real return address): the same stack for
        // the function, with this trampoline's return address.
        let mut back = None;
        if let Some(handlers) = return_handler {
            let mut labels = [back_full, back_lean];
            for (i, (mut entry, handler)) in [(wrap, handlers.full), (wrap_lean, handlers.lean)]
                .into_iter()
                .enumerate()
            {
                a.set_label(&mut entry)?;
                restore_gprs(&mut a)?;
                a.lea(rsp, ptr(rsp + frame + 8))?;
                a.call(orig)?;
                a.set_label(&mut labels[i])?;
                // Through memory: every register still holds what the
                // function left (a caller built with interprocedural
                // register allocation may keep values even in r11).
                let mut data = a.create_label();
                a.jmp(qword_ptr(data))?;
                a.set_label(&mut data)?;
                a.dq(&[handler])?;
            }
            back = Some((labels[0], labels[1]));
        }
        // The displaced instructions: the first one's label is `orig`.
        let mut labels = Vec::new();
        let mut return_address = None;
        for (i, insn) in window.insns.iter().enumerate() {
            if i == 0 {
                a.set_label(&mut orig)?;
                labels.push(orig);
            } else {
                let mut l = a.create_label();
                a.set_label(&mut l)?;
                labels.push(l);
            }
            match call_as_jump(insn) {
                // A call (always the window's last instruction: it
                // reaches past JMP_LEN) returns to the function, after
                // the window, as it would have: push that address and
                // jump (the callee's frames unwind through the function,
                // not the trampoline).
                Some(jump) => {
                    let data = a.create_label();
                    a.push(qword_ptr(data))?;
                    a.add_instruction(jump)?;
                    return_address = Some((data, insn.next_ip()));
                }
                None => a.add_instruction(*insn)?,
            }
        }
        match return_address {
            Some((mut data, ret)) => {
                a.set_label(&mut data)?;
                a.dq(&[ret])?;
            }
            None => a.jmp(window.site + window.len as u64)?,
        }
        Ok((a, orig, labels, back))
    };
    let (mut a, orig, labels, back) = build().map_err(asm_err)?;
    let result = a
        .assemble_options(ip, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
        .map_err(asm_err)?;
    let orig_ip = result.label_ip(&orig).map_err(asm_err)?;
    let orig_insns = labels
        .iter()
        .map(|l| result.label_ip(l))
        .collect::<Result<Vec<_>, _>>()
        .map_err(asm_err)?;
    let (wrap_return, wrap_return_lean) = match back {
        Some((full, lean)) => (
            result.label_ip(&full).map_err(asm_err)?,
            result.label_ip(&lean).map_err(asm_err)?,
        ),
        None => (0, 0),
    };
    Ok(EntryCode {
        code: result.inner.code_buffer,
        orig: orig_ip,
        orig_insns,
        wrap_return,
        wrap_return_lean,
    })
}

/// Assembles the return handler at `ip`: reached (through `r11`) right
/// after a function run by [`RUN_AND_RETURN_HERE`] returned, with `rsp`
/// just above the function's return slot. It saves the registers as a
/// `struct pt_regs`, asks `dispatch(regs)` for the real return address
/// (it runs the return probes), puts it back in the slot, restores the
/// registers and returns through it with `ret`: the return stack buffer
/// holds that address (the caller's call pushed it), so the return is
/// predicted.
///
/// A `lean` handler saves only the lean words (the general registers a
/// call may change, which a caller built with interprocedural register
/// allocation may still keep values in, and `ip`, `sp`); the full one
/// all of `pt_regs`.
///
/// A lean handler with a `direct` lane runs a return leaf itself (see
/// [`ReturnLane`]).
pub fn return_handler(
    ip: u64,
    dispatch: ReturnDispatch,
    lean: bool,
    direct: Option<ReturnLane>,
) -> Result<Vec<u8>, String> {
    // The pt_regs, and 8 bytes that keep the frame a multiple of 16.
    let frame = PT_REGS + 8;
    let build = || -> Result<CodeAssembler, IcedError> {
        let mut a = CodeAssembler::new(64)?;
        a.lea(rsp, ptr(rsp - frame))?;
        a.mov(qword_ptr(rsp + off::AX), rax)?;
        if lean {
            save_lean_gprs(&mut a)?;
            if let Some(d) = &direct {
                return_lane(&mut a, d, frame)?;
            }
        } else {
            save_flags(&mut a)?;
            save_gprs(&mut a)?;
        }
        a.mov(qword_ptr(rsp + off::IP), 0i32)?;
        a.lea(rax, ptr(rsp + frame))?;
        a.mov(qword_ptr(rsp + off::SP), rax)?;
        a.mov(rdi, rsp)?;
        a.mov(esi, u32::from(!lean))?;
        // Every vector register: the return values in xmm0/xmm1 (ymm0
        // for `__m256`), and what a caller built with interprocedural
        // register allocation keeps in the others (see `VectorSave::Sse`).
        a.mov(rbx, rsp)?;
        a.and(rsp, -16)?;
        a.lea(rsp, ptr(rsp - VECTOR_BYTES))?;
        store_vectors(&mut a)?;
        a.mov(rax, dispatch as *const () as u64)?;
        a.call(rax)?;
        load_vectors(&mut a)?;
        a.mov(rsp, rbx)?;
        // The real return address back in the slot, and `ret` through it.
        // (The flags are dead after a return: no `popfq`.)
        a.mov(qword_ptr(rsp + frame - 8), rax)?;
        restore_gprs(&mut a)?;
        a.lea(rsp, ptr(rsp + frame - 8))?;
        a.ret()?;
        Ok(a)
    };
    let mut a = build().map_err(asm_err)?;
    a.assemble(ip).map_err(asm_err)
}

/// The two return handlers a function's entry trampoline jumps to.
#[derive(Debug, Clone, Copy)]
pub struct ReturnHandlers {
    /// Saves the full `pt_regs`.
    pub full: u64,
    /// Saves the lean words.
    pub lean: u64,
}

/// The `jmp rel32` from `site` to `target` padded with `int3` to `len`.
pub fn jump_bytes(site: u64, target: u64, len: usize) -> Result<Vec<u8>, String> {
    let rel = (target as i64).wrapping_sub(site as i64 + JMP_LEN as i64);
    let rel = i32::try_from(rel).map_err(|_| {
        format!("trampoline at {target:#x} is out of a jump's reach from {site:#x}")
    })?;
    let mut out = vec![0xe9];
    out.extend_from_slice(&rel.to_le_bytes());
    out.resize(len.max(JMP_LEN), 0xcc);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::check_leaf;

    #[test]
    fn leaf_code_may_use_the_general_registers_only() {
        // mov rax, [rdx + 0x70]; lock xadd [rcx], rax; cmovz rax, rcx;
        // imul rax, rax, 3; xor edx, edx; ret
        let plain = [
            0x48, 0x8b, 0x42, 0x70, 0xf0, 0x48, 0x0f, 0xc1, 0x01, 0x48, 0x0f, 0x44, 0xc1, 0x48,
            0x6b, 0xc0, 0x03, 0x31, 0xd2, 0xc3,
        ];
        assert_eq!(check_leaf(0x1000, &plain), Ok(()));
        let refused: [(&[u8], &str); 6] = [
            (&[0xe8, 0, 0, 0, 0, 0xc3], "call"),
            (&[0xff, 0xd0, 0xc3], "call"),
            (&[0x0f, 0x05, 0xc3], "syscall"),
            // fld qword [rax]: x87 state, through memory only
            (&[0xdd, 0x00, 0xc3], "fld"),
            (&[0xc5, 0xf8, 0x77, 0xc3], "vzeroupper"),
            // movq xmm0, rax
            (&[0x66, 0x48, 0x0f, 0x6e, 0xc0, 0xc3], "movq"),
        ];
        for (code, what) in refused {
            let e = check_leaf(0x1000, code).expect_err(what);
            assert!(e.contains(what), "{what}: {e}");
        }
        assert!(check_leaf(0x1000, &[0x0f, 0xff]).is_err(), "undecodable");
    }
}
