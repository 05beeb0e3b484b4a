//! The replies of CNI 1.1 (the ADD result, VERSION, CHECK against `prevResult`) and the
//! STATUS probe of the node's namespace.

use std::{net::IpAddr, path::Path};

use serde_json::{json, Value};

use egress_core::{blocking, Error, LinkState, Netns, Result, RouterSpec};

use crate::{code, CniError, CniVersion, SUPPORTED_VERSIONS};

/// The ADD result in `version`: the macvlan (`interfaces[0]`, in the pod's `sandbox`), each
/// egress address with its gateway (`ips`, on interface 0; 0.4.0 adds each one's `version`),
/// and the default routes via the gateways (`routes`). 1.1.0 adds the interface's `mtu`.
///
/// `link` is the macvlan as [`inspect`](egress_core::inspect) reads it back after the ADD; without
/// one (it vanished in between) the ADD fails with code 101.
pub fn add_result(
    version: CniVersion,
    spec: &RouterSpec,
    netns: &Path,
    link: Option<&LinkState>,
) -> Result<Value, CniError> {
    let Some(link) = link else {
        return Err(CniError::new(
            code::ROLLED_BACK,
            format!(
                "link {} is missing right after the ADD configured it",
                spec.external().link_name()
            ),
            "",
        ));
    };
    let mut interface = json!({"name": link.name, "mac": link.mac, "sandbox": netns});
    if version >= CniVersion::V1_1_0 {
        interface["mtu"] = link.mtu.into();
    }
    let gateway = |v4: bool| -> Option<IpAddr> {
        if v4 {
            spec.gateway4().map(IpAddr::from)
        } else {
            spec.gateway6().map(IpAddr::from)
        }
    };
    let ips: Vec<Value> = spec
        .sources()
        .iter()
        .map(|s| {
            let mut ip = json!({"address": s.to_string(), "interface": 0});
            if let Some(g) = gateway(s.is_ipv4()) {
                ip["gateway"] = g.to_string().into();
            }
            if version == CniVersion::V0_4_0 {
                ip["version"] = if s.is_ipv4() { "4" } else { "6" }.into();
            }
            ip
        })
        .collect();
    let routes: Vec<Value> = [(true, "0.0.0.0/0"), (false, "::/0")]
        .into_iter()
        .filter_map(|(v4, dst)| gateway(v4).map(|g| json!({"dst": dst, "gw": g.to_string()})))
        .collect();
    Ok(json!({
        "cniVersion": version.as_str(),
        "interfaces": [interface],
        "ips": ips,
        "routes": routes,
        "dns": {},
    }))
}

/// The VERSION reply: the newest version, and every supported one.
pub fn version_result() -> Value {
    json!({"cniVersion": CniVersion::LATEST.as_str(), "supportedVersions": SUPPORTED_VERSIONS})
}

/// What CHECK learns from `prevResult` (the ADD's result), against the spec and the macvlan as
/// the kernel has it: the interface must be listed in this sandbox with the MAC it has now,
/// and every address listed on it must still be configured. One line per difference.
pub fn prev_result_drift(
    prev: &Value,
    spec: &RouterSpec,
    netns: &Path,
    link: Option<&LinkState>,
) -> Vec<String> {
    let ifname = spec.external().link_name();
    let sandbox = netns.to_string_lossy();
    let interfaces = prev["interfaces"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let Some(index) = interfaces
        .iter()
        .position(|i| i["name"] == ifname && i["sandbox"] == *sandbox)
    else {
        return vec![format!(
            "prevResult lists no interface {ifname} in sandbox {sandbox}"
        )];
    };
    let mut drift = Vec::new();
    // An HA pair's router (`stableMac`) takes the stable MAC while active: either is its own.
    let stable = spec.stable_mac().map(|m| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    });
    if let (Some(mac), Some(link)) = (interfaces[index]["mac"].as_str(), link) {
        if !mac.eq_ignore_ascii_case(&link.mac) && stable.as_deref() != Some(link.mac.as_str()) {
            drift.push(format!(
                "interface {ifname}: MAC is {}, prevResult says {mac}",
                link.mac
            ));
        }
    }
    for ip in prev["ips"].as_array().into_iter().flatten() {
        if ip["interface"].as_u64() != Some(index as u64) {
            continue;
        }
        let address = ip["address"].as_str().unwrap_or_default();
        if !spec.sources().iter().any(|s| s.to_string() == address) {
            drift.push(format!(
                "address {address} of prevResult is not in the configuration's ip.addresses"
            ));
        }
    }
    drift
}

// ---------------------------------------------------------------------------------------------
// Kernel probes of the namespace the plugin runs in (the node's)

/// STATUS: whether an ADD can work here: `CAP_NET_ADMIN`, and the master link present in the
/// calling thread's namespace. Blocking.
pub fn probe(master: &str) -> Result<()> {
    if blocking::link_exists(&Netns::Current, master)? {
        return Ok(());
    }
    Err(Error::NotFound {
        field: "external.macvlan.parent".into(),
        object: "link",
        value: master.to_string(),
        netns: "of the plugin (the node's)".into(),
    })
}
