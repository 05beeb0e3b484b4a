//! The conflict check of a new apply, when its spec asks for it (`"probe": {"timeout_ms": N}`):
//! before the first kernel change, an ARP probe (IPv6: a DAD solicitation) for each egress
//! address; a host that answers holds it already, and the apply fails naming its MAC.
//!
//! Nothing of the router exists yet, so the probe goes out of the link the router will use: a
//! created macvlan's parent, in its namespace (from the parent's own MAC: only the sender's
//! address matters in a probe, and it is the unspecified one), or the adopted link.

use std::time::Instant;

use tracing::debug;

use super::socket::{wait, Ask, Listen, PacketSocket};
use crate::{
    error::{Error, Result},
    kernel::netns::{Conn, NsHandle},
    objects::{link, Current},
    spec::{format_mac, External, RouterSpec},
};

/// Fails with [`Error::Conflict`] on the first egress address (`sources[i]`) another host
/// answers for, when `spec` asks for the probe; `parent` is the macvlan parent's namespace.
pub(crate) async fn before_claim(
    spec: &RouterSpec,
    c: &Conn,
    now: &Current,
    parent: Option<&NsHandle>,
) -> Result<()> {
    let Some(timeout) = spec.probe() else {
        return Ok(());
    };
    let (ns, link) = match spec.external() {
        External::Macvlan(m) => {
            let parent = parent.expect("a spec that creates a macvlan opens its parent namespace");
            let h = parent.route_connection()?;
            let l = link::get(&h, m.parent())
                .await?
                .ok_or_else(|| Error::NotFound {
                    field: "external.macvlan.parent".into(),
                    object: "link",
                    value: m.parent().to_string(),
                    netns: parent.label().to_string(),
                })?;
            (parent.clone(), l)
        }
        External::Adopt(name) => {
            let l = now.link(name).cloned().ok_or_else(|| Error::NotFound {
                field: "external.adopt".into(),
                object: "link",
                value: name.clone(),
                netns: now.netns.clone(),
            })?;
            (c.ns.clone(), l)
        }
    };
    let probe_field = || "probe".to_string();
    if !link.up {
        return Err(Error::Conflict {
            field: probe_field(),
            value: format!("{{\"timeout_ms\": {}}}", timeout.as_millis()),
            reason: format!(
                "the probe goes out of {} (namespace {}), which is down: bring it up first, \
                 or apply without the probe",
                link.name, ns
            ),
        });
    }
    let mac: [u8; 6] = link
        .mac
        .as_slice()
        .try_into()
        .map_err(|_| Error::Conflict {
            field: probe_field(),
            value: link.name.clone(),
            reason: "the link has no Ethernet address to probe from".into(),
        })?;
    let index = link.index;
    let socket = ns.run(move || PacketSocket::open(index))?.map_err(|e| {
        Error::kernel(
            format!(
                "open a packet socket on {} to probe the egress addresses",
                link.name
            ),
            e.raw_os_error().unwrap_or(libc::EIO),
        )
    })?;
    let asks = spec
        .sources()
        .iter()
        .map(|s| Ask {
            target: s.ip(),
            sender: None,
            conflict: true,
        })
        .collect();
    let started = Instant::now();
    let mut listen = Listen::start(socket, mac, asks, started + timeout);
    wait(&mut [&mut listen], started + timeout);
    for (i, s) in spec.sources().iter().enumerate() {
        if let Some(e) = listen.error(i) {
            return Err(Error::kernel(
                format!("probe for {} on {} (arping -D)", s.ip(), link.name),
                e.raw_os_error().unwrap_or(libc::EIO),
            ));
        }
        if let Some(h) = listen.heard(i).first() {
            return Err(Error::Conflict {
                field: format!("sources[{i}]"),
                value: s.to_string(),
                reason: format!(
                    "another host answers for {} on the external network: MAC {} (it answered \
                     a duplicate address probe from {} in {:.1} ms); remove the address from \
                     that host or choose another egress address",
                    s.ip(),
                    format_mac(&h.mac),
                    link.name,
                    h.after.as_secs_f64() * 1000.0
                ),
            });
        }
    }
    debug!(
        ms = started.elapsed().as_millis() as u64,
        link = %link.name,
        "no other host answers for the egress addresses"
    );
    Ok(())
}
