//! Gives the shared library its SONAME, `libegress.so.MAJOR` with the major number of the
//! workspace version (the name `make install` gives it, from the same version), so that programs
//! linked with `-legress` record it and keep working across compatible upgrades.

fn main() {
    let major =
        std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets CARGO_PKG_VERSION_MAJOR");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libegress.so.{major}");
    println!("cargo:rerun-if-changed=build.rs");
}
