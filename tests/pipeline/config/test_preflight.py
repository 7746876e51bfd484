"""Bad configuration stops ``mlops tune`` before any work: one ``error:`` line, exit 2, nothing written.

Each case runs the real CLI entry point (``pipeline.cli.main``) in-process, with the working
directory, run folder and cache inside ``tmp_path``; that the folder holds exactly what the
test put there afterwards proves no study database, MLflow store or run folder was made.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No developer ``MLOPS_*``/``MLFLOW_*`` settings; an empty repo config; cwd = ``tmp_path``."""
    for name in list(os.environ):
        if name.startswith(("MLOPS_", "MLFLOW_")):
            monkeypatch.delenv(name)
    (tmp_path / "mlops.yaml").write_text("{}\n")
    monkeypatch.setenv("MLOPS_CONFIG", str(tmp_path / "mlops.yaml"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def model_copy(tmp_path: Path, name: str, edit: tuple[str, str] | None = None, append: str = "") -> Path:
    """A copy of a shipped model under ``tmp_path/models``, its model.yaml edited."""
    folder = tmp_path / "models" / name
    shutil.copytree(ROOT / "models" / name, folder, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = folder / "model.yaml"
    text = manifest.read_text()
    if edit is not None:
        assert edit[0] in text, edit
        text = text.replace(*edit, 1)
    manifest.write_text(text + append)
    return folder


def files(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def tune_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, model: Path, *args: str
) -> str:
    """Run ``mlops tune`` in-process; assert exit 2, one ``error:`` line and no new file; return the line."""
    before = files(tmp_path)
    argv = ["mlops", "tune", str(model), "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")]
    monkeypatch.setattr(sys, "argv", [*argv, *args])
    with pytest.raises(SystemExit) as exited:
        main()
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert files(tmp_path) == before  # no optuna.db, mlruns/, runs/ or cache/
    return lines[0]


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (
            ["--goal", "-1"],
            {},
            "setting goal=-1 (from --goal): val_accuracy is a fraction, so the goal must lie in (0, 1]",
        ),
        (["--goal", "90"], {}, "setting goal=90 (from --goal): val_accuracy is a fraction"),
        ([], {"MLOPS_GOAL": "0"}, "setting goal=0 (from MLOPS_GOAL): val_accuracy is a fraction"),
        (["--goal", "nan"], {}, "setting goal=nan (from --goal): goal nan is not a finite number"),
        (["--timeout", "-5"], {}, "setting timeout=-5.0 (from --timeout) must be more than 0 seconds"),
        (["--timeout", "0"], {}, "setting timeout=0.0 (from --timeout) must be more than 0 seconds"),
        (["--max-trials", "0"], {}, "setting max_trials=0 (from --max-trials) must be at least 1"),
        (["--workers", "0"], {}, "setting workers=0 (from --workers) must be at least 1 (this process)"),
        ([], {"MLOPS_MAX_RETRY": "-1"}, "setting max_retry=-1 (from MLOPS_MAX_RETRY) must be 0 or more"),
        (
            [],
            {"MLOPS_CHECKPOINT_SECONDS": "-1"},
            "setting checkpoint_seconds=-1.0 (from MLOPS_CHECKPOINT_SECONDS) must be 0 (after every epoch) or more",
        ),
        ([], {"MLOPS_HEARTBEAT_INTERVAL": "0"}, "setting heartbeat_interval=0 (from MLOPS_HEARTBEAT_INTERVAL)"),
        (
            ["--set", "data.sorce=lfw"],
            {},
            "--set: data.sorce is not an option this model reads; allowed: scaling, test_fraction, val_fraction",
        ),
        (["--set", "params.patience=soon"], {}, "--set: params.patience='soon' must be a whole number (int)"),
        (["--set", "data.scaling=log"], {}, "--set: data.scaling='log' is unknown; use one of standard, minmax, none"),
        (["--set", "data.val_fraction=1.5"], {}, "--set: data.val_fraction=1.5 must be < 1"),
        (["--promote-margin", "-0.1"], {}, "setting promote_margin=-0.1 (from --promote-margin) must be 0 or more"),
        (
            ["--promote-margin", "1"],
            {},
            "setting promote_margin=1 (from --promote-margin): val_accuracy is a fraction, so no model can beat",
        ),
        ([], {"MLOPS_PROMOTE_MARGIN": "a bit"}, "setting 'promote_margin' = 'a bit' is not a valid float"),
    ],
)
def test_bad_setting_is_refused_before_any_work(
    clean_env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    expected: str,
) -> None:
    model = model_copy(clean_env, "digits_mlp")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    line = tune_fails(clean_env, capsys, monkeypatch, model, *args)
    assert expected in line


