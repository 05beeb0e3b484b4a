//! Sysctls under `/proc/sys`, read and written inside the router namespace.
//!
//! A write to `/proc/sys/net/...` applies to the namespace of the writing thread, so every access
//! runs on a thread that has entered the namespace ([`NsHandle::run`]).

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

/// The links listed under `net/<family>/conf/` (`all` and `default` included).
pub(crate) fn conf_entries(ns: &NsHandle, family: &str) -> Result<Vec<String>> {
    let family = family.to_string();
    ns.run(move || {
        let mut v: Vec<String> = std::fs::read_dir(format!("/proc/sys/net/{family}/conf"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
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
