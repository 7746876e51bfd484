"""The process environment, read once at the edge and handed down as a value.

``Environment.from_os()`` is called by the CLI (``pipeline.cli.main``) and nowhere else in
the pipeline: every stage that needs a variable is given this snapshot (or a settings object
built from it) as an argument, so no module reads ``os.environ`` at import time or behind
its caller's back, and a test passes the variables it means instead of patching the process.

The names the pipeline itself reads are the constants below. Stages that publish to or
talk to a named service read that service's own variables from the mapping they are given
(``pipeline.report.ci_summary``: ``GITHUB_*``; ``pipeline.report.notify.settings``:
``MLOPS_SMTP_*``); libraries that read their own variables (MLflow's ``MLFLOW_*``, the
Docker SDK's ``DOCKER_*``, ``Path.home()``'s ``HOME``) are given the snapshot where they
accept one and are otherwise left alone.

Example::

    env = Environment({"MLOPS_CONFIG": "/etc/mlops.yaml"})
    env.config_path  # PosixPath('/etc/mlops.yaml')
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType

# ``mlops.yaml`` to use instead of the one found above the model folder.
CONFIG = "MLOPS_CONFIG"
# MLflow's own tracking URI: the fallback when no ``tracking_uri`` setting is given.
MLFLOW_TRACKING_URI = "MLFLOW_TRACKING_URI"
# The ``FROM`` image of model images (``mlops build`` / ``mlops run --base-image``).
BASE_IMAGE = "MLOPS_BASE_IMAGE"
# "true" on GitHub Actions: ``mlops run`` then publishes its summary to the job page.
GITHUB_ACTIONS = "GITHUB_ACTIONS"
# The commit a CI server checked out, for runs whose model folder is in no Git checkout.
CI_COMMIT_NAMES = ("GIT_COMMIT", "GITHUB_SHA")
# Where per-user caches go (XDG base directory spec); ``~/.cache`` when unset.
CACHE_HOME = "XDG_CACHE_HOME"
# Package-index settings forwarded to an image build (they may carry credentials).
PIP_INDEX_NAMES = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")
# The Docker engine the SDK connects to; named in the message when none answers.
DOCKER_HOST = "DOCKER_HOST"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
# A testing aid: the fault point ``pipeline.faults`` arms in this process.
FAULT_AT = "MLOPS_FAULT_AT"


class Environment(Mapping[str, str]):
    """A read-only snapshot of environment variables.

    It is a ``Mapping[str, str]``, so it goes wherever a plain mapping of variables does;
    the properties name what the pipeline reads from it.

    Args:
        variables: the variables; copied, so later changes to the source do not show.
    """

    __slots__ = ("_variables",)

    def __init__(self, variables: Mapping[str, str] | None = None) -> None:
        self._variables: Mapping[str, str] = MappingProxyType(dict(variables or {}))

    @classmethod
    def from_os(cls) -> Environment:
        """This process's environment now: call it once, at the edge (the CLI)."""
        return cls(os.environ)

    def __getitem__(self, name: str) -> str:
        return self._variables[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._variables)

    def __len__(self) -> int:
        return len(self._variables)

    def __repr__(self) -> str:  # names only: values may be secrets
        return f"Environment({sorted(self._variables)})"

    @property
    def config_path(self) -> Path | None:
        """``$MLOPS_CONFIG``: the ``mlops.yaml`` to use, or None to search for one."""
        value = self.get(CONFIG)
        return Path(value) if value else None

    @property
    def tracking_uri(self) -> str | None:
        """``$MLFLOW_TRACKING_URI``, or None when unset or empty."""
        return self.get(MLFLOW_TRACKING_URI) or None

    @property
    def on_github_actions(self) -> bool:
        """True inside a GitHub Actions job."""
        return self.get(GITHUB_ACTIONS) == "true"

    @property
    def ci_commit(self) -> str | None:
        """The CI server's commit (``$GIT_COMMIT``, then ``$GITHUB_SHA``), or None."""
        return next((self[name] for name in CI_COMMIT_NAMES if self.get(name)), None)

    @property
    def cache_home(self) -> Path:
        """``$XDG_CACHE_HOME``, or ``~/.cache`` when it is unset or empty."""
        value = self.get(CACHE_HOME)
        return Path(value) if value else Path.home() / ".cache"

    @property
    def docker_host(self) -> str:
        """The engine address the Docker SDK uses: ``$DOCKER_HOST`` or the default socket."""
        return self.get(DOCKER_HOST) or DEFAULT_DOCKER_HOST

    def pip_index_settings(self) -> dict[str, str]:
        """The set (non-empty) ``PIP_INDEX_NAMES``: build args for an image build."""
        return {name: self[name] for name in PIP_INDEX_NAMES if self.get(name)}
