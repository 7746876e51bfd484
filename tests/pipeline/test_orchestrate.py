"""``mlops run`` for real: a Git repository, a push, a real SMTP server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import git
import pytest

from pipeline.config.environment import Environment
from pipeline.orchestrate import PushOptions, run_push
from tests.cli import MLOPS
from tests.conftest import FACE_WEIGHTS, ROOT
from tests.pipeline.stub_model import environment as stub_environment
from tests.pipeline.stub_model import write_stub

RUN = [*MLOPS, "run"]  # the real CLI, in this Python
FACE_FLAGS = ["--weights", str(FACE_WEIGHTS), "--set", "data.input_size=32"]
EASY_GOAL = ["--goal", "1000"]  # val_rmse <= 1000: any diabetes trial meets it, so the run exits 0


def make_repo(tmp_path: Path, models: list[str]) -> tuple[git.Repo, str]:
    """A repository holding copies of the shipped models; returns it and its first commit."""
    repo_dir = tmp_path / "repo"
    for name in models:
        shutil.copytree(
            ROOT / "models" / name, repo_dir / "models" / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    (repo_dir / "README.md").write_text("models\n")
    repo = git.Repo.init(repo_dir)
    repo.git.add(A=True)
    repo.index.commit("first")
    return repo, repo.head.commit.hexsha


def touch(repo: git.Repo, model: str) -> str:
    manifest = Path(repo.working_dir) / "models" / model / "model.yaml"
    manifest.write_text(manifest.read_text().replace("description:", "description: (changed)", 1))
    repo.git.add(A=True)
    repo.index.commit(f"change {model}")
    return repo.head.commit.hexsha


def run_env(offline_env: dict, tmp_path: Path, smtp_port: int) -> dict[str, str]:
    return {
        **os.environ,
        **offline_env,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONUNBUFFERED": "1",
        "MLOPS_SMTP_HOST": "127.0.0.1",
        "MLOPS_SMTP_PORT": str(smtp_port),
        "MLOPS_SMTP_SECURITY": "none",
        "MLOPS_MAIL_FROM": "ci@example.org",
        "MLOPS_MAIL_TO": "team@example.org",
        "MLOPS_CACHE_DIR": str(tmp_path / "cache"),
    }


@pytest.mark.slow  # the real models; test_push_in_process_tunes_only_the_changed_model_and_keeps_its_mail covers it
def test_push_tunes_only_the_changed_model_and_mails_once(offline_env: dict, tmp_path: Path, smtp_server) -> None:  # noqa: F811
    controller, inbox = smtp_server()
    repo, first = make_repo(tmp_path, ["face_vgg16", "diabetes_regression"])
    second = touch(repo, "diabetes_regression")
    result = subprocess.run(
        [
            *RUN,
            "--before",
            first,
            "--after",
            second,
            "--runner",
            "local",
            "--summary",
            str(tmp_path / "summary.md"),
            "--max-trials",
            "3",
            *EASY_GOAL,
            *FACE_FLAGS,
        ],
        cwd=repo.working_dir,
        env=run_env(offline_env, tmp_path, controller.port),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    runs = Path(repo.working_dir) / "mlops-runs"
    assert (runs / "diabetes_regression" / "summary.json").exists()
    assert not (runs / "face_vgg16").exists()  # unchanged: not tuned
    assert "classify: regression (scikit-learn)" in result.stdout

    assert len(inbox.envelopes) == 1
    mail = inbox.message()
    assert "diabetes_regression" in mail["Subject"]
    text = mail.get_body(("plain",)).get_content()
    summary = json.loads((runs / "diabetes_regression" / "summary.json").read_text())
    assert f"{summary['best']['value']:.4g}"[:4] in text  # the figure is in the mail
    attachments = [part.get_filename() for part in mail.iter_attachments()]
    assert any(name and name.endswith(".png") for name in attachments)
    markdown = (tmp_path / "summary.md").read_text()
    assert "diabetes_regression" in markdown and "face_vgg16" not in markdown


@pytest.mark.slow  # detect/test_changes.py test_first_push_counts_every_model_present covers it
def test_first_push_with_nothing_before_tunes_every_model(offline_env: dict, tmp_path: Path) -> None:
    repo, first = make_repo(tmp_path, ["diabetes_regression"])
    result = subprocess.run(
        [
            *RUN,
            "--before",
            "0" * 40,
            "--after",
            first,
            "--runner",
            "local",
            "--no-notify",
            "--max-trials",
            "2",
            *EASY_GOAL,
        ],
        cwd=repo.working_dir,
        env={**os.environ, **offline_env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (Path(repo.working_dir) / "mlops-summary.md").exists()


def _tune_child(parent: int) -> int | None:
    """The PID of ``mlops tune`` started by the ``mlops run`` process ``parent``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"tune" in cmdline:
            return int(entry.name)
    return None


