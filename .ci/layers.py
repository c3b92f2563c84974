#!/usr/bin/env python3
"""Checks that certgate's top-level modules import only from layers below them (or their own).

Run from the repository root: `python3 .ci/layers.py`. Prints every `crate::X` a module uses
outside its tests, and exits 1 if one points up or sideways into a later module of its layer.
Test code (`#[cfg(test)]` modules, tests.rs, *_tests.rs) may use anything.

On top of the layers, FORBIDDEN names imports the layering would allow but the design does not;
a file listed as an exception there may still make it (a known debt, printed as such).
`python3 .ci/layers.py --self-test` plants violations in a scratch tree and checks they fail.
"""

import contextlib
import io
import pathlib
import re
import sys
import tempfile

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

# (module, module it must not import): files (relative to proxy/src) that still do, as known debt.
FORBIDDEN = {
    # The policy decides on principals, not certificates (state/asker.rs translates).
    ("policy", "tls"): set(),
    # The admin endpoint serves what status reports; it does not drive reloads.
    ("admin", "reload"): set(),
}
SRC = pathlib.Path("proxy/src")


def strip_tests(text):
    """Drops `#[cfg(test)]` items: a `mod x { ... }` by brace matching, else the next line."""
    out, i = [], 0
    lines = text.splitlines(keepends=True)
    while i < len(lines):
        if lines[i].strip() == "#[cfg(test)]":
            i += 1
            if i < len(lines) and re.match(r"\s*(pub(\([^)]*\))? )?mod \w+\s*\{", lines[i]):
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


def test_only_files(src):
    """Files declared as `#[cfg(test)] mod x;` plus tests.rs and *_tests.rs."""
    skip = set()
    for f in src.rglob("*.rs"):
        if f.name == "tests.rs" or f.name.endswith("_tests.rs"):
            skip.add(f)
        text = f.read_text()
        for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))? )?mod (\w+);", text):
            base = f.parent if f.name in ("mod.rs", "lib.rs") else f.parent / f.stem
            skip.update({base / f"{m.group(1)}.rs", base / m.group(1) / "mod.rs"})
    return skip


def top(f, src):
    rel = f.relative_to(src)
    return rel.parts[0].removesuffix(".rs")


def check(src):
    """Prints the report for the tree at `src` and returns the number of violations."""
    skip = test_only_files(src)
    uses = {}
    for f in sorted(src.rglob("*.rs")):
        if f in skip or f.name in ("lib.rs", "main.rs"):
            continue
        text = strip_tests(f.read_text())
        text = re.sub(r"//[^\n]*", "", text)
        names = set(re.findall(r"\bcrate::(\w+)", text))
        for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
            names.update(re.findall(r"(?:^|,)\s*(\w+)", group))
        module = top(f, src)
        for n in names:
            if n != module:
                uses.setdefault(module, {}).setdefault(n, set()).add(f.relative_to(src).as_posix())
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
    forbidden = 0
    for (module, target), allowed in sorted(FORBIDDEN.items()):
        files = uses.get(module, {}).get(target, set())
        for f in sorted(files - allowed):
            print(f"FORBIDDEN {module} -> {target}  ({f})")
            forbidden += 1
        for f in sorted(files & allowed):
            print(f"debt {module} -> {target}  ({f}, listed exception)")
        for f in sorted(allowed - files):
            print(f"note: exception {module} -> {target} for {f} is no longer needed; remove it")
    print(f"forbidden: {forbidden} import(s)")
    return bad + forbidden


def self_test():
    """Plants one violation of each kind in a scratch tree; each must be caught, a clean tree not."""
    cases = {
        "clean": {"tls/mod.rs": "use crate::config::X;", "policy/mod.rs": "use crate::config::Y;"},
        "up": {"config/mod.rs": "use crate::tls::X;"},
        "policy -> tls": {"policy/route.rs": "use crate::tls::identity::Identity;"},
        "policy -> tls, grouped": {"policy/route.rs": "use crate::{config, tls};"},
        "admin -> reload": {"admin/mod.rs": "use crate::reload::Reloader;"},
        "admin -> reload, in code": {"admin/clients.rs": "fn f(r: &crate::reload::Reloader) {}"},
        "test code may": {"admin/mod.rs": "#[cfg(test)]\nmod tests {\n    use crate::reload::Reloader;\n}\n"},
        "policy -> tls in authorize.rs": {"policy/authorize.rs": "use crate::tls::verify::AuthFailure;"},
    }
    failed = 0
    for name, files in cases.items():
        with tempfile.TemporaryDirectory() as d:
            src = pathlib.Path(d)
            for rel, text in files.items():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                (src / rel).write_text(text + "\n")
            with contextlib.redirect_stdout(io.StringIO()):
                bad = check(src)
        want_bad = name not in ("clean", "test code may")
        if bool(bad) != want_bad:
            print(f"SELF-TEST FAILED: {name}: {bad} violation(s)")
            failed += 1
    print(f"self-test: {len(cases) - failed}/{len(cases)} cases as expected")
    return 1 if failed else 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    return 1 if check(SRC) else 0


if __name__ == "__main__":
    sys.exit(main())
