"""Where ``mlops <args>`` runs: in this Python (``LocalRunner``) or in a model's image
(``DockerRunner``), behind one interface, ``run(args, env, workdir) -> exit code``.

Both run pushed (untrusted) model code, so both hand it the allow-listed environment of
``pipeline.execute.tune_env``: no SMTP password, no ``GITHUB_TOKEN``. The Docker runner mounts each
host folder it needs at the same absolute path inside the container, so a
``sqlite:////abs/mlflow.db`` URI or a path written into ``summary.json`` means the same on
both sides (``pipeline.execute.mounts`` says what is mounted and how). Exit codes follow
the shell's convention on both runners: a process killed by signal N returns ``128 + N``
(``kill`` gives 137).

Example::

    runner = choose_runner("auto", Environment.from_os(), image=built.tag)  # the CLI takes the snapshot
    code = runner.run(["tune", runner.model_path(model_dir)], env, Path.cwd())
"""

from __future__ import annotations

import codecs
import collections
import io
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO, cast

from pipeline.build.images import docker_available, docker_client
from pipeline.config.environment import Environment
from pipeline.errors import MlopsError
from pipeline.execute import mounts as container_mounts
from pipeline.execute.tune_env import tune_environment

RUNNER_NAMES = ("auto", "docker", "local")
CONTAINER_USER = container_mounts.IMAGE_USER


class Runner(Protocol):
    """Runs ``mlops <args>`` somewhere and returns its exit code."""

    name: str
    last_failure: str | None  # the last run's own error line (or a traceback's last line), if any

    def run(self, args: list[str], env: dict[str, str], workdir: Path) -> int:
        """Run ``mlops <args>`` in ``workdir`` with ``env`` added; stream its output."""
        ...

    def model_path(self, model_dir: Path) -> str:
        """The model folder as the ``mlops`` this runner starts sees it."""
        ...

    def stop(self) -> None:
        """Kill the command now running, if any (from another thread)."""
        ...


# `python -m pipeline.cli` under the name `mlops`: usage lines read as they do in a container.
_MLOPS_MAIN = "import sys; sys.argv[0] = 'mlops'; from pipeline.cli import main; main()"


def _exit_code(returncode: int) -> int:
    """Shell convention: a child killed by signal N exits 128 + N, as in a container."""
    return 128 - returncode if returncode < 0 else returncode


