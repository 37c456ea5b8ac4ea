//! bpf-linker is an undeclared dependency of this crate: rebuild when the binary changes, so a
//! linker upgrade relinks the program.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
