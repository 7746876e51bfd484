"""The registered face model as MLflow logs it: raw photos in, the person's name out.

MLflow stores this file with the model ("models from code") and runs it in the process that
loads the model (``mlflow models serve``, ``mlops predict``, the promotion gate), so it imports
only what the model's environment has: numpy, pandas, Pillow, Keras and MLflow, never
``pipeline``. The Keras model it wraps (VGG16 base + pooling + head) takes preprocessed
``input_size`` x ``input_size`` x 3 images; everything between a photo and that input is here.
A model trained on aligned faces (``data.align: mtcnn``) aligns each photo with the same
``face_aligner.py`` its training photos went through (logged beside this file as MLflow
``code_paths``); a photo in which no face is found answers ``unknown`` (``face``: ``not found``),
or is used whole when the model was trained so (``align_fallback: whole``).

Input: a DataFrame whose ``image`` column holds base64-encoded image files (what a JSON
request can carry) or raw bytes; in-process also numpy uint8 images (H x W grey, H x W x 1,
3 or 4; or a batch of them) through ``unwrap_python_model().predict(None, images)``.
Output: a DataFrame with ``name``, ``probability``, ``top_k`` (JSON: the best ``top_k``
names with their probabilities) and ``face`` (``aligned``, ``whole photo`` or ``not found``);
``name`` is ``unknown`` when the best probability is below the ``threshold`` param (default:
the model config's ``threshold``) or no face was found.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

try:  # imported as a part of the model package (training, the promotion gate's tests)
    from .face_aligner import WARP_SIDE, FaceAligner, decode_photo
except ImportError:  # loaded by MLflow from the model folder: its code_paths hold face_aligner.py
    from face_aligner import WARP_SIDE, FaceAligner, decode_photo  # type: ignore[import-not-found,no-redef]

UNKNOWN = "unknown"
IMAGE_COLUMN = "image"
ALIGNED, WHOLE, NOT_FOUND = "aligned", "whole photo", "not found"  # the ``face`` column


class FaceNamer(PythonModel):
    """Names the person in each photo with the Keras classifier in the artifact ``keras_model``.

    The model config holds ``names`` (label order), ``input_size``, ``alignment`` (``none``,
    or ``mtcnn``: each photo's face is found and aligned first), ``align_fallback`` (``skip``
    or ``whole``: what a photo without a face gets), ``top_k`` and the default ``threshold``.
    """

    def load_context(self, context: Any) -> None:
        """Load the Keras model and read the label names and input size from the model config."""
        import keras

        config = dict(context.model_config or {})
        self.names: list[str] = [str(name) for name in config["names"]]
        self.size = int(config["input_size"])
        self.alignment = str(config.get("alignment", "none"))
        self.top_k = int(config.get("top_k", 3))
        self.threshold = float(config.get("threshold", 0.0))
        self.fallback = str(config.get("align_fallback", "skip"))
        if self.alignment not in ("none", "mtcnn"):  # a later model version may align otherwise; this code cannot
            raise ValueError(f"alignment {self.alignment!r} is not supported by this serving code")
        self.aligner = FaceAligner(self.size) if self.alignment == "mtcnn" else None
        self.keras_model = keras.models.load_model(context.artifacts["keras_model"], compile=False)

    def faces(self, images: Sequence[Any]) -> tuple[np.ndarray, list[str]]:
        """The model's input faces (N, size, size, 3) uint8, and per image what was done: the ``face`` column.

        Exactly what training did to its photos: the same decoding and the same aligner, or the
        same resize of the whole photo; a face not found is left black (its answer is ``unknown``).
        """
        if self.aligner is None:
            return np.stack([to_rgb(image, self.size) for image in images]), [WHOLE] * len(images)
        crops, found = self.aligner.align([full_photo(image) for image in images])
        kinds = [ALIGNED if hit else NOT_FOUND for hit in found]
        if self.fallback == "whole":
            for index in np.flatnonzero(~found):
                crops[index], kinds[index] = to_rgb(images[index], self.size), WHOLE
        return crops, kinds

    def probabilities(self, images: Sequence[Any]) -> np.ndarray:
        """Class probabilities (N, len(names)) of raw images (encoded bytes or uint8 arrays).

        A photo in which no face was found gets a row of zeros.
        """
        return self._scored(images)[0]

    def _scored(self, images: Sequence[Any]) -> tuple[np.ndarray, list[str]]:
        import keras

        faces, kinds = self.faces(images)
        seen = np.array([kind != NOT_FOUND for kind in kinds])
        result = np.zeros((len(images), len(self.names)), np.float32)
        if seen.any():
            batch = keras.applications.vgg16.preprocess_input(faces[seen].astype(np.float32))
            result[seen] = self.keras_model.predict(batch, verbose=0)
        return result, kinds

    # ``pd.DataFrame``: MLflow validates nothing by this hint (the signature does) and asks for no other.
    # In-process callers may also pass uint8 arrays or a list of images (see the module docstring).
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row per image: the name (or ``unknown``), its probability, the top-k as JSON, and the face found."""
        threshold = float((params or {}).get("threshold", self.threshold))
        probabilities, kinds = self._scored(_images(model_input))
        k = min(self.top_k, len(self.names))
        rows = []
        for row, kind in zip(probabilities, kinds, strict=True):
            if kind == NOT_FOUND:  # nobody to name: no guess either
                rows.append({"name": UNKNOWN, "probability": 0.0, "top_k": "[]", "face": kind})
                continue
            best = np.argsort(row)[::-1][:k]
            top = [{"name": self.names[i], "probability": round(float(row[i]), 6)} for i in best]
            sure = float(row[best[0]]) >= threshold
            name = top[0]["name"] if sure else UNKNOWN
            rows.append({"name": name, "probability": float(row[best[0]]), "top_k": json.dumps(top), "face": kind})
        return pd.DataFrame(rows, columns=["name", "probability", "top_k", "face"])


