"""Face images for the classifier: a folder per person, or scikit-learn's Olivetti and LFW.

Every loader returns RGB ``uint8`` images at the configured size, integer labels and the
class names; ``split`` then divides them per person (stratified) with a fixed seed.

The folder loader treats as a bad image (skipped and counted, or one fatal line under
``data.on_bad_image: fail``) a file Pillow cannot decode and one whose header declares more
than ``data.max_image_pixels`` pixels: a decompression bomb is refused before it is decoded.
It reads upper-case extensions (``.JPG``), scales 16-bit images by their bit depth, and
warns when the same file content is filed under two people. It keeps each image's file bytes
(``Faces.sources``): ``align.py`` detects and aligns the face in the full photo, not in the resized one.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.sdk import FeatureCache, MlopsError, three_way_split

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # compared lower-cased: .JPG and .Png are read
# 40 M pixels: a 7000 x 5700 photo passes; Pillow's own warning starts at 89 M.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # a 16-bit PNG opens as one of these
_NAMED_PRUNED = 30  # pruned people named in the log line; the rest are counted
# The box the face-pretrained VGG16 weights were trained on (left, top, right, bottom of 250x250).
LFW_FACE_BOX = (57, 62, 193, 198)
# What scikit-learn's fetchers read under its data folder: their content keys our decoded copy.
OLIVETTI_FILE = "olivetti_py3.pkz"
LFW_FOLDER = Path("lfw_home") / "lfw_funneled"


@dataclass
class Faces:
    """Images (N, S, S, 3) uint8 RGB, labels (N,) int, and the class names by label."""

    images: np.ndarray
    labels: np.ndarray
    names: list[str]
    skipped: int = 0  # unreadable images (and decompression bombs) passed over
    duplicates: int = 0  # files whose content is also filed under another person
    sources: list[bytes] | None = None  # folder: each image's file bytes, what alignment detects faces in


def load_faces(options: dict[str, Any], cache: FeatureCache | None = None) -> Faces:
    """Load the data set ``options['source']`` names (``olivetti``, ``lfw`` or ``folder``).

    ``cache``: Olivetti and LFW as scikit-learn decodes them are kept there (``_decoded_once``).

    Raises:
        MlopsError: for an unknown source, a missing folder, unreadable data or too few images.
    """
    source = options.get("source", "olivetti")
    size = int(options.get("input_size", 64))
    if size < 32:
        raise MlopsError(f"data.input_size={size}: VGG16 needs at least 32 px; set data.input_size >= 32")
    home = _sklearn_home(options.get("data_home"))
    if source == "olivetti":
        faces = _decoded_once(cache, {"faces": source, "input_size": size}, home / OLIVETTI_FILE,
                              lambda: _olivetti(size, options.get("data_home")))  # fmt: skip
    elif source == "lfw":
        min_faces = int(options.get("min_faces_per_person", 20))
        parts = {"faces": source, "input_size": size, "min_faces_per_person": min_faces, "box": LFW_FACE_BOX}
        faces = _decoded_once(cache, parts, home / LFW_FOLDER, lambda: _lfw(size, options.get("data_home"), min_faces))
    elif source == "folder":
        if not options.get("path"):
            raise MlopsError("data.source=folder needs data.path: a folder with one sub-folder per person")
        limit = _max_image_pixels(options.get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS))
        faces = _folder(Path(options["path"]), size, options.get("on_bad_image", "skip"), limit)
    else:
        raise MlopsError(f"data.source={source!r} is unknown; use olivetti, lfw or folder")
    return prune_small_classes(faces, int(options.get("min_images_per_class", 5)))


def _sklearn_home(data_home: str | None) -> Path:
    """The folder scikit-learn's fetchers read (its ``get_data_home``, without importing it)."""
    return Path(data_home or os.environ.get("SCIKIT_LEARN_DATA") or "~/scikit_learn_data").expanduser()


