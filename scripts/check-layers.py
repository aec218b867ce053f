#!/usr/bin/env python3
"""Fails when a module of the crate imports against the direction of the layers.

The crate's modules are stacked; each may use only modules on lower layers
(and its own submodules). The table below is the map in src/lib.rs and
docs/architecture.md. A new top-level module must be added here, or this
check fails: every module has a place.

Run from the repository root: python3 scripts/check-layers.py
"""

import pathlib
import re
import sys

# Lowest first. A module may import from strictly lower layers only.
LAYERS = [
    # Plain values; `config` also resolves the host names it is given
    # (xmpp.server, probe.socks5) and reads its files, nothing else does I/O.
    ["admission", "clock", "config", "domain", "crashpoint", "error", "horizon", "netpolicy", "vocab"],
    ["rollover"],                                     # TLSA records against keys over time (pure)
    ["report"],                                       # the result of a check
    ["model", "render", "metrics"],                   # what the store stores; chat text; counters
    ["dane"],                                         # TLSA records, matching (pure)
    ["advice", "alert", "selfwatch"],                 # what to publish, what to tell (pure)
    ["warning"],                                      # expiry and rollover warnings (pure)
    ["dns", "probe"],                                 # observations (network)
    ["judge", "vantage"],                             # observations -> verdicts; remote places to probe from
    ["check", "store"],                               # one check; durable state
    ["setup"],                                        # parts built from config
    ["engine"],                                       # the service core
    ["commands", "monitor"],                          # what drives the core
    ["xmpp", "web", "agent"],                         # the XMPP and web fronts; the agent process
    ["watchdog"],                                     # ends a serve that stopped making progress
    ["serve"],                                        # process start-up
    ["cli"],                                          # the command line
]

RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_strings(text: str) -> str:
    """The code with comments, strings and char literals blanked (newlines kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            close = '"' + hashes
            j = text.find(close, i + 2 + len(hashes))
            j = n if j < 0 else j + len(close)
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:]):
            m = re.match(r"'(\\.|[^\\'])'", text[i:])
            out.append(" " * len(m.group(0)))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def file_module_path(path: pathlib.Path, src: pathlib.Path) -> list:
    """The module path of a source file: src/a.rs and src/a/mod.rs are [a], src/a/b.rs is [a, b]."""
    parts = list(path.relative_to(src).parts)
    parts[-1] = parts[-1][:-3]
    if parts[-1] == "mod":
        parts.pop()
    return parts


def group_heads(group: str) -> list:
    """The first segment of every item of a use group: `{a::{b, c}, d as e, self}` -> [a, d, self]."""
    inner, heads, depth, item = group.strip()[1:-1], [], 0, ""
    for ch in inner + ",":
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            m = re.match(r"\s*(" + IDENT + r"|\{)", item)
            if m and m.group(1) == "{":
                heads += group_heads(item.strip()[: item.strip().rfind("}") + 1])
            elif m:
                heads.append(m.group(1))
            item = ""
        else:
            item += ch
    return heads


def braced(code: str, start: int) -> str:
    """The `{...}` group that opens at code[start], nested groups included."""
    depth = 0
    for j in range(start, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return code[start : j + 1]
    return code[start:]


def targets(code: str, file_path: list):
    """(offset, top-level module) for every path that leaves the file's own
    module: `crate::x`, `super::...` (resolved against the file and the inline
    modules it sits in), in `use` lines, nested groups and expressions alike."""
    found = []
    # Inline modules (`mod tests { ... }`) deepen the path `super` starts from.
    inline, depth, opens = [], 0, {}
    for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*\{", code):
        opens[m.end() - 1] = m.group(1)
    stack_at = []  # (offset, module path at that offset)
    for i, ch in enumerate(code):
        if ch == "{":
            depth += 1
            if i in opens:
                inline.append((depth, opens[i]))
        elif ch == "}":
            if inline and inline[-1][0] == depth:
                inline.pop()
            depth -= 1
        stack_at.append(len(inline) and tuple(n for _, n in inline))
    for m in re.finditer(r"\b(crate|(?:super::)+)(?:::)?(" + IDENT + r"|\{)", code):
        if m.group(1) == "crate" and not code.startswith("crate::", m.start()):
            continue
        here = file_path + list(stack_at[m.start()] or ())
        if m.group(1) == "crate":
            base = []
        else:
            ups = m.group(1).count("super::")
            base = here[: max(len(here) - ups, 0)]
        if base:
            found.append((m.start(), base[0]))
            continue
        if m.group(2) == "{":
            for head in group_heads(braced(code, m.end() - 1)):
                found.append((m.start(), head))
        else:
            found.append((m.start(), m.group(2)))
    return found


def check(src: pathlib.Path) -> list:
    problems = []
    declared = set(re.findall(r"^pub mod ([a-z_]+);", (src / "lib.rs").read_text(), re.M))
    for m in sorted(declared - RANK.keys()):
        problems.append(f"src/lib.rs: module `{m}` has no layer in scripts/check-layers.py")
    for m in sorted(RANK.keys() - declared):
        problems.append(f"scripts/check-layers.py: layer table names `{m}`, which src/lib.rs does not declare")
    for path in sorted(src.rglob("*.rs")):
        if path.name in ("lib.rs", "main.rs") and path.parent == src:
            continue
        mod_path = file_module_path(path, src)
        me = mod_path[0]
        if me not in RANK:
            continue
        code = strip_comments_and_strings(path.read_text())
        for offset, name in targets(code, mod_path):
            if name == me or name not in RANK:
                continue
            if RANK[name] >= RANK[me]:
                lineno = code.count("\n", 0, offset) + 1
                problems.append(
                    f"{path}:{lineno}: `{me}` (layer {RANK[me]}) uses `{name}` "
                    f"(layer {RANK[name]}): imports must point to lower layers"
                )
    return problems


def main() -> int:
    problems = check(pathlib.Path("src"))
    for p in problems:
        print(p)
    if problems:
        print(f"check-layers: {len(problems)} import(s) against the layers", file=sys.stderr)
        return 1
    print(f"check-layers: {len(RANK)} modules on {len(LAYERS)} layers, every import points down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
