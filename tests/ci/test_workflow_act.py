"""`.github/workflows/mlops.yml`, executed for real by act in host mode on a push and a pull request.

Each test makes a repository holding this project, commits a change to one shipped model and
runs the workflow's ``mlops`` job on that commit's event: checkout, setup-python, ``pip install
-e .``, ``mlops run``, ``mlops notify`` and the artifact upload all run. Mail goes to aiosmtpd on
127.0.0.1; the GitHub API is a local fake the job is pointed at with ``GITHUB_API_URL``.
Run times (and the cold/warm install) are printed: ``pytest -s -m slow tests/ci``.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
from ci_harness import ZERO_SHA, Act, ActResult, commit_broken_code, commit_edit, project_repo

from tests.conftest import FACE_WEIGHTS

pytestmark = pytest.mark.slow

FACE_YAML = "models/face_vgg16/model.yaml"
DIABETES_YAML = "models/diabetes_regression/model.yaml"


def smtp_vars(port: int) -> dict[str, str]:
    """The repository variables a user sets for mail (docs/ci.md)."""
    return {
        "MLOPS_SMTP_HOST": "127.0.0.1",
        "MLOPS_SMTP_PORT": str(port),
        "MLOPS_SMTP_SECURITY": "none",
        "MLOPS_MAIL_FROM": "ci@example.org",
        "MLOPS_MAIL_TO": "team@example.org",
    }


def offline_job_env(offline_env: dict[str, str]) -> dict[str, str]:
    """Offline data for the job (a runner with a network downloads it instead)."""
    return {**offline_env, "MLOPS_SHARED_DATA": str(FACE_WEIGHTS.parents[1])}


def small_face_search(repo, weights: Path) -> str:  # type: ignore[no-untyped-def]
    """The push: the face model's settings changed to a small search on the offline weights."""
    commit_edit(repo, FACE_YAML, "input_size: 64 ", "input_size: 32 ", "faces at 32 px")
    commit_edit(repo, FACE_YAML, "max_trials: 40", "max_trials: 3", "three trials")
    commit_edit(repo, FACE_YAML, "target: 0.90", "target: 0.50", "an easy goal")
    return commit_edit(repo, FACE_YAML, "weights: imagenet ", f"weights: {weights} ", "face-pretrained weights")


def artifact_files(result: ActResult) -> dict[str, bytes]:
    """Every uploaded file, by its path inside the artifact (act stores v4+ uploads as zips)."""
    files: dict[str, bytes] = {}
    for path in result.artifacts.rglob("*"):
        if path.is_file() and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    files[name] = archive.read(name)
        elif path.is_file():
            files[str(path.relative_to(result.artifacts))] = path.read_bytes()
    return files


def print_times(label: str, result: ActResult, act: Act) -> None:
    install = re.search(r"Success - Main Install \[([^\]]+)\]", result.log)
    print(f"\n[act] {label}: job {result.seconds:.0f} s, install step {install.group(1) if install else '?'}")


