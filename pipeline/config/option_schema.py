"""What a model accepts, declared in ``model.yaml`` and checked before any work.

A model's code reads options from ``data:`` and ``params:`` and hyperparameters from its
search space. ``accepts:`` says which names it reads, of what type and range, so a typo
(``--set data.sorce=lfw``), a wrong type (``input_size: big``) or a choice the code cannot
use (``optimizer: adagrad``) is one line naming the key, not a traceback in every trial::

    accepts:
      data:
        source: {type: str, choices: [olivetti, lfw, folder]}
        input_size: {type: int, ge: 32}
        path: {type: str, nullable: true}
      params:
        patience: {type: int, ge: 1, nullable: true}
      search_space:
        optimizer: {type: str, choices: [adam, adamw, rmsprop, sgd]}
        dropout: {type: float, ge: 0, lt: 1}

A section left out is not checked (a model that declares nothing keeps working). Bounds
follow pydantic's names: ``ge``/``gt``/``le``/``lt``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import MlopsError

TYPES = ("int", "float", "str", "bool", "list")
SECTIONS = ("data", "params", "search_space")
_KEYS = {"type", "choices", "ge", "gt", "le", "lt", "nullable", "file_unless"}
_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _is(kind: str, value: Any) -> bool:
    """Whether ``value`` (as YAML loads it) is of the declared type; ints count as floats."""
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):  # YAML's true is an int to Python, never to a model
        return False
    if kind == "int":
        return isinstance(value, int)
    if kind == "float":
        return isinstance(value, (int, float)) and math.isfinite(value)
    if kind == "str":
        return isinstance(value, str)
    return isinstance(value, list)


@dataclass(frozen=True)
class OptionSpec:
    """One option a model reads: its type, its allowed values or bounds."""

    type: str
    choices: tuple[Any, ...] = ()
    bounds: tuple[tuple[str, float], ...] = ()  # ("ge", 32.0), ...
    nullable: bool = False
    file_unless: tuple[str, ...] = ()  # a str option naming a file, but for these words

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not acceptable (``"must be an int"``), or ``None`` when it is."""
        if value is None:
            return None if self.nullable else f"must be {_article(self.type)} (null is not allowed)"
        if not _is(self.type, value):
            return f"must be {_article(self.type)}"
        if self.choices and value not in self.choices:
            return f"is unknown; use one of {', '.join(map(str, self.choices))}"
        for name, bound in self.bounds:
            if not _compare(name, value, bound):
                return f"must be {_BOUNDS[name]} {bound:g}"
        if self.file_unless and value not in self.file_unless and not Path(value).expanduser().is_file():
            return f"names no file; pass {' or '.join(self.file_unless)}, or the path of an existing file"
        return None

    def describe(self) -> str:
        """A short summary for messages: ``int >= 32``, ``str in (a, b)``."""
        parts = [self.type]
        if self.choices:
            parts.append(f"in ({', '.join(map(str, self.choices))})")
        parts.extend(f"{_BOUNDS[name]} {bound:g}" for name, bound in self.bounds)
        return " ".join(parts) + (" or null" if self.nullable else "")


def _article(kind: str) -> str:
    return {"int": "a whole number (int)", "float": "a number", "str": "a string", "bool": "true or false"}.get(
        kind, "a list"
    )


def _compare(name: str, value: float, bound: float) -> bool:
    if name == "ge":
        return value >= bound
    if name == "gt":
        return value > bound
    if name == "le":
        return value <= bound
    return value < bound


@dataclass(frozen=True)
class Accepts:
    """The ``accepts:`` section: per section, option name -> spec; ``None`` where undeclared."""

    data: Mapping[str, OptionSpec] | None = None
    params: Mapping[str, OptionSpec] | None = None
    search_space: Mapping[str, OptionSpec] | None = None

    def section(self, name: str) -> Mapping[str, OptionSpec] | None:
        """The specs of ``data``, ``params`` or ``search_space``."""
        return getattr(self, name)

    @classmethod
    def parse(cls, raw: Any, where: str) -> Accepts:
        """Check an ``accepts:`` mapping.

        Raises:
            MlopsError: naming ``where`` and the bad key, with the allowed values.
        """
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise MlopsError(f"{where} must map {', '.join(SECTIONS)} to their options")
        unknown = set(raw) - set(SECTIONS)
        if unknown:
            raise MlopsError(f"{where}: unknown section '{sorted(unknown)[0]}'; allowed: {', '.join(SECTIONS)}")
        sections: dict[str, dict[str, OptionSpec]] = {}
        for section, options in raw.items():
            if not isinstance(options, dict):
                raise MlopsError(f"{where}.{section} must map option names to specs like {{type: int, ge: 1}}")
            sections[section] = {str(n): _parse_spec(spec, f"{where}.{section}.{n}") for n, spec in options.items()}
        return cls(**sections)

    def check(self, section: str, values: Mapping[str, Any], where: str) -> None:
        """Check every option in ``values`` against ``section``'s specs.

        Args:
            section: ``data`` or ``params``.
            values: the options (``model.yaml``'s own, or with ``--set`` applied).
            where: the file or flag the values came from, for the message.

        Raises:
            MlopsError: for an option the model does not read, or a value it cannot use.
        """
        specs = self.section(section)
        if specs is None:
            return
        for name, value in values.items():
            self.check_one(section, name, value, where)

    def check_one(self, section: str, name: str, value: Any, where: str) -> None:
        """Check one option; ``where`` names its source (``models/m/model.yaml``, ``--set``)."""
        specs = self.section(section)
        if specs is None:
            return
        if name not in specs:
            allowed = ", ".join(sorted(specs)) or "none"
            raise MlopsError(f"{where}: {section}.{name} is not an option this model reads; allowed: {allowed}")
        problem = specs[name].problem(value)
        if problem:
            raise MlopsError(f"{where}: {section}.{name}={value!r} {problem}")


def _parse_spec(raw: Any, at: str) -> OptionSpec:
    if isinstance(raw, str):  # shorthand: `patience: int`
        raw = {"type": raw}
    if not isinstance(raw, dict):
        raise MlopsError(f"{at} must be a type name or a mapping like {{type: int, ge: 1}}")
    unknown = set(raw) - _KEYS
    if unknown:
        raise MlopsError(f"{at}: unknown key '{sorted(unknown)[0]}'; allowed: {', '.join(sorted(_KEYS))}")
    kind = raw.get("type")
    if kind not in TYPES:
        raise MlopsError(f"{at}.type must be one of {', '.join(TYPES)}, not {kind!r}")
    choices = raw.get("choices", [])
    if not isinstance(choices, list) or not all(_is(kind, c) for c in choices):
        raise MlopsError(f"{at}.choices must be a list of {kind} values")
    bounds = []
    for name in _BOUNDS:
        if name in raw:
            bound = raw[name]
            if not _is("float", bound) or kind not in ("int", "float"):
                raise MlopsError(f"{at}.{name} must be a number, on an int or float option")
            bounds.append((name, float(bound)))
    nullable = raw.get("nullable", False)
    if not isinstance(nullable, bool):
        raise MlopsError(f"{at}.nullable must be true or false, not {nullable!r}")
    file_unless = raw.get("file_unless", [])
    if file_unless and (
        kind != "str" or not isinstance(file_unless, list) or not all(_is("str", w) for w in file_unless)
    ):
        raise MlopsError(f"{at}.file_unless must be a list of words, on a str option (the rest must be files)")
    return OptionSpec(kind, tuple(choices), tuple(bounds), nullable, tuple(file_unless))
