//! A process that forks after a tiered compile (an agent in a target
//! that forks): the child's tiered compiles still get Cranelift's code
//! (the background thread did not come across the fork; a new one starts).

use std::sync::Arc;
use std::time::{Duration, Instant};

use userbpf_jit::{jit_verified, CodeTier, Options, Tier};
use userbpf_verifier::Verified;
use userbpf_vm::asm::assemble;
use userbpf_vm::interp::PreparedProgram;
use userbpf_vm::{Config, Helpers, Program, Vm};

fn tiered(src: &str) -> (Arc<PreparedProgram>, Arc<userbpf_jit::JitProgram>) {
    let program = Program::new("fork", assemble(src).unwrap()).unwrap();
    let p = Arc::new(PreparedProgram::new(&program, &Helpers::new(), Config::default()).unwrap());
    // SAFETY: the programs below touch no memory and terminate.
    let v = unsafe { Verified::assume_verified(Arc::clone(&p)) };
    let options = Options {
        tier: Tier::Tiered,
        ..Options::default()
    };
    let code = jit_verified(&v, options).unwrap();
    (p, code)
}

#[test]
fn a_forked_child_still_tiers_up() {
    // The parent's background thread exists.
    let (_, code) = tiered("mov %r0, 1\nexit");
    assert!(code.wait_optimized());
    // SAFETY: the child only compiles, runs and leaves with `_exit`.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork: {}", std::io::Error::last_os_error());
    if child == 0 {
        let (p, code) = tiered("mov %r0, 2\nadd %r0, 3\nexit");
        let ok = code.wait_optimized()
            && code.tier() == CodeTier::Optimized
            && Vm::from_prepared(p).run(&mut []) == Ok(5);
        // SAFETY: leaves the child without running the parent's exit
        // handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    // The child has 60 s (a hang would be the bug).
    let start = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: our child; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if r == child {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            // SAFETY: our child.
            unsafe { libc::kill(child, libc::SIGKILL) };
            // SAFETY: as above.
            unsafe { libc::waitpid(child, &mut status, 0) };
            panic!("the child's tiered compile never finished");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}"
    );
}
