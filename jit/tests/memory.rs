//! The JIT's code pages: never writable and executable at once, freed
//! with the program.

use std::sync::Arc;

use userbpf_jit::{compile_checked, Options};
use userbpf_vm::asm::assemble;
use userbpf_vm::interp::PreparedProgram;
use userbpf_vm::{Config, Helpers, Program};

fn mappings() -> Vec<(u64, u64, String)> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            let (a, b) = range.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
                perms.to_string(),
            ))
        })
        .collect()
}

#[test]
fn code_pages_are_never_writable_and_executable() {
    let src: String = (0..500)
        .map(|i| format!("add %r0, {i}\n"))
        .collect::<String>()
        + "exit";
    let program = Program::new("wx", assemble(&src).unwrap()).unwrap();
    let prepared =
        Arc::new(PreparedProgram::new(&program, &Helpers::new(), Config::default()).unwrap());
    let mut codes = Vec::new();
    for _ in 0..20 {
        codes.push(compile_checked(&prepared, Options::default()).unwrap());
    }
    let wx: Vec<_> = mappings()
        .into_iter()
        .filter(|(_, _, p)| p.contains('w') && p.contains('x'))
        .collect();
    assert!(wx.is_empty(), "writable and executable mappings: {wx:x?}");
    let executable = |m: &[(u64, u64, String)]| -> u64 {
        m.iter()
            .filter(|(_, _, p)| p.contains('x'))
            .map(|(a, b, _)| b - a)
            .sum()
    };
    let with_code = executable(&mappings());
    drop(codes);
    let without = executable(&mappings());
    assert!(
        without < with_code,
        "dropping 20 compiled programs released no executable memory ({with_code} -> {without} bytes)"
    );
}
