//! The syscall trampoline: the only code of the process that executes a
//! real `syscall` instruction once the interception is installed (apart
//! from the vDSO). It lives in this crate's text, between two labels that
//! form Syscall User Dispatch's allowed range.
//!
//! # Entry
//!
//! - From page 0 (a rewritten site `call *%rax` ran through the sled):
//!   `rsp` = caller's `rsp` - 136 (the `call` pushed the return address at
//!   caller's `rsp` - 8, then the page-0 stub stepped over the red zone).
//!   [`zp_entry`] reads the number's byte in [`HOOKED`] (`rcx` is scratch:
//!   the syscall ABI clobbers it and `r11`). 0 is the fast path: the real
//!   syscall, then `ret` to the caller. Nothing on that path changes the
//!   flags (a table load and `jrcxz`), so the caller's flags survive the
//!   syscall as they do a real one. Anything else loads the return
//!   address into `r11` and the caller's `rsp` into `rcx` and takes the
//!   slow path.
//! - From the SIGSYS handler (Syscall User Dispatch caught a syscall): the
//!   handler sets `r11` and `rcx` itself and `rsp` = caller's `rsp` - 136,
//!   and resumes at [`sud_entry`], the slow path.
//!
//! # Slow path
//!
//! The flags are saved first. `rt_sigreturn` runs at once on the caller's
//! stack (never returns). Anything else builds a
//! [`Frame`] (argument registers, flags, `xmm0`-`xmm15`), calls the
//! dispatcher's `enter`, then does what it asks ([`Mode`]): the syscall
//! (with the arguments the hooks left), nothing (a hook's return value),
//! a `clone` onto a new stack (the child returns through a record written
//! on its own stack, never through the parent's frame), or a `vfork` (the
//! return address goes to a thread-local slot and the syscall runs on the
//! caller's own stack, so parent and child both jump back directly); then
//! the dispatcher's `exit` when hooks want it, restores the registers and
//! returns. The caller sees every register but `rax`, `rcx` and `r11`
//! unchanged, flags included, as after a real `syscall`. (The status
//! flags come back through `sahf` and an `add` that sets OF: `popfq` costs
//! ~10 ns here; it only runs when the saved flags have DF, TF or AC set.)

use std::arch::global_asm;
use std::mem::offset_of;
use std::sync::atomic::AtomicU8;

/// Syscall numbers below this have a byte in [`HOOKED`]: every number a
/// rewritten site can bring through page 0's sled (larger numbers crash
/// there; through Syscall User Dispatch they take the slow path).
pub const TABLE_LEN: usize = 4096;

/// One byte per syscall number: 0 = fast path (no hook and no special
/// handling), else slow path. Written by the registry, read by the
/// trampoline without synchronisation (a stale read either runs the
/// dispatcher for nothing or misses a hook attached at that instant).
pub static HOOKED: [AtomicU8; TABLE_LEN] = [const { AtomicU8::new(0) }; TABLE_LEN];

/// `xmm0`-`xmm15`, as 16 pairs of `u64`.
pub type XmmSave = [[u64; 2]; 16];

/// `ymm0`-`ymm15`, as 16 quadruples of `u64`.
pub type YmmSave = [[u64; 4]; 16];

/// Non-zero where the CPU has AVX: the slow path keeps `ymm0-15` whole
/// (an inline `syscall` in AVX code may keep values in their upper
/// halves, which a hook's code may change: libc's AVX `memcpy` ends with
/// `vzeroupper`). Set by [`init_vector_save`].
pub static USE_YMM: AtomicU8 = AtomicU8::new(0);

/// Chooses how the slow path saves the vector registers (at
/// installation).
pub fn init_vector_save() {
    let avx = std::arch::is_x86_feature_detected!("avx");
    USE_YMM.store(u8::from(avx), std::sync::atomic::Ordering::Relaxed);
}

/// The caller's `xmm0-15` as the slow path saved them in `f`.
pub fn saved_xmm(f: &Frame) -> XmmSave {
    if USE_YMM.load(std::sync::atomic::Ordering::Relaxed) != 0 {
        f.ymm.map(|y| [y[0], y[1]])
    } else {
        f.xmm
    }
}

