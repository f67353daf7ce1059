//! Times `check` on a 1,000-instruction straight line (development aid).
fn main() {
    let src = format!("mov %r0, 0\n{}exit", "add %r0, 1\n".repeat(998));
    let p = userbpf_vm::Program::new("s", userbpf_vm::asm::assemble(&src).unwrap()).unwrap();
    let env = userbpf_verifier::Env::raw(0);
    let n: u32 = std::env::args().nth(1).map_or(2000, |s| s.parse().unwrap());
    let t = std::time::Instant::now();
    let mut inner = std::time::Duration::ZERO;
    for _ in 0..n {
        let r =
            userbpf_verifier::check(&p, &env, &userbpf_verifier::Options::default(), None).unwrap();
        inner += r.stats.time;
    }
    println!("{:?} per check, {:?} inside", t.elapsed() / n, inner / n);
}