def _decoded_once(cache: FeatureCache | None, parts: dict[str, Any], files: Path, load: Callable[[], Faces]) -> Faces:
    """Olivetti or LFW from ``cache`` while scikit-learn's files and decoders are unchanged.

    A later run reads our uint8 copy instead of importing ``sklearn.datasets`` and decompressing
    its float32 cache (LFW-62 at 96 px: 83 MB against 334 MB, about 3 s a run). The key names
    every file under ``files`` (size and modification time) and the scikit-learn, Pillow and
    numpy versions that decoded them; the entry is checked on every read like a feature entry.
    """
    if cache is None:
        return load()

    def decode() -> dict[str, np.ndarray]:
        faces = load()
        return {"images": faces.images, "labels": faces.labels, "names": np.array(faces.names, dtype=str)}

    size = int(parts["input_size"])
    key = {**parts, "files": _files_identity(files), "decoders": _decoder_versions()}
    expect = {"images": (None, size, size, 3), "labels": (None,), "names": (None,)}
    arrays, hit = cache.get_or_compute(key, decode, expect)
    faces = Faces(arrays["images"], arrays["labels"].astype(np.int64), [str(name) for name in arrays["names"]])
    if hit:
        cache.log(f"faces: {len(faces.labels)} images of {len(faces.names)} people from the cache ({files.name})")
    return faces


def _files_identity(path: Path) -> str:
    """SHA-256 over every file under ``path`` (or ``path`` itself): relative name, size, modification time."""
    digest = hashlib.sha256()
    found = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.is_file() else []
    for item in found:
        stat = item.stat()
        name = item.relative_to(path) if item != path else item.name
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest() if found else "missing"


def _decoder_versions() -> dict[str, str]:
    """The installed versions of what turns scikit-learn's files into our faces (no import of them)."""
    from importlib.metadata import version

    return {name: version(name) for name in ("scikit-learn", "pillow", "numpy")}


def prune_small_classes(faces: Faces, minimum: int) -> Faces:
    """Drop people with fewer than ``minimum`` images (they cannot be split three ways)."""
    counts = np.bincount(faces.labels, minlength=len(faces.names))
    keep = np.flatnonzero(counts >= minimum)
    if len(keep) < 2:
        raise MlopsError(
            f"only {len(keep)} class(es) have >= {minimum} images; add images or lower data.min_images_per_class"
        )
    pruned = [f"{faces.names[i]} ({counts[i]})" for i in np.flatnonzero(counts < minimum)]
    if pruned:
        more = len(pruned) - _NAMED_PRUNED
        named = ", ".join(pruned[:_NAMED_PRUNED]) + (f" and {more} more" if more > 0 else "")
        log.warning("pruned %d class(es) with fewer than %d images: %s", len(pruned), minimum, named)
    remap = np.full(len(faces.names), -1)
    remap[keep] = np.arange(len(keep))
    mask = remap[faces.labels] >= 0
    names = [faces.names[i] for i in keep]
    sources = None if faces.sources is None else [s for s, kept in zip(faces.sources, mask, strict=True) if kept]
    return Faces(faces.images[mask], remap[faces.labels[mask]], names, faces.skipped, faces.duplicates, sources)


