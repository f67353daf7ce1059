//! Verifies every program of the JIT suite on its input (as the JIT
//! benchmark does before running it in verified mode) and prints the
//! verdicts and statistics.
fn main() {
    for p in userbpf_benches::suite::suite() {
        let program = userbpf_vm::Program::new(p.name, userbpf_benches::engines::insns(&p))
            .unwrap_or_else(|e| panic!("{e}"));
        let env = userbpf_verifier::Env::raw((p.input)().len() as u32);
        match userbpf_verifier::check(&program, &env, &userbpf_verifier::Options::default(), None) {
            Ok(r) => println!("{:<16} accepted: {}", p.name, r.stats),
            Err(e) => println!("{:<16} rejected at pc {}: {}", p.name, e.pc, e.message),
        }
    }
}
