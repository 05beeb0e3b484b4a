//! The Kubernetes objects of a valid EgressRouter: the NetworkAttachmentDefinition
//! (egress-cni's configuration), the Deployment (one replica, or the HA pair with keepalived's
//! ConfigMap) and the Service, all named after the object.

use std::{collections::BTreeSet, net::IpAddr};

use serde_json::{json, Value};

use super::{
    EgressRouter, RenderOptions, Rendered, API_VERSION, HA_ADVERT_INT, HA_FIFO_DIR, HA_ROUTER_NAME,
    KEEPALIVED_IMAGE, KEEPALIVED_VIP, KIND, PAUSE_IMAGE,
};

impl EgressRouter {
    pub(super) fn manifests(&self, options: &RenderOptions) -> Rendered {
        let mut notes = Vec::new();
        let uid = self.uid.clone().or_else(|| options.owner_uid.clone());
        if uid.is_none() {
            notes.push(format!(
                "no ownerReferences: the EgressRouter's uid is unknown (render `kubectl get \
                 egressrouter {} -o yaml`, or give --owner-uid)",
                self.name
            ));
        }
        let meta = |name: &str| {
            let mut m = json!({"name": name, "labels": self.selector()});
            if let Some(ns) = &self.namespace {
                m["namespace"] = json!(ns);
            }
            if let Some(uid) = &uid {
                m["ownerReferences"] = json!([{
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": self.name,
                    "uid": uid,
                }]);
            }
            m
        };
        let mut documents = vec![json!({
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": meta(&self.name),
            "spec": {"config": serde_json::to_string_pretty(&self.cni_config(options))
                .expect("JSON values always serialize")},
        })];
        if options.ha {
            documents.push(json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": meta(&self.keepalived_name()),
                "data": {"keepalived.conf": self.keepalived_conf()},
            }));
        }
        documents.push(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(&self.name),
            "spec": if options.ha { self.ha_deployment() } else { self.deployment() },
        }));
        documents.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(&self.name),
            "spec": self.service(),
        }));
        if options.stable_mac && !options.ha {
            notes.push("--stable-mac is for the HA pair (--ha): ignored".into());
        }
        Rendered { documents, notes }
    }

    /// What selects this router's pods: the object's name (two objects never share pods).
    fn selector(&self) -> Value {
        json!({"app.kubernetes.io/name": "egress-router", "app.kubernetes.io/instance": self.name})
    }

    fn keepalived_name(&self) -> String {
        format!("{}-keepalived", self.name)
    }

    /// The VRRP router id of the pair: derived from the namespace and name (FNV-1a), so that
    /// two pairs on one network are unlikely to share one; 1 to 255.
    fn vrid(&self) -> u8 {
        let mut h: u32 = 0x811c_9dc5;
        let key = format!("{}/{}", self.namespace.as_deref().unwrap_or(""), self.name);
        for b in key.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        u8::try_from(h % 255).expect("below 255") + 1
    }

    /// egress-cni's configuration (docs/cni.md): every address, the gateways (one per
    /// family), the rules as they are, the fallback; with `ha`, the standby role and the
    /// router's fixed name (and the stable MAC) the keepalived sidecar works with.
    fn cni_config(&self, options: &RenderOptions) -> Value {
        let mut interface = json!({"mode": self.mode});
        if let Some(m) = &self.master {
            interface["master"] = json!(m);
        }
        let gateways: Vec<String> = self.gateways().into_iter().map(|(g, _)| g).collect();
        let mut config = json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "type": "egress-cni",
            "interfaceArgs": interface,
            "ip": {
                "addresses": self.addresses.iter().map(|(_, a)| a.ip.clone()).collect::<Vec<_>>(),
                "gateway": if gateways.len() == 1 { json!(gateways[0]) } else { json!(gateways) },
            },
        });
        if !self.rules.is_empty() {
            config["redirectRules"] = Value::Array(
                self.rules
                    .iter()
                    .map(|(_, r)| {
                        let mut rule = json!({
                            "destinationIP": r.destination_ip,
                            "port": r.port,
                            "protocol": r.protocol,
                        });
                        if let Some(t) = r.target_port {
                            rule["targetPort"] = json!(t);
                        }
                        rule
                    })
                    .collect(),
            );
        }
        if let Some(f) = &self.fallback {
            config["fallbackIP"] = json!(f);
        }
        if options.ha {
            config["role"] = json!("standby");
            config["routerName"] = json!(HA_ROUTER_NAME);
            if options.stable_mac {
                config["stableMac"] = json!(format!("00:00:5e:00:01:{:02x}", self.vrid()));
            }
        }
        config
    }

    /// The single replica: a pause container in a pod that egress-cni makes the router.
    fn deployment(&self) -> Value {
        json!({
            "replicas": 1,
            // The old pod releases the egress address before the new one takes it.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": self.selector()},
            "template": {
                "metadata": {
                    "labels": self.selector(),
                    "annotations": {"k8s.v1.cni.cncf.io/networks": self.name},
                },
                "spec": {
                    "containers": [{"name": "pause", "image": PAUSE_IMAGE}],
                },
            },
        })
    }

    /// The HA pair: deploy/kubernetes/egress-router-ha.yaml's shape.
    fn ha_deployment(&self) -> Value {
        ha_deployment_spec(&self.selector(), &self.name, &self.keepalived_name())
    }

    fn keepalived_conf(&self) -> String {
        keepalived_conf(self.vrid(), HA_ADVERT_INT)
    }

    /// The rules' ports (each (port, protocol) once); headless (any port) with a fallback
    /// only.
    fn service(&self) -> Value {
        let mut ports: Vec<(u64, &str)> = Vec::new();
        for (_, r) in &self.rules {
            if !ports.contains(&(r.port, r.protocol)) {
                ports.push((r.port, r.protocol));
            }
        }
        let families: BTreeSet<bool> = self
            .rules
            .iter()
            .filter_map(|(_, r)| r.destination_ip.parse::<IpAddr>().ok().map(|a| a.is_ipv4()))
            .collect();
        let mut spec = json!({"selector": self.selector()});
        if ports.is_empty() {
            // No port to list: clients connect to the router pod's address (the Service's DNS
            // name resolves to the ready pods), any port going to the fallback.
            spec["clusterIP"] = json!("None");
        } else {
            spec["ports"] = Value::Array(
                ports
                    .iter()
                    .map(|(port, protocol)| {
                        json!({
                            "name": format!("{}-{port}", protocol.to_ascii_lowercase()),
                            "port": port,
                            "protocol": protocol,
                        })
                    })
                    .collect(),
            );
        }
        if families.len() == 2 {
            spec["ipFamilyPolicy"] = json!("PreferDualStack");
        }
        spec
    }
}

