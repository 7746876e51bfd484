"""Keep Python's cycle collector off what lives until exit: big imports and the heap at exit.

Why: a warm ``mlops tune`` (one trial, LFW-62) spent about 2 s of its 14 in full collections
while MLflow and TensorFlow were being imported (each full pass walks every live object: 0.1 M
after the CLI's imports, 0.7 M once Keras is in) and 1.3 to 1.8 s after its last line, at exit,
collecting modules the operating system frees anyway. Measured with a ``gc.callbacks`` timer;
``bench/README.md`` has the before and after.

So a command process (``enable_for_process``, called by ``pipeline.cli.main`` only) imports its
long-lived libraries with the collector paused and then freezes them (``gc.freeze``: later
collections skip them), and freezes the heap at exit. Freezing is for a process that ends with
the command: objects in reference cycles that are alive when frozen are never collected, which
a test session calling ``tune`` a thousand times must not accumulate, so elsewhere
``preload`` only imports.
"""

from __future__ import annotations

import atexit
import gc
import importlib
from collections.abc import Iterable

# What a model of each framework imports when its first trial starts; keys as
# ``pipeline.build.dockerfiles.normalize_framework`` names them (aliases and kind defaults resolved).
FRAMEWORK_MODULES = {
    "keras": ("keras",),
    "pytorch": ("torch",),
    "scikit-learn": ("sklearn",),
    "statsmodels": ("statsmodels",),
}

_process = {"enabled": False, "hooked": False}


def enable_for_process() -> None:
    """This process ends with the command: freeze what ``preload`` imports, and the heap at exit."""
    _process["enabled"] = True
    if not _process["hooked"]:
        _process["hooked"] = True
        atexit.register(gc.freeze)  # atexit runs before the final collection; registered first, it runs last


def disable_for_process() -> None:
    """This process goes on after the command (a test session that called ``main``): unfreeze, freeze no more.

    The exit hook stays registered: at the process's real exit a frozen heap is what we want.
    """
    _process["enabled"] = False
    gc.unfreeze()


def preload(modules: Iterable[str]) -> list[str]:
    """Import ``modules`` now, the collector paused while they load, frozen after (in a command process).

    A module that is not installed is left out: whoever needs it reports that in its own words.

    Returns:
        The modules imported.
    """
    loaded = []
    enabled = gc.isenabled()
    gc.disable()
    try:
        for name in modules:
            try:
                importlib.import_module(name)
            except ImportError:
                continue
            loaded.append(name)
    finally:
        if _process["enabled"]:
            gc.freeze()
        if enabled:
            gc.enable()
    return loaded


def framework_modules(framework: str | None) -> tuple[str, ...]:
    """The modules a model of ``framework`` (a ``normalize_framework`` name) imports; none for one not listed."""
    return FRAMEWORK_MODULES.get((framework or "").lower(), ())
