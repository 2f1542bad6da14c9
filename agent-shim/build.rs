//! Compiles the kernel fast path (`bpf/fastpath.bpf.c`) with clang when this machine has it
//! (Debian: `clang llvm libbpf-dev`). Without it the shim still builds, and says once at run
//! time that its fast path is unavailable (the slow path carries everything).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "bpf/fastpath.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo::rustc-check-cfg=cfg(enifab_bpf)");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("fastpath.bpf.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let arch_include =
        format!("-I/usr/include/{}-linux-gnu", std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default());
    let built =
        Command::new(&clang).args(["-O2", "-g", "-target", "bpf", &arch_include, "-c", src, "-o"]).arg(&out).status();
    match built {
        Ok(s) if s.success() => println!("cargo:rustc-cfg=enifab_bpf"),
        Ok(s) => println!(
            "cargo:warning=the kernel fast path was not built ({clang} {src}: {s}); the shim will relay every frame"
        ),
        Err(e) => println!(
            "cargo:warning=the kernel fast path was not built (no {clang}: {e}); the shim will relay every frame"
        ),
    }
}
