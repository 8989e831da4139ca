"""The package reads as tiers: each imports only from the tiers below it.

1. the set layer (``pmemsim``'s own modules: set, source, part, view, events, errors, ...)
   and the backends under it (``backends/``, installed as ``pmemsim_backends``);
2. ``pmemsim.explore`` (crash exploration), with the modules that put it in test suites;
3. ``pmemsim.pmlog`` (store logs), which explores through 2;
4. ``pmemsim.html`` (pictures of 2's and 3's results);
5. ``pmemsim.cli`` and ``pmemsim.validate`` (commands over all of them), and
   ``pmemsim.distributed`` (exploration on a Dask cluster: it loads checks as the commands do).

A module may reach up only from inside a function, for a convenience method whose feature
lives above it (``CheckResult.to_html``): listed below, so a new one is a decision.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent

TIER = {
    "explore": 2,
    "hypothesis": 2,
    "pytest_plugin": 2,
    "pmlog": 3,
    "html": 4,
    "cli": 5,
    "validate": 5,
    "distributed": 5,
    "__main__": 5,
}
#: (importing module, imported tier name): upward imports made inside a function.
LAZY_UPWARD = {
    ("pmemsim.explore.report", "html"),
    ("pmemsim.pytest_plugin", "distributed"),  # --pmemsim-scheduler
}


def _tier_name(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "pmemsim_backends":
        return "backends"
    if parts[0] != "pmemsim":
        return None
    return parts[1] if len(parts) > 1 else "pmemsim"


def _tier(name: str) -> int:
    return TIER.get(name, 1)


def _modules() -> list[tuple[str, Path]]:
    out = []
    for top, installed in (("pmemsim", "pmemsim"), ("backends", "pmemsim_backends")):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = [installed, *path.relative_to(ROOT / top).with_suffix("").parts]
            out.append((".".join(parts), path))
    return out


def _imports(module: str, path: Path) -> list[tuple[str, bool]]:
    """Every module ``path`` imports, and whether the import sits inside a function."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    tree = ast.parse(path.read_text())
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((a.name, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package[: len(package) - (child.level - 1)]
                    if child.module:
                        found.append((".".join([*base, child.module]), in_function))
                    else:
                        found.extend((".".join([*base, a.name]), in_function) for a in child.names)
                elif child.module:
                    found.append((child.module, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def test_no_module_imports_from_a_tier_above_its_own() -> None:
    upward = []
    for module, path in _modules():
        own = _tier_name(module)
        assert own is not None
        for imported, in_function in _imports(module, path):
            name = _tier_name(imported)
            if name is None or _tier(name) <= _tier(own):
                continue
            if in_function and (module, name) in LAZY_UPWARD:
                continue
            upward.append(f"{module} imports {imported} (tier {_tier(name)} > {_tier(own)})")
    assert upward == []


def test_the_set_layer_and_backends_know_no_feature() -> None:
    # The tier-1 modules are what a user of the API alone loads; a feature import there
    # would also break `import pmemsim` staying light.
    features = {n for n, t in TIER.items() if t > 1}
    for module, path in _modules():
        if _tier(_tier_name(module) or "") != 1:
            continue
        for imported, _ in _imports(module, path):
            assert _tier_name(imported) not in features, f"{module} imports {imported}"


def test_the_lazy_exceptions_are_still_needed() -> None:
    # An entry that no longer matches anything is stale: drop it.
    seen = set()
    for module, path in _modules():
        for imported, in_function in _imports(module, path):
            name = _tier_name(imported)
            if in_function and name is not None and (module, name) in LAZY_UPWARD:
                seen.add((module, name))
    assert seen == LAZY_UPWARD
