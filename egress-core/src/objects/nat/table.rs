//! The router's table through the nftables socket: created with its comment in one batch,
//! read back (chains, rules, maps and their elements), replaced, rewritten, deleted.

use std::collections::BTreeSet;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_netfilter::{
    nftables::{
        ChainAttribute, ChainMessage, DataAttribute, Hook, ListAttribute, NfTablesMessage,
        RuleAttribute, RuleMessage, SetAttribute, SetElementAttribute, SetElementList,
        SetElementMessage, SetMessage, TableAttribute, TableFlags, TableMessage,
    },
    NetfilterMessage,
};

use super::{
    expr::{hex, render_raw, Expr},
    layout::{decode_comment, decode_element, hook_name, policy_name, table_userdata, Layout},
    ChainState, MapState, NatRules, NatState, RuleState, TableInfo,
};
use crate::{
    error::{Error, Result},
    kernel::nft::{
        consts::*,
        inet,
        reply::{rule_attribute, set_element_attribute, Reply},
        NftSocket,
    },
};

impl NftSocket {
    /// `nft add table inet TABLE { comment "COMMENT"; maps; chains; rules }` in one batch:
    /// the whole table appears at once, or nothing does. An existing table is refused
    /// (`NLM_F_EXCL`: [`Error::Kernel`] with errno EEXIST, which the caller maps).
    ///
    /// The comment is the table's userdata as libnftnl encodes it; a table's userdata is at
    /// most 256 bytes and cannot be changed later.
    pub(crate) fn create(&mut self, comment: &str, rules: &NatRules) -> Result<()> {
        let op = format!(
            "nft add table inet {} (one batch with its NAT and filter)",
            rules.table
        );
        let mut msgs = vec![new_table(&rules.table, comment)?];
        msgs.extend(Layout::of(rules).messages(&rules.table, &BTreeSet::new()));
        self.batch(&op, msgs, None)
    }

    /// Replaces whatever chains and maps the table holds with `rules`, in one batch, keeping
    /// the table (and its comment). Chains whose type, hook, priority and policy are right are
    /// flushed and refilled rather than recreated, so traffic never sees a gap. Used to repair
    /// drift; a missing table is ENOENT.
    pub(crate) fn reinstall(&mut self, rules: &NatRules) -> Result<()> {
        let op = format!("nft -f (NAT repair batch for inet {})", rules.table);
        match self.replace(&op, &rules.table, rules)? {
            true => Ok(()),
            false => Err(Error::kernel(op, libc::ENOENT)),
        }
    }

