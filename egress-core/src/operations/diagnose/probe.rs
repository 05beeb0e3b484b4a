//! The probes of a diagnosis, run side by side and bounded by one timeout: from the external
//! link, who-has each gateway (sent from the egress address when this instance holds it,
//! else from the unspecified address: an ARP probe / DAD solicitation, which teaches the
//! gateway nothing) and an ARP probe / DAD solicitation for each egress address; a TCP connection from the egress address to each
//! TCP destination. Then, only for a gateway that did not answer the external link, the same
//! question from its parent link, in the parent's namespace, from the parent's own MAC and the
//! unspecified address.

use std::{
    net::{IpAddr, SocketAddr},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{
    reads::{LinkFacts, Parent},
    socket::{wait, Ask, Connect, Heard, Listen, PacketSocket, Pending, Reached},
    subject::Subject,
};
use crate::error::{Error, Result};

/// What a who-has question got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reply {
    /// Who answered, each after how long.
    Heard(Vec<Heard>),
    /// Nobody, within the timeout.
    Silent,
    /// It was not asked: why.
    NotAsked(String),
}

/// A TCP destination and how its connection attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Connected {
    pub to: SocketAddr,
    pub source: Option<IpAddr>,
    pub reached: Reached,
    pub took: Duration,
}

/// Everything the probes found.
#[derive(Debug, Default)]
pub(super) struct Probes {
    /// Per gateway of the subject: asked from the external link.
    pub gateways: Vec<Reply>,
    /// Per gateway: asked from the parent (`None`: not needed, the external link got an
    /// answer).
    pub parent: Vec<Option<Reply>>,
    /// Per source of the subject: who else claims it.
    pub duplicates: Vec<Reply>,
    /// Per TCP destination asked for.
    pub connects: Vec<Connected>,
}

/// The first round of probes, sent and waited for: from the external link and to the TCP
/// destinations.
#[derive(Debug)]
pub(super) struct Round {
    deadline: Instant,
    timeout: Duration,
    gateways: usize,
    sources: usize,
    listen: Result<Listen, String>,
    tcp: Vec<SocketAddr>,
    connects: Vec<(SocketAddr, Option<IpAddr>, Connect)>,
}

/// Sends the first round: `link` is the external link (in the calling thread's namespace,
/// the router's), `tcp` the TCP destinations. Nothing is waited for yet.
pub(super) fn start(
    subject: &Subject,
    link: Option<&LinkFacts>,
    tcp: &[SocketAddr],
    timeout: Duration,
) -> Round {
    let deadline = Instant::now() + timeout;
    let asks = asks(subject);
    let listen = match link {
        None => Err(format!(
            "the external link {} is missing",
            subject.link.as_deref().unwrap_or("(unknown)")
        )),
        Some(l) if !l.up => Err(format!("the external link {} is down", l.name)),
        Some(l) => PacketSocket::open(l.index)
            .map(|s| Listen::start(s, l.mac, asks, deadline))
            .map_err(|e| format!("cannot open a packet socket on {}: {e}", l.name)),
    };
    let connects = tcp
        .iter()
        .filter_map(|to| {
            let source = subject.source_for(to.ip());
            Some((*to, source, Connect::start(source?, *to)))
        })
        .collect();
    Round {
        deadline,
        timeout,
        gateways: subject.gateways.len(),
        sources: subject.sources.len(),
        listen,
        tcp: tcp.to_vec(),
        connects,
    }
}

/// The who-has questions of the first round: each gateway, from the egress address of its
/// family only when this instance holds it ([`Subject::sender_for`]), then each egress address
/// from the unspecified address (nobody else should answer).
pub(super) fn asks(subject: &Subject) -> Vec<Ask> {
    let gateways = subject.gateways.iter().map(|g| Ask {
        target: *g,
        sender: subject.sender_for(*g),
        conflict: false,
    });
    let sources = subject.sources.iter().map(|s| Ask {
        target: s.ip(),
        sender: None,
        conflict: true,
    });
    gateways.chain(sources).collect()
}

