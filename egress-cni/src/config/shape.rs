//! The network configuration's shape, as serde types: every key a [`Field`], so that decoding
//! never stops at the first bad value; what each value means is checked afterwards, in one
//! pass over the whole configuration (`check.rs`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::json::Field;

/// The configuration object. The keys the runtime adds, unknown keys and the keys of
/// features this plugin lacks are in `others`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Conf {
    #[serde(rename = "cniVersion")]
    pub cni_version: Field<String>,
    pub name: Field<String>,
    #[serde(rename = "type")]
    pub plugin_type: Field<String>,
    #[serde(rename = "interfaceType")]
    pub interface_type: Field<String>,
    #[serde(rename = "interfaceArgs")]
    pub interface_args: Field<InterfaceArgs>,
    pub ip: Field<Ip>,
    #[serde(rename = "redirectRules")]
    pub redirect_rules: Field<Vec<Field<Rule>>>,
    #[serde(rename = "fallbackIP")]
    pub fallback_ip: Field<OneOrList>,
    #[serde(rename = "internalInterface")]
    pub internal_interface: Field<String>,
    #[serde(rename = "keepRoutes")]
    pub keep_routes: Field<Vec<Field<KeptRoute>>>,
    pub log_file: Field<String>,
    pub log_level: Field<String>,
    #[serde(rename = "prevResult")]
    pub prev_result: Field<Option<Map<String, Value>>>,
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Field<Vec<Field<Attachment>>>,
    #[serde(rename = "cni.dev/attachments")]
    pub attachments: Field<Vec<Field<Attachment>>>,
    #[serde(flatten)]
    pub others: Map<String, Value>,
}

/// `interfaceArgs`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct InterfaceArgs {
    pub master: Field<String>,
    pub mode: Field<String>,
    pub mtu: Field<NumberOrText>,
    #[serde(flatten)]
    pub others: Map<String, Value>,
}

/// `ip`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Ip {
    pub addresses: Field<Vec<Field<String>>>,
    pub gateway: Field<OneOrList>,
    pub destinations: Field<Vec<Field<String>>>,
    #[serde(flatten)]
    pub others: Map<String, Value>,
}

/// One of `redirectRules`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Rule {
    #[serde(rename = "destinationIP")]
    pub destination_ip: Field<String>,
    pub port: Field<u16>,
    pub protocol: Field<String>,
    #[serde(rename = "targetPort")]
    pub target_port: Field<u16>,
    #[serde(flatten)]
    pub others: Map<String, Value>,
}

/// One of `keepRoutes`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct KeptRoute {
    pub dst: Field<String>,
    pub gw: Field<String>,
    #[serde(flatten)]
    pub others: Map<String, Value>,
}

/// One of `cni.dev/valid-attachments`: the runtime's, whose other keys are not ours to judge.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: Field<String>,
    pub ifname: Field<String>,
}

/// `ip.gateway`, `fallbackIP`: one value, or one per address family.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrList {
    One(String),
    List(Vec<Field<String>>),
}

/// `interfaceArgs.mtu`: a number, or a string as OpenShift writes it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub(crate) enum NumberOrText {
    Number(u64),
    Text(String),
}
