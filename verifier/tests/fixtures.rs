//! Every program of the project's BPF fixtures (tests/bpf/*.o) through the
//! verifier: all are accepted but the few listed here, each with the
//! message that says why.

use std::path::PathBuf;

use userbpf_verifier::{check, Env, Options};
use userbpf_vm::object::Object;

/// Programs the verifier rejects: (object, program, message).
const REJECTED: &[(&str, &str, &str)] = &[
    // libbpf poisons a CO-RE relocation that found no match; the kernel
    // rejects the call the same way.
    ("core.bpf.o", "unguarded", "invalid func unknown#195896080"),
    // BPF_CORE_READ_BITFIELD reads through ctx + offset: the kernel refuses
    // a modified context pointer too.
    (
        "core.bpf.o",
        "bitfield",
        "dereference of modified ctx ptr R1 off=4 disallowed",
    ),
    // Global functions, verified on their own as the kernel verifies them
    // (tests/verifier_fixtures_vs_kernel.rs: the kernel's messages): a
    // pointer argument may be NULL for all the function knows...
    (
        "globals.bpf.o",
        "unchecked_param",
        "R1 invalid mem access 'mem_or_null'",
    ),
    // ...the caller gets an unknown scalar back...
    (
        "globals.bpf.o",
        "returned_range",
        "invalid unbounded variable-offset read from stack R1",
    ),
    // ...which must be a scalar...
    (
        "globals.bpf.o",
        "void_global",
        "Global function store() doesn't return scalar. Only those are supported.\nCaller passes invalid args into func#1 ('store')",
    ),
    // ...after which packet pointers are stale if the function may change
    // the packet on any path...
    ("globals.bpf.o", "stale_packet", "R6 !read_ok"),
    // ...and the arguments must match the prototype: a number for a
    // number, memory of the pointee's size for a pointer.
    (
        "globals.bpf.o",
        "pointer_as_scalar",
        "R1 is not a scalar\nCaller passes invalid args into func#1 ('low_bit')",
    ),
    (
        "globals.bpf.o",
        "short_object",
        "invalid read from stack R1 off=-8 size=16\nCaller passes invalid args into func#1 ('sum_pair')",
    ),
    (
        "globals.bpf.o",
        "ctx_as_memory",
        "R1 type=ctx expected=fp\nCaller passes invalid args into func#1 ('read_checked')",
    ),
];

fn fixtures() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/bpf");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "o"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_fixture_is_accepted_except_the_listed_ones() {
    let mut seen = 0;
    let mut failures = Vec::new();
    for path in fixtures() {
        let bytes = std::fs::read(&path).unwrap();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        // (ksym.bpf.o does not load in user space at all.)
        let Ok(obj) = Object::parse(&file, &bytes) else {
            continue;
        };
        for p in &obj.programs {
            let prog = p.to_program().unwrap();
            let env = Env::for_object(&obj, p);
            let verdict = check(&prog, &env, &Options::default(), None);
            let expected = REJECTED
                .iter()
                .find(|(f, n, _)| *f == file && *n == p.name)
                .map(|(_, _, m)| *m);
            seen += 1;
            match (verdict, expected) {
                (Ok(_), None) => {}
                (Err(e), Some(m)) if e.message.contains(m) => {}
                (Ok(_), Some(m)) => {
                    failures.push(format!("{file} {}: accepted, expected `{m}`", p.name))
                }
                (Err(e), _) => failures.push(format!("{file} {}: {e}", p.name)),
            }
        }
    }
    assert!(seen > 40, "only {seen} programs");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