/// The caller's registers as the trampoline saved them.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SavedRegs {
    /// `rdi` (first argument).
    pub rdi: u64,
    /// `rsi`.
    pub rsi: u64,
    /// `rdx`.
    pub rdx: u64,
    /// `r10` (fourth argument of a syscall).
    pub r10: u64,
    /// `r8`.
    pub r8: u64,
    /// `r9`.
    pub r9: u64,
    /// `rax`: the syscall number.
    pub nr: u64,
    /// `rflags`.
    pub rflags: u64,
    /// The return address (the instruction after the syscall site).
    pub ret: u64,
    /// The caller's `rsp` (as at the syscall instruction).
    pub caller_rsp: u64,
    /// The caller's `rbp`.
    pub rbp: u64,
}

/// The syscall the dispatcher asks the trampoline to perform, and its
/// result.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// The number and the arguments (`rdi`, `rsi`, `rdx`, `r10`, `r8`,
    /// `r9`), as the hooks see and change them (they get this very
    /// context: no copy in or out).
    pub ctx: super::SyscallCtx,
    /// The result (`rax` for the caller).
    pub result: u64,
    /// Non-zero: call the dispatcher's `exit` after the syscall.
    pub exit: u64,
}

/// The trampoline's frame on the caller's stack (16-byte aligned).
#[repr(C, align(16))]
#[derive(Debug)]
pub struct Frame {
    /// `xmm0`-`xmm15` of the caller (without AVX).
    pub xmm: XmmSave,
    /// `ymm0`-`ymm15` of the caller (with AVX: [`USE_YMM`]).
    pub ymm: YmmSave,
    /// The caller's registers.
    pub regs: SavedRegs,
    /// What to perform.
    pub call: Call,
    /// Scratch the dispatcher points syscall arguments at (a copy of
    /// `struct clone_args`, a signal mask, a `struct sigaction`).
    pub scratch: [u64; 16],
}

/// What a clone child onto a new stack finds at its stack pointer: the
/// registers to restore, then the return address (popped by `ret`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ChildRecord {
    /// `xmm0`-`xmm15` of the caller.
    pub xmm: XmmSave,
    /// `rdi`.
    pub rdi: u64,
    /// `rsi`.
    pub rsi: u64,
    /// `rdx`.
    pub rdx: u64,
    /// `r10`.
    pub r10: u64,
    /// `r8`.
    pub r8: u64,
    /// `r9`.
    pub r9: u64,
    /// `rbp`.
    pub rbp: u64,
    /// `rflags`.
    pub rflags: u64,
    /// The clone flags (for the child's set-up).
    pub info: u64,
    /// The return address.
    pub ret: u64,
}

/// What the trampoline does after the dispatcher's `enter`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Perform `call` (nr and args).
    Syscall = 0,
    /// Perform nothing: `call.result` is the result.
    Skip = 1,
    /// A clone whose child starts on a new stack, with a [`ChildRecord`]
    /// at that stack pointer (the argument already points at it).
    NewStack = 2,
    /// A vfork-like clone: the child shares the caller's stack.
    Vfork = 3,
}

