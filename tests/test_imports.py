"""The house's walls, from the source: the library imports no harness, no import circle in either package, and the
registry imports no method (methods -> registry, never back)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_LIBRARY = ("eval", "lmms_eval", "hydra", "omegaconf", "wandb")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module named by an import anywhere in the file (function-level imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _graph(package: str) -> dict[str, set[str]]:
    files = {_module(p): p for p in (ROOT / package).rglob("*.py")}
    return {m: {i for i in _imports(p) if i in files and i != m} for m, p in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def _package_inits_excluded(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    # a module importing its own enclosing package (`vidcom2.methods.x` -> `vidcom2`) is not an upward edge: the
    # package init runs first by Python's rules whatever the module imports; any other edge to a package init is kept
    inits = {m for m in graph if (ROOT / m.replace(".", "/") / "__init__.py").exists()}
    return {m: {n for n in deps if not (n in inits and m.startswith(n + "."))} for m, deps in graph.items()}


def test_library_imports_no_harness_or_environment():
    bad = []
    for path in (ROOT / "vidcom2").rglob("*.py"):
        text = path.read_text()
        for name in _imports(path):
            if name.split(".")[0] in FORBIDDEN_IN_LIBRARY:
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
        if "os.environ" in text or "getenv(" in text:
            bad.append(f"{path.relative_to(ROOT)} reads the environment")
    assert not bad, bad


def test_no_import_circle():
    for package in ("vidcom2", "eval"):
        cycle = _cycle(_package_inits_excluded(_graph(package)))
        assert cycle is None, f"import circle in {package}: {' -> '.join(cycle)}"


def test_registry_imports_no_method():
    graph = _graph("vidcom2")
    assert not {m for m in graph["vidcom2.registry"] if m.startswith("vidcom2.methods")}
    assert "vidcom2.methods" in graph["vidcom2"]  # the package init registers the built-ins
