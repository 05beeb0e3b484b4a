//! The client's probe loop of [`HaLab::probing`]: a new TCP connection to the internal virtual
//! IP every 10 ms, and the service gap it saw.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use super::{HaLab, INTERNAL_VIP};
use crate::SERVICE_PORT;

impl HaLab {
    /// Runs `during` while the client opens a new TCP connection to the internal virtual IP
    /// every 10 ms (each bounded by 50 ms); returns what `during` returned and every attempt.
    pub fn probing<T>(&self, during: impl FnOnce(&Probes) -> T) -> (T, Vec<Attempt>) {
        let stop = AtomicBool::new(false);
        let probes = Probes {
            started: AtomicUsize::new(0),
        };
        thread::scope(|s| {
            let client = &self.lab.client;
            let stop = &stop;
            let probes_ref = &probes;
            let h = s.spawn(move || {
                let mut out = Vec::new();
                let vip = IpAddr::V4(INTERNAL_VIP.parse::<Ipv4Addr>().unwrap());
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    let ok = client
                        .http_get(vip, SERVICE_PORT, Duration::from_millis(50))
                        .is_ok();
                    probes_ref.started.fetch_add(1, Ordering::Relaxed);
                    out.push(Attempt { at, ok });
                    let next = at + Duration::from_millis(10);
                    if let Some(d) = next.checked_duration_since(Instant::now()) {
                        thread::sleep(d);
                    }
                }
                out
            });
            let t = during(&probes);
            stop.store(true, Ordering::Relaxed);
            (t, h.join().expect("the probe loop"))
        })
    }
}

/// What the probe loop has done so far.
pub struct Probes {
    started: AtomicUsize,
}

impl Probes {
    /// Waits until `n` more connection attempts were made.
    pub fn wait_attempts(&self, n: usize) {
        let until = self.started.load(Ordering::Relaxed) + n;
        while self.started.load(Ordering::Relaxed) < until {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// One connection attempt of the probe loop: when it started, whether it got the page.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// When it started.
    pub at: Instant,
    /// Whether the web server answered through the router.
    pub ok: bool,
}

/// The service gap around `t`: from the last successful attempt started before `t` to the
/// first one started after it; `None` when there is none after.
pub fn gap(attempts: &[Attempt], t: Instant) -> Option<Duration> {
    let before = attempts
        .iter()
        .filter(|a| a.ok && a.at <= t)
        .map(|a| a.at)
        .max()?;
    let after = attempts.iter().find(|a| a.ok && a.at > t)?.at;
    Some(after - before)
}