/// keepalived's configuration in an HA router pod: VRRPv3 over the pod network (`eth0`,
/// multicast: the peer's pod address is not known in advance), both instances BACKUP with
/// `nopreempt`, at nice -20 (`vrrp_priority`, which needs `SYS_NICE`). `egress-router
/// keepalived` follows the instance's states through keepalived's notify FIFO, in order
/// (docs/ha.md), on the router egress-cni made ([`HA_ROUTER_NAME`]): keepalived creates the
/// FIFO in [`HA_FIFO_DIR`] (an `emptyDir`: a missing directory and keepalived starts no
/// follower) and starts the follower once, as `script_user` (a new one on a reload, which
/// keepalived is asked to give the states: `fifo_write_vrrp_states_on_reload`). The address
/// clients use is the Service's, which sends to the ready pod, the active one: keepalived's
/// virtual IP, which it requires, is [`KEEPALIVED_VIP`] on the pod's loopback, where nothing
/// routes to it.
pub(super) fn keepalived_conf(vrid: u8, advert_int: &str) -> String {
    format!(
        "global_defs {{
    vrrp_version 3
    script_user root
    enable_script_security
    vrrp_garp_master_delay 0
    vrrp_priority -20
    vrrp_notify_fifo {HA_FIFO_DIR}/egress.fifo
    vrrp_notify_fifo_script \"/usr/bin/egress-router keepalived --name {HA_ROUTER_NAME} --instance egress\"
    fifo_write_vrrp_states_on_reload
}}
vrrp_instance egress {{
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id {vrid}
    priority 100
    advert_int {advert_int}
    virtual_ipaddress {{
        {KEEPALIVED_VIP} dev lo
    }}
}}
"
    )
}

/// The HA pair's Deployment spec: two replicas on different nodes, attached to `network`
/// (egress-cni, as a standby), the keepalived sidecar with its configuration from the
/// ConfigMap `config_map` and an empty directory for its notify FIFO, ready only while its
/// router is active.
fn ha_deployment_spec(selector: &Value, network: &str, config_map: &str) -> Value {
    json!({
        "replicas": 2,
        // One pod at a time: the other keeps (or takes over) the egress address.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
        "selector": {"matchLabels": selector},
        "template": {
            "metadata": {
                "labels": selector,
                "annotations": {"k8s.v1.cni.cncf.io/networks": network},
            },
            "spec": {
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": {"matchLabels": selector},
                    "topologyKey": "kubernetes.io/hostname",
                }]}},
                "terminationGracePeriodSeconds": 10,
                "containers": [{
                    "name": "keepalived",
                    "image": KEEPALIVED_IMAGE,
                    "securityContext": {
                        "runAsUser": 0,
                        "capabilities": {
                            "drop": ["ALL"],
                            // VRRP's raw socket and the virtual IP; egress-router's role
                            // changes (NET_ADMIN, and SYS_ADMIN: it enters the namespace);
                            // nice -20; keepalived sets its FIFO follower's user.
                            "add": [
                                "NET_ADMIN", "SYS_ADMIN", "NET_RAW", "SYS_NICE", "SETUID", "SETGID",
                            ],
                        },
                    },
                    "readinessProbe": {
                        "exec": {"command": [
                            "/usr/bin/egress-router", "inspect", "--name", HA_ROUTER_NAME,
                            "--role", "active",
                        ]},
                        "periodSeconds": 1,
                        "failureThreshold": 1,
                    },
                    "volumeMounts": [
                        {"name": "keepalived", "mountPath": "/etc/keepalived", "readOnly": true},
                        // keepalived makes its notify FIFO there; it makes no directory (a
                        // missing one, and it starts no follower: a master with a standby
                        // router).
                        {"name": "fifo", "mountPath": HA_FIFO_DIR},
                    ],
                }],
                "volumes": [
                    {"name": "keepalived", "configMap": {"name": config_map}},
                    {"name": "fifo", "emptyDir": {}},
                ],
            },
        },
    })
}
