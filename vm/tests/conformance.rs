//! The BPF ISA conformance corpus on the interpreter: every case in
//! `tests/` passes, every case in `negative/` is rejected for the reason its
//! name gives.

use std::path::PathBuf;

use userbpf_vm::conformance::{run_case, run_interpreter, CaseFailure};

fn corpus() -> PathBuf {
    match std::env::var_os("USERBPF_CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance"),
    }
}

fn data_files(dir: &str) -> Vec<PathBuf> {
    let dir = corpus().join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_conformance_case_passes_on_the_interpreter() {
    let files = data_files("tests");
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        if let Err(e) = run_case(&text, run_interpreter) {
            failures.push(format!("{}: {e}", f.file_name().unwrap().to_string_lossy()));
        }
    }
    let passed = files.len() - failures.len();
    println!("conformance (interpreter): {passed}/{} passed", files.len());
    for f in &failures {
        println!("  FAIL {f}");
    }
    assert!(failures.is_empty(), "{} failures", failures.len());
    assert_eq!(files.len(), 313, "the corpus should hold 313 cases");
}

#[test]
fn every_negative_case_is_rejected() {
    let files = data_files("negative");
    let mut wrong = Vec::new();
    for f in &files {
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(f).unwrap();
        let outcome = run_case(&text, run_interpreter);
        // What each family of negative cases must be rejected for.
        let ok = match (&outcome, name.as_str()) {
            (Ok(()), _) => false,
            // Non-zero unused fields: the decoder refuses them, naming the pc
            // and the field.
            (Err(CaseFailure::OtherError { got, .. }), n) if n.starts_with("unused-") => {
                let field = match n.rsplit('-').next() {
                    Some("offset") => "`off`",
                    Some("src") => "`src`",
                    Some("imm") => "`imm`",
                    _ => "`dst`",
                };
                got.contains("pc 0") && got.contains(field)
            }
            (Err(CaseFailure::Data(_)), "invalid_unknown_directive") => true,
            (Err(CaseFailure::Assemble(_)), n) if n.starts_with("invalid_") => true,
            (Err(CaseFailure::NoProgram), "empty" | "empty_instructions") => true,
            (Err(CaseFailure::WrongResult { .. }), "incorrect_return_value_high_bits") => true,
            (Err(CaseFailure::ExpectedError { .. }), "error") => true,
            _ => false,
        };
        println!(
            "negative {name}: {}",
            match &outcome {
                Ok(()) => "PASSED (should be rejected)".to_string(),
                Err(e) => format!("rejected: {e}"),
            }
        );
        if !ok {
            wrong.push(name);
        }
    }
    println!(
        "negative cases rejected as expected: {}/{}",
        files.len() - wrong.len(),
        files.len()
    );
    assert!(wrong.is_empty(), "not rejected as expected: {wrong:?}");
    assert_eq!(files.len(), 60, "the corpus should hold 60 negative cases");
}
