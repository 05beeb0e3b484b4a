//! The changes of the router's table, each with what undoes it: created with its comment (the
//! crash record) in one batch (deleted), written again with a newer comment (written back),
//! its ruleset installed again (a repair, kept).

use super::NatRules;
use crate::{
    error::{Error, Result},
    kernel::nft::NftSocket,
    objects::{
        change::{boxed, At, Beside, Change, Done, Kernel, Phase, Sent},
        Step,
    },
};

/// `nft add table inet TABLE { comment "<crash record>" }` with the ruleset, one batch; undone
/// by deleting the table.
#[derive(Debug)]
pub(crate) struct CreateTable {
    pub comment: String,
    pub rules: NatRules,
    /// The router (for messages).
    pub router: String,
}

impl Change for CreateTable {
    fn describe(&self) -> String {
        format!("nft add table inet {} (one batch)", self.rules.table)
    }

    fn remains(&self) -> String {
        format!("nftables table inet {} not created", self.rules.table)
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            let created = k.c.nft().create(&self.comment, &self.rules);
            created.map_err(|e| match e.errno() {
                Some(libc::EEXIST) => Error::AlreadyExists {
                    object: "router",
                    value: self.router.clone(),
                    netns: k.c.ns.label().to_string(),
                    hint: Some("another apply of the same router won the race".into()),
                },
                _ => e,
            })?;
            Ok(Done::Nothing)
        })
    }

    fn undo(&self, _: &Done) -> Option<Box<dyn Change>> {
        Some(boxed(DeleteTable {
            table: self.rules.table.clone(),
        }))
    }
}

/// `nft delete table inet TABLE`: the router's table, everything in it. In an unwind it runs
/// on a thread of its own, beside the link's deletion (each waits for the kernel).
#[derive(Debug)]
pub(crate) struct DeleteTable {
    pub table: String,
}

impl Change for DeleteTable {
    fn describe(&self) -> String {
        format!("nft delete table inet {}", self.table)
    }

    fn remains(&self) -> String {
        format!("nftables table inet {}", self.table)
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            k.c.nft().delete_table(&self.table)?;
            Ok(Done::Nothing)
        })
    }

    fn phase(&self) -> Phase {
        Phase::Slow
    }

    fn beside(&self) -> Option<Beside> {
        let table = self.table.clone();
        Some(Box::new(move || {
            NftSocket::open()?.delete_table(&table).map(drop)
        }))
    }
}

/// The table deleted and created again with `comment` (a newer crash record) and the ruleset,
/// in one batch; undone by writing it again with the comment it had.
#[derive(Debug)]
pub(crate) struct RewriteTable {
    pub comment: String,
    pub rules: NatRules,
    /// The comment it had.
    pub old: String,
}

impl Change for RewriteTable {
    fn describe(&self) -> String {
        format!(
            "nft delete table inet {0} + add it again with its earlier comment",
            self.rules.table
        )
    }

    fn remains(&self) -> String {
        format!(
            "nftables table inet {} with a newer crash record",
            self.rules.table
        )
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            k.c.nft().rewrite(&self.comment, &self.rules)?;
            Ok(Done::Nothing)
        })
    }

    fn undo(&self, _: &Done) -> Option<Box<dyn Change>> {
        Some(boxed(RewriteTable {
            comment: self.old.clone(),
            rules: self.rules.clone(),
            old: self.comment.clone(),
        }))
    }
}

/// `nft -f`: the ruleset installed again in the router's table, one batch (the table and its
/// comment stay). The ruleset it replaces was drift: nothing to undo.
#[derive(Debug)]
pub(crate) struct ReplaceRuleset {
    pub rules: NatRules,
}

impl Change for ReplaceRuleset {
    fn describe(&self) -> String {
        format!("nft -f: the ruleset again, in inet {}", self.rules.table)
    }

    fn remains(&self) -> String {
        format!("the ruleset of inet {} as it was", self.rules.table)
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            k.c.nft().reinstall(&self.rules)?;
            Ok(Done::Nothing)
        })
    }
}

impl Step {
    /// The table created with the crash record as its comment.
    pub(crate) fn create_table_changes(at: &At<'_>) -> Result<Vec<Box<dyn Change>>> {
        Ok(vec![boxed(CreateTable {
            comment: at.record.encode()?,
            rules: rules_of(at)?.clone(),
            router: at.name.to_string(),
        })])
    }

    /// The table written again with the crash record the transaction writes.
    pub(crate) fn rewrite_table_changes(at: &At<'_>, table: &str) -> Result<Vec<Box<dyn Change>>> {
        Ok(vec![boxed(RewriteTable {
            comment: at.record.encode()?,
            rules: rules_of(at)?.clone(),
            old: at.now.comment_of(table).unwrap_or_default().to_string(),
        })])
    }

    /// The ruleset installed again.
    pub(crate) fn replace_ruleset_changes(at: &At<'_>) -> Result<Vec<Box<dyn Change>>> {
        Ok(vec![boxed(ReplaceRuleset {
            rules: rules_of(at)?.clone(),
        })])
    }
}

/// The router's ruleset, which a step that writes its table needs.
fn rules_of<'a>(at: &At<'a>) -> Result<&'a NatRules> {
    at.rules.ok_or_else(|| Error::Conflict {
        field: "name".into(),
        value: at.name.to_string(),
        reason: "its ruleset is not known (read back by name): ensure it with its spec".into(),
    })
}
