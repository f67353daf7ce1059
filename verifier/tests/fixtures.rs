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
