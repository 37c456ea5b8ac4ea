#!/usr/bin/env python3
"""Turns crawler-user-agents.json (the `crawler-user-agents` package on the npm registry or
PyPI, MIT licence) into keywords.txt: the substring keywords that `tracking ua import --bots`
adds as rules of source `bots`.

Usage: convert.py PATH/TO/crawler-user-agents.json VERSION > keywords.txt

The list's patterns are regular expressions; the agent's rules are case-insensitive
substrings, matched with one automaton. Each pattern becomes the literal substrings it
requires: escapes are undone, anchors dropped, alternations and character classes that only
differ in case expanded. A pattern with anything else (`\\d`, `.*`, a repetition) keeps its
literal prefix when that is at least four characters long, else it is left out, and counted
on stderr. Every `instances` example of the list must then match a keyword (checked here).
"""

import json
import re
import sys

MIN_PREFIX = 4


def expand(pattern):
    """The literal substrings `pattern` requires, lowercased, or None."""
    p = pattern
    # Anchors and `([^-]|$)`-style tails constrain context only: a substring match is looser.
    p = re.sub(r"\(\[\^[^\]]*\]\|\$\)$", "", p)
    p = re.sub(r"\(\^\| \)", "", p)
    p = p.lstrip("^").rstrip("$")
    # Case-only classes such as [wW] or [Cc].
    p = re.sub(r"\[([A-Za-z])([A-Za-z])\]", lambda m: m.group(1) if m.group(1).lower() == m.group(2).lower() else m.group(0), p)
    alts = [""]
    i = 0
    while i < len(p):
        c = p[i]
        if c == "\\" and i + 1 < len(p):
            n = p[i + 1]
            if n.isalnum():  # \d, \w, \s...: stop here, keep the prefix
                return prefix(alts)
            alts = [a + n for a in alts]
            i += 2
        elif c == "(":
            j = p.find(")", i)
            group = p[i + 1:j]
            if j < 0 or re.search(r"[\\()\[\]{}.*+?^$]", group):
                return prefix(alts)
            after = p[j + 1:j + 2]
            if after in ("?", "*", "+", "{"):
                return prefix(alts)
            alts = [a + g for a in alts for g in group.split("|")]
            i = j + 1
        elif c in ".*+?[]{}|":
            if c == "|" and "(" not in p and "[" not in p:
                return sorted({a.lower() for a in alts} | set(expand(p[i + 1:]) or []))
            return prefix(alts)
        else:
            alts = [a + c for a in alts]
            i += 1
    return sorted({a.lower() for a in alts if a})


def prefix(alts):
    kept = [a for a in alts if len(a) >= MIN_PREFIX]
    if len(kept) != len(alts):
        return None
    return sorted({a.lower() for a in kept})


def main():
    path, version = sys.argv[1], sys.argv[2]
    entries = json.load(open(path, encoding="utf-8"))
    keywords = set()
    left_out = []
    for entry in entries:
        got = expand(entry["pattern"])
        if not got:
            left_out.append(entry["pattern"])
            continue
        keywords.update(k.strip() for k in got if k.strip())
    # A keyword that contains another is never needed: the shorter one matches first.
    ordered = sorted(keywords, key=len)
    minimal = []
    for k in ordered:
        if not any(m in k for m in minimal):
            minimal.append(k)
    unmatched = [
        (e["pattern"], inst)
        for e in entries
        if e["pattern"] not in left_out
        for inst in e.get("instances", [])
        if not any(k in inst.lower() for k in minimal)
    ]
    if unmatched:
        sys.exit(f"{len(unmatched)} instances match no keyword, e.g. {unmatched[:3]}")
    print(f"# crawler-user-agents {version} (MIT licence, Copyright (c) 2017 Martin Monperrus;")
    print("# see LICENSE-crawler-user-agents), converted by convert.py: one keyword a line,")
    print(f"# {len(minimal)} keywords from {len(entries)} patterns ({len(left_out)} left out).")
    for k in sorted(minimal):
        print(k)
    print(f"{len(left_out)} patterns left out: {left_out}", file=sys.stderr)


main()
