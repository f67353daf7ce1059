//! The interpreter's test suites, run again with every program compiled by
//! the checked JIT: the same programs, the same expected r0, memory,
//! stack, map and fault effects (the suites' own assertions).
//!
//! A compile hook ([`userbpf_vm::interp::set_compile_hook`]) attaches
//! checked-mode native code to every program a VM is made for in this test
//! binary, so the included suites run unchanged on the JIT.

use std::sync::Arc;

use userbpf_vm::interp::PreparedProgram;

fn compile(prog: &Arc<PreparedProgram>) {
    userbpf_jit::jit_checked(prog, userbpf_jit::Options::default())
        .unwrap_or_else(|e| panic!("JIT: {e}"));
}

#[ctor::ctor(unsafe)]
fn every_program_on_the_jit() {
    userbpf_vm::interp::set_compile_hook(compile);
}

#[test]
fn programs_really_run_as_native_code() {
    let program = userbpf_vm::Program::new(
        "probe",
        userbpf_vm::asm::assemble("mov %r0, 7\nexit").unwrap(),
    )
    .unwrap();
    let mut vm = userbpf_vm::Vm::new(&program, userbpf_vm::Helpers::new()).unwrap();
    assert!(vm.prepared().compiled().is_some());
    assert_eq!(vm.run(&mut []), Ok(7));
}

#[path = "../../vm/tests/interp.rs"]
mod interp;

#[path = "../../vm/tests/object.rs"]
mod object;
