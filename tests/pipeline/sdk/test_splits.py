from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import MlopsError
from pipeline.sdk.splits import split_fractions, three_way_split


def test_split_is_stratified_disjoint_and_reproducible() -> None:
    labels = np.repeat(np.arange(5), 20)
    first = three_way_split(100, 0.2, 0.2, 7, lambda index: labels[index])
    again = three_way_split(100, 0.2, 0.2, 7, lambda index: labels[index])
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert [len(first[k]) for k in ("train", "val", "test")] == [60, 20, 20]
    assert sorted(np.concatenate(list(first.values())).tolist()) == list(range(100))
    for part in first.values():
        assert np.bincount(labels[part]).min() == np.bincount(labels[part]).max()  # every class alike


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"val_fraction": "a lot"}, "data.val_fraction must be a number"),
        ({"test_fraction": 1.5}, "must lie strictly between 0 and 1"),
        ({"val_fraction": 0.5, "test_fraction": 0.45}, "leaves too little to train on"),
    ],
)
def test_bad_fractions_name_the_file_and_key(options: dict, message: str) -> None:
    with pytest.raises(MlopsError, match=message) as error:
        split_fractions(options, "models/x/model.yaml")
    assert str(error.value).startswith("models/x/model.yaml: ")
    assert split_fractions({}, "x") == (0.2, 0.2)
