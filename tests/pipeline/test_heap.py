"""pipeline.heap: long-lived imports load with the collector paused; a command process freezes them."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline import heap


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path holding a module that records whether the collector ran while it loaded."""
    (tmp_path / "heap_probe.py").write_text("import gc\nCOLLECTOR_ON = gc.isenabled()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("heap_probe", None)


def test_preload_imports_with_the_collector_paused_and_restores_it(module_dir: Path) -> None:
    assert gc.isenabled()
    frozen = gc.get_freeze_count()

    loaded = heap.preload(["heap_probe", "no_such_module_here"])

    assert loaded == ["heap_probe"]  # a missing module is left to whoever imports it
    assert sys.modules["heap_probe"].COLLECTOR_ON is False
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen  # not a command process (a test session): nothing frozen


def test_preload_leaves_a_disabled_collector_disabled(module_dir: Path) -> None:
    gc.disable()
    try:
        heap.preload(["heap_probe"])
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_command_process_freezes_what_it_preloads_and_the_heap_at_exit(tmp_path: Path) -> None:
    (tmp_path / "heap_probe.py").write_text("VALUE = 1\n")
    script = textwrap.dedent(
        """
        import atexit, gc, sys
        from pipeline import heap
        # Registered before heap's, so it runs after it (atexit is last in, first out).
        atexit.register(lambda: print("at exit frozen", gc.get_freeze_count() > frozen_after_preload))
        heap.enable_for_process()
        heap.enable_for_process()  # idempotent: one exit hook
        before = gc.get_freeze_count()
        heap.preload(["heap_probe"])
        frozen_after_preload = gc.get_freeze_count()
        print("preload froze", frozen_after_preload > before)
        garbage = [[] for _ in range(1000)]
        """
    )
    root = Path(heap.__file__).resolve().parents[1]
    env = {"PYTHONPATH": f"{root}:{tmp_path}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)

    assert done.stdout.split("\n")[:2] == ["preload froze True", "at exit frozen True"]


@pytest.mark.parametrize(
    ("framework", "modules"),
    [("keras", ("keras",)), ("Scikit-Learn", ("sklearn",)), ("pytorch", ("torch",)), (None, ()), ("jax", ())],
)
def test_framework_modules(framework: str | None, modules: tuple[str, ...]) -> None:
    assert heap.framework_modules(framework) == modules


def test_a_test_session_that_ran_main_unfreezes(module_dir: Path) -> None:
    heap.enable_for_process()
    heap.preload(["heap_probe"])
    assert gc.get_freeze_count() > 0

    heap.disable_for_process()

    assert gc.get_freeze_count() == 0
    sys.modules.pop("heap_probe")
    heap.preload(["heap_probe"])
    assert gc.get_freeze_count() == 0


def test_the_search_preloads_what_the_image_builder_calls_the_framework() -> None:
    from types import SimpleNamespace

    from pipeline.tune.search import _framework

    assert _framework(SimpleNamespace(framework="tf.keras", kind="cnn")) == "keras"  # an alias
    assert _framework(SimpleNamespace(framework=None, kind="regression")) == "scikit-learn"  # the kind's default
    assert _framework(SimpleNamespace(framework="jax", kind="ann")) is None  # unknown: nothing preloaded
