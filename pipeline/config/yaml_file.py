"""Reading a YAML file whose errors name the file and the line to fix.

``model.yaml`` and ``mlops.yaml`` are written by hand; a tab or a missing colon should cost
one look at the named line, not a PyYAML traceback.

Example::

    raw = load_yaml(Path("models/face_vgg16/model.yaml"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import MlopsError


def load_yaml(path: Path) -> Any:
    """The parsed content of ``path`` (None for an empty file).

    Raises:
        MlopsError: ``path`` cannot be read, or is not valid YAML (naming the line).
    """
    try:
        text = path.read_text()
    except OSError as error:
        reason = error.strerror or error
        raise MlopsError(f"{path}: cannot be read ({reason}); check the path and its permissions") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise MlopsError(f"{path}:{where} is not valid YAML ({getattr(error, 'problem', None) or error})") from None
