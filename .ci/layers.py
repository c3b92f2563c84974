#!/usr/bin/env python3
"""Checks that certgate's top-level modules import only from layers below them (or their own).

Run from the repository root: `python3 .ci/layers.py`. Prints every `crate::X` a module uses
outside its tests, and exits 1 if one points up or sideways into a later module of its layer.
Test code (`#[cfg(test)]` modules, tests.rs, *_tests.rs) may use anything.
"""

import pathlib
import re
import sys

# Lowest first. Within one layer, a module may use the modules listed before it.
LAYERS = [
    ["config", "time", "metrics"],
    ["tls", "policy"],
    ["pki", "report", "state"],
    ["proxy", "listener"],
    ["reload", "status", "admin"],
    ["server"],
    ["demo", "cli"],
]
RANK = {m: (i, j) for i, layer in enumerate(LAYERS) for j, m in enumerate(layer)}
SRC = pathlib.Path("proxy/src")


def strip_tests(text):
    """Drops `#[cfg(test)]` items: a `mod x { ... }` by brace matching, else the next line."""
    out, i = [], 0
    lines = text.splitlines(keepends=True)
    while i < len(lines):
        if lines[i].strip() == "#[cfg(test)]":
            i += 1
            if i < len(lines) and re.match(r"\s*(pub(\(crate\))? )?mod \w+\s*\{", lines[i]):
                depth = 0
                while i < len(lines):
                    depth += lines[i].count("{") - lines[i].count("}")
                    i += 1
                    if depth <= 0:
                        break
            else:
                i += 1
            continue
        out.append(lines[i])
        i += 1
    return "".join(out)


def test_only_files():
    """Files declared as `#[cfg(test)] mod x;` plus tests.rs and *_tests.rs."""
    skip = set()
    for f in SRC.rglob("*.rs"):
        if f.name == "tests.rs" or f.name.endswith("_tests.rs"):
            skip.add(f)
        text = f.read_text()
        for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\(crate\))? )?mod (\w+);", text):
            base = f.parent if f.name in ("mod.rs", "lib.rs") else f.parent / f.stem
            skip.update({base / f"{m.group(1)}.rs", base / m.group(1) / "mod.rs"})
    return skip


def top(f):
    rel = f.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")


def main():
    skip = test_only_files()
    uses = {}
    for f in sorted(SRC.rglob("*.rs")):
        if f in skip or f.name in ("lib.rs", "main.rs"):
            continue
        text = strip_tests(f.read_text())
        text = re.sub(r"//[^\n]*", "", text)
        names = set(re.findall(r"\bcrate::(\w+)", text))
        for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
            names.update(re.findall(r"(?:^|,)\s*(\w+)", group))
        module = top(f)
        for n in names:
            if n != module:
                uses.setdefault(module, {}).setdefault(n, set()).add(str(f.relative_to(SRC)))
    bad = 0
    for module in sorted(uses, key=lambda m: RANK.get(m, (99, 0))):
        if module not in RANK:
            print(f"{module}: not in LAYERS; add it")
            bad += 1
            continue
        for n, files in sorted(uses[module].items()):
            ok = n in RANK and RANK[n] < RANK[module]
            mark = "ok " if ok else "UP "
            bad += not ok
            print(f"{mark} {module} -> {n}  ({', '.join(sorted(files))})" if not ok else f"{mark} {module} -> {n}")
    print(f"layering: {bad} import(s) pointing up")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
