#!/usr/bin/env python3
"""egress-core's layers, checked: its top-level modules only use the layers below them, and no
file or function outgrows the size a reader can hold (STYLE 9).

Layers (a module may use any module of a lower line, never one of its own line or above):

    blocking                                  the synchronous facade
    operations                                apply, ensure, teardown, watch, roles, diagnose, …
    context                                   one call's namespace, sockets, read, model; converge
    model                                     Desired, the read-back, compare, plan
    objects                                   one module per kernel object: read, change, undo
    kernel                                    netns + pool, netlink, nftables socket, /proc/sys
    spec                                      RouterSpec and its validation
    fault                                     test-only fault injection (feature)
    error                                     Error
    drift                                     Drift
    role                                      Role

(`fuzzing`, a feature for the fuzz targets, sits above objects.)

An edge X -> Y is a path `crate::Y…` written in X's files, outside comments (`use` lists
included, nested ones too). A name that lib.rs re-exports (`crate::Role`) counts as the module
it comes from. Doc links (`[`crate::x`]`) are comments and count for nothing.

Sizes: a file holds at most MAX_FILE lines of code (blank lines, comments and a trailing
`#[cfg(test)] mod tests { … }` not counted), a function at most MAX_FN lines.

Usage: scripts/check-layers.py [--sizes] [egress-core/src]

Exit 1 on a layer violation (a module without a layer, or one that uses its own layer or a
higher one), printing each. Sizes are printed as warnings; with `--sizes` they fail too.
"""
import pathlib
import re
import sys

LAYERS = [
    ["blocking"],
    ["operations"],
    ["fuzzing"],
    ["context"],
    ["model"],
    ["objects"],
    ["kernel"],
    ["spec"],
    ["fault"],
    ["error"],
    ["drift"],
    ["role"],
]
MAX_FILE = 800
MAX_FN = 100

args = [a for a in sys.argv[1:] if not a.startswith("--")]
strict_sizes = "--sizes" in sys.argv[1:]
src = pathlib.Path(args[0] if args else "egress-core/src")
rank = {m: i for i, line in enumerate(LAYERS) for m in line}

mods = {}
for p in sorted(src.iterdir()):
    if p.name in ("lib.rs", "main.rs"):
        continue
    if p.is_dir():
        mods[p.name] = sorted(p.rglob("*.rs"))
    elif p.suffix == ".rs":
        mods.setdefault(p.stem, []).append(p)


def code_of(text):
    """The text without comments (line, doc and nested block comments), string literals (raw
    ones included) and char literals — a `'"'` must not open a string that hides code. Lines
    are kept, so line numbers stay right."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    out.append("\n" if text[i] == "\n" else "")
                    i += 1
        elif (m := re.match(r'b?r(#*)"', text[i:])) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and (m := re.match(r"'(?:\\.[^']*|[^\\'])'", text[i:])):
            out.append("' '")
            i += m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def use_paths(code):
    """Every `crate::a::b` path, `use crate::{…}` lists expanded (nested braces included)."""
    paths = re.findall(r"\bcrate::([a-zA-Z_][a-zA-Z0-9_]*)", code)
    # `crate::{ … }` groups: each top-level item's first segment.
    for m in re.finditer(r"\bcrate::\{", code):
        depth, i, tok = 1, m.end(), ""
        items = []
        while i < len(code) and depth:
            ch = code[i]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    break
            elif ch == "," and depth == 1:
                items.append(tok)
                tok = ""
                i += 1
                continue
            if depth == 1 and ch not in "{}":
                tok += ch
            i += 1
        items.append(tok)
        for item in items:
            first = item.strip().split("::")[0].strip()
            if first:
                paths.append(first)
    return paths


# Names lib.rs re-exports: `pub use a::b::{X, Y as Z}` makes crate::X mean module a.
lib = code_of((src / "lib.rs").read_text())
reexport = {}
for m in re.finditer(r"\bpub\s+use\s+([a-z_][a-z0-9_]*)::(\{.*?\};|[^;]*;)", lib, re.S):
    module, rest = m.group(1), m.group(2)
    for name in re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*(?:[,}]|;|$)", rest):
        reexport[name] = module
    for alias in re.findall(r"\bas\s+([A-Za-z_][A-Za-z0-9_]*)", rest):
        reexport[alias] = module

edges = {m: {} for m in mods}
for m, files in mods.items():
    for f in files:
        code = code_of(f.read_text())
        for name in use_paths(code):
            target = name if name in mods else reexport.get(name)
            if target and target != m and target in mods:
                edges[m].setdefault(target, f)

problems = []
for m in mods:
    if m not in rank:
        problems.append(f"module `{m}` has no layer: add it to LAYERS in {sys.argv[0]}")
for m, targets in sorted(edges.items()):
    for t, f in sorted(targets.items()):
        if m in rank and t in rank and rank[t] <= rank[m]:
            problems.append(
                f"{f.relative_to(src.parent)}: `{m}` uses `{t}`, "
                f"which is {'its own' if rank[t] == rank[m] else 'a higher'} layer"
            )


def code_lines(text):
    """Lines of code of a file: no blanks, no comment lines, no trailing test module."""
    cut = re.search(r"^#\[cfg\(test\)\]\s*\n\s*mod tests\s*\{", text, re.M)
    if cut:
        text = text[: cut.start()]
    n, in_block = 0, False
    for line in text.splitlines():
        s = line.strip()
        if in_block:
            in_block = "*/" not in s
            continue
        if s.startswith("/*"):
            in_block = "*/" not in s
            continue
        if s and not s.startswith("//"):
            n += 1
    return n


sizes = []
fn_start = re.compile(r"^(\s*)(?:pub(?:\([a-z]+\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?"
                      r"(?:extern\s+\"C\"\s+)?fn\s+([A-Za-z_][A-Za-z0-9_]*)")
for files in mods.values():
    for f in files:
        text = f.read_text()
        if f.name != "tests.rs" and code_lines(text) > MAX_FILE:
            sizes.append(f"{f.relative_to(src.parent)}: {code_lines(text)} lines of code "
                            f"(at most {MAX_FILE}): a folder waiting to happen")
        lines = text.splitlines()
        for i, line in enumerate(lines):
            m = fn_start.match(line)
            if not m or line.rstrip().endswith(";"):
                continue
            indent = m.group(1)
            # The body ends at the first `}` at the indentation the `fn` has.
            for j in range(i + 1, len(lines)):
                if lines[j] == indent + "}" or (lines[j].startswith(indent + "}")
                                                 and lines[j].strip() in ("}", "};", "})")):
                    if j - i + 1 > MAX_FN:
                        sizes.append(f"{f.relative_to(src.parent)}:{i + 1}: fn {m.group(2)} "
                                        f"is {j - i + 1} lines (at most {MAX_FN}): a list of "
                                        f"steps waiting for names")
                    break

for line in sizes:
    print(("" if strict_sizes else "warning: ") + line)
if problems:
    print("\n".join(problems))
    sys.exit(1)
order = [m for line in LAYERS for m in line if m in mods]
print("egress-core layers (each uses only those after it): " + " > ".join(order))
if strict_sizes and sizes:
    sys.exit(1)
