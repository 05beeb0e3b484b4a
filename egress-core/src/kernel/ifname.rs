//! [`IfName`]: a link name as the kernel allows one, the one form in which a name read back
//! from a namespace (a crash record, the identity notes) goes any further.

use std::fmt;

/// A link name the kernel could hold: 1 to 15 bytes ([`MAX_IFNAME_LEN`](crate::spec::MAX_IFNAME_LEN)), not `.` or `..`, no
/// `/`, `:`, NUL or white space as the kernel counts it (`dev_valid_name`: space, `\t`, `\n`,
/// `\v`, `\f`, `\r` and the byte 0xa0), and no `%` (the kernel reads `name%d` as a template
/// and never gives a link a name with `%`). So it is one path component, never a way out of a
/// directory, and one token of the crash record's text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct IfName(String);

impl IfName {
    /// `name` if it is a link name the kernel allows, else `None`.
    pub(crate) fn parse(name: &str) -> Option<IfName> {
        valid(name).then(|| IfName(name.to_string()))
    }

    /// The name.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

pub(crate) use crate::spec::valid_ifname as valid;

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_follow_the_kernels_rule() {
        for ok in [
            "eth0",
            "eth0.100",
            "macvlan0",
            "a",
            "123456789012345",
            "a=b",
            "..a",
            "é",
        ] {
            assert!(IfName::parse(ok).is_some(), "{ok:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "1234567890123456",
            "a/b",
            "../etc",
            "a:b",
            "a b",
            "a\tb",
            "a\nb",
            "a\u{b}b",
            "a\u{c}b",
            "a\rb",
            "a\0b",
            "eth%d",
            // U+00E0 is C3 A0 in UTF-8: the kernel counts the byte 0xa0 as a space.
            "à",
        ] {
            assert!(IfName::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(IfName::parse("eth0").unwrap().to_string(), "eth0");
    }
}
