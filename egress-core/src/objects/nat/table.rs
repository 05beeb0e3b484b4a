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
    /// ([`Error::Kernel`] with errno EEXIST, which the caller maps) before any message names it:
    /// the kernel processes every message of a batch before it aborts one, so a batch whose
    /// NEWTABLE failed (`NLM_F_EXCL`) would still append its rules, uncommitted, to the other
    /// table's chains, shifting the dumps of another reader. The batch carries the generation at
    /// which the table was missing ([`guarded`](Self::guarded)).
    ///
    /// The comment is the table's userdata as libnftnl encodes it; a table's userdata is at
    /// most 256 bytes and cannot be changed later.
    pub(crate) fn create(&mut self, comment: &str, rules: &NatRules) -> Result<()> {
        let op = format!(
            "nft add table inet {} (one batch with its NAT and filter)",
            rules.table
        );
        self.guarded(&op, |nft| {
            if nft.exists(&op, &rules.table)? {
                return Err(Error::kernel(&op, libc::EEXIST));
            }
            let mut msgs = vec![new_table(&rules.table, comment)?];
            msgs.extend(Layout::of(rules).messages(&rules.table, &BTreeSet::new()));
            Ok(Some(msgs))
        })
        .map(drop)
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
    /// changes on an existing table) is the new one. Guarded by the generation at which the
    /// table was found or missing, as [`create`](Self::create).
    pub(crate) fn rewrite(&mut self, comment: &str, rules: &NatRules) -> Result<()> {
        let op = format!(
            "nft delete table inet {} + add it again with its comment (one batch)",
            rules.table
        );
        self.guarded(&op, |nft| {
            let mut msgs = Vec::new();
            if nft.exists(&op, &rules.table)? {
                msgs.push((
                    inet(NfTablesMessage::DeleteTable(TableMessage {
                        attributes: vec![TableAttribute::Name(rules.table.clone())],
                    })),
                    0,
                ));
            }
            msgs.push(new_table(&rules.table, comment)?);
            msgs.extend(Layout::of(rules).messages(&rules.table, &BTreeSet::new()));
            Ok(Some(msgs))
        })
        .map(drop)
    }

    /// One pass of [`read`](Self::read), without the consistency check.
    pub(super) fn read_once(
        &mut self,
        op: &str,
        table: &str,
        with_elements: bool,
    ) -> Result<Option<NatState>> {
        if !self.exists(op, table)? {
            return Ok(None);
        }
        let mut chains = Vec::new();
        for (mut chain, rules) in self.chains(op, table)? {
            for attributes in rules {
                let mut rule = RuleState {
                    comment: None,
                    exprs: Vec::new(),
                };
                for a in attributes {
                    match a {
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
                chain.rules.push(rule);
            }
            chains.push(chain);
        }
        chains.sort_by(|a, b| a.name.cmp(&b.name));
        let maps = self.maps(op, table, with_elements)?;
        Ok(Some(NatState { chains, maps }))
    }

    /// Whether table `table` exists (`nft list table inet TABLE`, without its content).
    pub(super) fn exists(&mut self, op: &str, table: &str) -> Result<bool> {
        let get = inet(NfTablesMessage::GetTable(TableMessage {
            attributes: vec![TableAttribute::Name(table.to_string())],
        }));
        match self.request(op, get) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends the batch that `build` makes from what it reads, guarded by the ruleset generation
    /// read before (`NFNL_BATCH_GENID`): if another batch was committed since, the kernel
    /// refuses the whole batch before processing any of its messages, and it is built again.
    /// `build` returns `None` when there is nothing to send: `Ok(false)`.
    fn guarded(
        &mut self,
        op: &str,
        mut build: impl FnMut(&mut Self) -> Result<Option<Vec<(NetfilterMessage, u16)>>>,
    ) -> Result<bool> {
        for _ in 0..ATTEMPTS {
            let generation = self.generation()?;
            let Some(msgs) = build(self)? else {
                return Ok(false);
            };
            match self.batch(op, msgs, Some(generation)) {
                Ok(()) => return Ok(true),
                Err(e) if e.errno() == Some(libc::ERESTART) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::kernel(op, libc::EAGAIN))
    }

    /// The rules of the table's chains `chains` (each with its use count, as its dump gives
    /// it), each chain's in order, each rule as its attributes.
    ///
    /// The kernel makes a dump in walks, one per part and a last one that finds nothing left,
    /// each resuming by counting the rules before the point the last stopped at, uncommitted
    /// ones included; and a batch of another writer that it aborts changes no generation.
    /// Rules that such a batch adds and takes back between two walks (it appends them to any
    /// chain it names, the router's too) shift that point: a rule of a later chain comes twice,
    /// or not at all. So one dump of the table's rules is taken if each chain's list in it is
    /// unbroken ([`unbroken`]: a rule twice shows) and as long as the chain's use count (each
    /// of its rules adds one, uncommitted ones included: a rule missed shows); else one dump
    /// per chain ([`chain_rules`](Self::chain_rules)).
    fn rules(
        &mut self,
        op: &str,
        table: &str,
        chains: &[(ChainState, Option<u32>)],
    ) -> Result<Vec<Vec<Vec<RuleAttribute>>>> {
        let replies = self.dump(op, || {
            inet(NfTablesMessage::GetRule(RuleMessage {
                attributes: vec![RuleAttribute::Table(table.to_string())],
            }))
        })?;
        let mut rules: Vec<Vec<_>> = chains.iter().map(|_| Vec::new()).collect();
        for attributes in replies
            .iter()
            .filter_map(|r| r.inet_attributes(NFT_MSG_NEWRULE, rule_attribute))
        {
            let (t, c) = place(&attributes);
            if let Some(i) = chains.iter().position(|(chain, _)| c == Some(&chain.name)) {
                if t == Some(table) {
                    rules[i].push(attributes);
                }
            }
        }
        let whole = rules
            .iter()
            .zip(chains)
            .all(|(rules, (_, used))| unbroken(rules) && *used == u32::try_from(rules.len()).ok());
        if whole {
            return Ok(rules);
        }
        chains
            .iter()
            .map(|(chain, _)| self.chain_rules(op, table, &chain.name))
            .collect()
    }

    /// The rules of chain `chain`, as [`rules`](Self::rules) gives them: one dump of that chain
    /// alone, read again until its list is unbroken. Rules that another writer's batch appends
    /// go behind the chain's last, where they cannot shift the dump of that chain alone; the
    /// check catches the rest, but a missed last rule (see [`unbroken`]).
    fn chain_rules(
        &mut self,
        op: &str,
        table: &str,
        chain: &str,
    ) -> Result<Vec<Vec<RuleAttribute>>> {
        for _ in 0..ATTEMPTS {
            let replies = self.dump(op, || {
                inet(NfTablesMessage::GetRule(RuleMessage {
                    attributes: vec![
                        RuleAttribute::Table(table.to_string()),
                        RuleAttribute::Chain(chain.to_string()),
                    ],
                }))
            })?;
            let rules: Vec<Vec<RuleAttribute>> = replies
                .iter()
                .filter_map(|r| r.inet_attributes(NFT_MSG_NEWRULE, rule_attribute))
                .filter(|attributes| place(attributes) == (Some(table), Some(chain)))
                .collect();
            if unbroken(&rules) {
                return Ok(rules);
            }
        }
        Err(Error::kernel(
            format!("{op} (chain {chain}: each dump repeated or skipped a rule)"),
            libc::EINTR,
        ))
    }

    /// The chains of table `table` (their rules left empty), each with its rules as
    /// [`rules`](Self::rules) reads them.
    pub(super) fn chains(
        &mut self,
        op: &str,
        table: &str,
    ) -> Result<Vec<(ChainState, Vec<Vec<RuleAttribute>>)>> {
        let replies = self.dump(op, || {
            inet(NfTablesMessage::GetChain(ChainMessage {
                attributes: vec![ChainAttribute::Table(table.to_string())],
            }))
        })?;
        let mut chains = Vec::new();
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
            let (mut in_table, mut used) = (false, None);
            for a in c.attributes {
                match a {
                    ChainAttribute::Table(t) => in_table = t == table,
                    ChainAttribute::Use(n) => used = Some(n),
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
                chains.push((chain, used));
            }
        }

        let rules = self.rules(op, table, &chains)?;
        Ok(chains.into_iter().map(|(c, _)| c).zip(rules).collect())
    }

    /// The sets and maps of table `table`, with their elements if `with_elements`.
    pub(super) fn maps(
        &mut self,
        op: &str,
        table: &str,
        with_elements: bool,
    ) -> Result<Vec<MapState>> {
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
        Ok(maps)
    }

    /// Deletes the table's chains and maps and installs `rules` anew — one batch, guarded by the
    /// ruleset generation it was computed from (retried if another writer got in between).
    /// `Ok(false)` when the table does not exist.
    fn replace(&mut self, op: &str, table: &str, rules: &NatRules) -> Result<bool> {
        let layout = Layout::of(rules);
        self.guarded(op, |nft| {
            let Some(current) = nft.read_once(op, table, false)? else {
                return Ok(None);
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
            Ok(Some(msgs))
        })
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

/// The table and chain a rule of a dump names.
fn place(attributes: &[RuleAttribute]) -> (Option<&str>, Option<&str>) {
    let (mut table, mut chain) = (None, None);
    for a in attributes {
        match a {
            RuleAttribute::Table(t) => table = Some(t.as_str()),
            RuleAttribute::Chain(c) => chain = Some(c.as_str()),
            _ => {}
        }
    }
    (table, chain)
}

/// Whether the rules of one chain's dump form one unbroken list: the kernel gives each rule
/// the handle of the one before it in the chain (`NFTA_RULE_POSITION`, none for the first), so
/// a rule dumped twice, or one missed before another, shows. A missed last rule does not: a
/// dump of one chain misses one only if a rule before it was taken back between two parts.
pub(super) fn unbroken(rules: &[Vec<RuleAttribute>]) -> bool {
    let mut previous = 0;
    rules.iter().all(|attributes| {
        let (mut handle, mut position) = (0, 0);
        for a in attributes {
            match a {
                RuleAttribute::Handle(h) => handle = *h,
                RuleAttribute::Position(p) => position = *p,
                _ => {}
            }
        }
        let linked = handle != 0 && position == previous;
        previous = handle;
        linked
    })
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