def _images(model_input: Any) -> list[Any]:
    """The images of a request: a DataFrame's ``image`` column, a uint8 array (one or a batch), or a list."""
    if isinstance(model_input, pd.DataFrame):
        column = IMAGE_COLUMN if IMAGE_COLUMN in model_input.columns else model_input.columns[0]
        return list(model_input[column])
    if isinstance(model_input, np.ndarray):
        one = model_input.ndim == 2 or (model_input.ndim == 3 and model_input.shape[-1] in (1, 3, 4))
        return [model_input] if one else list(model_input)
    if isinstance(model_input, (str, bytes)):
        return [model_input]
    return list(model_input)


def full_photo(image: Any) -> np.ndarray:
    """One raw image as the aligner reads it: RGB uint8, upright, longest side at most ``WARP_SIDE``.

    Encoded files go through ``decode_photo``, as the training photos did.
    """
    from PIL import Image

    if isinstance(image, str):
        image = _base64_file(image)
    if isinstance(image, (bytes, bytearray)):
        try:
            return decode_photo(bytes(image))
        except OSError as error:  # Pillow's UnidentifiedImageError is one
            raise ValueError(f"not a readable image file ({error})") from None
    picture = Image.fromarray(_checked_array(image)).convert("RGB")
    picture.thumbnail((WARP_SIDE, WARP_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(picture, np.uint8)


def _base64_file(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("an image string must be a base64-encoded image file") from None


def _checked_array(image: Any) -> np.ndarray:
    """A uint8 image array as Pillow takes it (H x W, or H x W x 3 or 4)."""
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8:
        raise ValueError(f"an image array must be uint8 (0-255), not {pixels.dtype}")
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[-1] not in (3, 4)):
        raise ValueError(f"an image array must be H x W, H x W x 1, 3 or 4; got shape {pixels.shape}")
    return pixels


def to_rgb(image: Any, size: int) -> np.ndarray:
    """One raw image (base64 text, encoded bytes or a uint8 array) as uint8 RGB ``size`` x ``size``.

    Resized as the training faces were (bilinear, no crop); grey is repeated into three
    channels and an alpha channel dropped.

    Raises:
        ValueError: data that is not an image (bad base64, an unreadable file, a float array).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(image, str):
        image = _base64_file(image)
    if isinstance(image, (bytes, bytearray)):
        try:
            picture = ImageOps.exif_transpose(Image.open(io.BytesIO(image)))
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"not a readable image file ({error})") from None
    else:
        picture = Image.fromarray(_checked_array(image))
    picture = picture.convert("RGB")
    if picture.size != (size, size):
        picture = picture.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(picture, dtype=np.uint8)


set_model(FaceNamer())
