#!/usr/bin/env python3
"""The controller crate's import graph, from its `use crate::` lines (and `crate::` paths).

    python3 scripts/imports.py            # circles, upward imports, modules without a layer
    python3 scripts/imports.py --edges    # every module -> module edge with its count
    python3 scripts/imports.py --check    # the same, exit 1 when any is found (scripts/test.sh)

A file's module is its path under controller/src (`lifecycle/steps.rs` is
`lifecycle::steps`; `mod.rs` names its folder). An import of `crate::a::b::C` is an edge
to the longest module prefix that exists (`a::b` if it is a module, else `a`). Test files
(`*_tests.rs`, `fixtures.rs`) are left out: they may import anything.

Every top-level module has a layer (LAYERS, the table of docs/development.md); a module may
import its own layer and those below, never one above.
"""
import re
import sys
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "controller" / "src"
PATH = re.compile(r"crate::((?:[a-z_][a-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)")
GROUP = re.compile(r"crate::((?:[a-z_][a-z0-9_]*::)*)\{([^}]*)\}", re.S)


# Bottom to top; docs/development.md explains each layer.
LAYERS = [
    ("foundation", "crd config quantity duration digest labels error metrics events ssa http "
                   "telemetry ownership requeue runner table files network_gate"),
    ("run model", "run samples"),
    ("services", "cache source store stop canary leader system_namespace selftest gateway reading transfer"),
    ("admission", "admission"),
    ("lifecycle", "lifecycle"),
    ("watches", "watches"),
    ("drivers", "evaluation suite local model_endpoint"),
    ("composition", "cli apiref operator crate"),
]
LAYER = {m: i for i, (_, ms) in enumerate(LAYERS) for m in ms.split()}
# Layers whose modules stand side by side and never use each other: each driver of a run (the
# two controllers, `crucible run`) builds only on the layers below.
SIDE_BY_SIDE = {LAYER["evaluation"]}


def module_of(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts) or "crate"


def is_test(path: Path) -> bool:
    return path.name.endswith("_tests.rs") or path.name == "fixtures.rs"


def strip_tests(text: str) -> str:
    # Everything after a `#[cfg(test)]` module is test code.
    at = text.find("#[cfg(test)]\nmod ")
    return text if at < 0 else text[:at]


def targets(text: str):
    for prefix, names in GROUP.findall(text):
        for name in names.split(","):
            name = name.strip().split(" as ")[0].strip()
            if name and name != "self":
                yield prefix + name
            elif name == "self":
                yield prefix.rstrip(":")
    for path in PATH.findall(text):
        yield path


def main() -> None:
    files = [p for p in SRC.rglob("*.rs") if not is_test(p)]
    modules = {module_of(p) for p in files}
    edges = defaultdict(int)
    for path in files:
        src = module_of(path)
        for target in targets(strip_tests(path.read_text())):
            parts = target.split("::")
            dst = next(
                ("::".join(parts[:n]) for n in range(len(parts), 0, -1)
                 if "::".join(parts[:n]) in modules),
                None,
            )
            if dst and dst != src and not src.startswith(dst + "::"):
                edges[(src, dst)] += 1
    if "--edges" in sys.argv:
        for (a, b), n in sorted(edges.items()):
            print(f"{a} -> {b} ({n})")
    problems = 0
    for level, key in (("files", lambda m: m), ("top-level modules", lambda m: m.split("::")[0])):
        graph = defaultdict(set)
        for a, b in edges:
            if key(a) != key(b):
                graph[key(a)].add(key(b))
        circles = [c for c in sccs(graph) if len(c) > 1]
        problems += len(circles)
        print(f"circles between {level}: {len(circles)}")
        for c in circles:
            print("  " + " <-> ".join(sorted(c)))
    tops = {m.split("::")[0] for m in modules}
    unlisted = sorted(tops - LAYER.keys())
    problems += len(unlisted)
    print(f"modules without a layer: {len(unlisted)}")
    for m in unlisted:
        print(f"  {m} (add it to LAYERS in scripts/imports.py and docs/development.md)")
    upward = sorted(
        (a, b, n) for (a, b), n in edges.items()
        if LAYER.get(a.split("::")[0], 0) < LAYER.get(b.split("::")[0], 0)
    )
    problems += len(upward)
    print(f"upward imports: {len(upward)}")
    for a, b, n in upward:
        print(f"  {a} -> {b} ({n})")
    sideways = sorted(
        (a, b, n) for (a, b), n in edges.items()
        if a.split("::")[0] != b.split("::")[0]
        and LAYER.get(a.split("::")[0]) == LAYER.get(b.split("::")[0])
        and LAYER.get(a.split("::")[0]) in SIDE_BY_SIDE
    )
    problems += len(sideways)
    print(f"imports between drivers: {len(sideways)}")
    for a, b, n in sideways:
        print(f"  {a} -> {b} ({n})")
    if "--check" in sys.argv and problems:
        sys.exit(1)


def sccs(graph):
    """Tarjan's strongly connected components, iteratively."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    nodes = set(graph) | {b for bs in graph.values() for b in bs}
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter[0]; counter[0] += 1
        stack.append(root); on.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]; counter[0] += 1
                    stack.append(child); on.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = set()
                while True:
                    n = stack.pop(); on.discard(n); comp.add(n)
                    if n == node:
                        break
                out.append(comp)
    return out


if __name__ == "__main__":
    main()
