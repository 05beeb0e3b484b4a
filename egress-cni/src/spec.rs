//! The network configuration mapped onto a [`RouterSpec`].

use egress_core::{blocking, Error, Netns, Result, RouterSpec};

use crate::{
    code,
    config::Origin,
    error::{config_field, with_others},
    router_name, CniError, Invocation, NetConf,
};

impl NetConf {
    /// `interfaceArgs.master`, or when not given, the link of the node's default route of
    /// the first address's family in the calling thread's namespace, as OpenShift's plugin
    /// chooses it (a kernel read, blocking). Fails with `NotFound` without such a route.
    pub fn resolve_master(&self) -> Result<String> {
        if let Some(m) = &self.master {
            return Ok(m.clone());
        }
        let v6 = self.first_address_is_ipv6();
        blocking::default_route_link(&Netns::Current, v6)?.ok_or_else(|| Error::NotFound {
            field: "external.macvlan.parent".into(),
            object: "default route (to name the master link by)",
            value: if v6 { "::/0" } else { "0.0.0.0/0" }.into(),
            netns: "of the plugin (the node's)".into(),
        })
    }

    /// The router of an ADD or CHECK: named `routerName`, else [`router_name`], in `CNI_NETNS`, a macvlan called
    /// `CNI_IFNAME` on `master` (in the namespace the plugin runs in), and everything the
    /// configuration says. A spec error names the configuration key it comes from.
    ///
    /// Panics if `inv` is not an ADD, CHECK (or a DEL with `CNI_NETNS`).
    pub fn router_spec(&self, inv: &Invocation, master: &str) -> Result<RouterSpec, CniError> {
        let (id, netns, ifname) = inv.attachment();
        let name = self
            .router_name
            .clone()
            .unwrap_or_else(|| router_name(id, ifname));
        let mut b = RouterSpec::builder(name)
            .netns_path(netns)
            .macvlan(master, self.mode)
            .link_name(ifname)
            .internal(&self.internal);
        if let Some(mtu) = self.mtu {
            b = b.mtu(mtu);
        }
        for a in &self.addresses {
            b = b.source(a);
        }
        for (g, _) in &self.gateways {
            b = b.gateway(g);
        }
        for (r, _) in &self.redirects {
            b = b.redirect(r.protocol, r.port, r.to.to_string(), Some(r.to_port));
        }
        for (f, _) in &self.fallbacks {
            b = b.fallback(f.to_string());
        }
        for (dst, gw) in &self.keep_routes {
            b = b.keep_route(dst, gw.as_deref());
        }
        if let Some(mac) = &self.stable_mac {
            b = b.stable_mac(mac);
        }
        b.build().map_err(|e| self.spec_error(e))
    }

    /// A spec validation error, named by the configuration key it came from.
    fn spec_error(&self, e: Error) -> CniError {
        let Error::InvalidSpec {
            field,
            value,
            expected,
            others,
        } = e
        else {
            return CniError::from_core(&e);
        };
        let expected = with_others(&expected, &others);
        let indexed = |prefix: &str| -> Option<(usize, String)> {
            let rest = field.strip_prefix(prefix)?.strip_prefix('[')?;
            let (i, rest) = rest.split_once(']')?;
            Some((i.parse().ok()?, rest.trim_start_matches('.').to_string()))
        };
        let key = if let Some((i, _)) = indexed("sources") {
            format!("ip.addresses[{i}]")
        } else if field == "sources" {
            "ip.addresses".into()
        } else if let Some((i, _)) = indexed("gateways") {
            self.gateways[i].1.clone()
        } else if field == "gateways" {
            "ip.gateway".into()
        } else if let Some((i, sub)) = indexed("redirects") {
            match &self.redirects[i].1 {
                Origin::Line(line) => line.clone(),
                Origin::Rule(k) => {
                    let sub = match sub.as_str() {
                        "to" => "destinationIP",
                        "to_port" => "targetPort",
                        other => other,
                    };
                    format!("redirectRules[{k}].{sub}")
                }
            }
        } else if let Some((i, _)) = indexed("fallback") {
            self.fallbacks[i].1.clone()
        } else if let Some((i, sub)) = indexed("kept_routes") {
            format!(
                "keepRoutes[{i}].{}",
                if sub == "via" { "gw" } else { "dst" }
            )
        } else if field == "name" && self.router_name.is_some() {
            "routerName".into()
        } else if field == "stable_mac" {
            "stableMac".into()
        } else {
            let (code, key) = config_field(&field);
            let expected = expected.replace("the external link", "CNI_IFNAME (the macvlan)");
            return CniError::invalid(code, &key, &value, expected);
        };
        CniError::invalid(code::INVALID_CONFIG, &key, &value, expected)
    }
}
