//! Running the tools (`ip`, `nft`, …) the lab is built and checked with.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use serde_json::Value;

/// Runs `program args…` (with `stdin` piped in if given) and returns its stdout; the error names
/// the command line, the exit status and stderr.
pub(crate) fn command(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let line = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`{line}` could not start: {e}"))?;
    if let Some(input) = stdin {
        // Dropping the handle closes the pipe so the child sees EOF.
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input.as_bytes())
            .map_err(|e| format!("`{line}`: writing stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("`{line}`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{line}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            stdin.map(|s| format!("\ninput:\n{s}")).unwrap_or_default()
        ))
    }
}

/// `command`, panicking with the command line and stderr on failure.
pub(crate) fn must(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    command(program, args, stdin).unwrap_or_else(|e| panic!("{e}"))
}

/// The links of the namespace this process runs in (the host's, for a test run as usual) as
/// `name kind` lines, sorted: a test compares them before and after to show that the host was
/// not touched. Read-only (`ip -j -d link show`).
pub fn root_links() -> Vec<String> {
    let links = parse_json(
        &must("ip", &["-j", "-d", "link", "show"], None),
        "ip -j -d link show",
    );
    let mut lines: Vec<String> = links
        .as_array()
        .into_iter()
        .flatten()
        .map(|link| {
            let kind = link["linkinfo"]["info_kind"].as_str().unwrap_or("-");
            format!("{} {kind}", link["ifname"].as_str().unwrap_or("?"))
        })
        .collect();
    lines.sort();
    lines
}

/// The JSON a tool printed (`ip -j`, `nft -j`; nothing is an empty list); panics naming the
/// command `what` on anything else.
pub(crate) fn parse_json(text: &str, what: &str) -> Value {
    if text.trim().is_empty() {
        return Value::Array(Vec::new());
    }
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("`{what}` printed invalid JSON ({e}): {text}"))
}
