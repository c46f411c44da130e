"""The import rule of docs/architecture.md, as a test: a layer imports only the layers below it.

Every module of ``src/liverec`` belongs to one unit (the longest entry of :data:`LAYERS` that prefixes its
name). A module may import its own unit freely and any unit of a *lower* layer; never a unit of its own layer
or one above. Every import counts: at module level, inside functions, and under ``TYPE_CHECKING``. Since
importing ``a.b.c`` first runs ``a/__init__.py`` and ``a/b/__init__.py``, those files may not import above
the lowest module they contain either (else a low module would drag a high one in at run time).
"""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "liverec"

#: Lowest first. Units in one layer are independent of each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("liverec", "liverec.errors"),  # the package's version; the errors people read
    ("liverec.data",),  # core types (Interactions, Histories, IdMap), loaders, splits, the synthetic generator
    ("liverec.evaluation.metrics",),  # metric maths on ranks and ranked lists (models early-stop with it)
    ("liverec.models",),  # the model protocol and the models
    # top-k; learning online; exploration; re-ranking after retrieval; explanations (attribution to history items)
    ("liverec.retrieval", "liverec.online.learner", "liverec.policies", "liverec.rerank", "liverec.explain"),
    ("liverec.evaluation",),  # offline protocols, rating metrics, the streaming replay
    ("liverec.events",),  # the event schema and the durable log
    ("liverec.state", "liverec.ope"),  # what the engine knows now; off-policy evaluation of logged lists
    ("liverec.registry", "liverec.experiments"),  # model versions on disk; experiments: arms, assignment, stats
    ("liverec.settings",),
    ("liverec.backends", "liverec.access"),  # embedded or Redis: the one place that knows which; API keys, audit
    ("liverec.pipeline",),  # batch steps around the log: import, read, train and register
    ("liverec.online",),  # the updater process and the Redis worker
    ("liverec.serving",),  # the engine and the HTTP app
    ("liverec.client",),  # the typed HTTP client (its models are serving.schemas'); the demo talks through it
    ("liverec.demo", "liverec.simulation"),  # the main job end to end; the simulator (drives an engine in-process)
    ("liverec.cli",),
)


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    imported: str
    reason: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.imported}: {self.reason}"


def unit_of(module: str) -> tuple[str, int] | None:
    """The unit (longest matching :data:`LAYERS` entry) and layer index of a module, or None."""
    best: tuple[str, int] | None = None
    for layer, units in enumerate(LAYERS):
        for unit in units:
            inside = module == unit or (unit != "liverec" and module.startswith(unit + "."))  # the root: itself only
            if inside and (best is None or len(unit) > len(best[0])):
                best = (unit, layer)
    return best


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> list[tuple[str, int]]:
    """``liverec`` modules imported anywhere in the file (absolute and relative), with line numbers."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from liverec.x import y` may name a submodule y: judge the deeper name when it is one
            for alias in node.names:
                found.append((f"{target}.{alias.name}" if unit_of(f"{target}.{alias.name}") else target, node.lineno))
    return [(name, line) for name, line in found if name == "liverec" or name.startswith("liverec.")]


def check_layers(root: Path) -> list[Violation]:
    """Every breach of the import rule in the package at ``root``."""
    files = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    violations: list[Violation] = []
    for module, path in files.items():
        own = unit_of(module)
        if own is None:
            violations.append(Violation(module, 1, "-", "module is in no layer: add its unit to LAYERS"))
            continue
        # a package __init__ runs whenever any module below it is imported: hold it to its lowest module
        below = [unit_of(name) for name in files if name.startswith(module + ".")] if path.name == "__init__.py" else []
        ceiling = min([own[1], *(layer for _unit, layer in filter(None, below))])
        for imported, line in imports_of(path, module):
            target = unit_of(imported)
            if target is None:
                violations.append(Violation(module, line, imported, "imported module is in no layer"))
            elif target[1] < ceiling or (target[0] == own[0] and target[1] <= ceiling):
                continue
            elif path.name == "__init__.py" and imported.startswith(module + ".") and target[1] <= ceiling:
                continue  # a package re-exporting its own lowest module
            else:
                where = "its own layer" if target[1] == ceiling else "a higher layer"
                violations.append(Violation(module, line, imported, f"{target[0]} is in {where} than {own[0]}"))
    return violations


def test_every_import_goes_down_a_layer() -> None:
    violations = check_layers(SRC)
    assert violations == [], "\n".join(map(str, violations))


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("data/planted.py", "from liverec.serving.engine import Engine\n", "liverec.serving"),
        ("models/planted.py", "def f():\n    import liverec.cli\n", "liverec.cli"),
        (
            "models/planted.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..online import updater\n",
            "liverec.online",
        ),
        ("retrieval/planted.py", "from liverec.online.learner import OnlineLearner\n", "its own layer"),
        ("evaluation/__init__.py", "from liverec.evaluation.protocols import evaluate_ranking\n", "liverec.evaluation"),
        ("brand_new.py", "", "in no layer"),
    ],
)
def test_a_planted_upward_import_fails(tmp_path: Path, module: str, source: str, expected: str) -> None:
    copy = tmp_path / "liverec"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert check_layers(copy) == []
    (copy / module).write_text(source)
    violations = check_layers(copy)
    assert len(violations) == 1, violations
    assert expected in str(violations[0])


#: Third-party packages only one unit may import: the HTTP stack belongs to serving alone.
ONLY_IN = {"fastapi": "liverec.serving", "starlette": "liverec.serving", "uvicorn": "liverec.serving"}


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of every non-relative import in the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.partition(".")[0])
    return names


def test_only_serving_imports_the_http_stack() -> None:
    breaches = [
        f"{module_name(path, SRC)} imports {name}"
        for path in sorted(SRC.rglob("*.py"))
        for name in sorted(third_party_imports(path) & set(ONLY_IN))
        if not (module_name(path, SRC) + ".").startswith(ONLY_IN[name] + ".")
    ]
    assert breaches == []


def test_every_unit_exists() -> None:
    """A layer entry that names no module would silently guard nothing."""
    names = {module_name(path, SRC) for path in SRC.rglob("*.py")}
    for layer, units in enumerate(LAYERS):
        for unit in units:
            assert any(unit_of(name) == (unit, layer) for name in names), unit