def test_push_tunes_registers_and_mails_then_a_broken_push_fails(
    act: Act, tmp_path: Path, offline_env: dict[str, str], smtp_server
) -> None:  # noqa: F811
    controller, inbox = smtp_server()
    repo = project_repo(tmp_path / "repo")
    first = repo.head.commit.hexsha
    second = small_face_search(repo, FACE_WEIGHTS)

    push = {"ref": "refs/heads/main", "before": first, "after": second}
    result = act.run(
        repo, "push", push, variables=smtp_vars(controller.port), secrets={}, env=offline_job_env(offline_env)
    )
    print_times("push (goal met)", result, act)
    assert result.returncode == 0, result.log[-6000:]
    assert "Job succeeded" in result.log
    # mlops run found only the changed model, classified it and registered the best trial.
    assert "face_vgg16" in result.log and "classify: cnn (keras)" in result.log
    assert "diabetes_regression" not in result.log and "digits_mlp" not in result.log
    assert "registered face_vgg16/1" in result.log, result.log[-4000:]
    # The notify step delivered the result mail to the SMTP server.
    assert len(inbox.envelopes) == 1
    mail = inbox.message()
    assert "face_vgg16" in mail["Subject"] and "goal met" in mail["Subject"].lower()
    assert any((p.get_filename() or "").endswith(".png") for p in mail.iter_attachments())
    # The job summary and the artifact hold the same Markdown summary.
    summary = result.step_summary()
    assert "## MLOps results" in summary and "face_vgg16" in summary
    files = artifact_files(result)
    assert "## MLOps results" in files["mlops-summary.md"].decode()
    assert any(name.endswith("face_vgg16/summary.json") for name in files)

    # A push that breaks the model's code fails the job (mlops run exits 4) and mails the failure.
    broken = commit_broken_code(repo, "models/face_vgg16")
    result = act.run(
        repo,
        "push",
        {"ref": "refs/heads/main", "before": second, "after": broken},
        variables=smtp_vars(controller.port),
        secrets={},
        env=offline_job_env(offline_env),
    )
    print_times("push (broken model)", result, act)
    assert result.returncode != 0
    assert result.step_failed("mlops run") and "exit status 4" in result.log, result.log[-4000:]
    assert "Job failed" in result.log
    assert len(inbox.envelopes) == 2
    failure = inbox.message()
    assert "face_vgg16" in failure["Subject"] and "fail" in failure["Subject"].lower()
    assert "SyntaxError" in failure.get_body(("plain",)).get_content()
    assert "mlops-summary.md" in artifact_files(result)  # uploaded even when the run failed


def test_pull_request_comment_is_posted_once_then_updated(act: Act, tmp_path: Path, fake_github, smtp_server) -> None:  # noqa: F811
    controller, inbox = smtp_server()
    repo = project_repo(tmp_path / "repo")
    base = repo.head.commit.hexsha
    commit_edit(repo, DIABETES_YAML, "max_trials: 30", "max_trials: 3", "three trials")
    head = commit_edit(repo, DIABETES_YAML, "target: 57.5", "target: 1000", "an easy goal")
    github_env = {"GITHUB_API_URL": f"http://127.0.0.1:{fake_github.port}", "GITHUB_REPOSITORY": "o/r"}
    token = {"GITHUB_TOKEN": "ghs-fake-token-for-the-test-4711"}

    def pull_request(head_sha: str) -> ActResult:
        event = {
            "number": 7,
            "pull_request": {"number": 7, "base": {"sha": base, "ref": "main"}, "head": {"sha": head_sha}},
        }
        return act.run(repo, "pull_request", event, variables=smtp_vars(controller.port), secrets=token, env=github_env)

    first = pull_request(head)
    print_times("pull_request 1", first, act)
    assert first.returncode == 0, first.log[-6000:]
    posted = [r for r in fake_github.requests if r["method"] == "POST"]
    assert len(posted) == 1 and posted[0]["auth"] == f"Bearer {token['GITHUB_TOKEN']}"
    ours = [c for c in fake_github.comments if c["user"]["login"] == "github-actions[bot]"]
    assert len(ours) == 1 and ours[0]["body"].startswith("<!-- mlops-summary -->")
    assert "diabetes_regression" in ours[0]["body"] and "face_vgg16" not in ours[0]["body"]

    # The next push to the pull request updates the same comment.
    second_head = commit_edit(repo, DIABETES_YAML, "max_trials: 3", "max_trials: 2", "two trials")
    second = pull_request(second_head)
    print_times("pull_request 2", second, act)
    assert second.returncode == 0, second.log[-6000:]
    assert len([r for r in fake_github.requests if r["method"] == "POST"]) == 1
    patched = [r for r in fake_github.requests if r["method"] == "PATCH"]
    assert len(patched) == 1 and patched[0]["path"].endswith(f"/comments/{ours[0]['id']}")
    assert len([c for c in fake_github.comments if c["user"]["login"] == "github-actions[bot]"]) == 1
    assert fake_github.comments[0]["body"] == "LGTM"  # someone else's comment is untouched
    assert len(inbox.envelopes) == 2  # one result mail per run
    assert ZERO_SHA not in first.log
