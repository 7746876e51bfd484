"""What a folder's Python code really constructs, resolved through its imports.

Reads every ``.py`` file under a folder and the code cells of its ``.ipynb`` notebooks,
and reports the fully qualified name of each thing the code *calls* or *subclasses*
(``torch.nn.Conv2d``, ``tensorflow.keras.layers.Dense``, ``sklearn.linear_model.Ridge``).
Comments, strings, docstrings, type annotations and unused imports never appear: only
call sites, base classes and the first argument of ``functools.partial``.

Resolution is flow-insensitive and per file (a notebook is one namespace across its
cells): ``import torch.nn as nn``, ``from keras import layers as L``, ``L = keras.layers``
and star imports all bind names; ``from helpers import keras`` follows a sibling module
of the folder to what it imported. Code that is never run (a function nobody calls) still
counts: reachability is out of scope.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import MlopsError

# Folders that hold environments or tool state, never the model's own code.
_SKIP_DIRS = {"__pycache__", "venv", "site-packages", "node_modules"}
# Cell magics whose body is still Python; any other (%%bash, %%writefile...) is skipped.
_PYTHON_CELL_MAGICS = {"time", "timeit", "capture", "prun", "python", "python3"}
_MAX_EXPANSION = 8


@dataclass(frozen=True)
class SymbolUse:
    """One call or base class that resolved to a qualified name.

    Attributes:
        file: the file, relative to the folder, with ``/`` separators.
        line: the line in the file, or in the notebook cell.
        symbol: the fully qualified name, e.g. ``tensorflow.keras.layers.Conv2D``.
        cell: the 1-based notebook cell (counting markdown cells), ``None`` for ``.py``.
    """

    file: str
    line: int
    symbol: str
    cell: int | None = None


@dataclass
class CodeUnit:
    """A ``.py`` file or a notebook: its parsed code and the names its imports bind."""

    file: str
    module: str | None  # the dotted import name of a .py file; notebooks are not importable
    trees: list[tuple[ast.Module, int | None]]  # (tree, notebook cell or None)
    aliases: dict[str, str] = field(default_factory=dict)
    star_modules: list[str] = field(default_factory=list)


def read_code(folder: Path) -> list[CodeUnit]:
    """Parse every ``.py`` file and notebook under ``folder``, in path order.

    Raises:
        MlopsError: naming the file (and cell) and line of a syntax error, or a broken notebook.
    """
    units = []
    for path in _code_files(folder):
        rel = path.relative_to(folder)
        if path.suffix == ".py":
            parts = rel.with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            units.append(CodeUnit(rel.as_posix(), module, [(_parse(path.read_bytes(), rel), None)]))
        elif path.suffix == ".ipynb":
            units.append(CodeUnit(rel.as_posix(), None, list(_notebook_trees(path, rel))))
    for unit in units:
        _bind_imports(unit)
    return units


def symbol_uses(units: list[CodeUnit], is_known: Callable[[str], bool]) -> list[SymbolUse]:
    """The calls and base classes of ``units`` that resolve to an imported name.

    Args:
        units: parsed code from ``read_code``.
        is_known: says whether a qualified name matters; it picks the module a
            star-imported name comes from (``from keras.layers import *``).
    """
    local = {unit.module: unit for unit in units if unit.module}
    uses: dict[tuple[str, int | None, int, str], SymbolUse] = {}
    for unit in units:
        for tree, cell in unit.trees:
            for node, target in _used_expressions(tree):
                symbol = _resolve(target, unit, is_known)
                if symbol is None:
                    continue
                symbol = _expand_local(symbol, local)
                key = (unit.file, cell, node.lineno, symbol)
                uses.setdefault(key, SymbolUse(unit.file, node.lineno, symbol, cell))
    return list(uses.values())


def _code_files(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        # Pruned in place so a virtualenv inside the folder is never walked.
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS]
        found += [Path(root, f) for f in files if f.endswith((".py", ".ipynb")) and not f.startswith(".")]
    return sorted(found)


def _parse(source: bytes | str, rel: Path, cell: int | None = None) -> ast.Module:
    where = f"{rel.as_posix()} cell {cell}" if cell is not None else rel.as_posix()
    try:
        return ast.parse(source, filename=str(rel))
    except (SyntaxError, ValueError) as error:  # ValueError: null bytes, on some Pythons
        line = getattr(error, "lineno", None)
        message = getattr(error, "msg", None) or str(error)
        raise MlopsError(
            f"{where}{f':{line}' if line else ''}: cannot parse Python ({message}); "
            "fix the syntax or move the file out of the model folder"
        ) from None


def _notebook_trees(path: Path, rel: Path) -> Iterator[tuple[ast.Module, int | None]]:
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        if not isinstance(cells, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise MlopsError(
            f"{rel.as_posix()}: not a Jupyter notebook (nbformat 4 JSON with 'cells'); "
            "re-save it from Jupyter or remove it"
        ) from None
    for number, cell in enumerate(cells, start=1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else str(source)
        code = _strip_magics(text)
        if code is not None:
            yield _parse(code, rel, number), number


def _strip_magics(text: str) -> str | None:
    """IPython magics and shell lines become ``pass`` so blocks and line numbers survive."""
    lines = text.splitlines()
    first = next((line.strip() for line in lines if line.strip()), "")
    if first.startswith("%%") and (first[2:].split() or [""])[0] not in _PYTHON_CELL_MAGICS:
        return None  # a %%bash or %%writefile cell holds no Python
    kept = []
    for line in lines:
        stripped = line.lstrip()
        if stripped.startswith(("%", "!")):
            line = line[: len(line) - len(stripped)] + "pass"
        kept.append(line)
    return "\n".join(kept) + "\n"


def _bind_imports(unit: CodeUnit) -> None:
    assignments: list[ast.Assign] = []
    # The package relative imports start from: a package's own name for its __init__.py.
    package = unit.module.split(".") if unit.module else []
    if not unit.file.endswith("__init__.py"):
        package = package[:-1]
    for tree, _ in unit.trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        unit.aliases[alias.asname] = alias.name
                    else:  # `import torch.nn` binds `torch`
                        root = alias.name.split(".")[0]
                        unit.aliases[root] = root
            elif isinstance(node, ast.ImportFrom):
                module = _absolute_module(node, package)
                for alias in node.names:
                    if alias.name == "*":
                        unit.star_modules.append(module)
                    else:
                        qualified = f"{module}.{alias.name}" if module else alias.name
                        unit.aliases[alias.asname or alias.name] = qualified
            elif (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Name | ast.Attribute)
            ):
                assignments.append(node)
    # `L = keras.layers` after the imports it needs; in source order so chains resolve.
    for node in sorted(assignments, key=lambda n: n.lineno):
        target = node.targets[0]
        assert isinstance(target, ast.Name)
        if _root_name(node.value) == target.id:
            continue  # `tf = tf.compat.v1` would otherwise feed on itself
        resolved = _resolve(node.value, unit, lambda _: False)
        if resolved is not None:
            unit.aliases[target.id] = resolved


def _absolute_module(node: ast.ImportFrom, package: list[str]) -> str:
    if not node.level:
        return node.module or ""
    # `from . import x` in a notebook or top-level file is relative to the model folder.
    base = package[: max(len(package) - (node.level - 1), 0)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _root_name(expr: ast.expr) -> str | None:
    while isinstance(expr, ast.Attribute):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def _used_expressions(tree: ast.Module) -> Iterator[tuple[ast.stmt | ast.expr, ast.expr]]:
    """(node, expression naming what is used): call targets, base classes, partial()."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, node.func
            # `partial(layers.Conv2D, padding="same")` constructs its first argument later.
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name == "partial" and node.args:
                yield node, node.args[0]
        elif isinstance(node, ast.ClassDef):
            for base in node.bases:
                yield node, base


def _resolve(expr: ast.expr, unit: CodeUnit, is_known: Callable[[str], bool]) -> str | None:
    if isinstance(expr, ast.Attribute):
        base = _resolve(expr.value, unit, is_known)
        return f"{base}.{expr.attr}" if base else None
    if not isinstance(expr, ast.Name):
        return None  # `Conv2D(32, 3)(x)`: the inner call is visited on its own
    if expr.id in unit.aliases:
        return unit.aliases[expr.id]
    for module in unit.star_modules:
        if is_known(f"{module}.{expr.id}"):
            return f"{module}.{expr.id}"
    return None


def _expand_local(symbol: str, local: dict[str, CodeUnit]) -> str:
    """``helpers.keras.layers.Dense`` -> ``tensorflow.keras.layers.Dense`` via helpers.py."""
    for _ in range(_MAX_EXPANSION):
        parts = symbol.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            unit = local.get(".".join(parts[:cut]))
            if unit is not None and parts[cut] in unit.aliases:
                symbol = ".".join([unit.aliases[parts[cut]], *parts[cut + 1 :]])
                break
        else:
            return symbol
    return symbol