@pytest.mark.slow  # the face model; execute/test_supervisor.py restarts a killed stand-in in seconds
def test_killed_tune_is_restarted_and_finishes_the_study(offline_env: dict, tmp_path: Path, smtp_server) -> None:  # noqa: F811
    controller, inbox = smtp_server()
    repo, first = make_repo(tmp_path, ["face_vgg16"])
    second = touch(repo, "face_vgg16")
    process = subprocess.Popen(
        [
            *RUN,
            "--before",
            first,
            "--after",
            second,
            "--runner",
            "local",
            "--restart-backoff",
            "0.5",
            "--max-trials",
            "3",
            "--goal",
            "1",
            "--goal-confidence",  # unreachable: a Wilson lower bound stays below 1
            "--pruner",
            "none",
            "--set",
            "params.patience=null",
            *FACE_FLAGS,
        ],
        cwd=repo.working_dir,
        env=run_env(offline_env, tmp_path, controller.port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    checkpoints = Path(repo.working_dir) / "mlops-runs" / "face_vgg16"
    deadline, killed = time.monotonic() + 300, False
    while not killed and time.monotonic() < deadline and process.poll() is None:
        if list(checkpoints.glob("*/checkpoints/trial-000[1-9]/latest.npz")):
            child = _tune_child(process.pid)
            if child:
                os.kill(child, signal.SIGKILL)
                killed = True
        time.sleep(0.01)
    output, _ = process.communicate(timeout=600)
    assert killed, output
    assert process.returncode == 3, output  # unreachable goal: finished, honestly not met
    assert "supervisor: tune killed by SIGKILL (exit 137); restart 1/3" in output
    summary = json.loads((checkpoints / "summary.json").read_text())
    assert summary["restarts"] == 1
    assert summary["trials_complete"] == 3  # nothing lost: the budget was finished after the restart
    subjects = [inbox.message(i)["Subject"] for i in range(len(inbox.envelopes))]
    assert len(subjects) == 2 and "restart" in subjects[0].lower()

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{Path(repo.working_dir) / 'mlruns' / 'mlflow.db'}")
    parent = client.get_run(summary["mlflow_parent_run_id"])
    assert parent.data.tags["mlops.restart.1"] == "killed by SIGKILL (exit 137)"
    assert parent.data.metrics["restarts"] == 1


@pytest.mark.slow  # test_push_in_process_tunes_only_the_changed_model_and_keeps_its_mail covers it
def test_mail_that_cannot_be_sent_is_kept_and_sent_by_the_next_run(
    offline_env: dict,
    tmp_path: Path,
    smtp_server,  # noqa: F811
) -> None:
    from tests.pipeline.smtp import free_port

    port = free_port()  # nothing listens there yet
    repo, first = make_repo(tmp_path, ["diabetes_regression"])
    second = touch(repo, "diabetes_regression")
    env = {**run_env(offline_env, tmp_path, port), "MLOPS_SMTP_HOST": "127.0.0.1"}
    args = [*RUN, "--runner", "local", "--max-trials", "1", *EASY_GOAL]
    down = subprocess.run(
        [*args, "--before", first, "--after", second],
        cwd=repo.working_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert down.returncode == 0, down.stdout + down.stderr  # a mail failure never fails the result
    outbox = Path(repo.working_dir) / "mlops-runs" / "diabetes_regression" / "outbox"
    assert list(outbox.glob("*.eml"))

    controller, inbox = smtp_server(port=port)
    third = touch(repo, "diabetes_regression")
    up = subprocess.run(
        [*args, "--before", second, "--after", third],
        cwd=repo.working_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    assert "delivered 1 queued message(s)" in up.stdout
    assert len(inbox.envelopes) == 2  # the queued one and this run's
    assert not list(outbox.glob("*.eml"))


def test_cleartext_smtp_login_is_refused_before_detect_and_tune(offline_env: dict, tmp_path: Path) -> None:
    repo, first = make_repo(tmp_path, ["diabetes_regression"])
    env = {**run_env(offline_env, tmp_path, 2525), "MLOPS_SMTP_USER": "ci", "MLOPS_SMTP_PASSWORD": "pw-Zq81"}
    # an unknown commit: had detect run first, the error would name it instead
    result = subprocess.run(
        [*RUN, "--before", "f" * 40, "--after", first, "--runner", "local"],
        cwd=repo.working_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: MLOPS_SMTP_SECURITY=none would send the SMTP password in cleartext")
    assert result.stderr.count("\n") == 1 and "pw-Zq81" not in result.stderr
    assert not (Path(repo.working_dir) / "mlops-runs").exists()


@pytest.mark.slow
def test_queued_mail_is_sent_by_mlops_notify_alone(offline_env: dict, tmp_path: Path, smtp_server) -> None:  # noqa: F811
    controller, inbox = smtp_server()
    repo, first = make_repo(tmp_path, ["diabetes_regression"])
    second = touch(repo, "diabetes_regression")
    env = run_env(offline_env, tmp_path, controller.port)  # host and addresses, no login
    queued = subprocess.run(
        [*RUN, "--before", first, "--after", second, "--runner", "local", "--max-trials", "1", *EASY_GOAL]
        + ["--notify", "queue"],
        cwd=repo.working_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert queued.returncode == 0, queued.stdout + queued.stderr
    assert inbox.envelopes == []  # nothing sent by the step that runs model code
    outbox = Path(repo.working_dir) / "mlops-runs" / "diabetes_regression" / "outbox"
    assert len(list(outbox.glob("*.eml"))) == 1 and "notify: result e-mail queued as" in queued.stdout

    sent = subprocess.run(
        [*MLOPS, "notify"],
        cwd=repo.working_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert sent.stdout.splitlines() == ["notify: mlops-runs/diabetes_regression/outbox: 1 sent, 0 still queued"]
    assert len(inbox.envelopes) == 1 and "diabetes_regression" in inbox.message()["Subject"]
    assert not list(outbox.glob("*.eml"))


def test_a_push_wide_set_reaches_only_the_models_that_read_it() -> None:
    """``--set data.input_size=32`` is for the face model; the regression model is started without it."""
    from pipeline.config.manifest import load_manifest
    from pipeline.orchestrate import _tune_args_for

    lines: list[str] = []
    args = ["--max-trials", "2", "--set", "data.input_size=32", "--set=data.val_fraction=0.2"]
    face = _tune_args_for(load_manifest(ROOT / "models" / "face_vgg16"), args, lines.append)
    diabetes = _tune_args_for(load_manifest(ROOT / "models" / "diabetes_regression"), args, lines.append)
    assert face == ["--max-trials", "2", "--set", "data.input_size=32", "--set", "data.val_fraction=0.2"]
    assert diabetes == ["--max-trials", "2", "--set", "data.val_fraction=0.2"]
    assert lines == ["--set data.input_size=32: diabetes_regression has no option data.input_size; not passed to it"]


# --- ``run_push`` in this process: the stub model (no TensorFlow), the environment given ------


def stub_repo(tmp_path: Path, names: list[str]) -> tuple[git.Repo, str]:
    """A repository of stub models whose goal any trial meets; returns it and its first commit."""
    repo_dir = tmp_path / "repo"
    for name in names:
        write_stub(repo_dir / "models" / name, target=0.1, name=name)
    repo = git.Repo.init(repo_dir)
    repo.git.add(A=True)
    repo.index.commit("first")
    return repo, repo.head.commit.hexsha


def push_env(tmp_path: Path, smtp_port: int) -> Environment:
    """The snapshot ``mlops run`` would take: SMTP settings in it, not in this process."""
    return Environment(
        {
            **stub_environment(),
            "MLOPS_SMTP_HOST": "127.0.0.1",
            "MLOPS_SMTP_PORT": str(smtp_port),
            "MLOPS_SMTP_SECURITY": "none",
            "MLOPS_MAIL_FROM": "ci@example.org",
            "MLOPS_MAIL_TO": "team@example.org",
            "MLOPS_CACHE_DIR": str(tmp_path / "cache"),
        }
    )


def push(repo: git.Repo, before: str | None, after: str, env: Environment, tmp_path: Path) -> tuple[int, list[str]]:
    lines: list[str] = []
    options = PushOptions(
        repo=Path(repo.working_dir),
        before=before,
        after=after,
        runner="local",
        tune_args=["--max-trials", "2"],
        summary_path=tmp_path / "summary.md",
        restart_backoff=0.1,
        environment=env,
    )
    return run_push(options, log=lines.append), lines


def change_stub(repo: git.Repo, model: str) -> str:
    manifest = Path(repo.working_dir) / "models" / model / "model.yaml"
    manifest.write_text(manifest.read_text() + "# changed\n")
    repo.git.add(A=True)
    repo.index.commit(f"change {model}")
    return repo.head.commit.hexsha


def test_push_in_process_tunes_only_the_changed_model_and_keeps_its_mail(tmp_path: Path, smtp_server) -> None:  # noqa: F811
    """One tune: only the changed model; its mail, undeliverable now, goes out with the next run."""
    from tests.pipeline.smtp import free_port

    port = free_port()  # nothing listens there yet
    repo, first = stub_repo(tmp_path, ["stub_a", "stub_b"])
    second = change_stub(repo, "stub_b")
    env = push_env(tmp_path, port)  # the SMTP settings are in the snapshot only
    code, lines = push(repo, first, second, env, tmp_path)
    assert code == 0, lines  # a mail failure never fails the result
    runs = Path(repo.working_dir) / "mlops-runs"
    assert (runs / "stub_b" / "summary.json").exists() and not (runs / "stub_a").exists()
    assert "classify: regression (scikit-learn)" in lines
    markdown = (tmp_path / "summary.md").read_text()
    assert "stub_b" in markdown and "stub_a" not in markdown
    outbox = runs / "stub_b" / "outbox"
    assert len(list(outbox.glob("*.eml"))) == 1

    controller, inbox = smtp_server(port=port)
    code, lines = push(repo, second, second, env, tmp_path)  # nothing changed: only the delivery
    assert code == 0, lines
    assert "notify: delivered 1 queued message(s) from " + str(outbox) in lines
    assert len(inbox.envelopes) == 1 and "stub_b" in inbox.message()["Subject"]
    assert not list(outbox.glob("*.eml"))


def test_summary_reaches_github_only_when_the_snapshot_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, first = stub_repo(tmp_path, ["stub_a"])
    process_step = tmp_path / "process-step.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")  # this process's variables are not the run's
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(process_step))
    code, _ = push(repo, first, first, Environment({}), tmp_path)  # nothing changed: nothing to tune
    assert code == 0 and not process_step.exists()

    step = tmp_path / "step.md"
    github = Environment({"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(step)})
    code, _ = push(repo, first, first, github, tmp_path)
    assert code == 0
    assert step.read_text() == (tmp_path / "summary.md").read_text()
    assert not process_step.exists()
