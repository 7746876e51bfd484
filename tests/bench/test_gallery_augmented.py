"""The augmented gallery: k identities per person, variant 0 the real photos, odd variants mirrored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bench.gallery_augmented import MIN_PHOTOS, write_gallery


def _people(root: Path) -> None:
    rng = np.random.default_rng(0)
    for person, photos in (("Ann", MIN_PHOTOS), ("Bob", MIN_PHOTOS), ("Few", MIN_PHOTOS - 1)):
        (root / person).mkdir(parents=True)
        for number in range(photos):
            left = np.full((32, 16, 3), 40, np.uint8)  # dark left half, bright right half: a mirror shows
            right = np.full((32, 16, 3), 200, np.uint8)
            pixels = np.concatenate([left, right], axis=1) + rng.integers(0, 5, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / person / f"{person}_{number:04d}.jpg", quality=95)


def _photo(path: Path) -> np.ndarray:
    with Image.open(path) as opened:
        return np.asarray(opened.convert("RGB"), np.float32)


def test_each_person_becomes_k_identities_and_people_with_few_photos_are_left_out(tmp_path: Path) -> None:
    _people(tmp_path / "raw")
    people, photos = write_gallery(tmp_path / "raw", 2, tmp_path / "out")
    assert (people, photos) == (4, 4 * MIN_PHOTOS)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Ann__v0", "Ann__v1", "Bob__v0", "Bob__v1"]
    original = _photo(tmp_path / "raw" / "Ann" / "Ann_0000.jpg")
    same = _photo(tmp_path / "out" / "Ann__v0" / "Ann_0000.jpg")
    mirrored = _photo(tmp_path / "out" / "Ann__v1" / "Ann_0000.jpg")
    assert np.abs(same - original).mean() < 3  # variant 0: the real photo (re-encoded)
    assert mirrored[:, :16].mean() > 100 > mirrored[:, 16:].mean()  # variant 1: bright half now on the left
