"""Static import layering of the fdm package (docs/DESIGN.md, "Layering").

Every .py under fdm/ is parsed with `ast` (nothing is imported, no JAX). Each
`import fdm.x`, `from fdm.x import y`, `from fdm import x`, relative import and
`import experiments...` becomes an edge, at any nesting level (imports inside
functions too: a lazy import still ties the two layers together). Nodes:
  module   fdm.models.ddpm; a package is its __init__ (fdm.train); `from fdm.x import y`
           is fdm.x.y when that module exists, else fdm.x
  package  fdm/<pkg>/... -> pkg; a top-level module fdm/run.py -> run;
           fdm/__init__.py -> fdm; anything under experiments/ -> experiments
Importing a submodule also runs its parents' __init__ (importing fdm.train.mesh runs
fdm/train/__init__.py, which imports the trainer); at package level that is the same
edge, at module level `test_no_module_cycles_at_import_time` adds it, except for the
root fdm/__init__.py (the public API, initialised first whatever is imported) and the
importer's own packages.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = "fdm"
MATH = ("diffusion", "nn", "nerf", "metrics", "autoregressive", "forward")
ABOVE_MATH = ("models", "train", "baselines", "experiments", "run", "api", "seed_study", "fdm")
# What every layer may import (fdm/host.py, fdm/checkpoint_io.py, ...): nothing above math.
NEUTRAL = ("errors", "host", "checkpoint_io", "config_rules", "viz", "trees", "provenance")
FORBIDDEN = {**{pkg: ABOVE_MATH for pkg in MATH + NEUTRAL},
             "models": ("train", "baselines", "experiments", "run", "api", "seed_study", "fdm")}


def module_name(path: pathlib.Path) -> str:
    """fdm/models/ddpm.py -> fdm.models.ddpm; fdm/train/__init__.py -> fdm.train."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> dict[str, pathlib.Path]:
    """{module name: path} of every .py under fdm/."""
    return {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def resolve(name: str, modules: dict) -> str:
    """The module a dotted import name refers to: itself if it is a module, else the
    longest prefix that is (`from fdm.x import y` with y a function -> fdm.x)."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute dotted name of a (possibly relative) `from ... import`."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[:len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_names(tree: ast.AST, module: str, is_package: bool, lazy: bool):
    """Dotted names imported anywhere in `tree` (lazy=False: skip function bodies)."""
    nodes = ast.walk(tree) if lazy else _import_time_nodes(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = absolute(node, module, is_package)
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _import_time_nodes(tree: ast.AST):
    """The nodes executed when the module is imported: all but function bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(child for child in ast.iter_child_nodes(node)
                     if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                               ast.Lambda)))


def module_graph(lazy: bool = True) -> dict[str, set[str]]:
    """{module: modules it imports} within fdm (plus `experiments...` names as they are)."""
    files = source_files()
    graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        targets = set()
        for name in imported_names(tree, module, is_package, lazy):
            top = name.split(".")[0]
            if top == PACKAGE:
                targets.add(resolve(name, files))
            elif top == "experiments":
                targets.add(name)
        graph[module] = targets - {module}
    return graph


def package_of(module: str) -> str:
    """fdm.models.ddpm -> models; fdm.run -> run; fdm -> fdm; experiments.x -> experiments."""
    parts = module.split(".")
    return parts[1] if parts[0] == PACKAGE and len(parts) > 1 else parts[0]


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph collapsed to packages (edges inside one package dropped)."""
    out: dict[str, set[str]] = {}
    for module, targets in graph.items():
        src = package_of(module)
        out.setdefault(src, set()).update(package_of(t) for t in targets)
    return {src: targets - {src} for src, targets in out.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle [a, b, ..., a] of the directed graph, or None (iterative DFS)."""
    state: dict[str, int] = {}                             # 1 = on the path, 2 = done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, iters = [start], [iter(sorted(graph.get(start, ())))]
        state[start] = 1
        while path:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(graph.get(nxt, ()))))
    return None


def offending_imports(graph: dict[str, set[str]], src_pkg: str, banned) -> list[str]:
    """'module -> target' for every import from package src_pkg into a banned package."""
    return sorted(f"{m} -> {t}" for m, targets in graph.items() if package_of(m) == src_pkg
                  for t in targets if package_of(t) in banned)


def test_no_cycles_between_packages():
    cycle = find_cycle(package_graph(module_graph()))
    assert cycle is None, "package import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("pkg", sorted(FORBIDDEN))
def test_lower_layers_do_not_import_higher_ones(pkg):
    """Math packages and the neutral modules import no model/training/entry-point
    code; models import no training code, baselines or entry points (`fdm.host` and
    `fdm.checkpoint_io` hold what they share)."""
    bad = offending_imports(module_graph(), pkg, FORBIDDEN[pkg])
    assert not bad, f"{pkg} imports a higher layer:\n" + "\n".join(bad)


def parent_packages(module: str) -> set[str]:
    """The packages whose __init__ importing `module` runs, root excluded:
    fdm.train.mesh -> {fdm.train}; fdm.run -> {}."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts))}


def test_no_module_cycles_at_import_time():
    """No cycle among the imports run at import time (function bodies excluded); an
    import of fdm.train.mesh also imports fdm/train/__init__.py unless the importer is
    inside fdm.train (its package is then initialising already)."""
    graph = module_graph(lazy=False)
    for module, targets in graph.items():
        inits = set().union(*(parent_packages(t) for t in targets)) if targets else set()
        targets |= inits - parent_packages(module) - {module}
    cycle = find_cycle(graph)
    assert cycle is None, "module import cycle: " + " -> ".join(cycle)


def test_the_checks_see_lazy_and_relative_imports():
    """The parser itself: a function-level import counts, a relative one resolves."""
    tree = ast.parse("def f():\n    from fdm.train.mesh import make_mesh\nfrom . import state\n")
    assert set(imported_names(tree, "fdm.models.x", False, lazy=True)) == {
        "fdm.train.mesh.make_mesh", "fdm.models.state"}
    assert set(imported_names(tree, "fdm.models.x", False, lazy=False)) == {"fdm.models.state"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert package_graph(module_graph())["models"] >= {"nn", "diffusion", "metrics"}


@pytest.mark.parametrize("module", ["fdm.diffusion.pdae", "fdm.nn.pdae"])
def test_pdae_modules_sit_in_the_math_layer(module):
    """PDAE / DiffSiam's math and networks (seed 002) are math-layer modules: they import
    only math packages and the neutral modules (the model family builds on them)."""
    graph = module_graph()
    assert module in graph and package_of(module) in MATH
    bad = sorted(t for t in graph[module] if package_of(t) not in MATH + NEUTRAL)
    assert not bad, f"{module} imports {bad}"