    /// `nft delete table inet TABLE`: the table and everything in it. A missing table is
    /// `Ok(false)`, a deleted one `Ok(true)`.
    pub(crate) fn delete_table(&mut self, table: &str) -> Result<bool> {
        let op = format!("nft delete table inet {table}");
        let msg = inet(NfTablesMessage::DeleteTable(TableMessage {
            attributes: vec![TableAttribute::Name(table.to_string())],
        }));
        match self.batch(&op, vec![(msg, 0)], None) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// All tables of family `inet`, with their decoded comments.
    pub(crate) fn tables(&mut self) -> Result<Vec<TableInfo>> {
        let op = "nft list tables inet";
        let replies = self.dump(op, || {
            inet(NfTablesMessage::GetTable(TableMessage {
                attributes: vec![],
            }))
        })?;
        Ok(replies
            .iter()
            .filter_map(Reply::inet)
            .filter_map(|m| match m {
                NfTablesMessage::NewTable(t) => {
                    let mut info = TableInfo {
                        name: String::new(),
                        comment: None,
                    };
                    for a in t.attributes {
                        match a {
                            TableAttribute::Name(n) => info.name = n,
                            TableAttribute::UserData(u) => info.comment = decode_comment(&u),
                            _ => {}
                        }
                    }
                    (!info.name.is_empty()).then_some(info)
                }
                _ => None,
            })
            .collect())
    }

    /// What the table holds now (`None` if it does not exist) and the ruleset generation it
    /// was read at, read consistently: the reads are retried if the ruleset changed while they
    /// ran.
    pub(crate) fn read(&mut self, table: &str) -> Result<(u32, Option<NatState>)> {
        let op = format!("nft list table inet {table}");
        for _ in 0..ATTEMPTS {
            let before = self.generation()?;
            let state = match self.read_once(&op, table, true) {
                // The table went away between two of the dumps: read again.
                Err(e) if e.errno() == Some(libc::ENOENT) && self.generation()? != before => {
                    continue
                }
                r => r?,
            };
            if self.generation()? == before {
                return Ok((before, state));
            }
        }
        Err(Error::kernel(op, libc::EAGAIN))
    }

    /// Deletes table `TABLE` (if it exists) and creates it again with `comment` and `rules`, in
    /// one batch: the ruleset never misses it, and the comment (which the kernel never
    /// changes on an existing table) is the new one.
    pub(crate) fn rewrite(&mut self, comment: &str, rules: &NatRules) -> Result<()> {
        let op = format!(
            "nft delete table inet {} + add it again with its comment (one batch)",
            rules.table
        );
        let exists = self.tables()?.iter().any(|t| t.name == rules.table);
        let mut msgs = Vec::new();
        if exists {
            msgs.push((
                inet(NfTablesMessage::DeleteTable(TableMessage {
                    attributes: vec![TableAttribute::Name(rules.table.clone())],
                })),
                0,
            ));
        }
        msgs.push(new_table(&rules.table, comment)?);
        msgs.extend(Layout::of(rules).messages(&rules.table, &BTreeSet::new()));
        self.batch(&op, msgs, None)
    }

    /// One pass of [`read`](Self::read), without the consistency check.
    pub(super) fn read_once(
        &mut self,
        op: &str,
        table: &str,
        with_elements: bool,
    ) -> Result<Option<NatState>> {
        let get = inet(NfTablesMessage::GetTable(TableMessage {
            attributes: vec![TableAttribute::Name(table.to_string())],
        }));
        match self.request(op, get) {
            Ok(_) => {}
            Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        }

        let replies = self.dump(op, || {
            inet(NfTablesMessage::GetChain(ChainMessage {
                attributes: vec![ChainAttribute::Table(table.to_string())],
            }))
        })?;
        let mut chains: Vec<ChainState> = Vec::new();
        for m in replies.iter().filter_map(Reply::inet) {
            let NfTablesMessage::NewChain(c) = m else {
                continue;
            };
            let mut chain = ChainState {
                name: String::new(),
                kind: None,
                hook: None,
                priority: None,
                policy: None,
                rules: Vec::new(),
            };
            let mut in_table = false;
            for a in c.attributes {
                match a {
                    ChainAttribute::Table(t) => in_table = t == table,
                    ChainAttribute::Name(n) => chain.name = n,
                    ChainAttribute::Type(t) => chain.kind = Some(t),
                    ChainAttribute::Policy(p) => chain.policy = Some(policy_name(p)),
                    ChainAttribute::Hook(hooks) => {
                        for h in hooks {
                            match h {
                                Hook::Number(n) => chain.hook = Some(hook_name(u32::from(n))),
                                Hook::Priority(p) => chain.priority = Some(p as i32),
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            if in_table && !chain.name.is_empty() {
                chains.push(chain);
            }
        }

        let replies = self.dump(op, || {
            inet(NfTablesMessage::GetRule(RuleMessage {
                attributes: vec![RuleAttribute::Table(table.to_string())],
            }))
        })?;
        for attributes in replies
            .iter()
            .filter_map(|r| r.inet_attributes(NFT_MSG_NEWRULE, rule_attribute))
        {
            let (mut in_table, mut chain_name) = (false, None);
            let mut rule = RuleState {
                comment: None,
                exprs: Vec::new(),
            };
            for a in attributes {
                match a {
                    RuleAttribute::Table(t) => in_table = t == table,
                    RuleAttribute::Chain(c) => chain_name = Some(c),
                    RuleAttribute::UserData(u) => rule.comment = decode_comment(&u),
                    RuleAttribute::Expressions(list) => {
                        rule.exprs = list
                            .iter()
                            .map(|e| match e {
                                ListAttribute::Element(attrs) => Expr::decode(attrs)
                                    .map_or_else(|| render_raw(attrs), |x| x.render()),
                                other => format!("(foreign list entry {other:?})"),
                            })
                            .collect();
                    }
                    _ => {}
                }
            }
            let chain = chains
                .iter_mut()
                .find(|c| in_table && Some(&c.name) == chain_name.as_ref());
            if let Some(chain) = chain {
                chain.rules.push(rule);
            }
        }
        chains.sort_by(|a, b| a.name.cmp(&b.name));

        let replies = self.dump(op, || {
            inet(NfTablesMessage::GetSet(SetMessage {
                attributes: vec![SetAttribute::Table(table.to_string())],
            }))
        })?;
        let mut maps: Vec<MapState> = Vec::new();
        for m in replies.iter().filter_map(Reply::inet) {
            let NfTablesMessage::NewSet(s) = m else {
                continue;
            };
            let mut map = MapState {
                name: String::new(),
                key_type: 0,
                data_type: 0,
                flags: 0,
                elements: Vec::new(),
                ports: Vec::new(),
                other_elements: Vec::new(),
            };
            let mut in_table = false;
            for a in s.attributes {
                match a {
                    SetAttribute::Table(t) => in_table = t == table,
                    SetAttribute::Name(n) => map.name = n,
                    SetAttribute::KeyType(t) => map.key_type = t,
                    SetAttribute::DataType(t) => map.data_type = t,
                    SetAttribute::Flags(f) => map.flags = f.bits(),
                    _ => {}
                }
            }
            if in_table && !map.name.is_empty() {
                maps.push(map);
            }
        }
        maps.sort_by(|a, b| a.name.cmp(&b.name));

        if with_elements {
            for map in &mut maps {
                let replies = self.dump(op, || {
                    inet(NfTablesMessage::GetSetElement(SetElementMessage {
                        attributes: vec![
                            SetElementList::Table(table.to_string()),
                            SetElementList::Set(map.name.clone()),
                        ],
                    }))
                })?;
                for attributes in replies
                    .iter()
                    .filter_map(|r| r.inet_attributes(NFT_MSG_NEWSETELEM, set_element_attribute))
                {
                    read_elements(attributes, table, map);
                }
                map.elements.sort();
                map.ports.sort_unstable();
                map.other_elements.sort();
            }
        }
        Ok(Some(NatState { chains, maps }))
    }

    /// Deletes the table's chains and maps and installs `rules` anew — one batch, guarded by the
    /// ruleset generation it was computed from (retried if another writer got in between).
    /// `Ok(false)` when the table does not exist.
    fn replace(&mut self, op: &str, table: &str, rules: &NatRules) -> Result<bool> {
        let layout = Layout::of(rules);
        for _ in 0..ATTEMPTS {
            let generation = self.generation()?;
            let Some(current) = self.read_once(op, table, false)? else {
                return Ok(false);
            };
            let wanted = layout.state();
            let mut msgs = Vec::new();
            let mut keep = BTreeSet::new();
            let header =
                |c: &ChainState| (c.kind.clone(), c.hook.clone(), c.priority, c.policy.clone());
            for chain in &current.chains {
                // Flush: a DELRULE naming only the chain.
                msgs.push((
                    inet(NfTablesMessage::DeleteRule(RuleMessage {
                        attributes: vec![
                            RuleAttribute::Table(table.to_string()),
                            RuleAttribute::Chain(chain.name.clone()),
                        ],
                    })),
                    0,
                ));
                let same = wanted
                    .chains
                    .iter()
                    .any(|w| w.name == chain.name && header(w) == header(chain));
                if same {
                    keep.insert(chain.name.clone());
                }
            }
            for chain in current.chains.iter().filter(|c| !keep.contains(&c.name)) {
                msgs.push((
                    inet(NfTablesMessage::DeleteChain(ChainMessage {
                        attributes: vec![
                            ChainAttribute::Table(table.to_string()),
                            ChainAttribute::Name(chain.name.clone()),
                        ],
                    })),
                    0,
                ));
            }
            for map in &current.maps {
                msgs.push((
                    inet(NfTablesMessage::DeleteSet(SetMessage {
                        attributes: vec![
                            SetAttribute::Table(table.to_string()),
                            SetAttribute::Name(map.name.clone()),
                        ],
                    })),
                    0,
                ));
            }
            msgs.extend(layout.messages(table, &keep));
            match self.batch(op, msgs, Some(generation)) {
                Ok(()) => return Ok(true),
                Err(e) if e.errno() == Some(libc::ERESTART) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::kernel(op, libc::EAGAIN))
    }
}

/// The NEWTABLE message of `nft add table inet TABLE { comment "COMMENT" }`, with `NLM_F_EXCL`.
fn new_table(table: &str, comment: &str) -> Result<(NetfilterMessage, u16)> {
    let userdata = table_userdata(comment).map_err(|errno| {
        let why = match errno {
            libc::E2BIG => format!(
                "a comment of {} bytes: a table comment holds at most {} bytes",
                comment.len(),
                USERDATA_MAX - 3
            ),
            _ => "a comment containing a NUL byte".to_string(),
        };
        Error::kernel(
            format!("nft add table inet {table} {{ comment \"…\" }} ({why})"),
            errno,
        )
    })?;
    let msg = inet(NfTablesMessage::NewTable(TableMessage {
        attributes: vec![
            TableAttribute::Name(table.to_string()),
            TableAttribute::Flags(TableFlags::empty()),
            TableAttribute::UserData(userdata),
        ],
    }));
    Ok((msg, NLM_F_CREATE | NLM_F_EXCL))
}

/// Adds the elements of map `map` in one dump message to `map`.
fn read_elements(attributes: Vec<SetElementList>, table: &str, map: &mut MapState) {
    let mut in_table = false;
    let mut in_set = false;
    let mut lists = Vec::new();
    for a in attributes {
        match a {
            SetElementList::Table(t) => in_table = t == table,
            SetElementList::Set(s) => in_set = s == map.name,
            SetElementList::Elements(l) => lists = l,
            _ => {}
        }
    }
    if !(in_table && in_set) {
        return;
    }
    for elem in lists {
        let ListAttribute::Element(attrs) = elem else {
            continue;
        };
        let (mut key, mut data) = (Vec::new(), Vec::new());
        for a in attrs {
            match a {
                SetElementAttribute::Key(DataAttribute::Value(v)) => key = v,
                SetElementAttribute::Data(DataAttribute::Value(v)) => data = v,
                _ => {}
            }
        }
        match (decode_element(&key, &data), key.as_slice(), data.is_empty()) {
            (Some(el), _, _) => map.elements.push(el),
            // A traffic set's port.
            (None, [hi, lo], true) => map.ports.push(u16::from_be_bytes([*hi, *lo])),
            _ => map
                .other_elements
                .push(format!("0x{} : 0x{}", hex(&key), hex(&data))),
        }
    }
}
