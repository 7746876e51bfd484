"""The environment is read at the edge only: one snapshot, handed down as a value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config.environment import Environment
from pipeline.config.settings import find_repo_config, resolve_settings
from pipeline.sdk import feature_cache
from pipeline.tracking.versioning import git_commit

# Imports every module under pipeline/ with os.environ replaced by a mapping that records
# which pipeline module read it: a read while importing is a read at import time.
_IMPORT_GUARD = r"""
import collections.abc, importlib, json, os, pkgutil, sys

class Guard(collections.abc.MutableMapping):
    def __init__(self, real):
        self.real, self.readers = real, set()
    def _note(self):
        frame = sys._getframe(2)  # past __getitem__ (or the like), then past os.getenv / Mapping.get
        while frame is not None and frame.f_globals.get("__name__") in ("os", "collections.abc", "_collections_abc"):
            frame = frame.f_back
        name = frame.f_globals.get("__name__", "") if frame is not None else ""
        if name == "pipeline" or name.startswith("pipeline."):
            self.readers.add(name)
    def __getitem__(self, key):
        self._note()
        return self.real[key]
    def __contains__(self, key):
        self._note()
        return key in self.real
    def __iter__(self):
        self._note()
        return iter(self.real)
    def __len__(self):
        return len(self.real)
    def __setitem__(self, key, value):
        self.real[key] = value
    def __delitem__(self, key):
        del self.real[key]
    def copy(self):
        self._note()
        return dict(self.real)

guard = Guard(os.environ)
os.environ = guard
import pipeline
names = [m.name for m in pkgutil.walk_packages(pipeline.__path__, "pipeline.")]
for name in names:
    importlib.import_module(name)
# The guard's self-check: a read from a pipeline module's code is seen.
exec("import os\nos.environ.get('HOME')", {"__name__": "pipeline._guard_probe"})
print(json.dumps({"modules": len(names), "readers": sorted(guard.readers)}))
"""


def test_no_pipeline_module_reads_the_environment_at_import_time(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_GUARD],
        cwd=tmp_path,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["modules"] > 40  # every module was imported, the tune stage's too
    assert report["readers"] == ["pipeline._guard_probe"]  # only the self-check's read


def test_feature_cache_default_is_resolved_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "process"))  # after the import: must not matter
    assert feature_cache.default_dir(tmp_path / "given") == tmp_path / "given" / "mlops" / "features"
    assert feature_cache.default_dir() == Path.home() / ".cache" / "mlops" / "features"
    env = Environment({"XDG_CACHE_HOME": str(tmp_path / "snap")})
    settings = resolve_settings({}, {}, {}, environ=env)
    assert settings.cache_dir == tmp_path / "snap" / "mlops" / "features"
    assert settings.source("cache_dir") == "default"


def test_machine_defaults_come_from_the_snapshot_not_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///process.db")
    monkeypatch.setenv("GIT_COMMIT", "process-commit")
    bare = resolve_settings({}, {}, {}, environ={})
    assert bare.tracking == "sqlite:///mlruns/mlflow.db" and bare.commit is None
    env = {"MLFLOW_TRACKING_URI": "sqlite:///snap.db", "GITHUB_SHA": "c0ffee"}
    snap = resolve_settings({}, {}, {}, environ=env)
    assert (snap.tracking, snap.source("tracking_uri")) == ("sqlite:///snap.db", "MLFLOW_TRACKING_URI")
    assert (snap.commit, snap.source("commit")) == ("c0ffee", "GITHUB_SHA")
    # The tune setting wins over MLflow's own variable, as before.
    flagged = resolve_settings({}, {}, {"tracking_uri": "sqlite:///flag.db"}, environ=env)
    assert flagged.tracking == "sqlite:///flag.db"


def test_repo_config_override_is_an_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "mlops.yaml").write_text("tune: {}\n")
    model = tmp_path / "models" / "m"
    model.mkdir(parents=True)
    monkeypatch.setenv("MLOPS_CONFIG", str(tmp_path / "process.yaml"))
    assert find_repo_config(model) == tmp_path / "mlops.yaml"
    chosen = Environment({"MLOPS_CONFIG": str(tmp_path / "other.yaml")}).config_path
    assert find_repo_config(model, chosen) == tmp_path / "other.yaml"


def test_git_commit_fallback_is_given_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_COMMIT", "from-the-process")
    assert git_commit(tmp_path) == "unknown"  # no repository, no fallback given
    assert git_commit(tmp_path, "abc123") == "abc123"


def test_snapshot_is_a_frozen_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_SNAPSHOT_PROBE", "before")
    env = Environment.from_os()
    monkeypatch.setenv("MLOPS_SNAPSHOT_PROBE", "after")
    assert env["MLOPS_SNAPSHOT_PROBE"] == "before"
    with pytest.raises(TypeError):
        env._variables["X"] = "y"  # type: ignore[index]
    assert "SECRET_VALUE" not in repr(Environment({"MLOPS_SMTP_PASSWORD": "SECRET_VALUE"}))
    ci = Environment({"GIT_COMMIT": "", "GITHUB_SHA": "abc", "PIP_INDEX_URL": "", "PIP_EXTRA_INDEX_URL": "x"})
    assert ci.ci_commit == "abc" and ci.pip_index_settings() == {"PIP_EXTRA_INDEX_URL": "x"}
    assert Environment({}).docker_host == "unix:///var/run/docker.sock"
    assert not Environment({"GITHUB_ACTIONS": "1"}).on_github_actions
