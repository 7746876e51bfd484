"""Loading a model folder: pushed code that cannot be imported is bad input, named in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ExitCode, MlopsError
from pipeline.sdk.contract import load_plugin
from tests.pipeline.stub_model import write_stub


def test_a_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    folder = write_stub(tmp_path / "stub")
    model = folder / "model.py"
    lines = model.read_text().count("\n")
    model.write_text(model.read_text() + "\ndef broken(:\n    pass\n")
    with pytest.raises(MlopsError, match=rf"model.py:{lines + 2}: SyntaxError: .*fix the model's code") as caught:
        load_plugin(folder)
    assert caught.value.exit_code == ExitCode.USAGE  # final: the supervisor does not restart it
    assert "\n" not in str(caught.value)


def test_a_missing_package_says_what_to_add(tmp_path: Path) -> None:
    folder = write_stub(tmp_path / "stub2", name="stub2")
    model = folder / "model.py"
    model.write_text("import no_such_package_xyz\n" + model.read_text())
    with pytest.raises(MlopsError, match="ModuleNotFoundError.*add no_such_package_xyz to the model's requirements"):
        load_plugin(folder)