const F_XMM: usize = offset_of!(Frame, xmm);
const F_YMM: usize = offset_of!(Frame, ymm);
const F_RDI: usize = offset_of!(Frame, regs.rdi);
const F_RSI: usize = offset_of!(Frame, regs.rsi);
const F_RDX: usize = offset_of!(Frame, regs.rdx);
const F_R10: usize = offset_of!(Frame, regs.r10);
const F_R8: usize = offset_of!(Frame, regs.r8);
const F_R9: usize = offset_of!(Frame, regs.r9);
const F_NR: usize = offset_of!(Frame, regs.nr);
const F_RFLAGS: usize = offset_of!(Frame, regs.rflags);
const F_RET: usize = offset_of!(Frame, regs.ret);
const F_CALLER_RSP: usize = offset_of!(Frame, regs.caller_rsp);
const F_RBP: usize = offset_of!(Frame, regs.rbp);
const C_NR: usize = offset_of!(Frame, call.ctx.nr);
const C_ARGS: usize = offset_of!(Frame, call.ctx.args);
const C_RESULT: usize = offset_of!(Frame, call.result);
const C_EXIT: usize = offset_of!(Frame, call.exit);
const R_RDI: usize = offset_of!(ChildRecord, rdi);
const R_RSI: usize = offset_of!(ChildRecord, rsi);
const R_RDX: usize = offset_of!(ChildRecord, rdx);
const R_R10: usize = offset_of!(ChildRecord, r10);
const R_R8: usize = offset_of!(ChildRecord, r8);
const R_R9: usize = offset_of!(ChildRecord, r9);
const R_RBP: usize = offset_of!(ChildRecord, rbp);
const R_RFLAGS: usize = offset_of!(ChildRecord, rflags);
const R_INFO: usize = offset_of!(ChildRecord, info);
const R_RET: usize = offset_of!(ChildRecord, ret);

/// The direct lane's room below the frame: a leaf's head, its 512 bytes
/// of stack, then the 64-byte `sys_enter` record.
const LANE_HEAD: usize = std::mem::size_of::<userbpf_vm::interp::ClosedHead>().next_multiple_of(16);
const LANE_RECORD: usize = LANE_HEAD + userbpf_vm::interp::LEAF_STACK;
const LANE_BYTES: usize = LANE_RECORD + 64;

const _: () = assert!(std::mem::size_of::<Frame>().is_multiple_of(16));
const _: () = assert!(LANE_BYTES.is_multiple_of(16));
const _: () = assert!(F_RSI == F_RDI + 8 && F_RDX == F_RDI + 16 && F_R10 == F_RDI + 24);
const _: () = assert!(F_R8 == F_RDI + 32 && F_R9 == F_RDI + 40);
const _: () = assert!(std::mem::size_of::<super::quiesce::Slot>() == 64);
const _: () = assert!(F_XMM == 0);
const _: () = assert!(offset_of!(ChildRecord, xmm) == 0);
const _: () = assert!(R_RET + 8 == std::mem::size_of::<ChildRecord>());

