//! Clients that hold a listener's connections without asking anything of it: what a listener
//! that answers one connection at a time, with a timeout per read, cannot survive.

use std::{
    io::Write,
    net::{SocketAddr, TcpStream},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use crate::Netns;

/// How often a slow client sends the next byte of its request.
pub const SLOW_BYTE_EVERY: Duration = Duration::from_millis(1500);

/// Runs `f` while, from namespace `ns`, `slow` clients send a request to `at` one byte every
/// [`SLOW_BYTE_EVERY`] (on a new connection whenever the server closes theirs) and `idle`
/// connections to `at` send nothing; `f` gets how many idle connections were made (the
/// listener's backlog may refuse some). Everything is closed when `f` returns.
///
/// ```no_run
/// # let lab = egress_lab::Lab::new();
/// # let at: std::net::SocketAddr = "192.0.2.2:9100".parse().unwrap();
/// let answered = egress_lab::while_held(&lab.client, at, 3, 200, |_idle| {
///     lab.client.http_get_path(at, "/healthz", std::time::Duration::from_secs(1))
/// });
/// ```
pub fn while_held<T>(
    ns: &Netns,
    at: SocketAddr,
    slow: usize,
    idle: usize,
    f: impl FnOnce(usize) -> T,
) -> T {
    let connect = || ns.run(|| TcpStream::connect_timeout(&at, Duration::from_secs(1)));
    let held: Vec<TcpStream> = (0..idle).filter_map(|_| connect().ok()).collect();
    let stop = AtomicBool::new(false);
    let out = thread::scope(|scope| {
        for _ in 0..slow {
            scope.spawn(|| {
                let request = format!("GET /healthz HTTP/1.1\r\nHost: {at}\r\n\r\n");
                'connections: while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = connect() else {
                        thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    for byte in request.bytes() {
                        if s.write_all(&[byte]).is_err() {
                            continue 'connections;
                        }
                        // In steps, so that the end of `f` ends the client soon.
                        for _ in 0..15 {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            thread::sleep(SLOW_BYTE_EVERY / 15);
                        }
                    }
                }
            });
        }
        // The slow clients' first bytes are in.
        thread::sleep(Duration::from_millis(300));
        let out = f(held.len());
        stop.store(true, Ordering::Relaxed);
        out
    });
    drop(held);
    out
}
