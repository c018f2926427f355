#!/usr/bin/env python3
"""Checks that host/src imports point downward only.

Every top-level module of the host crate has a layer (LAYERS, lowest
first). A file may use `crate::X` only when X is its own top-level module
or one in a lower layer; two modules of the same layer never use each
other. Some pairs are ruled out whatever their layers (NEVER: the
services layer never reads the store; it is handed desired state). And no
two files import each other: the file-level import graph
(`use crate::a::b`, `use super::x`, `crate::a::b::f(...)` paths, and a
mod.rs's `pub use` of its children) has no pair of files pointing at each
other. Exits non-zero, naming every offending import, when any of these breaks.
"""
import pathlib
import re
import sys

LAYERS = [
    ["model", "auth", "sealed"],
    ["config"],
    ["store", "telemetry", "content"],
    ["runtime", "container"],
    ["services", "registry"],
    ["cron", "ingress"],
    ["acme"],
    ["api"],
    ["daemon"],
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
# (module, module it never uses, why): rules beyond the layers.
NEVER = [
    ("services", "store", "services are handed desired state and never read the store"),
]

ROOT = pathlib.Path(__file__).resolve().parent.parent / "host" / "src"
PATH_RE = re.compile(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)")
USE_GROUP_RE = re.compile(r"\buse\s+(crate|super)((?:::[a-z_][a-z0-9_]*)*)::\{([^;]*)\};", re.S)


def strip(text):
    """The code without comments, strings, or its test module."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    cut = text.find("#[cfg(test)]")
    return text if cut < 0 else text[:cut]


def module_dir(path):
    """The module path segments of the directory a file's `super` names."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return parts[:-1]


def resolve(segments):
    """The longest prefix of `segments` that is a file, as that file."""
    for n in range(len(segments), 0, -1):
        base = ROOT.joinpath(*segments[:n])
        for candidate in (base.with_suffix(".rs"), base / "mod.rs"):
            if candidate.is_file():
                return candidate
    return None


def imports(path):
    """(module path segments) for every crate-internal path a file uses."""
    code = strip(path.read_text())
    found = []
    for root, rest, group in USE_GROUP_RE.findall(code):
        for item in re.split(r",\s*", group):
            item = item.strip().split(" as ")[0]
            head = item.split("::{")[0]
            found.append((root, rest + ("::" + head if head and head != "self" else "")))
    found += PATH_RE.findall(code)
    for root, rest in found:
        segments = [s for s in rest.split("::") if s]
        if root == "super":
            segments = module_dir(path) + segments
        yield segments


def main():
    files = sorted(ROOT.rglob("*.rs"))
    problems = []
    edges = set()
    for path in files:
        rel = path.relative_to(ROOT)
        own = rel.parts[0].removesuffix(".rs")
        if own == "lib":
            continue
        for segments in imports(path):
            if not segments:
                continue
            top = segments[0]
            if top != own and top in RANK and own in RANK and RANK[top] >= RANK[own]:
                problems.append(f"{rel}: uses crate::{top} ({own} may not use a layer at or above its own)")
            for module, never, why in NEVER:
                if own == module and top == never:
                    path_text = "::".join(segments)
                    problems.append(f"{rel}: uses crate::{path_text} ({module} never uses {never}: {why})")
            target = resolve(segments)
            if target is not None and target != path:
                edges.add((path, target))
        if path.name == "mod.rs":
            for child in re.findall(r"^\s*(?:pub )?use (\w+)::", strip(path.read_text()), re.M):
                target = resolve(list(rel.parent.parts) + [child])
                if target is not None:
                    edges.add((path, target))
    for a, b in sorted(edges):
        if (b, a) in edges and str(a) < str(b):
            problems.append(f"{a.relative_to(ROOT)} and {b.relative_to(ROOT)} import each other")
    for problem in problems:
        print(problem)
    print(f"layers: {len(files)} files, {len(edges)} imports between them, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
