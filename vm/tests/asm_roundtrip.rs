//! Every program of the bpf_conformance corpus assembles, disassembles and
//! re-assembles to the same slots, and matches the corpus' `-- raw` words.
//!
//! The corpus is `../tests/conformance` from this crate (a copy of `../shared/conformance`) (or the directory
//! named by `USERBPF_CONFORMANCE_DIR`).

use std::fs;
use std::path::PathBuf;

use userbpf_vm::asm::assemble;
use userbpf_vm::disasm::disassemble;
use userbpf_vm::Insn;

fn corpus_dir() -> PathBuf {
    match std::env::var_os("USERBPF_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance"),
    }
}

/// The lines of section `name` (`-- name` up to the next line starting with
/// `--`), with `#` comments removed as the suite's parser does.
fn section(data: &str, name: &str) -> Option<String> {
    let header = format!("-- {name}");
    let mut lines = data.lines();
    lines.by_ref().find(|l| l.trim_end() == header)?;
    let mut out = String::new();
    for line in lines.take_while(|l| !l.starts_with("--")) {
        let code = line.split('#').next().unwrap_or("");
        out.push_str(code);
        out.push('\n');
    }
    Some(out)
}

fn parse_raw(raw: &str) -> Vec<Insn> {
    raw.split_whitespace()
        .map(|w| {
            let hex = w.strip_prefix("0x").expect("raw words are 0x-prefixed");
            Insn::from_u64(u64::from_str_radix(hex, 16).expect("raw word"))
        })
        .collect()
}

#[test]
fn conformance_corpus_round_trips() {
    let dir = corpus_dir().join("tests");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .collect();
    files.sort();

    let mut round_tripped = 0;
    let mut raw_checked = 0;
    for path in &files {
        let name = path.display();
        let data = fs::read_to_string(path).expect("readable test file");
        let Some(asm) = section(&data, "asm") else {
            continue;
        };
        let slots = assemble(&asm).unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = disassemble(&slots).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again = assemble(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        assert_eq!(
            again, slots,
            "{name}: disassembly does not round-trip\n{text}"
        );
        if let Some(raw) = section(&data, "raw") {
            assert_eq!(slots, parse_raw(&raw), "{name}: differs from `-- raw`");
            raw_checked += 1;
        }
        round_tripped += 1;
    }
    println!("round-tripped {round_tripped} files ({raw_checked} with `-- raw`)");
    assert_eq!(round_tripped, 313);
    assert!(raw_checked >= 1);
}
