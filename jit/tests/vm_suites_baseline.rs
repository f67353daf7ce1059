//! The interpreter's test suites, run again with every program the
//! baseline code generator takes compiled by it in checked mode (the others
//! by Cranelift): the same programs, the same expected r0, memory, stack,
//! map and fault effects (the suites' own assertions).

use std::sync::Arc;

use userbpf_jit::{JitError, Options, Tier};
use userbpf_vm::interp::PreparedProgram;

fn compile(prog: &Arc<PreparedProgram>) {
    let baseline = Options {
        tier: Tier::Baseline,
        ..Options::default()
    };
    match userbpf_jit::jit_checked(prog, baseline) {
        Ok(_) => {}
        Err(JitError::Baseline { .. }) => {
            userbpf_jit::jit_checked(prog, Options::default())
                .unwrap_or_else(|e| panic!("JIT: {e}"));
        }
        Err(e) => panic!("JIT: {e}"),
    }
}

#[ctor::ctor(unsafe)]
fn every_program_on_the_baseline_code() {
    userbpf_vm::interp::set_compile_hook(compile);
}

#[test]
fn programs_without_calls_really_run_as_baseline_code() {
    let program = userbpf_vm::Program::new(
        "probe",
        userbpf_vm::asm::assemble("mov %r0, 7\nexit").unwrap(),
    )
    .unwrap();
    let mut vm = userbpf_vm::Vm::new(&program, userbpf_vm::Helpers::new()).unwrap();
    assert!(vm.prepared().compiled().is_some());
    assert!(format!("{:?}", vm.prepared().compiled()).contains("Baseline"));
    assert_eq!(vm.run(&mut []), Ok(7));
}

#[path = "../../vm/tests/interp.rs"]
mod interp;

#[path = "../../vm/tests/object.rs"]
mod object;
