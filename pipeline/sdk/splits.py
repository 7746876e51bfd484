"""Train / validation / test splits: the fractions checked at the edge, the split reproducible.

Every model splits the same way, so "the test split is touched once" means the same thing
for each: the test part is drawn first, then validation from the rest, both stratified.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import MlopsError
from pipeline.sdk.contract import Evaluation


def split_fractions(options: Mapping[str, Any], where: Path | str) -> tuple[float, float]:
    """``data.val_fraction`` and ``data.test_fraction`` (default 0.2 each), checked.

    Raises:
        MlopsError: naming ``where`` and the key when a fraction is not a number in (0, 1),
            or when the two leave less than 10% to train on.
    """
    values = []
    for key in ("val_fraction", "test_fraction"):
        raw = options.get(key, 0.2)
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise MlopsError(f"{where}: data.{key} must be a number between 0 and 1, not {raw!r}") from None
        if not 0.0 < value < 1.0:
            raise MlopsError(f"{where}: data.{key} = {value} must lie strictly between 0 and 1")
        values.append(value)
    if sum(values) >= 0.9:
        raise MlopsError(
            f"{where}: data.val_fraction + data.test_fraction = {sum(values):g} leaves too little to train on"
        )
    return values[0], values[1]


def three_way_split(
    count: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    stratify: Callable[[np.ndarray], np.ndarray | None],
) -> dict[str, np.ndarray]:
    """Sorted indices of ``train``, ``val`` and ``test``, reproducible by ``seed``.

    Args:
        count: how many examples.
        val_fraction, test_fraction: shares of all examples.
        seed: the study's seed.
        stratify: the strata of the given indices (labels, target bins), or ``None``.
    """
    from sklearn.model_selection import train_test_split

    index = np.arange(count)
    rest, test = train_test_split(index, test_size=test_fraction, stratify=stratify(index), random_state=seed)
    val_share = val_fraction / (1.0 - test_fraction)
    train, val = train_test_split(rest, test_size=val_share, stratify=stratify(rest), random_state=seed)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def example_ids(examples: np.ndarray | Sequence[bytes]) -> np.ndarray:
    """Each example's identity: 16 hex digits of SHA-256 over its bytes (an array's row, or a file's content).

    What ``Evaluation.ids`` and ``Evaluation.fit_ids`` hold; index it like the data
    (``ids[parts["test"]]``). Content, not position, names an example, so a reordered or
    grown data set still matches: the promotion gate scores an earlier model only on test
    examples whose identities it did not train on.
    """
    if isinstance(examples, np.ndarray):
        rows = np.ascontiguousarray(examples).reshape(len(examples), -1)
        found = [hashlib.sha256(row.tobytes()).hexdigest()[:16] for row in rows]
    else:
        found = [hashlib.sha256(bytes(item)).hexdigest()[:16] for item in examples]
    return np.array(found, dtype="<U16")


def with_example_ids(evaluation: Evaluation, ids: Mapping[str, np.ndarray]) -> Evaluation:
    """``evaluation`` with ``ids`` (the test split's) and ``fit_ids`` (train and validation) from per-split ids."""
    fit_ids = [*ids["train"].tolist(), *ids["val"].tolist()]
    return dataclasses.replace(evaluation, ids=ids["test"].tolist(), fit_ids=fit_ids)