impl Round {
    /// Waits for the answers (until each probe has its answer, or the deadline) on another
    /// thread, so that the caller can read meanwhile; joining it gives the round back.
    pub(super) fn wait_beside(mut self) -> Result<JoinHandle<Round>> {
        std::thread::Builder::new()
            .name("egress-probe".into())
            .spawn(move || {
                self.wait();
                self
            })
            .map_err(|e| {
                Error::kernel(
                    "start a thread to wait for the probes",
                    e.raw_os_error().unwrap_or(libc::EAGAIN),
                )
            })
    }

    fn wait(&mut self) {
        let mut pending: Vec<&mut dyn Pending> = Vec::new();
        if let Ok(l) = self.listen.as_mut() {
            pending.push(l);
        }
        for (_, _, c) in self.connects.iter_mut() {
            pending.push(c);
        }
        wait(&mut pending, self.deadline);
    }

    /// What the round found; for a gateway that did not answer, the same question from the
    /// `parent` (the second round, waited for here).
    pub(super) fn finish(self, subject: &Subject, parent: Result<&Parent, &str>) -> Probes {
        let answer = |i: usize| match &self.listen {
            Err(why) => Reply::NotAsked(why.clone()),
            Ok(l) => match (l.heard(i), l.error(i)) {
                ([], Some(e)) => Reply::NotAsked(format!("sending failed: {e}")),
                ([], None) => Reply::Silent,
                (heard, _) => Reply::Heard(heard.to_vec()),
            },
        };
        let n = self.gateways;
        let gateways: Vec<Reply> = (0..n).map(answer).collect();
        let duplicates = (n..n + self.sources).map(answer).collect();
        let connects = self
            .tcp
            .iter()
            .map(|to| match self.connects.iter().find(|(t, ..)| t == to) {
                Some((_, source, c)) => {
                    let (reached, took) = c.outcome(self.deadline);
                    Connected {
                        to: *to,
                        source: *source,
                        reached,
                        took,
                    }
                }
                None => Connected {
                    to: *to,
                    source: None,
                    reached: Reached::NotTried(libc::EADDRNOTAVAIL),
                    took: Duration::ZERO,
                },
            })
            .collect();
        let timeout = self.timeout;
        // The sockets are closed now (a connection still pending is given up), before the
        // parent's round.
        drop(self);
        Probes {
            parent: from_parent(subject, &gateways, parent, timeout),
            gateways,
            duplicates,
            connects,
        }
    }
}

/// Asks the parent about each gateway the external link got no answer from.
fn from_parent(
    subject: &Subject,
    gateways: &[Reply],
    parent: Result<&Parent, &str>,
    timeout: Duration,
) -> Vec<Option<Reply>> {
    let silent: Vec<usize> = (0..gateways.len())
        .filter(|&i| gateways[i] == Reply::Silent)
        .collect();
    let mut out = vec![None; gateways.len()];
    if silent.is_empty() {
        return out;
    }
    let not_asked = |why: String| Some(Reply::NotAsked(why));
    let p = match parent {
        Err(why) => {
            for &i in &silent {
                out[i] = not_asked(format!("the parent link is not known: {why}"));
            }
            return out;
        }
        Ok(p) if !p.link.up => {
            for &i in &silent {
                out[i] = not_asked(format!("the parent link {} is down", p.link.name));
            }
            return out;
        }
        Ok(p) => p,
    };
    let asks: Vec<Ask> = silent
        .iter()
        .map(|&i| Ask {
            target: subject.gateways[i],
            sender: None,
            conflict: false,
        })
        .collect();
    let index = p.link.index;
    let opened =
        p.ns.run(move || PacketSocket::open(index))
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
    let deadline = Instant::now() + timeout;
    let mut listen = match opened {
        Ok(s) => Listen::start(s, p.link.mac, asks, deadline),
        Err(e) => {
            for &i in &silent {
                out[i] = not_asked(format!(
                    "cannot open a packet socket on {} in {}: {e}",
                    p.link.name,
                    p.place()
                ));
            }
            return out;
        }
    };
    wait(&mut [&mut listen], deadline);
    for (k, &i) in silent.iter().enumerate() {
        out[i] = Some(match (listen.heard(k), listen.error(k)) {
            ([], Some(e)) => Reply::NotAsked(format!("sending failed: {e}")),
            ([], None) => Reply::Silent,
            (heard, _) => Reply::Heard(heard.to_vec()),
        });
    }
    out
}
