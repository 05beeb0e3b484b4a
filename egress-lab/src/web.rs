//! The web server behind the gateway: answers each request with the peer address it saw.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv6Addr, SocketAddrV6, TcpListener, TcpStream},
    os::fd::{AsRawFd, RawFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrIn6,
};

/// How long the web server waits for a request once a client has connected.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the accept loop waits for a connection before it looks at the stop flag again.
const ACCEPT_IDLE: Duration = Duration::from_millis(50);
/// How long an accepted connection's request may take to arrive to be answered by the accepting
/// thread itself (a client sends it right after connecting).
const REQUEST_SOON: Duration = Duration::from_millis(20);

pub(crate) fn dual_stack_listener(port: u16) -> nix::Result<TcpListener> {
    let fd = socket(
        AddressFamily::Inet6,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    let addr = SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0);
    bind(fd.as_raw_fd(), &SockaddrIn6::from(addr))?;
    listen(&fd, Backlog::new(64)?)?;
    Ok(TcpListener::from(fd))
}

/// A web server started by [`Netns::serve_http`](crate::Netns::serve_http): one thread polling
/// non-blocking listeners, stopped and joined on drop, that answers each request itself, or on
/// a thread of its own when the request is late (such a thread ends within two seconds, the
/// time a connected client has to send its request).
#[derive(Debug)]
pub struct WebServer {
    ports: Vec<u16>,
    peers: Arc<Mutex<Vec<IpAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WebServer {
    pub(crate) fn start(listeners: Vec<TcpListener>) -> WebServer {
        let ports = listeners
            .iter()
            .map(|l| {
                l.local_addr()
                    .expect("a bound listener has an address")
                    .port()
            })
            .collect();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peers, stop) = (Arc::clone(&peers), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    if !wait_readable(&listeners, ACCEPT_IDLE) {
                        continue;
                    }
                    for listener in &listeners {
                        // Transient accept errors (a client that already gave up) are not the
                        // server's failure; WouldBlock is the normal "nobody there".
                        if let Ok((stream, peer)) = listener.accept() {
                            let peer = peer.ip().to_canonical();
                            peers.lock().unwrap().push(peer);
                            // A request already there (or within REQUEST_SOON) is answered
                            // here; a connection whose request is late goes to a thread of its
                            // own, so that one whose request never comes (its router died
                            // between the handshake and the request, as a failover test does)
                            // holds nobody up for the request timeout. A client that vanishes
                            // or times out gets no answer; that is its problem, not the
                            // server's.
                            match readable(&stream, REQUEST_SOON) {
                                true => drop(answer(stream, peer)),
                                false => drop(thread::spawn(move || answer(stream, peer))),
                            }
                        }
                    }
                }
            })
        };
        WebServer {
            ports,
            peers,
            stop,
            thread: Some(thread),
        }
    }

    /// The ports it listens on, in the order they were asked for (with `0` resolved).
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Every client address it accepted a connection from, in order (IPv4-mapped addresses as
    /// plain IPv4).
    pub fn peers(&self) -> Vec<IpAddr> {
        self.peers.lock().unwrap().clone()
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(Err(panic)) = self.thread.take().map(JoinHandle::join) {
            if !thread::panicking() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// Waits up to `timeout` for a connection on any of `listeners` (poll(2), so a connection is
/// accepted at once, however fast a benchmark's client opens them).
fn wait_readable(listeners: &[TcpListener], timeout: Duration) -> bool {
    poll_in(listeners.iter().map(AsRawFd::as_raw_fd), timeout)
}

/// Whether `stream` has something to read within `timeout`.
fn readable(stream: &TcpStream, timeout: Duration) -> bool {
    poll_in([stream.as_raw_fd()], timeout)
}

/// Whether any of `fds` is readable within `timeout` (poll(2)).
fn poll_in(fds: impl IntoIterator<Item = RawFd>, timeout: Duration) -> bool {
    let mut fds: Vec<libc::pollfd> = fds
        .into_iter()
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the call's duration.
    let n = unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            timeout.as_millis() as libc::c_int,
        )
    };
    n > 0
}

/// Reads one request (bounded by [`REQUEST_TIMEOUT`] and 8 KiB) and answers it.
fn answer(mut stream: TcpStream, peer: IpAddr) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        match stream.read(&mut buf)? {
            0 => break,
            n => request.extend_from_slice(&buf[..n]),
        }
    }
    let port = stream.local_addr()?.port();
    let response = if request.starts_with(b"GET ") {
        let body = format!("peer={peer} port={port}\n");
        format!(
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.0 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n".to_owned()
    };
    stream.write_all(response.as_bytes())
}
