//! Embedding the userbpf VM in an application: the host exposes a custom
//! helper, loads a user-supplied program, and runs it on its own data,
//! interpreted and then as native code (the JIT in checked mode). A faulty
//! extension returns an error; the host keeps running.
//!
//! ```text
//! cargo run --example embed                   # the built-in extension
//! cargo run --example embed -- my_rule.s      # your own (assembler text or raw .bin)
//! ```

use std::path::Path;

use std::sync::Arc;

use userbpf::vm::helpers::{ArgKind, ArgSize, HelperProto};
use userbpf::vm::interp::PreparedProgram;
use userbpf::vm::{asm, Config, Helpers, Program, Vm};

/// Helper id chosen by this application (outside the kernel's id range).
const GET_PRICE: i32 = 0x1_0000;
/// A helper that reads a byte string from the program's memory.
const LOG: i32 = 0x1_0001;

/// The extension: total = sum(price(item) * qty), 10% off above 1000.
/// Input memory: `u32 count`, then `count` pairs of `u32 item, u32 qty`.
const BUILTIN: &str = "
    mov %r6, %r1          # cursor
    ldxw %r7, [%r6]       # count
    add %r6, 4
    mov %r8, 0            # total
loop:
    jeq %r7, 0, done
    ldxw %r1, [%r6]       # item id
    call 0x10000          # r0 = get_price(item)
    ldxw %r2, [%r6+4]     # quantity
    mul %r0, %r2
    add %r8, %r0
    add %r6, 8
    sub %r7, 1
    ja loop
done:
    mov %r0, %r8
    jle %r0, 1000, out
    lddw %r1, 0x746e756f63736964  # the bytes of `discount`
    stxdw [%r10-8], %r1
    mov %r1, %r10
    add %r1, -8
    mov %r2, 8
    call 0x10001          # log(`discount`, 8)
    mov %r0, %r8
    mul %r0, 9
    div %r0, 10
out:
    exit
";

fn price_of(item: u64) -> u64 {
    match item {
        1 => 250,
        2 => 120,
        3 => 999,
        _ => 0,
    }
}

fn helpers() -> Helpers {
    let mut h = Helpers::new();
    h.register_fn(GET_PRICE, "get_price", |item, _, _, _, _| price_of(item));
    h.register(
        LOG,
        "log",
        HelperProto::new(&[ArgKind::ReadMem {
            size: ArgSize::Arg(1),
            nullable: false,
        }]),
        |ctx, args| {
            let bytes = ctx.read(args[0], args[1] as usize)?;
            println!("extension says: {}", String::from_utf8_lossy(&bytes));
            Ok(0)
        },
    );
    h
}

fn load(path: Option<&str>) -> Result<Program, Box<dyn std::error::Error>> {
    Ok(match path {
        Some(p) => userbpf::source::load_program(Path::new(p), None)?,
        None => Program::new("builtin_discount", asm::assemble(BUILTIN)?)?,
    })
}

fn order(items: &[(u32, u32)]) -> Vec<u8> {
    let mut mem = (items.len() as u32).to_le_bytes().to_vec();
    for (item, qty) in items {
        mem.extend_from_slice(&item.to_le_bytes());
        mem.extend_from_slice(&qty.to_le_bytes());
    }
    mem
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = std::env::args().nth(1);
    let program = load(arg.as_deref())?;
    let orders = [&[(1, 2), (2, 1)][..], &[(3, 2)], &[]];
    let mut vm = Vm::new(&program, helpers())?;
    for items in orders {
        let mut mem = order(items);
        match vm.run(&mut mem) {
            Ok(total) => println!("order {items:?}: total {total}"),
            Err(fault) => println!("order {items:?}: extension failed: {fault}"),
        }
    }

    // The same extension compiled to native code (checked mode: the same
    // bounds checks and faults as the interpreter).
    let prepared = Arc::new(PreparedProgram::new(
        &program,
        &helpers(),
        Config::default(),
    )?);
    let code = userbpf::jit::jit_checked(&prepared, userbpf::jit::Options::default())?;
    println!(
        "compiled {} bytes of native code in {:?}",
        code.code_size(),
        code.compile_time()
    );
    let mut vm = Vm::from_prepared(prepared);
    for items in orders {
        match vm.run(&mut order(items)) {
            Ok(total) => println!("order {items:?} (JIT): total {total}"),
            Err(fault) => println!("order {items:?} (JIT): extension failed: {fault}"),
        }
    }

    // A buggy extension reads past its input: the VM stops it with a fault
    // naming the pc; the application carries on.
    let buggy = Program::new("buggy", asm::assemble("ldxdw %r0, [%r1+4096]\nexit")?)?;
    let mut vm = Vm::new(&buggy, helpers())?;
    match vm.run(&mut order(&[(1, 1)])) {
        Ok(v) => println!("unexpected result {v}"),
        Err(fault) => println!("buggy extension stopped: {fault}"),
    }
    println!("host still running");
    Ok(())
}
