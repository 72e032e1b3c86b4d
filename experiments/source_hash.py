"""A fingerprint of the code behind a result: the repository modules an experiment imports, normalised.

``results.json`` records :func:`experiment_source` of its experiment; ``tests/test_results_fresh.py`` recomputes it
for every committed result and names the results whose code has changed since they were made (the figures are stale
and must be regenerated). The modules are found statically: the experiment's module and, transitively, every module
of ``theory``, ``toy``, ``scaleup`` and ``experiments`` it imports anywhere in its text (function-level imports
included), with the ``__init__`` of their packages, but not the run's bookkeeping (:data:`BOOKKEEPING`). Each is hashed as ``ast.dump`` of its syntax tree without
docstrings, so editing comments, docstrings or line breaks changes nothing, while any change to the code does.
Library versions are recorded separately (``versions`` in ``results.json``).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
PACKAGES = ("theory", "toy", "scaleup", "experiments")
#: The bookkeeping around a run (catalogue, runner, command line, this module), not the computation: editing them
#: (e.g. adding an experiment to the catalogue) leaves every result valid. ``experiments/__init__`` imports them.
BOOKKEEPING = frozenset({"experiments", "experiments.registry", "experiments.runner", "experiments.__main__",
                         "experiments.source_hash"})


def _file_of(module: str) -> Path | None:
    """The source file of a repository module (``a.b`` -> a/b.py or a/b/__init__.py); None outside the repository
    and for :data:`BOOKKEEPING`."""
    if module.split(".")[0] not in PACKAGES or module in BOOKKEEPING:
        return None
    base = REPOSITORY.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Names of the modules a syntax tree imports (absolute and relative), with their parent packages."""
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            names.add(origin)
            names.update(f"{origin}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    with_parents = set()
    for name in names:
        parts = name.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return with_parents


def _without_docstrings(tree: ast.Module) -> ast.Module:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                node.body = node.body[1:]
    return tree


def normalised_source_hash(path: Path) -> str:
    """sha256 of ``ast.dump`` of the file without docstrings: blind to comments, docstrings and layout."""
    tree = _without_docstrings(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def module_hashes(module: str) -> dict[str, str]:
    """{module: normalised hash} of ``module`` and every repository module it imports, transitively.

    ``module`` itself may lie outside the repository (e.g. a test's fake experiment); only its repository imports
    are followed.
    """
    start = _file_of(module)
    if start is None:
        spec = importlib.util.find_spec(module)
        start = Path(spec.origin) if spec is not None and spec.origin else None
    if start is None:
        raise ValueError(f"cannot find the source of module {module!r}")
    found: dict[str, str] = {}
    queue = [(module, start)]
    while queue:
        name, path = queue.pop()
        if name in found:
            continue
        found[name] = normalised_source_hash(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for imported in _imports(tree, name, path.name == "__init__.py"):
            target = _file_of(imported)
            if target is not None and imported not in found:
                queue.append((imported, target))
    return dict(sorted(found.items()))


def experiment_source(name: str) -> dict:
    """The code fingerprint recorded in ``results.json``: ``{"sha256": ..., "modules": {module: hash}}``.

    ``sha256`` covers every module of ``modules`` (name and hash), so it changes exactly when one of them does.
    """
    from experiments.registry import EXPERIMENTS

    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of: {', '.join(sorted(EXPERIMENTS))}")
    modules = module_hashes(EXPERIMENTS[name].module)
    overall = hashlib.sha256("".join(f"{m}:{h}\n" for m, h in modules.items()).encode()).hexdigest()
    return {"sha256": overall, "modules": modules}