def split(faces: Faces, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Indices of a train / validation / test split, stratified per person, reproducible by seed."""
    return three_way_split(len(faces.labels), val_fraction, test_fraction, seed, lambda index: faces.labels[index])


def _to_rgb_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Float [0, 1] or uint8, gray or colour, any size -> uint8 RGB at size x size."""
    if images.dtype != np.uint8:
        scaled = images * 255.0  # in place from here: LFW-62 at 96 px is 334 MB of float32
        np.rint(scaled, out=scaled)
        np.clip(scaled, 0, 255, out=scaled)
        images = scaled.astype(np.uint8)
    if images.shape[1:3] == (size, size):  # scikit-learn resized them already: no Pillow round trip
        if images.ndim == 3:
            return np.repeat(images[..., None], 3, axis=-1)  # gray -> RGB, as Pillow's convert does
        if images.ndim == 4 and images.shape[3] == 3:
            return np.ascontiguousarray(images)
    return _each_through_pillow(images, size)


def _each_through_pillow(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 images of any size and mode -> RGB at size x size, one Pillow conversion each."""
    from PIL import Image

    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, image in enumerate(images):
        picture = Image.fromarray(image).convert("RGB")
        if picture.size != (size, size):
            picture = picture.resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(picture)
    return out


def _olivetti(size: int, data_home: str | None) -> Faces:
    from sklearn.datasets import fetch_olivetti_faces

    try:
        bunch = fetch_olivetti_faces(data_home=data_home, download_if_missing=False)
    except OSError:
        raise MlopsError(
            "Olivetti faces not found in the scikit-learn data folder; set SCIKIT_LEARN_DATA to a folder "
            "holding olivetti_py3.pkz (or run once with a network)"
        ) from None
    names = [f"person_{i:02d}" for i in range(40)]
    return Faces(_to_rgb_uint8(bunch.images, size), bunch.target.astype(np.int64), names)


def _lfw(size: int, data_home: str | None, min_faces: int) -> Faces:
    from sklearn.datasets import fetch_lfw_people

    left, top, right, bottom = LFW_FACE_BOX
    try:
        people = fetch_lfw_people(
            data_home=data_home,
            download_if_missing=False,
            min_faces_per_person=min_faces,
            color=True,
            slice_=(slice(top, bottom), slice(left, right)),
            resize=size / (right - left),
        )
    except OSError:
        raise MlopsError(
            "LFW not found in the scikit-learn data folder; set SCIKIT_LEARN_DATA to a folder holding "
            "lfw_home/lfw_funneled (or run once with a network)"
        ) from None
    images = people.images / 255.0 if people.images.max() > 1.0 else people.images
    names = [str(name) for name in people.target_names]  # numpy strings do not go into YAML or JSON
    return Faces(_to_rgb_uint8(images, size), people.target.astype(np.int64), names)


def _max_image_pixels(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 1 or value != int(value):
        raise MlopsError(
            f"data.max_image_pixels={value!r}: give a whole number of pixels, e.g. {DEFAULT_MAX_IMAGE_PIXELS}"
        )
    return int(value)


class _BadImage(Exception):
    """An image the folder loader refuses; the message says why."""


def _folder(root: Path, size: int, on_bad_image: str, max_pixels: int) -> Faces:
    if not root.is_dir():
        raise MlopsError(f"data.path={root}: no such folder; point it at <root>/<person>/<image>.jpg")
    if on_bad_image not in ("skip", "fail"):
        raise MlopsError(f"data.on_bad_image={on_bad_image!r}: use skip or fail")
    people = sorted(p for p in root.iterdir() if p.is_dir())
    images: list[np.ndarray] = []
    labels: list[int] = []
    names: list[str] = []
    sources: list[bytes] = []
    skipped = duplicates = 0
    first_seen: dict[str, tuple[str, Path]] = {}  # content hash -> (person, file)
    with _pixel_limit(max_pixels):
        for person in people:
            files = sorted(f for f in person.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                continue
            label = len(names)
            names.append(person.name.replace("_", " "))
            for file in files:
                content = file.read_bytes()
                try:
                    images.append(_decode(content, size, max_pixels))
                except _BadImage as error:
                    if on_bad_image == "fail":
                        raise MlopsError(f"{file}: {error}; fix or remove it, or set data.on_bad_image=skip") from None
                    log.warning("skipping %s: %s", file, error)
                    skipped += 1
                    continue
                labels.append(label)
                sources.append(content)
                owner, earlier = first_seen.setdefault(hashlib.sha256(content).hexdigest(), (names[-1], file))
                if owner != names[-1]:
                    log.warning("the same image is filed under %r (%s) and %r (%s)", owner, earlier, names[-1], file)
                    duplicates += 1
    if not images:
        raise MlopsError(f"data.path={root}: no .jpg/.jpeg/.png images in <person>/ sub-folders")
    if skipped:
        log.warning("skipped %d unreadable image(s) under %s", skipped, root)
    if duplicates:
        log.warning("%d image(s) under %s are also filed under another person; remove the wrong copy", duplicates, root)
    return Faces(np.stack(images), np.asarray(labels, np.int64), names, skipped, duplicates, sources)


@contextmanager
def _pixel_limit(max_pixels: int) -> Iterator[None]:
    """Pillow's bomb check at ``max_pixels`` for this load only; its setting is restored after."""
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            # Pillow warns above the limit and raises above twice it: both are bombs here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def _decode(content: bytes, size: int, max_pixels: int) -> np.ndarray:
    """One image file's bytes -> uint8 RGB at size x size; the pixel limit is checked on the header."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(content)) as opened:  # reads the header only
            # Upright, as the camera meant it: the served model turns photos the same way (serving.to_rgb).
            picture: Image.Image = ImageOps.exif_transpose(opened)
            if picture.mode in _SIXTEEN_BIT_MODES:
                # convert("RGB") would clip every value above 255 to white.
                wide = np.asarray(picture, np.float64)
                picture = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8))
            rgb = picture.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _BadImage(
            f"more pixels than data.max_image_pixels={max_pixels}, a likely decompression bomb ({error})"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise _BadImage(f"unreadable image ({error})") from None
