#!/usr/bin/env python3
"""Regenerates the command outputs shown in README.md from the code: every fenced block that
directly follows a comment `<!-- output: attend ARGS -->` is replaced by what `attend ARGS`
prints (standard output), run with `$ATTEND_BIN` or the workspace's release build.

    cargo build --release && python3 scripts/readme_examples.py          # rewrite README.md
    python3 scripts/readme_examples.py --check                           # exit 1 if any differ

The numbers depend on the machine's instruction set in their last digits (8-bit activations
on a decoder); the README states the machine its figures come from.
"""
import os
import re
import shlex
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
MARK = re.compile(r"<!-- output: attend (.+?) -->\n```[^\n]*\n(.*?)```", re.S)


def attend_bin():
    b = os.environ.get("ATTEND_BIN") or os.path.join(ROOT, "target", "release", "attend")
    if not os.access(b, os.X_OK):
        sys.exit(f"no attend binary at {b}: cargo build --release, or set ATTEND_BIN")
    return b


def main():
    check = "--check" in sys.argv[1:]
    path = os.path.join(ROOT, "README.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    binary = attend_bin()
    changed = []

    def regenerate(m):
        args = shlex.split(m.group(1))
        r = subprocess.run([binary] + args, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            sys.exit(f"attend {m.group(1)} failed ({r.returncode}): {r.stderr.strip()}")
        out = r.stdout if r.stdout.endswith("\n") else r.stdout + "\n"
        if out != m.group(2):
            changed.append(m.group(1))
        head = m.group(0)[: m.start(2) - m.start(0)]
        return head + out + "```"

    new = MARK.sub(regenerate, text)
    count = len(MARK.findall(text))
    if check:
        for c in changed:
            print(f"README.md: the output of `attend {c}` differs from what it prints now", file=sys.stderr)
        print(f"{count} outputs, {len(changed)} differ", file=sys.stderr)
        sys.exit(1 if changed else 0)
    if new != text:
        tmp = path + ".partial"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(new)
        os.replace(tmp, path)
    print(f"{count} outputs regenerated, {len(changed)} changed", file=sys.stderr)


if __name__ == "__main__":
    main()