global_asm!(
    r#"
    // The flags saved in the frame, back (rax is scratch): OF through an
    // `add` that overflows exactly when it was set, the other status
    // flags through `sahf`; `popfq` (slow) only when DF, TF or AC was set.
    // Nothing after it may change the flags.
    .macro userbpf_restore_flags
    testl $0x40500, {f_rflags}(%rsp)
    jnz 1f
    movzbl {f_rflags}+1(%rsp), %eax
    shr $3, %eax
    and $1, %eax
    add $0x7f, %al
    mov {f_rflags}(%rsp), %ah
    sahf
    jmp 2f
1:
    pushq {f_rflags}(%rsp)
    popfq
2:
    .endm

    // xmm0-xmm15 to and from the frame's (or a child record's) first 256
    // bytes; `insn`: movaps, or movups where it may be unaligned.
    .macro userbpf_xmm_store
    .irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    movaps %xmm\i, \i*16(%rsp)
    .endr
    .endm
    .macro userbpf_xmm_load insn
    .irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    \insn \i*16(%rsp), %xmm\i
    .endr
    .endm

    // The frame's vector registers: ymm0-ymm15 whole with AVX, else
    // xmm0-xmm15 (changes the flags: used where they are saved).
    .macro userbpf_vec_store
    testb $1, {use_ymm}(%rip)
    jz 1f
    .irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    vmovdqu %ymm\i, {f_ymm}+\i*32(%rsp)
    .endr
    jmp 2f
1:
    userbpf_xmm_store
2:
    .endm
    .macro userbpf_vec_load
    testb $1, {use_ymm}(%rip)
    jz 1f
    .irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    vmovdqu {f_ymm}+\i*32(%rsp), %ymm\i
    .endr
    jmp 2f
1:
    userbpf_xmm_load movaps
2:
    .endm

    // The direct lane leaves the hooks (r11 = the thread words' offset):
    // the slot's counter even, the guard down.
    .macro userbpf_lane_leave
    mov %fs:{w_slot}(%r11), %rdx
    shl $6, %rdx
    lea {qtable}-64(%rip), %rcx
    addq $1, (%rcx,%rdx)
    movq $0, %fs:{w_depth}(%r11)
    .endm

    // The syscall the dispatcher prepared: its number and arguments.
    .macro userbpf_call_args
    mov {c_args}+0(%rsp), %rdi
    mov {c_args}+8(%rsp), %rsi
    mov {c_args}+16(%rsp), %rdx
    mov {c_args}+24(%rsp), %r10
    mov {c_args}+32(%rsp), %r8
    mov {c_args}+40(%rsp), %r9
    mov {c_nr}(%rsp), %rax
    .endm

    .pushsection .text.userbpf_syscall_trampoline,"ax",@progbits
    .p2align 6
    .globl userbpf_sys_text_start
    .hidden userbpf_sys_text_start
userbpf_sys_text_start:
    int3

    // ---- entry from page 0: rsp = caller rsp - 136, [rsp+128] = ret
    .p2align 4
    .globl userbpf_sys_zp_entry
    .hidden userbpf_sys_zp_entry
userbpf_sys_zp_entry:
    // (No instruction up to the fast path's `ret` changes the flags.)
    lea {table}(%rip), %rcx
    movzbl (%rcx,%rax), %ecx
    jrcxz .Luserbpf_zp_fast
    mov 128(%rsp), %r11
    lea 136(%rsp), %rcx
    jmp .Luserbpf_slow
.Luserbpf_zp_fast:
    // No hook, nothing special: the syscall, and back.
    syscall
    lea 128(%rsp), %rsp
    ret

    // ---- the slow path, and the entry from the SIGSYS handler;
    // r11 = ret, rcx = caller rsp
    .p2align 4
    .globl userbpf_sys_sud_entry
    .hidden userbpf_sys_sud_entry
userbpf_sys_sud_entry:
.Luserbpf_slow:
    pushfq
    cmp $15, %rax
    je .Luserbpf_sigreturn
    push %rbp
    mov %rsp, %rbp
    and $-16, %rsp
    sub ${frame_size}, %rsp
    mov %rdi, {f_rdi}(%rsp)
    mov %rsi, {f_rsi}(%rsp)
    mov %rdx, {f_rdx}(%rsp)
    mov %r10, {f_r10}(%rsp)
    mov %r8, {f_r8}(%rsp)
    mov %r9, {f_r9}(%rsp)
    mov %rax, {f_nr}(%rsp)
    mov %r11, {f_ret}(%rsp)
    mov %rcx, {f_caller_rsp}(%rsp)
    mov (%rbp), %rcx
    mov %rcx, {f_rbp}(%rsp)
    mov 8(%rbp), %rcx
    mov %rcx, {f_rflags}(%rsp)
    cld
    // ---- the direct lane: the number's one hook is leaf code (see
    // `SyscallHook::direct`); the table byte says so and nothing else.
    // It enters the hooks as `quiesce::enter` does, runs the leaf on the
    // `sys_enter` record with a head and 512 bytes of stack below the
    // frame, leaves, and makes the syscall: no vector register is saved
    // (leaf code uses none) and no Rust runs. Anything unusual takes the
    // dispatcher (`.Luserbpf_no_lane`).
    cmp ${table_len}, %rax
    jae .Luserbpf_no_lane
    lea {table}(%rip), %rcx
    cmpb ${direct_byte}, (%rcx,%rax)
    jne .Luserbpf_no_lane
    mov userbpf_vm_thread_words@gottpoff(%rip), %r11
    cmpq $0, %fs:{w_quiet}(%r11)
    jne .Luserbpf_no_lane
    cmpq $0, %fs:{w_depth}(%r11)
    jne .Luserbpf_no_lane
    mov %fs:{w_slot}(%r11), %rdx
    test %rdx, %rdx
    jz .Luserbpf_no_lane
    movq $1, %fs:{w_depth}(%r11)
    // The slot's counter odd (and changed), as `quiesce::enter` makes it;
    // the list is read after (the writer's membarrier orders the two).
    shl $6, %rdx
    lea {qtable}-64(%rip), %rcx
    add %rcx, %rdx
    mov (%rdx), %rcx
    add $1, %rcx
    or $1, %rcx
    mov %rcx, (%rdx)
    mov {list}(%rip), %rcx
    test %rcx, %rcx
    jz .Luserbpf_lane_leave
    mov {l_direct}(%rcx), %rcx
    test %rcx, %rcx
    jz .Luserbpf_lane_leave
    mov %rax, %rsi
    shl $4, %rsi
    add %rsi, %rcx
    mov (%rcx), %rsi
    test %rsi, %rsi
    jz .Luserbpf_lane_leave
    mov 8(%rcx), %rcx
    sub ${lane}, %rsp
    // The record: the common word, the number, the arguments.
    mov %rcx, {rec}(%rsp)
    mov %rax, {rec}+8(%rsp)
    .irp i,0,1,2,3,4,5
    mov {lane}+{f_rdi}+\i*8(%rsp), %rdi
    mov %rdi, {rec}+16+\i*8(%rsp)
    .endr
    // The head: r0 and r5-r9 zero, r10 the top of the stack.
    xor %edi, %edi
    .irp r,0,5,6,7,8,9
    mov %rdi, {h_regs}+\r*8(%rsp)
    .endr
    lea {stack_top}(%rsp), %rdi
    mov %rdi, {h_regs}+80(%rsp)
    // (head, pc 0, r1 = the record, r2 = its length, r3, r4 = 0)
    mov %rsi, %rax
    mov %rsp, %rdi
    xor %esi, %esi
    lea {rec}(%rsp), %rdx
    mov $64, %ecx
    xor %r8d, %r8d
    xor %r9d, %r9d
    call *%rax
    add ${lane}, %rsp
    test %rdx, %rdx
    jz 1f
    lock incq {direct_faults}(%rip)
1:
    mov userbpf_vm_thread_words@gottpoff(%rip), %r11
    userbpf_lane_leave
    mov {f_rdi}(%rsp), %rdi
    mov {f_rsi}(%rsp), %rsi
    mov {f_rdx}(%rsp), %rdx
    mov {f_r10}(%rsp), %r10
    mov {f_r8}(%rsp), %r8
    mov {f_r9}(%rsp), %r9
    mov {f_nr}(%rsp), %rax
    syscall
    mov %rax, {c_result}(%rsp)
    // `syscall` kept rdi, rsi, rdx, r10, r8 and r9: the caller's.
    jmp .Luserbpf_restore_ret
.Luserbpf_lane_leave:
    userbpf_lane_leave
.Luserbpf_no_lane:
    userbpf_vec_store
    mov %rsp, %rdi
    call {enter}
    cmp $1, %eax
    je .Luserbpf_after
    cmp $2, %eax
    je .Luserbpf_newstack
    cmp $3, %eax
    je .Luserbpf_vfork
    userbpf_call_args
    syscall
    mov %rax, {c_result}(%rsp)
.Luserbpf_after:
    cmpq $0, {c_exit}(%rsp)
    je .Luserbpf_restore
    mov %rsp, %rdi
    call {exit}
.Luserbpf_restore:
    userbpf_vec_load
.Luserbpf_restore_gprs:
    mov {f_rdi}(%rsp), %rdi
    mov {f_rsi}(%rsp), %rsi
    mov {f_rdx}(%rsp), %rdx
    mov {f_r10}(%rsp), %r10
    mov {f_r8}(%rsp), %r8
    mov {f_r9}(%rsp), %r9
.Luserbpf_restore_ret:
    mov {f_ret}(%rsp), %r11
    mov {f_caller_rsp}(%rsp), %rcx
    // Return with `ret` when the call's return address is still there
    // (a rewritten site: keeps the return stack buffer balanced).
    cmp %r11, -8(%rcx)
    jne .Luserbpf_slow_jmp
    userbpf_restore_flags
    mov {c_result}(%rsp), %rax
    mov %rbp, %rsp
    pop %rbp
    lea -8(%rcx), %rsp
    ret
.Luserbpf_slow_jmp:
    userbpf_restore_flags
    mov {c_result}(%rsp), %rax
    mov %rbp, %rsp
    pop %rbp
    mov %rcx, %rsp
    jmp *%r11

.Luserbpf_sigreturn:
    mov %rcx, %rsp
    syscall
    ud2

    // ---- clone onto a new stack: the argument points at a ChildRecord
.Luserbpf_newstack:
    userbpf_call_args
    syscall
    test %rax, %rax
    jz .Luserbpf_child
    mov %rax, {c_result}(%rsp)
    jmp .Luserbpf_after
.Luserbpf_child:
    // rsp = the ChildRecord on the child's stack; rbx, r12-r15 are the
    // caller's (nothing here or in Rust changed them).
    mov %rsp, %rcx
    and $-16, %rsp
    push %rcx
    push %rcx
    mov {r_info}(%rcx), %rdi
    call {child_entry}
    pop %rcx
    mov %rcx, %rsp
    userbpf_xmm_load movups
    mov {r_rdi}(%rsp), %rdi
    mov {r_rsi}(%rsp), %rsi
    mov {r_rdx}(%rsp), %rdx
    mov {r_r10}(%rsp), %r10
    mov {r_r8}(%rsp), %r8
    mov {r_r9}(%rsp), %r9
    mov {r_rbp}(%rsp), %rbp
    pushq {r_rflags}(%rsp)
    popfq
    lea {r_ret}(%rsp), %rsp
    mov $0, %eax
    ret

    // ---- vfork: the child shares this stack; the return address goes
    // to a thread-local slot (the child shares the thread pointer too
    // and runs first; the parent reads it when it resumes)
.Luserbpf_vfork:
    mov userbpf_sys_vfork_ret@gottpoff(%rip), %rcx
    mov {f_ret}(%rsp), %r11
    mov %r11, %fs:(%rcx)
    userbpf_vec_load
    userbpf_call_args
    mov {f_caller_rsp}(%rsp), %rcx
    pushq {f_rflags}(%rsp)
    popfq
    mov %rbp, %rsp
    pop %rbp
    mov %rcx, %rsp
    syscall
    // The child, then the parent when it resumes: the thread-locals they
    // share hold ids that are not the child's, then the child's (a plain
    // increment: it leaves the flags alone and never goes back).
    mov {pid_generation}(%rip), %r11
    lea 1(%r11), %r11
    mov %r11, {pid_generation}(%rip)
    mov userbpf_sys_vfork_ret@gottpoff(%rip), %rcx
    jmp *%fs:(%rcx)

    // ---- SA_RESTORER of this crate's signal handlers
    .p2align 4
    .globl userbpf_sys_restorer
    .hidden userbpf_sys_restorer
userbpf_sys_restorer:
    mov $15, %eax
    syscall
    ud2

    // ---- raw syscall for this crate's own needs:
    // fn(nr, a0, a1, a2, a3, a4, a5) -> i64
    .p2align 4
    .globl userbpf_sys_raw
    .hidden userbpf_sys_raw
userbpf_sys_raw:
    mov %rdi, %rax
    mov %rsi, %rdi
    mov %rdx, %rsi
    mov %rcx, %rdx
    mov %r8, %r10
    mov %r9, %r8
    mov 8(%rsp), %r9
    syscall
    ret

    .globl userbpf_sys_text_end
    .hidden userbpf_sys_text_end
userbpf_sys_text_end:
    int3
    .popsection

    .pushsection .tbss,"awT",@nobits
    .p2align 3
    .type userbpf_sys_vfork_ret, @object
    .size userbpf_sys_vfork_ret, 8
userbpf_sys_vfork_ret:
    .zero 8
    .popsection
"#,
    table = sym HOOKED,
    frame_size = const std::mem::size_of::<Frame>(),
    use_ymm = sym USE_YMM,
    f_ymm = const F_YMM,
    f_rdi = const F_RDI,
    f_rsi = const F_RSI,
    f_rdx = const F_RDX,
    f_r10 = const F_R10,
    f_r8 = const F_R8,
    f_r9 = const F_R9,
    f_nr = const F_NR,
    f_rflags = const F_RFLAGS,
    f_ret = const F_RET,
    f_caller_rsp = const F_CALLER_RSP,
    f_rbp = const F_RBP,
    c_nr = const C_NR,
    c_args = const C_ARGS,
    c_result = const C_RESULT,
    c_exit = const C_EXIT,
    r_rdi = const R_RDI,
    r_rsi = const R_RSI,
    r_rdx = const R_RDX,
    r_r10 = const R_R10,
    r_r8 = const R_R8,
    r_r9 = const R_R9,
    r_rbp = const R_RBP,
    r_rflags = const R_RFLAGS,
    r_info = const R_INFO,
    r_ret = const R_RET,
    pid_generation = sym userbpf_vm::identity::GENERATION,
    enter = sym super::dispatch::enter,
    exit = sym super::dispatch::exit,
    child_entry = sym super::dispatch::child_entry,
    table_len = const TABLE_LEN,
    direct_byte = const super::dispatch::DIRECT_BYTE,
    w_quiet = const 8 * userbpf_vm::thread_words::QUIET,
    w_depth = const 8 * userbpf_vm::thread_words::SYS_DEPTH,
    w_slot = const 8 * userbpf_vm::thread_words::SYS_SLOT,
    qtable = sym super::quiesce::TABLE,
    list = sym super::LIST,
    l_direct = const offset_of!(super::HookList, direct),
    lane = const LANE_BYTES,
    rec = const LANE_RECORD,
    h_regs = const offset_of!(userbpf_vm::interp::ClosedHead, regs),
    stack_top = const LANE_HEAD + userbpf_vm::interp::LEAF_STACK,
    direct_faults = sym super::DIRECT_FAULTS,
    options(att_syntax)
);