class LocalRunner:
    """Runs ``mlops <args>`` (``pipeline.cli.main``) as a subprocess of this Python.

    Args:
        out: where output goes as it comes; ``sys.stdout`` (at call time) by default.
        entrypoint: the command ``args`` are appended to, instead of ``mlops`` (tests and
            a supervisor's drills use a stand-in).
        host_env: the host's environment snapshot (``Environment``, taken by the CLI): its
            allow-listed variables pass to the subprocess. None passes none.
    """

    name = "local"

    def __init__(
        self,
        out: TextIO | None = None,
        entrypoint: list[str] | None = None,
        host_env: Mapping[str, str] | None = None,
    ) -> None:
        self.out = out
        self.entrypoint = entrypoint or [sys.executable, "-c", _MLOPS_MAIN]
        self.host_env = Environment(host_env)
        self._process: subprocess.Popen[bytes] | None = None
        self.last_failure: str | None = None

    def run(self, args: list[str], env: dict[str, str], workdir: Path) -> int:
        """Run ``mlops <args>`` in ``workdir``; the allow-listed host environment plus ``env``."""
        out = self.out or sys.stdout
        process = subprocess.Popen(
            [*self.entrypoint, *args],
            cwd=workdir,
            env=tune_environment(self.host_env, env, args=args, local=True),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._process = process
        try:
            # read1: whatever has arrived, so a progress line shows before its newline
            stream = cast(io.BufferedReader, process.stdout)
            self.last_failure = _copy_stream(iter(lambda: stream.read1(65536), b""), out)
            return _exit_code(process.wait())
        except BaseException:  # Ctrl-C or a supervisor's stop: leave no orphan behind
            process.kill()
            process.wait()
            raise
        finally:
            self._process = None

    def model_path(self, model_dir: Path) -> str:
        """The host path: the subprocess sees the host's files."""
        return str(Path(model_dir).resolve())

    def stop(self) -> None:
        """Kill the running subprocess; its ``run`` then returns 137."""
        if self._process is not None:
            self._process.kill()


class DockerRunner:
    """Runs ``mlops <args>`` in a container of ``image``, detached, its logs streamed.

    The container runs as our own ``uid:gid`` (1000:1000, the image's user, when we are
    root), with every capability dropped, no privilege gain, an init process so a stop
    signal reaches ``mlops``, and no network unless the tracking server or the study storage
    is remote (then the host's: dockerd may run without a bridge, and a server on 127.0.0.1
    is reachable). Host folders are bind-mounted at the same paths: ``workdir`` read-only,
    the state folders the tune stage writes read-write (the runs dir, the feature cache, a
    ``sqlite:///`` tracking or study store's folder: created when missing, and only then
    given to the container's user), data folders (``KERAS_HOME``, ``MLOPS_SHARED_DATA``,
    ...) read-only. See ``pipeline.execute.mounts``.

    Args:
        image: the image to run (``build_image``'s tag); set it before ``run``.
        state_dirs: more host folders the container writes to (created when missing).
        data_dirs: more host folders it only reads (mounted read-only).
        user: ``uid:gid`` the container runs as; None: ``container_mounts.container_user()``.
        network: ``none``, ``host`` or a network name; None: ``host`` when the tracking URI
            or the storage URL names a server, else ``none``.
        client: a Docker SDK client; None connects to the engine ``host_env`` names.
        out: where output goes as it comes; ``sys.stdout`` (at call time) by default.
        entrypoint: replaces the image's ``mlops`` entry point (tests, drills).
        host_env: the host's environment snapshot (``Environment``, taken by the CLI): its
            allow-listed variables pass to the container. None passes none.
    """

    name = "docker"

    def __init__(
        self,
        image: str | None = None,
        *,
        state_dirs: Iterable[Path] = (),
        data_dirs: Iterable[Path] = (),
        user: str | None = None,
        network: str | None = None,
        client: Any = None,
        out: TextIO | None = None,
        entrypoint: list[str] | None = None,
        host_env: Mapping[str, str] | None = None,
    ) -> None:
        self.image = image
        self.host_env = Environment(host_env)
        self.entrypoint = entrypoint
        self.state_dirs = [Path(p) for p in state_dirs]
        self.data_dirs = [Path(p) for p in data_dirs]
        self.user = user or container_mounts.container_user()
        self.network = network
        self.out = out
        self._client = client
        self._container: Any = None
        self._lock = threading.Lock()
        self.last_failure: str | None = None

    @property
    def client(self) -> Any:
        """The Docker SDK client, connected on first use (no read timeout: logs may pause)."""
        if self._client is None:
            self._client = docker_client(self.host_env, timeout=None)
        return self._client

    def container_env(self, env: Mapping[str, str], args: Sequence[str] = ()) -> dict[str, str]:
        """The variables the container gets: the allow-listed host ones, then ``env``'s.

        ``HOME`` points at the container's /tmp when its user is not the image's: the
        image's home belongs to 1000:1000.
        """
        environment = container_mounts.container_env(self.host_env, env, args)
        if self.user != container_mounts.IMAGE_USER:
            environment.setdefault("HOME", "/tmp")
        return environment

    def mounts(self, env: Mapping[str, str], workdir: Path, args: Sequence[str] = ()) -> list[tuple[Path, bool]]:
        """``(host folder, read_only)`` pairs (``container_mounts.mounts``)."""
        return container_mounts.mounts(
            env, workdir, user=self.user, args=args, state_dirs=self.state_dirs, data_dirs=self.data_dirs
        )

    def network_mode(self, env: Mapping[str, str], args: Sequence[str] = ()) -> str:
        """``self.network``, else ``host`` for a remote tracking server or storage, else ``none``."""
        if self.network:
            return self.network
        return "host" if container_mounts.needs_network(env, args) else "none"

    def run(self, args: list[str], env: dict[str, str], workdir: Path) -> int:
        """Run ``mlops <args>`` in a fresh container; stream its logs; return its exit code.

        Raises:
            MlopsError: no image set, a state folder the container's user cannot write, or
                the engine refused to start the container.
        """
        from docker.types import Mount

        if not self.image:
            raise MlopsError("no image to run; build one first (mlops build MODEL_DIR)")
        out = self.out or sys.stdout
        workdir = Path(workdir).resolve()
        environment = self.container_env(env, args)
        mounts = [
            Mount(target=str(p), source=str(p), type="bind", read_only=ro)
            for p, ro in self.mounts(environment, workdir, args)
        ]
        try:
            container = self.client.containers.run(
                self.image,
                command=list(args),
                entrypoint=self.entrypoint,
                detach=True,
                name=f"mlops-{uuid.uuid4().hex[:12]}",
                labels={"io.mlops.runner": "docker"},
                network_mode=self.network_mode(environment, args),
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                init=True,
                user=self.user,
                environment=environment,
                mounts=mounts,
                working_dir=str(workdir),
            )
        except Exception as error:
            raise MlopsError(f"could not start a container of {self.image}: {error}") from None
        with self._lock:
            self._container = container
        try:
            _copy_stream(container.logs(stream=True, follow=True), out)
            status = int(container.wait()["StatusCode"])
            self.last_failure = _container_failure(container)
            return status
        except BaseException:
            container.kill()
            raise
        finally:
            with self._lock:
                self._container = None
            container.remove(force=True)

    def model_path(self, model_dir: Path) -> str:
        """The model's copy in the image (its ``io.mlops.model-dir`` label)."""
        if not self.image:
            raise MlopsError("no image to run; build one first (mlops build MODEL_DIR)")
        labels = self.client.images.get(self.image).labels or {}
        return str(labels.get("io.mlops.model-dir") or Path(model_dir).resolve())

    def stop(self) -> None:
        """Kill the running container; its ``run`` then returns 137."""
        with self._lock:
            if self._container is not None:
                self._container.kill()


def _copy_stream(chunks: Iterable[bytes], out: TextIO) -> str | None:
    """Write byte chunks to a text stream as they arrive, splitting no UTF-8 character.

    Returns:
        What the command said last about a failure (``failure_line``), for the failure mail.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    pending = ""
    for chunk in [*chunks, b""]:
        text = decoder.decode(chunk, final=not chunk)
        out.write(text)
        out.flush()
        pending += text
        *lines, pending = pending.split("\n")
        tail.extend(lines)
    tail.append(pending)
    return failure_line(list(tail))


_TAIL_LINES = 40  # enough to hold a traceback's last line behind TensorFlow's shutdown noise


def failure_line(lines: list[str], errors: list[str] | None = None) -> str | None:
    """The command's own ``error: ...`` line, else a traceback's last line, else ``None``.

    Args:
        lines: the command's last output lines.
        errors: its stderr alone, where it was kept apart (a container's): the traceback
            is looked for there, since a container's two streams interleave out of order.
    """
    text = [line.strip() for line in lines if line.strip()]
    for line in reversed(text):
        if line.startswith("error: "):
            return line.removeprefix("error: ")[:300]
    trace = text if errors is None else [line.strip() for line in errors if line.strip()]
    if any(line.startswith("Traceback (most recent call last)") for line in trace):
        return trace[-1][:300]
    return None


def _container_failure(container: Any) -> str | None:
    """``failure_line`` of an exited container, from its whole, finished log.

    Read after ``wait``, not from the live stream: the engine copies stdout and stderr
    separately, so a streamed ``print`` can land after the traceback that followed it.
    """

    def tail(**streams: bool) -> list[str]:
        raw = container.logs(tail=_TAIL_LINES, **streams)
        return bytes(raw).decode("utf-8", errors="replace").splitlines()

    return failure_line(tail(stdout=True, stderr=True), tail(stdout=False, stderr=True))


def choose_runner(
    name: str, host_env: Mapping[str, str], image: str | None = None, *, out: TextIO | None = None
) -> LocalRunner | DockerRunner:
    """Pick a runner by name.

    Args:
        name: ``docker`` (an engine must answer), ``local``, or ``auto``: docker when an
            engine answers, else local, saying so.
        host_env: the host's environment snapshot: the engine to reach (``DOCKER_HOST``)
            and the variables the runner may pass on (``pipeline.execute.tune_env``).
        image: the image a docker runner runs (it may be set later).
        out: where the runner's output, and the fallback note, go.

    Raises:
        MlopsError: an unknown name, or ``docker`` with no engine reachable.
    """
    if name not in RUNNER_NAMES:
        raise MlopsError(f"unknown runner {name!r}; use one of {', '.join(RUNNER_NAMES)}")
    if name == "local":
        return LocalRunner(out=out, host_env=host_env)
    if name == "docker":
        return DockerRunner(image, client=docker_client(host_env, timeout=None), out=out, host_env=host_env)
    if docker_available(host_env):
        return DockerRunner(image, out=out, host_env=host_env)
    print("no Docker engine reachable; running locally", file=out or sys.stdout)
    return LocalRunner(out=out, host_env=host_env)
