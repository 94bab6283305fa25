#!/usr/bin/env python3
"""Fails when a module of a crate imports a module that imports it (ARCHITECTURE.md's rule),
and when a module imports one from a layer above its own.

    python3 scripts/module_cycles.py crates/attend/src crates/attend-models/src ...

The layers are the ones a crate's `lib.rs` states, bottom up, as its doc list of top-level
modules (`//! - [`name`]: ...`): a module may import from its own top-level module and the
ones listed before it, never from one listed after it (modules not in the list, such as
`error`, are below every layer). So the statement in `lib.rs` is what is checked.

A module's imports are the `crate::…` and `super::…` paths in its code outside comments and
`#[cfg(test)] mod tests`; a path counts as an import of the longest module it names. Parent
and child (`mod x;`) do not count: containment is not an import.
"""
import os
import re
import sys


def modules(root):
    out = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            if f.endswith(".rs"):
                rel = os.path.relpath(os.path.join(d, f), root)[:-3]
                name = "" if rel == "lib" or rel == "main" else rel.replace("/mod", "").replace("/", "::")
                src = open(os.path.join(d, f), encoding="utf-8").read()
                cut = src.find("#[cfg(test)]\nmod tests")
                if cut >= 0:
                    src = src[:cut]
                out[name] = "\n".join(l for l in src.split("\n") if not l.strip().startswith("//"))
    return out


def resolve(mods, cur, path):
    parts = path.split("::")
    if parts[0] == "crate":
        base, parts = [], parts[1:]
    else:
        base = cur.split("::")[:-1] if cur else []
        parts = parts[1:]
        while parts and parts[0] == "super":
            base, parts = base[:-1], parts[1:]
    for i in range(len(parts), 0, -1):
        m = "::".join(base + parts[:i])
        if m in mods:
            return m
    return None


def edges(mods):
    out = {}
    for m, src in mods.items():
        deps = set()
        paths = [x.group(1) for x in re.finditer(r"\b((?:crate|super)(?:::\w+)+)", src)]
        for x in re.finditer(r"use (crate|super)::\{([^}]*)\}", src):
            paths += [x.group(1) + "::" + p.strip().split("::")[0] for p in x.group(2).split(",") if p.strip()]
        for p in paths:
            r = resolve(mods, m, p)
            if r and r != m and not m.startswith(r + "::") and not r.startswith(m + "::" if m else "\0"):
                deps.add(r)
        out[m] = deps
    return out


def cycles(g):
    found, seen = [], set()
    for start in sorted(g):
        stack = [(start, [start])]
        while stack:
            n, path = stack.pop()
            for d in g.get(n, ()):
                if d == start and frozenset(path) not in seen:
                    seen.add(frozenset(path))
                    found.append(path + [d])
                elif d not in path and len(path) < 8:
                    stack.append((d, path + [d]))
    return found


def layers(root):
    """The top-level modules `lib.rs` lists in its doc, bottom up (empty when it lists none)."""
    lib = os.path.join(root, "lib.rs")
    if not os.path.exists(lib):
        return []
    return re.findall(r"^//! - \[`(\w+)`\]", open(lib, encoding="utf-8").read(), flags=re.M)


def upward(root, g):
    order = layers(root)
    rank = {m: i for i, m in enumerate(order)}
    found = []
    for m, deps in sorted(g.items()):
        top = m.split("::")[0]
        if top not in rank:
            continue
        for d in sorted(deps):
            dt = d.split("::")[0]
            if dt in rank and rank[dt] > rank[top]:
                found.append(f"{m} imports {d}: `{dt}` is a layer above `{top}` ({' < '.join(order)})")
    return found


bad = 0
for root in sys.argv[1:]:
    g = edges(modules(root))
    for c in cycles(g):
        print(f"{root}: {' -> '.join(c)}")
        bad += 1
    for u in upward(root, g):
        print(f"{root}: {u}")
        bad += 1
print(f"module cycles and upward imports: {bad}")
sys.exit(1 if bad else 0)
