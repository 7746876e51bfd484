"""What a Docker runner's container sees of the host: its environment and its mounts.

``container_env`` picks the variables forwarded into the container (settings, not host
paths); ``mounts`` decides which host folders are bind-mounted, at their own paths,
read-only (data) or read-write (state, created and chowned to the container's user).
These are policy about the host's files, apart from ``pipeline.runners``, which starts and
stops the container: the rules can be read and tested without an engine.

Example::

    env = container_env({"MLOPS_RUNS_DIR": "runs"})
    for path, read_only in mounts(env, Path.cwd(), user="1000:1000"):
        print(path, "ro" if read_only else "rw")
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

# Forwarded into the container; anything else in the host environment (PATH, HOME, a venv)
# describes the host and would break the image's own Python.
FORWARDED_PREFIXES = ("MLOPS_", "MLFLOW_")
FORWARDED_NAMES = (
    "KERAS_HOME",
    "SCIKIT_LEARN_DATA",
    "GIT_COMMIT",
    "GITHUB_SHA",
    "PYTHONHASHSEED",
    "TF_CPP_MIN_LOG_LEVEL",
    "OMP_NUM_THREADS",
)
# Data the container reads but must never change: mounted read-only (a file: its folder).
# scripts/offline-env.sh exports the MLOPS_ ones; its KERAS_HOME and SCIKIT_LEARN_DATA hold
# symlinks into MLOPS_SHARED_DATA, which resolve inside the container only with it mounted.
READ_ONLY_NAMES = ("KERAS_HOME", "SCIKIT_LEARN_DATA", "MLOPS_CONFIG", "MLOPS_SHARED_DATA", "MLOPS_FACE_WEIGHTS")
_DIR_SUFFIXES = ("_DIR", "_HOME", "_ROOT", "_CACHE")

_HOST_ONLY = {"PATH", "HOME", "PWD", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "LD_LIBRARY_PATH"}


def container_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables the container gets: forwarded host ones, then ``env``'s."""
    merged = {**os.environ, **env}
    return {
        k: v
        for k, v in merged.items()
        if k.startswith(FORWARDED_PREFIXES) or k in FORWARDED_NAMES or k in env
        if k not in _HOST_ONLY
    }


def mounts(
    env: Mapping[str, str],
    workdir: Path,
    *,
    user: str,
    state_dirs: Iterable[Path] = (),
    data_dirs: Iterable[Path] = (),
) -> list[tuple[Path, bool]]:
    """``(host folder, read_only)`` pairs, creating and chowning the state folders.

    Each folder is mounted at its own path; one inside another mount of the same or a
    weaker mode is left out (a parent's mount already shows it).

    Args:
        env: the container's variables (``container_env``); the folders they name go in.
        workdir: the work tree, mounted read-write and never chowned.
        user: ``uid:gid`` the state folders are given to when we are root.
        state_dirs: more host folders the container writes to (created and chowned).
        data_dirs: more host folders it only reads (mounted read-only).
    """
    workdir = Path(workdir).resolve()
    wanted: dict[Path, bool] = {workdir: False}
    state = [*state_dirs]
    for name, value in env.items():
        path = _path_in(name, value, workdir)
        if path is None:
            continue
        if name in READ_ONLY_NAMES:
            path = path if path.is_dir() or not path.exists() else path.parent
            if path.exists():
                wanted.setdefault(path, True)
        else:
            state.append(path)
    for path in state:
        path = Path(path).resolve()
        path.mkdir(parents=True, exist_ok=True)
        if path != workdir:
            _chown(path, user)
        wanted[path] = False
    for path in data_dirs:
        wanted.setdefault(Path(path).resolve(), True)
    kept: list[tuple[Path, bool]] = []
    for path, read_only in sorted(wanted.items()):
        if any(path.is_relative_to(p) and (ro <= read_only) for p, ro in kept):
            continue
        kept.append((path, read_only))
    return kept


def _chown(path: Path, user: str) -> None:
    """Give a state folder to the container's user; only root may, and only root needs to."""
    if os.geteuid() != 0:
        return
    uid, gid = (int(part) for part in user.split(":"))
    for root, dirs, files in os.walk(path):
        for entry in (root, *(os.path.join(root, n) for n in dirs + files)):
            os.lchown(entry, uid, gid)


def _path_in(name: str, value: str, workdir: Path) -> Path | None:
    """The host folder a forwarded variable names, if it names one.

    ``sqlite:///x.db`` (relative to ``workdir``) and ``sqlite:////abs/x.db`` give the
    database's folder (SQLite writes its journal beside it); ``file://`` URIs and absolute
    paths give themselves; a relative path counts only for a ``*_DIR``-like variable.
    """
    if not (name.startswith(FORWARDED_PREFIXES) or name in FORWARDED_NAMES):
        return None
    if value.startswith("sqlite:///"):
        return (workdir / value.removeprefix("sqlite:///")).parent
    if value.startswith("file://"):
        return Path(value.removeprefix("file://"))
    if value.startswith("/"):
        path = Path(value)
        if path.is_file() or (not path.exists() and not name.endswith(_DIR_SUFFIXES)):
            return path.parent if name in READ_ONLY_NAMES else None
        return path
    if name.endswith(_DIR_SUFFIXES) and value and "://" not in value:
        return workdir / value
    return None
