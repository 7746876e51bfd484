"""The registered face model as MLflow logs it: raw photos in, the person's name out.

MLflow stores this file with the model ("models from code") and runs it in the process that
loads the model (``mlflow models serve``, ``mlops predict``, the promotion gate), so it imports
only what the model's environment has: numpy, pandas, Pillow, Keras and MLflow, never
``pipeline``. The Keras model it wraps (VGG16 base + pooling + head) takes preprocessed
``input_size`` x ``input_size`` x 3 images; everything between a photo and that input is here.

Input: a DataFrame whose ``image`` column holds base64-encoded image files (what a JSON
request can carry) or raw bytes; in-process also numpy uint8 images (H x W grey, H x W x 1,
3 or 4; or a batch of them) through ``unwrap_python_model().predict(None, images)``.
Output: a DataFrame with ``name``, ``probability`` and ``top_k`` (JSON: the best ``top_k``
names with their probabilities); ``name`` is ``unknown`` when the best probability is below
the ``threshold`` param (default: the model config's ``threshold``).
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

UNKNOWN = "unknown"
IMAGE_COLUMN = "image"


class FaceNamer(PythonModel):
    """Names the person in each photo with the Keras classifier in the artifact ``keras_model``.

    The model config holds ``names`` (label order), ``input_size``, ``alignment`` (``none``:
    photos are not aligned before the model), ``top_k`` and the default ``threshold``.
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
        if self.alignment != "none":  # a later model version may align faces; this code cannot
            raise ValueError(f"alignment {self.alignment!r} is not supported by this serving code")
        self.keras_model = keras.models.load_model(context.artifacts["keras_model"], compile=False)

    def probabilities(self, images: Sequence[Any]) -> np.ndarray:
        """Class probabilities (N, len(names)) of raw images (encoded bytes or uint8 arrays)."""
        import keras

        batch = np.stack([to_rgb(image, self.size) for image in images]).astype(np.float32)
        return np.asarray(self.keras_model.predict(keras.applications.vgg16.preprocess_input(batch), verbose=0))

    # ``pd.DataFrame``: MLflow validates nothing by this hint (the signature does) and asks for no other.
    # In-process callers may also pass uint8 arrays or a list of images (see the module docstring).
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row per image: the name (or ``unknown``), its probability and the top-k as JSON."""
        threshold = float((params or {}).get("threshold", self.threshold))
        probabilities = self.probabilities(_images(model_input))
        k = min(self.top_k, len(self.names))
        rows = []
        for row in probabilities:
            best = np.argsort(row)[::-1][:k]
            top = [{"name": self.names[i], "probability": round(float(row[i]), 6)} for i in best]
            sure = float(row[best[0]]) >= threshold
            rows.append(
                {
                    "name": top[0]["name"] if sure else UNKNOWN,
                    "probability": float(row[best[0]]),
                    "top_k": json.dumps(top),
                }
            )
        return pd.DataFrame(rows, columns=["name", "probability", "top_k"])


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


def to_rgb(image: Any, size: int) -> np.ndarray:
    """One raw image (base64 text, encoded bytes or a uint8 array) as uint8 RGB ``size`` x ``size``.

    Resized as the training faces were (bilinear, no crop); grey is repeated into three
    channels and an alpha channel dropped.

    Raises:
        ValueError: data that is not an image (bad base64, an unreadable file, a float array).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(image, str):
        try:
            image = base64.b64decode(image, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("an image string must be a base64-encoded image file") from None
    if isinstance(image, (bytes, bytearray)):
        try:
            picture = ImageOps.exif_transpose(Image.open(io.BytesIO(image)))
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"not a readable image file ({error})") from None
    else:
        pixels = np.asarray(image)
        if pixels.dtype != np.uint8:
            raise ValueError(f"an image array must be uint8 (0-255), not {pixels.dtype}")
        if pixels.ndim == 3 and pixels.shape[-1] == 1:
            pixels = pixels[..., 0]
        if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[-1] not in (3, 4)):
            raise ValueError(f"an image array must be H x W, H x W x 1, 3 or 4; got shape {pixels.shape}")
        picture = Image.fromarray(pixels)
    picture = picture.convert("RGB")
    if picture.size != (size, size):
        picture = picture.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(picture, dtype=np.uint8)


set_model(FaceNamer())
