//! Sysctls under `/proc/sys`, read and written inside the router namespace.
//!
//! A write to `/proc/sys/net/...` applies to the namespace of the writing thread, so every access
//! runs on a thread that has entered the namespace ([`NsHandle::run`]).

use std::collections::BTreeMap;

use crate::{
    error::{Error, Result},
    netns::NsHandle,
};

/// A sysctl key in path form (`net/ipv4/ip_forward`): unambiguous even for link names with dots.
pub(crate) fn dotted(path: &str) -> String {
    // `sysctl` writes a `.` inside a component (a link name such as eth0.100) as `/`.
    path.split('/')
        .map(|c| c.replace('.', "/"))
        .collect::<Vec<_>>()
        .join(".")
}

/// Reads each key; `None` for a key that does not exist.
pub(crate) fn read_many(ns: &NsHandle, keys: &[String]) -> Result<Vec<Option<String>>> {
    let keys = keys.to_vec();
    ns.run(move || {
        keys.iter()
            .map(|k| {
                std::fs::read_to_string(format!("/proc/sys/{k}"))
                    .ok()
                    .map(|v| v.trim().to_string())
            })
            .collect()
    })
}

/// Writes each `(key, value)` in order, stopping at the first failure; returns how many were
/// written and the failure.
pub(crate) fn write_many(
    ns: &NsHandle,
    writes: &[(String, String)],
) -> Result<(usize, Option<Error>)> {
    let writes = writes.to_vec();
    ns.run(move || {
        for (i, (k, v)) in writes.iter().enumerate() {
            if let Err(e) = std::fs::write(format!("/proc/sys/{k}"), v) {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                return (
                    i,
                    Some(Error::kernel(format!("sysctl -w {}={v}", dotted(k)), errno)),
                );
            }
        }
        (writes.len(), None)
    })
}

/// Reads, in one trip into the namespace, the `forwarding` of every `net/<family>/conf/*` entry
/// and `net/<family>/conf/all/accept_redirects` of each family, plus `extra` keys. Missing keys
/// are left out.
pub(crate) fn read_forwarding(
    ns: &NsHandle,
    families: &[&'static str],
    extra: &[String],
) -> Result<BTreeMap<String, String>> {
    let (families, extra) = (families.to_vec(), extra.to_vec());
    ns.run(move || {
        let mut keys = extra;
        for family in families {
            let dir = format!("/proc/sys/net/{family}/conf");
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if let Ok(name) = entry.file_name().into_string() {
                    keys.push(format!("net/{family}/conf/{name}/forwarding"));
                }
            }
            keys.push(format!("net/{family}/conf/all/accept_redirects"));
        }
        keys.into_iter()
            .filter_map(|k| {
                let v = std::fs::read_to_string(format!("/proc/sys/{k}")).ok()?;
                Some((k, v.trim().to_string()))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_form_escapes_dots_in_link_names() {
        assert_eq!(dotted("net/ipv4/ip_forward"), "net.ipv4.ip_forward");
        assert_eq!(
            dotted("net/ipv4/conf/eth0.100/forwarding"),
            "net.ipv4.conf.eth0/100.forwarding"
        );
    }
}