unsafe extern "C" {
    static userbpf_sys_text_start: u8;
    static userbpf_sys_text_end: u8;
    fn userbpf_sys_zp_entry();
    fn userbpf_sys_sud_entry();
    fn userbpf_sys_restorer();
    fn userbpf_sys_raw(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64;
}

/// The address range `[start, end)` of the trampoline code: the only
/// place real syscalls run from (Syscall User Dispatch's allowed range);
/// the rewriter leaves it alone.
pub fn text_range() -> (u64, u64) {
    (
        (&raw const userbpf_sys_text_start) as u64,
        (&raw const userbpf_sys_text_end) as u64 + 1,
    )
}

/// Where page 0's stub jumps.
pub fn zp_entry() -> u64 {
    userbpf_sys_zp_entry as *const () as u64
}

/// Where the SIGSYS handler sends a caught syscall.
pub fn sud_entry() -> u64 {
    userbpf_sys_sud_entry as *const () as u64
}

/// The `SA_RESTORER` of this crate's signal handlers.
pub fn restorer() -> u64 {
    userbpf_sys_restorer as *const () as u64
}

/// A syscall from inside the trampoline range: never hooked, never
/// caught by Syscall User Dispatch. Returns the raw result (`-errno` on
/// failure).
///
/// # Safety
///
/// The syscall must be valid with these arguments (pointers valid for
/// what the kernel does with them).
pub unsafe fn raw_syscall(nr: i64, args: [u64; 6]) -> i64 {
    // SAFETY: the stub performs the syscall as the kernel ABI expects; the
    // caller vouches for the arguments.
    unsafe {
        userbpf_sys_raw(
            nr as u64, args[0], args[1], args[2], args[3], args[4], args[5],
        )
    }
}

/// This thread's id (a raw `gettid`, never hooked).
pub fn gettid() -> u32 {
    // SAFETY: gettid takes no arguments.
    unsafe { raw_syscall(libc::SYS_gettid, [0; 6]) as u32 }
}
