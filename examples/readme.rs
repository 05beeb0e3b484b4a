//! The README's Rust example ("Use it from Rust"), verbatim between the `README` markers:
//! tests/readme.rs checks that the README shows exactly these lines and runs this program in a
//! throwaway namespace that a private mount namespace names `pod` (with links `eth1` and
//! `eth0`), so that the example runs as it is printed.

// README begin
use egress_core::{blocking, MacvlanMode, Protocol, RouterSpec};
// README end

#[rustfmt::skip] // the README's alignment of comments
fn main() -> Result<(), egress_core::Error> {
    // README begin
    let spec = RouterSpec::builder("egress-1")
        .netns_name("pod")                              // the router pod's namespace
        .macvlan("eth1", MacvlanMode::Private)          // created on eth1, directly inside "pod"
        .source("203.0.113.99/24")                      // the egress IP
        .gateway("203.0.113.1")
        .redirect(Protocol::Tcp, 80, "198.51.100.25", Some(8080))
        .fallback("198.51.100.9")                       // everything else goes here
        .build()?;                                      // every check that needs no kernel
    print!("{}", spec.plan());                          // dry run, one line per kernel change
    let router = blocking::apply(&spec)?;               // async: egress_core::apply(&spec).await
    blocking::teardown(router)?;                        // or teardown_by_name(netns, "egress-1")
    // README end
    Ok(())
}
