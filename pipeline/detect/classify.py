"""Classify: a model folder's kind (``cnn``, ``ann``, ``regression``) and framework.

The decision comes from the syntax tree, never from a keyword grep: every ``.py`` file
of the folder (recursively) and the code cells of its notebooks are parsed, imports and
their aliases resolved (``import tensorflow as tf; tf.keras.layers.Conv2D``), and only
what the code *calls* or *subclasses* counts as evidence (see ``pipeline.detect._ast_symbols``).
Words in comments, strings and docstrings, layer names given as strings and unused
imports are never evidence.

Evidence, by symbol, decided by the module each name comes from (see
``pipeline.detect._symbol_kinds`` for the rules):

- ``cnn``: a convolution or pooling layer (Keras ``keras.layers``, PyTorch ``torch.nn``), a
  ``keras.applications`` backbone or a convolutional ``torchvision.models`` constructor.
- ``ann``: a dense layer (Keras ``Dense``; PyTorch ``nn.Linear``, ``LazyLinear``,
  ``Bilinear``, ``F.linear``) or scikit-learn's ``MLPClassifier`` / ``MLPRegressor``.
- ``regression``: every scikit-learn regressor and every class of ``sklearn.linear_model``
  (its ``*CV`` variants, and ``LogisticRegression`` and the other linear classifiers: they
  are linear models), a statsmodels model (``sm.OLS``, ``smf.ols``, ``sm.tsa.ARIMA``...),
  or an XGBoost / LightGBM / CatBoost regressor or ``train`` call.

Precedence: **cnn > ann > regression**. A CNN nearly always ends in dense layers, and a
network may sit beside a linear baseline; the most specific architecture present is the
one the container and the search are built for. The framework is the one behind most of
the winning kind's evidence (the first seen on a tie).

``model.yaml`` overrides: its ``kind:`` replaces the decision (``source`` is then
``"model.yaml"``) and its ``framework:`` replaces the framework; when both are set, the
code is not read at all.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.config.manifest import KINDS, MANIFEST
from pipeline.config.yaml_file import load_yaml
from pipeline.detect._ast_symbols import read_code, symbol_uses
from pipeline.detect._symbol_kinds import symbol_kind
from pipeline.errors import MlopsError

__all__ = ["Classification", "Evidence", "classify_model", "symbol_kind"]

FRAMEWORKS = ("keras", "pytorch", "scikit-learn", "statsmodels")
_FRAMEWORK_ALIASES = {
    "tensorflow": "keras", "tf.keras": "keras", "tensorflow.keras": "keras",
    "torch": "pytorch", "sklearn": "scikit-learn", "scikit_learn": "scikit-learn",
}  # fmt: skip
_ORDER = {kind: rank for rank, kind in enumerate(("cnn", "ann", "regression"))}


@dataclass(frozen=True)
class Evidence:
    """One construction that decided, or supported, the kind.

    Attributes:
        file: the file, relative to the model folder.
        line: the line (in the notebook cell for notebooks).
        symbol: the resolved name, ``tensorflow.keras`` shown as ``keras``.
        kind: what this symbol is evidence of.
        framework: the framework it belongs to.
        cell: the 1-based notebook cell, ``None`` for ``.py`` files.
    """

    file: str
    line: int
    symbol: str
    kind: str
    framework: str
    cell: int | None = None

    def where(self) -> str:
        """``model.py:12`` or ``train.ipynb cell 3:2``."""
        cell = f" cell {self.cell}" if self.cell is not None else ""
        return f"{self.file}{cell}:{self.line}"


@dataclass(frozen=True)
class Classification:
    """A model folder's kind and framework, and why.

    Attributes:
        kind: ``cnn``, ``ann`` or ``regression``.
        framework: ``keras``, ``pytorch``, ``scikit-learn``, ``statsmodels``, or ``None``
            when ``model.yaml`` sets the kind and the code names no known framework.
        source: ``"code"`` or ``"model.yaml"`` (where the kind came from).
        evidence: the constructions found, the deciding kind first.
    """

    kind: str
    framework: str | None
    source: str
    evidence: tuple[Evidence, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form printed by ``mlops classify --json``."""
        return {
            "kind": self.kind,
            "framework": self.framework,
            "source": self.source,
            "evidence": [asdict(item) for item in self.evidence],
        }


def classify_model(model_dir: str | Path) -> Classification:
    """Decide a model folder's kind and framework from its code, or its ``model.yaml``.

    Args:
        model_dir: the model folder (``models/<name>``); a ``model.yaml`` is optional.

    Returns:
        The kind, framework, where the kind came from, and the evidence.

    Raises:
        MlopsError: the folder is missing; ``model.yaml`` is malformed or names an unknown
            kind or framework; a file does not parse (naming file and line); or the code
            constructs no model (exit code 2).
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise MlopsError(f"{folder}: no such model folder; pass a folder under models/")
    kind_override, framework_override = _manifest_override(folder)
    if kind_override and framework_override:
        return Classification(kind_override, framework_override, "model.yaml")

    units = read_code(folder)
    evidence: list[Evidence] = []
    for use in symbol_uses(units, is_known=lambda symbol: symbol_kind(symbol) is not None):
        if (found := symbol_kind(use.symbol)) is not None:
            evidence.append(Evidence(use.file, use.line, found[2], found[0], found[1], use.cell))
    evidence.sort(key=lambda e: (_ORDER[e.kind], e.file, e.cell or 0, e.line, e.symbol))

    if kind_override:
        framework = framework_override or _framework(evidence)
        return Classification(kind_override, framework, "model.yaml", tuple(evidence))
    if not evidence:
        why = (
            f"none of its {len(units)} Python files/notebooks constructs a convolution layer, "
            "a dense/linear layer or a regression estimator"
            if units
            else "it holds no .py file or .ipynb notebook"
        )
        raise MlopsError(f"no model found in {folder}: {why}; add the model code or set 'kind:' in {MANIFEST}")
    kind = evidence[0].kind
    return Classification(kind, framework_override or _framework(evidence), "code", tuple(evidence))


def _framework(evidence: list[Evidence]) -> str | None:
    """The most common framework behind the top kind's evidence; the first seen on a tie."""
    top = [e.framework for e in evidence if e.kind == evidence[0].kind] if evidence else []
    # Counter keeps first-seen order and most_common() is stable, which settles ties.
    return Counter(top).most_common(1)[0][0] if top else None


def _manifest_override(folder: Path) -> tuple[str | None, str | None]:
    """``kind:`` and ``framework:`` from ``model.yaml``, if any.

    Only these two keys are read: classify runs on folders whose manifest is still being
    written (no search space yet), so the full check in ``pipeline.config.manifest`` is for later.
    """
    path = folder / MANIFEST
    if not path.is_file():
        return None, None
    raw = load_yaml(path)
    if raw is None:
        return None, None
    if not isinstance(raw, dict):
        raise MlopsError(f"{path} must be a mapping (key: value lines), got {type(raw).__name__}")
    kind, framework = raw.get("kind"), raw.get("framework")
    if kind is not None and kind not in KINDS:
        raise MlopsError(f"{path}: kind {kind!r} is unknown; use one of {', '.join(KINDS)} or omit it")
    if framework is not None:
        framework = _FRAMEWORK_ALIASES.get(str(framework).lower(), str(framework).lower())
        if framework not in FRAMEWORKS:
            raise MlopsError(
                f"{path}: framework {raw['framework']!r} is unknown; use one of {', '.join(FRAMEWORKS)} or omit it"
            )
    return kind, framework
