#!/usr/bin/env python3
"""The import graph of the tlbench package, read from the source (every import, including the
ones inside functions): checks that it has no circle and that each package imports only from
itself or the packages below it, and draws the package dependency matrix (docs/img/packages.png).

Usage: python scripts/import_graph.py [--draw PNG]   (exit 1, naming the edge, when a rule breaks)
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
from collections import defaultdict
from typing import Dict, List, Set, Tuple

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Lowest first: a package may import from its own package and from those before it.
LAYERS = ("core", "data", "losses", "implementations", "measure", "run", "tools", "results", "render", "report")


def modules(root: str) -> Dict[str, str]:
    """Dotted module name -> file, for every .py file under ``root`` (the tlbench folder)."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, os.path.dirname(root))[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def imports_of(path: str, name: str, known: Set[str]) -> Set[str]:
    """The tlbench modules ``name`` imports (``from a.b import c`` counts ``a.b.c`` when that is a module)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets.add(base)
            targets.update(f"{base}.{a.name}" for a in node.names)
    return {t for t in targets if t in known and t != name}


def layer_of(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else -1


def graph() -> Dict[str, Set[str]]:
    found = modules(os.path.join(REPO_DIR, "tlbench"))
    return {name: imports_of(path, name, set(found)) for name, path in found.items()}


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def upward_edges(edges: Dict[str, Set[str]]) -> List[Tuple[str, str]]:
    """Imports from a package to one above it (the package ``tlbench`` itself is below all)."""
    return sorted((a, b) for a, targets in edges.items() for b in targets
                  if layer_of(b) > layer_of(a) and b != "tlbench" and layer_of(a) >= 0)


def package_edges(edges: Dict[str, Set[str]]) -> Dict[Tuple[str, str], int]:
    counts: Dict[Tuple[str, str], int] = defaultdict(int)
    for a, targets in edges.items():
        for b in targets:
            pa, pb = layer_of(a), layer_of(b)
            if pa >= 0 and pb >= 0 and pa != pb:
                counts[(LAYERS[pa], LAYERS[pb])] += 1
    return counts


def draw(edges: Dict[str, Set[str]], path: str) -> None:
    """The package dependency matrix: row = importing package, column = imported package, the
    number = how many module-to-module imports. Packages are ordered top (report) to bottom
    (core), so every import downward sits right of the diagonal and an upward one left of it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = package_edges(edges)
    order = list(reversed(LAYERS))
    sizes = defaultdict(int)
    for module in edges:
        if layer_of(module) >= 0:
            sizes[LAYERS[layer_of(module)]] += 1
    grid = [[counts.get((a, b), 0) for b in order] for a in order]
    fig, ax = plt.subplots(figsize=(8.5, 7), dpi=110)
    ax.imshow([[min(v, 12) for v in row] for row in grid], cmap="Blues", vmin=0, vmax=14)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if i == j:
                ax.text(j, i, "·", ha="center", va="center", color="#999999")
            elif value:
                ax.text(j, i, str(value), ha="center", va="center", fontsize=10)
            elif j < i:
                ax.text(j, i, "", ha="center", va="center")
    ax.plot([-0.5, len(order) - 0.5], [-0.5, len(order) - 0.5], color="#c44e52", lw=1)
    ax.set_xticks(range(len(order)), [f"{name}" for name in order], rotation=45, ha="right")
    ax.set_yticks(range(len(order)), [f"tlbench.{name} ({sizes[name]})" for name in order])
    ax.set_xlabel("imported package")
    ax.set_ylabel("importing package (modules in it)")
    ax.set_title("Imports between tlbench's packages (module-to-module imports, all of them,\n"
                 "from scripts/import_graph.py): every count is right of the diagonal (a downward import);\n"
                 "an upward import would appear left of it, and there is none", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draw", metavar="PNG", help="also draw the packages into this PNG")
    args = parser.parse_args(argv)
    edges = graph()
    problems = [f"circle: {' -> '.join(c)}" for c in cycles(edges)]
    problems += [f"upward import: {a} imports {b}" for a, b in upward_edges(edges)]
    problems += [f"outside any package: {m}" for m in edges if layer_of(m) < 0 and m != "tlbench"]
    if args.draw:
        draw(edges, args.draw)
    for problem in problems:
        print(problem)
    n_edges = sum(len(t) for t in edges.values())
    print(f"{len(edges)} modules, {n_edges} imports between them: "
          f"{'no circle, every import downward' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