def test_error_goal_must_be_positive(
    clean_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = model_copy(clean_env, "diabetes_regression")
    line = tune_fails(clean_env, capsys, monkeypatch, model, "--goal", "0")
    assert "setting goal=0 (from --goal): val_rmse is an error (>= 0, minimized), so the goal must be > 0" in line


@pytest.mark.parametrize(
    ("model", "edit", "append", "expected"),
    [
        ("face_vgg16", ("input_size: 64", "input_size: big"), "", "data.input_size='big' must be a whole number"),
        ("face_vgg16", ("source: olivetti", "source: mnist"), "", "data.source='mnist' is unknown; use one of"),
        ("face_vgg16", ("weights: imagenet", "weights: 3"), "", "params.weights=3 must be a string"),
        ("digits_mlp", ("scaling: standard", "scalling: standard"), "", "data.scalling is not an option this model"),
        ("digits_mlp", ("target: 0.97", "target: 1.5"), "", "goal: val_accuracy is a fraction, so the goal must lie"),
        ("digits_mlp", ("target: 0.97", "target: -1"), "", "goal: val_accuracy is a fraction"),
        ("digits_mlp", ("direction: maximize", "direction: minimize"), "", "goal.direction must be maximize"),
        ("digits_mlp", ("metric: val_accuracy", "metric: val_loss"), "", "val_loss is an error"),
        (
            "digits_mlp",
            ("metric: val_accuracy\n  direction: maximize\n  target: 0.97", "metric: val_auc"),
            "",
            "goal.metric 'val_auc' is not a metric this model reports; use one of val_accuracy",
        ),
        (
            "digits_mlp",
            ("target: 0.97", "target: 0.97\n  confidence: maybe"),
            "",
            "goal.confidence must be true or false",
        ),
        ("diabetes_regression", ("direction: minimize", "direction: maximize"), "", "must be minimize"),
        (
            "digits_mlp",
            ("[adam, adamw, rmsprop, sgd]}\n  learning", "[adam, adagrad]}\n  learning"),
            "",
            "search_space.optimizer.choices: 'adagrad' is unknown; use one of adam, adamw, rmsprop, sgd",
        ),
        (
            "digits_mlp",
            ("choices: [relu, gelu, elu, tanh]", "choices: [relu, relux]"),
            "",
            "search_space.activation.choices: 'relux' is unknown",
        ),
        (
            "digits_mlp",
            ("learning_rate: {type: float, low", "learnin_rate: {type: float, low"),
            "",
            "search_space.learnin_rate: the model reads no hyperparameter 'learnin_rate'",
        ),
        (
            "digits_mlp",
            ("dropout: {type: float, low: 0.0, high: 0.5}", "dropout: {type: float, low: 0.0, high: 1.5}"),
            "",
            "search_space.dropout.high: 1.5 must be < 1",
        ),
        (
            "digits_mlp",
            ("epochs: {type: int, low: 10, high: 80}", "epochs: {type: int, low: 10, high: 80.5}"),
            "",
            "search_space.epochs: an int range needs whole-number low and high",
        ),
        ("digits_mlp", ("high: 80}", "high: 80, step: abc}"), "", "search_space.epochs.step must be a positive number"),
        ("digits_mlp", None, "entrypoint: ../outside.py\n", "entrypoint '../outside.py' must be a file inside"),
        ("digits_mlp", None, "entrypoint: /etc/passwd\n", "entrypoint '/etc/passwd' must be a file inside"),
        ("digits_mlp", None, "entrypoint: 7\n", "entrypoint must be a string, not 7"),
    ],
)
def test_bad_model_yaml_is_refused_before_any_work(
    clean_env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    model: str,
    edit: tuple[str, str] | None,
    append: str,
    expected: str,
) -> None:
    folder = model_copy(clean_env, model, edit, append)
    line = tune_fails(clean_env, capsys, monkeypatch, folder)
    assert expected in line
    assert f"{folder / 'model.yaml'}:" in line  # the message names the file


def test_entrypoint_link_out_of_the_folder_is_refused(
    clean_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = model_copy(clean_env, "digits_mlp", append="entrypoint: linked.py\n")
    outside = clean_env / "elsewhere.py"
    outside.write_text("raise SystemExit('imported code from outside the model folder')\n")
    (folder / "linked.py").symlink_to(outside)
    line = tune_fails(clean_env, capsys, monkeypatch, folder)
    assert f"entrypoint 'linked.py' is a link to {outside}, outside the model folder" in line


def test_entrypoint_link_inside_the_folder_is_fine(tmp_path: Path) -> None:
    from pipeline.config.manifest import load_manifest

    folder = model_copy(tmp_path, "digits_mlp", append="entrypoint: entry.py\n")
    (folder / "entry.py").symlink_to(folder / "model.py")
    assert load_manifest(folder).entry == (folder / "model.py").resolve()


@pytest.mark.parametrize("setting", ["runs-dir", "cache-dir"])
def test_folder_that_cannot_be_created_is_refused(
    clean_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    model = model_copy(clean_env, "digits_mlp")
    blocker = clean_env / "a-file"
    blocker.write_text("a file, not a folder\n")
    line = tune_fails(clean_env, capsys, monkeypatch, model, f"--{setting}", str(blocker / "sub"))
    name = setting.replace("-", "_")
    assert f"setting {name}={blocker / 'sub'} (from --{setting}) cannot be created or written" in line


def test_real_command_refuses_a_negative_goal(tmp_path: Path) -> None:
    """The installed ``mlops`` binary: ``--goal -1`` must never "meet the goal" and register a champion."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_"))}
    (tmp_path / "mlops.yaml").write_text("{}\n")
    env["MLOPS_CONFIG"] = str(tmp_path / "mlops.yaml")
    env["MLOPS_CACHE_DIR"] = str(tmp_path / "cache")  # the probe of the default would touch ~/.cache
    model = model_copy(tmp_path, "digits_mlp")
    before = files(tmp_path)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mlops"), "tune", str(model), "--goal", "-1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        "error: setting goal=-1 (from --goal): val_accuracy is a fraction, so the goal must lie in (0, 1], "
        "not -1; e.g. 0.9"
    ]
    assert files(tmp_path) == before


def test_bad_tune_default_in_model_yaml_names_the_file(
    clean_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = model_copy(clean_env, "digits_mlp", ("timeout: 600", "timeout: -600"))
    line = tune_fails(clean_env, capsys, monkeypatch, folder)
    assert line == (
        f"error: setting timeout=-600.0 (from {folder / 'model.yaml'} tune.timeout) must be more than 0 seconds, "
        "or none for no limit"
    )


@pytest.mark.parametrize(
    ("weights", "refused"),
    [("/no/such.h5", True), ("imagenet", False), ("none", False)],
)
def test_a_weights_path_must_name_a_file(
    clean_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, weights: str, refused: bool
) -> None:
    """``--weights PATH`` naming nothing is refused before the data or VGG16 is loaded; the keywords pass."""
    from pipeline.config.manifest import load_manifest
    from pipeline.config.preflight import check_run
    from pipeline.config.settings import TuneSettings

    model = model_copy(clean_env, "face_vgg16")
    if refused:
        line = tune_fails(clean_env, capsys, monkeypatch, model, "--weights", weights)
        assert line == (
            "error: --weights: params.weights='/no/such.h5' names no file; pass imagenet or none, "
            "or the path of an existing file"
        )
    else:
        settings = TuneSettings(weights=weights, runs_dir=clean_env / "runs", cache_dir=clean_env / "cache")
        check_run(load_manifest(model), settings)  # no error
