"""The house rule: each layer imports only layers below it, there is no import cycle, only cli registers.

Function-level imports count: an upward import hidden inside a function is still an upward import.
The layers and their order are documented in docs/architecture.md; this test is what holds them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "dream_hpc"
# Bottom to top. A module may import its own layer and any layer listed before it.
LAYERS = ("core", "config", "plan", "references", "provenance", "catalog", "refkit", "stages", "engine",
          "drivers", "cli")
TOP_LEVEL_OK = {"dream_hpc", "dream_hpc.__main__"}  # the package itself (its version) and `python -m`
MAX_LINES = 400  # beyond this a module must say in its docstring why it is one concern


def modules() -> dict[str, Path]:
    out = {}
    for p in sorted((SRC / PKG).rglob("*.py")):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Every dream_hpc module this module imports, at any depth of its code."""
    found = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: None if is_pkg else -1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + ".") and name != PKG:
                found.add(name)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, p, set(mods)) for m, p in mods.items()}


def test_every_module_is_in_a_layer() -> None:
    stray = [m for m in modules() if m not in TOP_LEVEL_OK and layer_of(m) not in LAYERS]
    assert not stray, f"modules outside the layers {LAYERS}: {stray} (put each in its layer's package)"


def test_imports_only_go_down(graph: dict[str, set[str]]) -> None:
    upward = []
    for mod, deps in graph.items():
        if mod in TOP_LEVEL_OK:
            continue
        rank = LAYERS.index(layer_of(mod))
        for dep in deps:
            dep_layer = layer_of(dep)
            if dep_layer is not None and LAYERS.index(dep_layer) > rank:
                upward.append(f"{mod} -> {dep}")
    assert not upward, "upward imports (a layer may import only the layers below it):\n" + "\n".join(sorted(upward))


def test_no_import_cycle(graph: dict[str, set[str]]) -> None:
    # Tarjan's strongly connected components; any component of 2+ modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_only_cli_registers_commands() -> None:
    registering = [m for m, p in modules().items()
                   if layer_of(m) != "cli" and ("def add_commands" in p.read_text() or "add_parser(" in p.read_text())]
    assert not registering, f"modules below cli that register commands: {registering}"


def test_nothing_below_cli_imports_cli(graph: dict[str, set[str]]) -> None:
    offenders = [m for m, deps in graph.items()
                 if layer_of(m) != "cli" and m not in TOP_LEVEL_OK and any(layer_of(d) == "cli" for d in deps)]
    assert not offenders, f"import the cli from below it: {offenders}"


def test_big_modules_say_why() -> None:
    big = {m: len(p.read_text().splitlines()) for m, p in modules().items()}
    unexplained = [f"{m} ({n} lines)" for m, n in big.items() if n > MAX_LINES
                   and "one concern" not in (ast.get_docstring(ast.parse(modules()[m].read_text())) or "").lower()]
    assert not unexplained, (f"modules over {MAX_LINES} lines whose docstring does not say why they are one "
                             f"concern: {unexplained} (split them, or say so)")


def test_the_rule_can_fail(tmp_path: Path) -> None:
    """The checker itself: an upward import hidden in a function is found."""
    pkg = tmp_path / PKG / "core"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text("def f():\n    from dream_hpc.engine import y\n")
    assert "dream_hpc.engine.y" in imports("dream_hpc.core.x", pkg / "x.py", {"dream_hpc.core.x", "dream_hpc.engine.y",
                                                      "dream_hpc.engine"})
