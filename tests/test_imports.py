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


# the library's floors, lowest first: a module imports only from its own floor or below (tests excluded)
LIBRARY_FLOORS = (
    ("vidcom2.types", "vidcom2.hooks", "vidcom2.similarity", "vidcom2._checks", "vidcom2.measure"),
    ("vidcom2.registry", "vidcom2.budget"),
    ("vidcom2.stages",),  # model- and method-agnostic machinery + pure attention math
    ("vidcom2.methods", "vidcom2.adapters"),  # what to keep / model questions; neither knows the other
    ("vidcom2.api",),
    ("vidcom2.compress",),
    ("vidcom2.testing",),
    ("vidcom2",),
)


def _floor(module: str) -> int:
    best = None
    for i, prefixes in enumerate(LIBRARY_FLOORS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (i, len(prefix))
    assert best is not None, f"{module} has no floor in LIBRARY_FLOORS: add it"
    return best[0]


def test_library_imports_run_downwards_only():
    graph = _package_inits_excluded(_graph("vidcom2"))
    up = [f"{m} -> {n}" for m, deps in graph.items() for n in deps if _floor(n) > _floor(m)]
    assert not up, f"imports from a lower floor up to a higher one: {up}"


def test_stages_know_no_method_and_no_adapter_and_the_two_never_meet():
    graph = _graph("vidcom2")

    def edges(src: str, dst: str) -> list[str]:
        return [f"{m} -> {n}" for m, deps in graph.items() if m.startswith(src) for n in deps if n.startswith(dst)]

    assert not edges("vidcom2.stages", "vidcom2.methods") + edges("vidcom2.stages", "vidcom2.adapters")
    assert not edges("vidcom2.methods", "vidcom2.adapters") + edges("vidcom2.adapters", "vidcom2.methods")
