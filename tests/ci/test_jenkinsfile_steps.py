"""The Jenkinsfile's steps, executed in stage order as Jenkins would run them (jenkins_steps.py).

Two builds of job ``mlops`` on a workspace holding this project: a push that changes one model
(tuned, registered, e-mailed through the Notify stage's bound credential, artifacts where
``archiveArtifacts`` expects them), then a push that breaks that model (the build fails, the
failure mail still goes out). What only Jenkins can run is listed in docs/ci.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ci_harness import CiPython, base_env, commit_broken_code, commit_edit, project_repo
from jenkins_steps import Build, JenkinsfileRunner, jenkins_environment

from tests.pipeline.smtp import PASSWORD, USER, authenticator

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DIABETES_YAML = "models/diabetes_regression/model.yaml"
STAGES = ["Setup", "Detect", "Classify", "Build", "Tune", "Notify", "Report"]


def node_properties(port: int) -> dict[str, str]:
    """Manage Jenkins -> System -> Global properties (docs/ci.md, Jenkins step 3)."""
    return {
        "MLOPS_SMTP_HOST": "127.0.0.1",
        "MLOPS_SMTP_PORT": str(port),
        "MLOPS_SMTP_SECURITY": "none",
        "MLOPS_SMTP_ALLOW_PLAINTEXT_LOGIN": "1",  # a relay on the agent itself, with a login
        "MLOPS_MAIL_FROM": "jenkins@example.org",
        "MLOPS_MAIL_TO": "team@example.org",
    }


def run_build(
    runner: JenkinsfileRunner, workspace: Path, number: int, commit: str, previous: str | None, port: int
) -> Build:
    env = {
        **base_env(workspace.parent),
        **jenkins_environment(workspace, number, commit, previous),
        **node_properties(port),
        "MLOPS_RUNNER": "local",  # the build parameter, set for this build
    }
    env["PATH"] = base_env(workspace.parent)["PATH"]
    build = runner.build(env, credentials={"mlops-smtp": (USER, PASSWORD)})
    times = ", ".join(f"{run.stage} {run.seconds:.0f} s" for run in build.sh_runs)
    print(f"\n[jenkins] build #{number}: {build.result} {build.stage_results}\n[jenkins] sh steps: {times}")
    return build


def test_jenkinsfile_steps_tune_mail_and_archive_then_fail_on_a_broken_push(
    ci_python: CiPython, tmp_path: Path, smtp_server
) -> None:  # noqa: F811
    controller, inbox = smtp_server(authenticator=authenticator, auth_require_tls=False)
    # The agent keeps its workspace between builds: .venv may be there from an earlier build
    # (or from this session's act jobs, which share it as setup-python's tool cache).
    workspace = ci_python.workspace
    repo = project_repo(workspace)
    built = repo.head.commit.hexsha  # the last successful build's commit
    commit_edit(repo, DIABETES_YAML, "max_trials: 30", "max_trials: 3", "three trials")
    pushed = commit_edit(repo, DIABETES_YAML, "target: 57.5", "target: 1000", "an easy goal")
    runner = JenkinsfileRunner(ROOT / "Jenkinsfile", workspace, tmp_path / "archive1")

    build = run_build(runner, workspace, 2, pushed, built, controller.port)
    assert build.result == "SUCCESS", build.log[-6000:]
    assert build.stage_results == dict.fromkeys(STAGES, "SUCCESS")
    stage_output = {run.stage: run.output for run in reversed(build.sh_runs)}
    assert "models/diabetes_regression" in stage_output["Detect"] and "face_vgg16" not in stage_output["Detect"]
    assert '"kind": "regression"' in stage_output["Classify"]
    assert "## MLOps results" in stage_output["Report"]
    # The SMTP login reached the Notify stage only, and the mail went out with it.
    for run in build.sh_runs:
        assert (PASSWORD in run.env.values()) == (run.stage == "Notify"), run.stage
    assert len(inbox.envelopes) == 1 and inbox.authenticated == [True]
    assert "diabetes_regression" in inbox.message()["Subject"]
    # archiveArtifacts 'mlops-runs/**, mlops-summary.md' finds the summary and the model's results.
    assert "mlops-summary.md" in build.archived
    summary = json.loads((tmp_path / "archive1" / "mlops-runs" / "diabetes_regression" / "summary.json").read_text())
    assert summary["goal_met"] is True and summary["registered_model"] == "diabetes_regression/1"
    assert "post success: emailext" in build.not_executed

    # A push that breaks the model: Tune fails the build; Notify and Report still run.
    broken = commit_broken_code(repo, "models/diabetes_regression")
    runner.archive = tmp_path / "archive2"
    build = run_build(runner, workspace, 3, broken, pushed, controller.port)
    assert build.result == "FAILURE", build.log[-6000:]
    assert build.stage_results["Tune"] == "FAILURE"
    assert build.stage_results["Notify"] == "SUCCESS" and build.stage_results["Report"] == "SUCCESS"
    tune = next(run for run in build.sh_runs if run.stage == "Tune")
    assert tune.returncode == 4, tune.output[-3000:]  # README: 4 = at least one model failed
    assert len(inbox.envelopes) == 2
    failure = inbox.message()
    assert "diabetes_regression" in failure["Subject"] and "failed" in failure["Subject"]
    assert "SyntaxError" in failure.get_body(("plain",)).get_content()
    assert "post failure: emailext" in build.not_executed
    assert "mlops-summary.md" in build.archived
