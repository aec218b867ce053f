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
    ["admission", "clock", "config", "domain", "crashpoint", "error", "netpolicy", "vocab"],  # plain values, no I/O
    ["report"],                                       # the result of a check
    ["model", "render"],                              # what the store stores; chat text
    ["dane"],                                         # TLSA records, matching (pure)
    ["advice", "alert", "selfwatch"],                 # what to publish, what to tell (pure)
    ["dns", "probe"],                                 # observations (network)
    ["judge"],                                        # observations -> verdicts
    ["check", "store"],                               # one check; durable state
    ["setup"],                                        # parts built from config
    ["engine"],                                       # the service core
    ["commands", "monitor"],                          # what drives the core
    ["xmpp"],                                         # the XMPP front
    ["serve"],                                        # process start-up
    ["cli"],                                          # the command line
]

RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}
USE = re.compile(r"\bcrate::(\{[^}]*\}|[a-z_][a-z0-9_]*)")


def top_module(path: pathlib.Path, src: pathlib.Path) -> str:
    rel = path.relative_to(src)
    return rel.parts[0][:-3] if len(rel.parts) == 1 else rel.parts[0]


def main() -> int:
    src = pathlib.Path("src")
    problems = []
    declared = set(re.findall(r"^pub mod ([a-z_]+);", (src / "lib.rs").read_text(), re.M))
    for m in sorted(declared - RANK.keys()):
        problems.append(f"src/lib.rs: module `{m}` has no layer in scripts/check-layers.py")
    for m in sorted(RANK.keys() - declared):
        problems.append(f"scripts/check-layers.py: layer table names `{m}`, which src/lib.rs does not declare")
    for path in sorted(src.rglob("*.rs")):
        if path.name in ("lib.rs", "main.rs") and path.parent == src:
            continue
        me = top_module(path, src)
        if me not in RANK:
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("//", 1)[0]
            for m in USE.finditer(code):
                target = m.group(1)
                names = re.findall(r"[a-z_][a-z0-9_]*", target) if target.startswith("{") else [target]
                for name in names:
                    if name == me or name not in RANK:
                        continue
                    if RANK[name] >= RANK[me]:
                        problems.append(
                            f"{path}:{lineno}: `{me}` (layer {RANK[me]}) uses `{name}` "
                            f"(layer {RANK[name]}): imports must point to lower layers"
                        )
    for p in problems:
        print(p)
    if problems:
        print(f"check-layers: {len(problems)} import(s) against the layers", file=sys.stderr)
        return 1
    print(f"check-layers: {len(RANK)} modules on {len(LAYERS)} layers, every import points down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
