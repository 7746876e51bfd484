"""A search space declared in ``model.yaml`` and sampled with an Optuna trial.

Example (``model.yaml``)::

    search_space:
      n_layers: {type: int, low: 1, high: 5}
      units: {type: int, low: 32, high: 512, log: true, per_layer: n_layers}
      dropout: {type: float, low: 0.0, high: 0.5}
      optimizer: {type: categorical, choices: [adam, rmsprop, sgd]}

``per_layer: n_layers`` samples one value per layer (``units_0``, ``units_1``, ...) and gives the
model a list, so layer widths are searched independently.

A parameter the model's ``params`` also sets (in ``model.yaml`` or with ``--set params.NAME=V``)
is held at that value in every trial instead of searched (``SearchSpace.fixing``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from pipeline.config.option_schema import OptionSpec
from pipeline.errors import MlopsError

_TYPES = ("int", "float", "categorical")
_KEYS = {"type", "low", "high", "log", "step", "choices", "per_layer"}


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    per_layer: str | None = None

    def admits(self, value: Any) -> bool:
        """Whether ``value`` is one this parameter can take (a choice, or inside the range)."""
        if self.type == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.type == "int" and not float(value).is_integer():
            return False
        return float(self.low) <= value <= float(self.high)  # type: ignore[arg-type]

    def suggest(self, trial: optuna.Trial | optuna.trial.FixedTrial, name: str) -> Any:
        """Ask ``trial`` for a value of this parameter under ``name``."""
        if self.type == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        if self.type == "int":
            step = int(self.step) if self.step else 1
            return trial.suggest_int(name, int(self.low), int(self.high), step=step, log=self.log)  # type: ignore[arg-type]
        return trial.suggest_float(name, float(self.low), float(self.high), step=self.step, log=self.log)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SearchSpace:
    """An ordered set of ``Param``; parameters a ``per_layer`` one depends on come first."""

    params: tuple[Param, ...]
    # Declared parameters held at one value (not suggested, so not in a trial's Optuna params).
    fixed: tuple[tuple[Param, Any], ...] = field(default=())

    @classmethod
    def parse(cls, raw: Any, where: str) -> SearchSpace:
        """Check a ``search_space`` mapping.

        Raises:
            MlopsError: naming ``where`` and the bad key, with the allowed values.
        """
        if not raw:
            raise MlopsError(f"{where} is empty; declare at least one hyperparameter to search")
        if not isinstance(raw, dict):
            raise MlopsError(f"{where} must map parameter names to their ranges")
        params = [_parse_param(name, spec, where) for name, spec in raw.items()]
        names = {p.name for p in params}
        for p in params:
            if p.per_layer and p.per_layer not in names:
                raise MlopsError(f"{where}.{p.name}.per_layer names {p.per_layer!r}, which is not in the space")
        # Layer counts first, so per-layer parameters know how many values to draw.
        params.sort(key=lambda p: p.per_layer is not None)
        return cls(tuple(params))

    def fixing(self, options: Mapping[str, Any]) -> SearchSpace:
        """This space with each parameter ``options`` names held at that value in every trial.

        ``options`` are the model's ``params`` with ``--set`` applied: a model that accepts
        ``fine_tune_blocks`` both as a param and as a search parameter means "fixed" by the first.
        """
        held = {p.name for p in self.params if p.name in options}
        if not held:
            return self
        fixed = self.fixed + tuple((p, options[p.name]) for p in self.params if p.name in held)
        return SearchSpace(tuple(p for p in self.params if p.name not in held), fixed)

    def fixed_names(self) -> list[str]:
        """The declared parameters held at one value (``fixing``)."""
        return [p.name for p, _ in self.fixed]

    def sample(self, trial: optuna.Trial | optuna.trial.FixedTrial) -> dict[str, Any]:
        """Draw one point; ``per_layer`` parameters come back as lists, fixed ones at their value."""
        values = {p.name: value for p, value in self.fixed if not p.per_layer}
        for p in self.params:
            if p.per_layer:
                count = int(values[p.per_layer])
                values[p.name] = [p.suggest(trial, f"{p.name}_{i}") for i in range(count)]
            else:
                values[p.name] = p.suggest(trial, p.name)
        for p, value in self.fixed:
            if p.per_layer:  # one width for every layer, unless a list names each
                values[p.name] = list(value) if isinstance(value, list) else [value] * int(values[p.per_layer])
        return values

    def optuna_params(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """``params`` (a trial's, as Optuna names them: ``units_0``...) restricted to this space, or
        ``None`` when one is missing or lies outside its range or choices."""
        chosen: dict[str, Any] = {}
        counts = {p.name: value for p, value in self.fixed}
        for p in self.params:
            names = [p.name]
            if p.per_layer:
                count = counts.get(p.per_layer, chosen.get(p.per_layer))
                names = [f"{p.name}_{i}" for i in range(int(count))] if count is not None else []
            for name in names:
                if name not in params or not p.admits(params[name]):
                    return None
                chosen[name] = params[name]
            if not p.per_layer:
                counts[p.name] = chosen[p.name]
        return chosen

    def given_params(self, values: Mapping[str, Any], where: str) -> dict[str, Any]:
        """Some parameters as the model gets them (``units: [256, 128]`` or one width for every
        layer) as Optuna names them (``units_0``...), for ``study.enqueue_trial``; the sampler
        draws the rest. A parameter held by ``params`` (``fixing``) keeps its held value.

        Raises:
            MlopsError: naming ``where`` and the key: not a parameter, or a value it cannot take.
        """
        held = {p.name: value for p, value in self.fixed}
        by_name = {p.name: p for p in self.params}
        given: dict[str, Any] = {}
        for name, value in values.items():
            if name in held:
                continue
            param = by_name.get(name)
            if param is None:
                names = ", ".join(by_name)
                raise MlopsError(f"{where}.{name}: not a parameter of the search space; use one of: {names}")
            if not param.per_layer:
                _check_given(param, value, f"{where}.{name}")
                given[name] = value
                continue
            count = held.get(param.per_layer, values.get(param.per_layer))  # a held count wins, as its value does
            if count is None:
                layers = param.per_layer
                raise MlopsError(f"{where}.{name}: one value per layer of {layers}; give {layers} too")
            if param.per_layer not in held:
                _check_given(by_name[param.per_layer], count, f"{where}.{param.per_layer}")
            widths = list(value) if isinstance(value, list) else [value] * int(count)
            if len(widths) != int(count):
                raise MlopsError(f"{where}.{name}: {len(widths)} value(s) for {count} layer(s); give one per layer")
            for index, width in enumerate(widths):
                _check_given(param, width, f"{where}.{name}[{index}]")
                given[f"{name}_{index}"] = width
        return given

    def names(self) -> list[str]:
        """The declared parameter names, in sampling order."""
        return [p.name for p in self.params]

    def check_against(self, accepts: Mapping[str, OptionSpec] | None, where: str) -> None:
        """Check every parameter against what the model declares it reads (``accepts.search_space``).

        A categorical choice the model cannot use, or a range reaching past what it accepts,
        would otherwise fail trial after trial; a name it does not read would be ignored.

        Raises:
            MlopsError: naming ``where``, the parameter and what the model accepts.
        """
        if accepts is None:
            return
        for p in self.params:
            spec = accepts.get(p.name)
            if spec is None:
                allowed = ", ".join(sorted(accepts))
                raise MlopsError(f"{where}.{p.name}: the model reads no hyperparameter {p.name!r}; allowed: {allowed}")
            values = list(p.choices) if p.type == "categorical" else [p.low, p.high]
            if p.type == "int":
                values = [int(v) for v in values]  # type: ignore[arg-type]
            if p.type == "float" and spec.type == "int":
                raise MlopsError(f"{where}.{p.name}: the model takes a whole number here; use type: int")
            for value in values:
                problem = spec.problem(value)
                if problem:
                    key = "choices" if p.type == "categorical" else ("low" if value == values[0] else "high")
                    reads = "" if spec.choices else f" (the model reads {spec.describe()})"
                    raise MlopsError(f"{where}.{p.name}.{key}: {value!r} {problem}{reads}")


def _parse_param(name: str, spec: Any, where: str) -> Param:
    at = f"{where}.{name}"
    if not isinstance(spec, dict):
        raise MlopsError(f"{at} must be a mapping like {{type: float, low: 0.0, high: 0.5}}")
    unknown = set(spec) - _KEYS
    if unknown:
        raise MlopsError(f"{at}: unknown key '{sorted(unknown)[0]}'; allowed: {', '.join(sorted(_KEYS))}")
    kind = spec.get("type")
    if kind not in _TYPES:
        raise MlopsError(f"{at}.type must be one of {', '.join(_TYPES)}, not {kind!r}")
    per_layer = spec.get("per_layer")
    if per_layer is not None and not isinstance(per_layer, str):
        raise MlopsError(f"{at}.per_layer must name another parameter (e.g. n_layers), not {per_layer!r}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise MlopsError(f"{at}.choices must be a non-empty list")
        return Param(name, kind, choices=tuple(choices), per_layer=per_layer)
    low: Any = spec.get("low")
    high: Any = spec.get("high")
    if not (_number(low) and _number(high)):
        raise MlopsError(f"{at} needs numeric 'low' and 'high', not {low!r} and {high!r}")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise MlopsError(f"{at}: an int range needs whole-number low and high, not {low!r} and {high!r}")
    low, high = float(low), float(high)
    if low > high:
        raise MlopsError(f"{at}: low ({low}) is above high ({high}); swap them")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise MlopsError(f"{at}.log must be true or false, not {log!r}")
    if log and low <= 0:
        raise MlopsError(f"{at}: a log-scale range needs low > 0, not {low}")
    step = spec.get("step")
    if step is not None and not (_number(step) and step > 0):
        raise MlopsError(f"{at}.step must be a positive number, not {step!r}")
    return Param(name, kind, low, high, log, float(step) if step else None, per_layer=per_layer)


def _number(value: Any) -> bool:
    """A YAML number (``true`` is not one) that is finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_given(param: Param, value: Any, where: str) -> None:
    """A value someone chose for ``param`` must be one the space itself could draw."""
    if param.admits(value):
        return
    if param.type == "categorical":
        raise MlopsError(f"{where}: {value!r} is not one of its choices {list(param.choices)}; pick one of them")
    raise MlopsError(
        f"{where}: {value!r} is outside its search range [{param.low:g}, {param.high:g}]; pick a value inside it"
    )
