//! Gives the shared library its SONAME, so that programs linked with `-legress` record
//! `libegress.so.0` (the name `make install` gives it) and keep working across compatible
//! upgrades.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libegress.so.0");
    println!("cargo:rerun-if-changed=build.rs");
}
